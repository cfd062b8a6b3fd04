// Subaddress (plus-address) routing in the documentation's style: the tag
// picks the destination from the worker's variables; unknown tags are refused.
export default {
  async email(message, env, ctx) {
    const local = message.to.split("@")[0];
    const tag = local.split("+")[1];
    const routes = { sales: env.SALES, support: env.SUPPORT };
    if (tag && routes[tag]) {
      await message.forward(routes[tag], new Headers({ "X-Routed-Tag": tag }));
    } else {
      message.setReject(`Unknown tag ${tag}`);
    }
  }
}
