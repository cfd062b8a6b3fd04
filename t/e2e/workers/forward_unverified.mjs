export default {
  async email(message, env, ctx) {
    await message.forward("stranger@elsewhere.test");
    await message.forward("a@dest.test");
  }
}
