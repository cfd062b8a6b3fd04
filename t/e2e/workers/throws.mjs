export default {
  async email(message, env, ctx) {
    throw new Error("worker bug");
  }
}
