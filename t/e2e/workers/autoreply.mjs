// The hosted service's auto-reply example (createMimeMessage from mimetext
// replaced by a hand-built message: no npm packages here), plus a forward.
// env.MODE: "wrong" answers another Message-ID, "twice" replies twice,
// "stream" gives the reply as a ReadableStream.
import { EmailMessage } from "cloudflare:email";

export default {
  async email(message, env, ctx) {
    const id = message.headers.get("Message-ID");
    const irt = env.MODE === "wrong" ? "<not-the-original@sender.test>" : id;
    const raw = [
      `From: Auto-reply <${message.to}>`,
      `To: ${message.from}`,
      `Subject: Re: ${message.headers.get("Subject")}`,
      `In-Reply-To: ${irt}`,
      `References: ${irt}`,
      "Content-Type: text/plain; charset=utf-8",
      "",
      "We got your message, thank you.",
    ].join("\n");
    const body =
      env.MODE === "stream"
        ? new ReadableStream({
            start(c) {
              c.enqueue(new TextEncoder().encode(raw));
              c.close();
            },
          })
        : raw;
    await message.reply(new EmailMessage(message.to, message.from, body));
    if (env.MODE === "twice") await message.reply(new EmailMessage(message.to, message.from, raw));
    if (env.FORWARD) await message.forward(env.FORWARD);
  },
};
