// Forwards to two destinations, using the rest of the API on the way.
import { EmailMessage } from "cloudflare:email";

async function streamSize(stream) {
  let n = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return n;
    n += value.length;
  }
}

export default {
  async email(message, env, ctx) {
    const size = await streamSize(message.raw);
    if (size !== message.rawSize) throw new Error("raw stream and rawSize disagree");
    if (typeof EmailMessage !== "function") throw new Error("no EmailMessage");
    const subject = message.headers.get("subject") || "";
    const extra = new Headers();
    extra.set("X-Fanout-Subject", subject);
    extra.set("X-Fanout-Size", String(size));
    ctx.waitUntil(Promise.resolve("logged"));
    await message.forward("a@dest.test", extra);
    await message.forward("b@dest.test", extra);
  }
}
