// "Allowlist senders", from the hosted service's Email Workers documentation;
// only the addresses are ours (the test's sender and verified destination).
export default {
  async email(message, env, ctx) {
    const allowList = ["alice@sender.test", "coworker@sender.test"];
    if (allowList.indexOf(message.from) == -1) {
      message.setReject("Address not allowed");
    } else {
      await message.forward("a@dest.test");
    }
  }
}
