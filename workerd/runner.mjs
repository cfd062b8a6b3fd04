// mxferry's js worker runtime (issue 13): runs an ES module written for
// Cloudflare Email Workers -- export default { async email(message, env, ctx) }
// -- unchanged, and turns what it did into mxferry's worker protocol
// (doc/design.md "Workers"): JSON decision lines on stdout.
//
// Input: stdin = one JSON header line, then the raw message; fd 3 = the
// module's source; MXF_ENV_KEYS names the environment variables that form
// `env`. Exit status 0 with decisions; anything else is a worker failure
// (the router answers 451 and keeps nothing).
import { readFileSync } from "node:fs";
import * as nodeModule from "node:module";

// `import { EmailMessage } from "cloudflare:email"` must resolve: a resolve
// hook maps the specifier to a small module of ours.
const shim = `export class EmailMessage {
  constructor(from, to, raw) { this.from = from; this.to = to; this.raw = raw; }
}`;
const shimURL = "data:text/javascript," + encodeURIComponent(shim);
const hooks = `export async function resolve(specifier, context, next) {
  if (specifier === "cloudflare:email")
    return { url: ${JSON.stringify(shimURL)}, shortCircuit: true };
  return next(specifier, context);
}`;
// module.register exists from Node 20.6; older nodes (Debian 12 ships 18)
// get the specifier rewritten in the source instead (import statements and
// dynamic imports naming it; the shim is a data: URL either way).
const hooked = typeof nodeModule.register === "function";
if (hooked) nodeModule.register("data:text/javascript," + encodeURIComponent(hooks));
function withShim(src) {
  if (hooked) return src;
  return src.replace(/(\bfrom\s*|\bimport\s*\(\s*|\bimport\s*)(["'])cloudflare:email\2/g,
                     (m, pre, q) => pre + q + shimURL + q);
}

function fail(why) {
  process.stderr.write(`worker: ${why}\n`);
  process.exit(1);
}

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return Buffer.concat(chunks);
}

// The header section as a Headers object: unfolded, one entry per field.
// Bytes are taken as latin1 so no field can make Headers throw.
function parseHeaders(raw) {
  const h = new Headers();
  let end = raw.indexOf("\r\n\r\n");
  if (end < 0) end = raw.length;
  const text = raw.subarray(0, end).toString("latin1");
  const lines = text.split(/\r\n(?![ \t])/);
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).replace(/\r\n/g, "").trim();
    try {
      h.append(name, value);
    } catch {
      // a name Headers refuses: not visible to the worker
    }
  }
  return h;
}

function extraHeaders(headers) {
  const out = {};
  if (headers === undefined || headers === null) return out;
  const entries =
    headers instanceof Headers || typeof headers.entries === "function"
      ? headers.entries()
      : Object.entries(headers);
  for (const [name, value] of entries) {
    // As on the hosted runtime: only X- headers may be added.
    if (!/^x-/i.test(name)) throw new TypeError(`forward: header ${name} is not an X- header`);
    out[name] = String(value);
  }
  return out;
}

// A reply's raw: a string, or a ReadableStream of bytes or strings (what
// the hosted runtime accepts). The protocol carries text: bytes must be
// UTF-8 (TextDecoder fatal: a reply is never silently altered).
async function replyText(raw) {
  if (typeof raw === "string") return raw;
  if (raw && typeof raw.getReader === "function") {
    const dec = new TextDecoder("utf-8", { fatal: true });
    const reader = raw.getReader();
    let out = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      out += typeof value === "string" ? value : dec.decode(value, { stream: true });
    }
    return out + dec.decode();
  }
  throw new TypeError("reply: raw must be a string or a ReadableStream");
}

async function main() {
  const input = await readStdin();
  const nl = input.indexOf(0x0a);
  if (nl < 0) fail("no header line on stdin");
  const env0 = JSON.parse(input.subarray(0, nl).toString("utf8"));
  const raw = input.subarray(nl + 1);
  const source = readFileSync(3, "utf8");

  const decisions = [];
  let rejected = null;
  let reply = null;
  const message = {
    from: env0.from,
    to: env0.to,
    headers: parseHeaders(raw),
    raw: new ReadableStream({
      start(controller) {
        controller.enqueue(new Uint8Array(raw));
        controller.close();
      },
    }),
    rawSize: raw.length,
    setReject(reason) {
      rejected = String(reason);
    },
    async forward(rcptTo, headers) {
      if (typeof rcptTo !== "string" || !rcptTo.includes("@"))
        throw new TypeError("forward: rcptTo must be an address");
      decisions.push({ action: "forward", to: rcptTo, headers: extraHeaders(headers) });
    },
    // As on the hosted runtime: one reply, to the sender. Whether it goes
    // out (In-Reply-To, References, DMARC) is decided by workerd and the
    // router; a reply that fails those is dropped, not the message.
    async reply(msg) {
      if (reply !== null) throw new Error("reply: only one reply per message");
      if (!msg || typeof msg.to !== "string" || typeof msg.from !== "string")
        throw new TypeError("reply: expects an EmailMessage(from, to, raw)");
      if (msg.to.toLowerCase() !== String(env0.from).toLowerCase())
        throw new TypeError("reply: the reply must be addressed to the original sender");
      reply = "";
      reply = await replyText(msg.raw);
    },
  };
  const env = {};
  for (const k of (process.env.MXF_ENV_KEYS || "").split(",")) {
    if (k) env[k] = process.env[k] ?? "";
  }
  const pending = [];
  const ctx = {
    waitUntil(p) {
      pending.push(Promise.resolve(p));
    },
    passThroughOnException() {},
  };

  const mod = await import("data:text/javascript," + encodeURIComponent(withShim(source)));
  const handler = mod.default;
  if (!handler || typeof handler.email !== "function")
    fail("the module has no default export with an email() handler");
  await handler.email(message, env, ctx);
  await Promise.allSettled(pending);

  let out = "";
  if (rejected !== null) {
    out = JSON.stringify({ action: "reject", reason: rejected || "rejected" }) + "\n";
  } else {
    for (const d of decisions) {
      const line = { action: "forward", to: d.to };
      if (Object.keys(d.headers).length) line.headers = d.headers;
      out += JSON.stringify(line) + "\n";
    }
    if (!decisions.length) out = JSON.stringify({ action: "drop" }) + "\n";
    if (reply !== null) out += JSON.stringify({ action: "reply", raw: reply }) + "\n";
  }
  process.stdout.write(out, () => process.exit(0));
}

main().catch((e) => fail(e && e.stack ? e.stack.split("\n")[0] : String(e)));
