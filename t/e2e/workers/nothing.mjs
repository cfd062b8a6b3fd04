// Does nothing: on the hosted service the message is dropped.
export default {
  async email(message, env, ctx) {
  }
}
