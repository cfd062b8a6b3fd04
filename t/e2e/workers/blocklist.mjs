// "Block on sender", from the hosted service's Email Workers documentation;
// only the addresses are ours.
export default {
  async email(message, env, ctx) {
    const blockList = ["hacker@sender.test", "spammer@sender.test"];
    if (blockList.indexOf(message.from) >= 0) {
      message.setReject("Address is blocked");
    } else {
      await message.forward("a@dest.test");
    }
  }
}
