#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into corpus/<target>/seed-*.

Run once when a target or a format changes; the files are kept in git and
replayed by run.sh in every CI run. Inputs that once crashed a target are
added by hand as corpus/<target>/crash-<what> and never removed."""
import os
import struct
import zlib

here = os.path.dirname(os.path.abspath(__file__))
QID = "0DQ5ZK3M0000AB12CD34EF56GH"


def put(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# ---- SMTP commands (one line each)
cmds = {
    "ehlo": "EHLO client.example.org", "helo": "HELO client", "ehlo-lit": "EHLO [192.0.2.1]",
    "ehlo-v6": "EHLO [IPv6:2001:db8::1]",
    "mail": "MAIL FROM:<alice@example.org>", "mail-null": "MAIL FROM:<>",
    "mail-params": "MAIL FROM:<a@b.example> SIZE=12345 BODY=8BITMIME",
    "mail-space": "mail from: <a@b.example>", "mail-7bit": "MAIL FROM:<a@b.example> BODY=7BIT",
    "mail-size-big": "MAIL FROM:<a@b.example> SIZE=99999999999999999999999",
    "mail-unknown-param": "MAIL FROM:<a@b.example> FOO=BAR",
    "rcpt": "RCPT TO:<info@gw.test>", "rcpt-pm": "RCPT TO:<Postmaster>",
    "rcpt-route": "RCPT TO:<@relay1.example,@relay2.example:user@gw.test>",
    "rcpt-quoted": 'RCPT TO:<"john doe"@gw.test>', "rcpt-quoted-at": 'RCPT TO:<"a@b"@gw.test>',
    "rcpt-percent": "RCPT TO:<user%victim.example@gw.test>",
    "rcpt-bang": "RCPT TO:<victim.example!user@gw.test>",
    "rcpt-iplit": "RCPT TO:<user@[127.0.0.1]>",
    "rcpt-idn": "RCPT TO:<user@xn--bcher-kva.test>",
    "data": "DATA", "rset": "RSET", "noop": "NOOP hello", "quit": "QUIT", "vrfy": "VRFY user",
    "help": "HELP", "bad": "XYZZY", "nul": "MAIL FROM:<a\0b@c.example>",
    "cr": "RCPT TO:<a@b.example>\rRCPT TO:<c@d.example>", "8bit": "EHLO h\xc3\xa9llo",
    "long-local": "MAIL FROM:<" + "a" * 70 + "@b.example>",
    "shell": "MAIL FROM:<$(id)`id`;rm@b.example>",
    "sql": "RCPT TO:<'; DROP TABLE rules;--@gw.test>",
}
for k, v in cmds.items():
    put("fuzz_smtp_cmd", k, v.encode("latin-1"))

# ---- line splitter: two chunk-seed bytes, then a pipelined session
sessions = {
    "pipelined": b"EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@gw.test>\r\nDATA\r\n",
    "bare-lf": b"EHLO a\nMAIL FROM:<a@b>\r\n",
    "long": b"NOOP " + b"x" * 600 + b"\r\nQUIT\r\n",
    "cr-mix": b"HELO a\r\r\nNOOP\rQUIT\r\n",
    "partial": b"EHLO partial",
}
for i, (k, v) in enumerate(sessions.items()):
    put("fuzz_smtp_lines", k, bytes([i, 7 * i]) + v)

# ---- DATA decoder: two chunk-seed bytes, then DATA content
msg = b"From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n..leading dot\r\n.\r\n"
datas = {"plain": msg, "empty": b".\r\n", "stuffed": b"..\r\n...\r\n.\r\n",
         "pipelined-after": msg + b"QUIT\r\n", "unterminated": b"no end",
         "long-line": b"x" * 1200 + b"\r\n.\r\n"}
# SMTP smuggling: none of these may end the data.
smuggle = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\r.\r\n",
           b"\r\n.\r", b"\r\n.\r\r\n", b"\r\n\0.\r\n"]
for i, s in enumerate(smuggle):
    datas[f"smuggle-{i}"] = (b"Subject: a\r\n\r\nfirst" + s +
                             b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@gw.test>\r\nDATA\r\n"
                             b"second\r\n.\r\n")
for i, (k, v) in enumerate(datas.items()):
    put("fuzz_smtp_data", k, bytes([i, 3 * i + 1]) + v)

# ---- replies (client side)
replies = {
    "greeting": b"220 mx.example ESMTP\r\n",
    "ehlo": b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
    "esc": b"250 2.1.5 Ok\r\n550 5.1.1 <x@y>: no such user\r\n",
    "multi-err": b"451-4.3.0 first\r\n451 4.3.0 second\r\n",
    "bare-lf": b"250 ok\n",
    "mismatch": b"250-a\r\n251 b\r\n",
    "bad-code": b"650 nope\r\n", "short": b"25\r\n", "no-sep": b"250x\r\n",
    "code-only": b"354\r\n", "nul": b"250 a\0b\r\n", "partial": b"250-more to come",
    "wrong-class": b"550 2.0.0 mixed\r\n",
}
for i, (k, v) in enumerate(replies.items()):
    put("fuzz_smtpreply", k, bytes([i, 5 * i]) + v)


# ---- envelopes (canonical, with checksum)
def enc(v):
    if v == "":
        return "-"
    if v == "-":
        return "%2D"
    out = []
    for b in v.encode():
        out.append(chr(b) if 0x21 <= b <= 0x7e and b != 0x25 else "%%%02X" % b)
    return "".join(out)


def envelope(rcpts, **kv):
    f = {"sender": "alice@sender.test", "srs_sender": "SRS0=abcd=TT=sender.test=alice@fwd.test",
         "client_ip": "127.0.0.1", "client_name": "localhost", "helo": "client.sender.test",
         "proto": "ESMTP", "origin": "smtpd",
         "headers": "Received: from client.sender.test (localhost [127.0.0.1])\r\n"
                    "\tby mx.gateway.test with ESMTP id " + QID + "\r\n"}
    f.update(kv)
    lines = ["V 1", "qid " + QID, "arrival 1767225600", "size 1234"]
    for k in ("sender", "srs_sender", "client_ip", "client_name", "helo", "proto", "origin",
              "headers"):
        lines.append(f"{k} {enc(f[k])}")
    for r in rcpts:
        lines.append("rcpt " + " ".join([enc(r[0]), enc(r[1]), enc(r[2]), enc(r[3]), r[4],
                                         str(r[5]), str(r[6]), enc(r[7]), enc(r[8])]))
    body = "\n".join(lines) + "\n"
    return body + "E %08x\n" % (zlib.crc32(body.encode()) & 0xffffffff)


r1 = ("info@gw.test", "bob@dest.test", "r1", "forward", "pending", 0, 0, "", "")
r2 = ("info@gw.test", "carol@dest.test", "r1", "forward", "deferred", 3, 1767229200,
      "451 4.3.0 Try again later", "mx1.dest.test[127.0.0.2]:25")
r3 = ("junk@gw.test", "", "", "drop", "dropped", 0, 0, "", "")
put("fuzz_envelope", "one", envelope([r1]))
put("fuzz_envelope", "three", envelope([r1, r2, r3]))
put("fuzz_envelope", "null-sender", envelope([r1], sender="", srs_sender="", origin="bouncer"))
put("fuzz_envelope", "hostile", envelope(
    [("a b@gw.test", "x\r\ny@dest.test", "-", "forward", "failed", 1, 5, "550 %00 no", "\0")],
    helo="evil\r\nrcpt x", client_name="%41"))
put("fuzz_envelope", "bad-crc", envelope([r1]).replace("E ", "E 0", 1)[:-3] + "0\n")
put("fuzz_envelope", "truncated", envelope([r1, r2])[:200])


# ---- IPC frames
def frame(t, fields):
    body = b"".join(struct.pack("<HI", tag, len(v)) + v for tag, v in fields)
    return struct.pack("<HHI", 0x4d58, t, len(body)) + body


u64 = lambda v: struct.pack("<Q", v)  # noqa: E731
put("fuzz_ipc", "hello", frame(1, [(1, b"smtpd"), (2, u64(1)), (3, u64(1234))]))
put("fuzz_ipc", "rcpt-check", frame(3, [(4, u64(7)), (5, b"info@gw.test")]))
put("fuzz_ipc", "commit", frame(7, [(4, u64(9)), (9, QID.encode()), (10, b"a@b.example"),
                                   (11, b"info@gw.test"), (11, b"x@gw.test"), (12, u64(100)),
                                   (13, b"127.0.0.1"), (14, b"localhost"), (15, b"helo"),
                                   (16, b"ESMTP")]))
put("fuzz_ipc", "deliver-result", frame(11, [(4, u64(1)), (9, QID.encode()), (18, u64(0)),
                                            (6, u64(250)), (7, b"2.0.0"), (8, b"ok"),
                                            (20, b"mx[127.0.0.2]:25")]))
put("fuzz_ipc", "bad-len", frame(3, [(4, u64(7))])[:-1])
put("fuzz_ipc", "nul-str", frame(3, [(4, u64(7)), (5, b"a\0b@gw.test")]))
put("fuzz_ipc", "huge-field", struct.pack("<HHI", 0x4d58, 3, 6) + struct.pack("<HI", 5, 0xffffffff))

# ---- addresses
addrs = ["alice@example.org", "Alice.B+tag@Example.ORG", '"quoted local"@example.org',
         '"a\\"b"@example.org', "user@bücher.test", "用户@例え.テスト", "user@xn--bcher-kva.test",
         "a@b", "@nolocal", "nodomain@", "a..b@c", ".a@b", "a@-b.c", "a@b-.c", "a@[127.0.0.1]",
         "user%victim@gw.test", "victim!user@gw.test", "a@" + "x" * 64 + ".test",
         "a@" + ".".join(["abcdefghi"] * 30), "x" * 65 + "@a.test", "a@\u00df.test",
         "a@xn--zz.test", "a@b\r\n.test", "user@ＧＷ．ｔｅｓｔ"]
for i, a in enumerate(addrs):
    put("fuzz_address", f"{i:02d}", a)

# ---- SRS
srs = ["SRS0=HHHH=TT=example.org=alice@fwd.gateway.test", "alice@example.org",
       '"quoted@local"@example.org', "SRS0=abcd=AB=d=l@FWD.GATEWAY.TEST",
       "SRS0+abcd=AB=example.org=a=b@fwd.gateway.test", "SRS0==AB=d=l@fwd.gateway.test",
       "SRS1=HHHH=fwd.other=HHHH=TT=example.org=alice@fwd.gateway.test", "bob@bücher.test",
       "SRS0=abcd=A=d=l@fwd.gateway.test"]
for i, a in enumerate(srs):
    put("fuzz_srs", f"{i:02d}", a)

# ---- rules lookup
rules = ["info@gw.test", "INFO@GW.TEST", "other@gw.test", "x@bücher.test", "x@xn--bcher-kva.test",
         "info@gw.test.evil.example", "info@evil.example", "info%evil.example@gw.test",
         "evil.example!info@gw.test", '"q u"@gw.test', '"Q U"@gw.test', "info@[127.0.0.1]",
         "@gw.test:info@evil.example", "info@gw.test@evil.example", "info@GW.test.", ""]
for i, a in enumerate(rules):
    put("fuzz_rules", f"{i:02d}", a)

# ---- DSN inputs: sender \0 (rcpt orig status remote diag)*3 \0 headers
def dsn(sender, rcpts, headers):
    parts = [sender]
    for r in rcpts:
        parts += list(r)
    parts += [""] * (16 - len(parts))
    return "\0".join(parts) + "\0" + headers


hdr = "From: a@b\r\nTo: c@d\r\nSubject: hello\r\n\r\nbody not copied\r\n"
put("fuzz_dsn", "one", dsn("alice@sender.test",
                          [("bob@dest.test", "info@gw.test", "5.1.1", "mx1.dest.test",
                            "550 5.1.1 no such user")], hdr))
put("fuzz_dsn", "hostile", dsn("a@b\r\nBcc: victim@x",
                              [("r\r\n\r\n--x", "", "5.0.0\r\nX: y", "h\n", "550 a\r\n.\r\nb"),
                               ("\x80\xff", "o", "4.4.7", "", "\t\0")],
                              "Subject: x\n\nFrom: injected\r\n\r\n\r\n"))
put("fuzz_dsn", "bare-lf-headers", dsn("s@x", [("r@y", "", "5.1.1", "", "550")],
                                      "A: 1\nB: 2\n\n"))
# ---- returned bounces (fuzz_dsn_parse): whole messages to an SRS address
ours = ("Received: from client.sender.test (client.sender.test [192.0.2.9])\r\n"
        f"\tby mx.gateway.test (mxferry) with ESMTP id {QID}\r\n"
        "\tfor <info@gw.test>; Thu, 01 Jan 2026 00:00:00 +0000\r\n")
report = ("From: MAILER-DAEMON@dest.test\r\n"
          "Content-Type: multipart/report; report-type=delivery-status;\r\n"
          "\tboundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nsorry\r\n"
          "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
          "Reporting-MTA: dns; mx.dest.test\r\n\r\n"
          "Final-Recipient: rfc822; bob@dest.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
          "Remote-MTA: dns; in.dest.test\r\nDiagnostic-Code: smtp; 550 5.1.1 no\r\n"
          "  such user\r\n\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
          + ours + "Message-ID: <m@sender.test>\r\n\r\n--B--\r\n")
put("fuzz_dsn_parse", "report", report)
put("fuzz_dsn_parse", "report-lf", report.replace("\r\n", "\n"))
put("fuzz_dsn_parse", "global", report.replace("message/delivery-status",
                                               "message/global-delivery-status")
                                       .replace("text/rfc822-headers", "message/global-headers"))
put("fuzz_dsn_parse", "plain", "Subject: failed\r\n\r\nyour mail failed:\r\n" + ours)
put("fuzz_dsn_parse", "reply", "From: bob@dest.test\r\nSubject: re: hi\r\n\r\nthanks\r\n")
put("fuzz_dsn_parse", "truncated", report[:300])
# ---- deliverd's 7-bit converter (fuzz_mime7bit): whole 8-bit messages
M7_HEAD = "From: <a@sender.test>\r\nTo: <b@gw.test>\r\nSubject: Gr\u00fc\u00dfe\r\nMIME-Version: 1.0\r\n"
m7 = {
    "plain-8bit": M7_HEAD + "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Transfer-Encoding: 8bit\r\n\r\nK\u00f6ln\r\n.dot\r\n",
    "no-mime": "From: a@b\r\nSubject: x\r\n\r\nStra\u00dfe\r\n",
    "multipart": M7_HEAD + "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
                 "pre\u00e4mble\r\n--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n"
                 "\u00e4\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n\u00ff\u00fe\r\n"
                 "--b--\r\nepil\u00f6g\r\n",
    "rfc822": M7_HEAD + "Content-Type: message/rfc822\r\n\r\nSubject: \u00e4\r\n\r\nb\u00f6dy\r\n",
    "cte-lie": M7_HEAD + "Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
               "b\u00f6dy\r\n",
    "nested": M7_HEAD + "".join(f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
                                for i in range(40)) + "\r\n\u00e4\r\n"
              + "".join(f"--b{i}--\r\n" for i in reversed(range(40))),
    "encoded-words": M7_HEAD.replace("Subject: Gr\u00fc\u00dfe", "Subject: =?utf-8?q?=C3=A4?= \u00e4")
                     + "Content-Type: text/plain; charset=\"unknown-8bit\"\r\n\r\n\u00e4\r\n",
    "header-name-8bit": "From: a@b\r\nX-\u00e4: v\r\n\r\nbody\r\n",
    "bad-boundary": M7_HEAD + "Content-Type: multipart/alternative; boundary=\r\n\r\n--\r\n\u00e4\r\n",
    "lf-only": "From: a@b\nMIME-Version: 1.0\nContent-Type: text/plain\n\n\u00e4\n",
}
for k, v in m7.items():
    put("fuzz_mime7bit", k, v.encode("latin-1", "replace") if k in ("multipart",) else v.encode())

# ---- DKIM/ARC signer (fuzz_dkim): a chunk-seed byte, then a message
DK_HEAD = ("From: Alice <alice@sender.test>\r\nTo: info@gw.test\r\nSubject: hi\r\n"
           "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <1@sender.test>\r\n")
dk = {
    "plain": DK_HEAD + "\r\nHello.  \r\n\r\n\r\n",
    "folded": DK_HEAD + "X-Long: a\r\n\tb  c\r\n \r\n\r\n body \t\r\n",
    "no-body": DK_HEAD,
    "no-from": "Subject: x\r\n\r\nbody\r\n",
    "lf": DK_HEAD.replace("\r\n", "\n") + "\nbody\n\n",
    "bad-cont": " cont\r\nFrom: a@b\r\n\r\n",
    "arc-1": ("ARC-Seal: i=1; a=rsa-sha256; cv=none; d=hop1.test; s=h1; b=AAAA\r\n"
              "ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=hop1.test;"
              " s=h1; h=from; bh=AAAA; b=AAAA\r\n"
              "ARC-Authentication-Results: i=1; hop1.test; spf=pass\r\n"
              "Authentication-Results: mx.gateway.test; arc=pass\r\n" + DK_HEAD + "\r\nb\r\n"),
    "arc-fail": ("ARC-Seal: i=2; cv=fail; d=x; s=y; b=\r\nARC-Seal: i=1; cv=none; b=\r\n"
                 + DK_HEAD + "\r\n"),
    "arc-i99": "ARC-Seal: i=99; cv=pass\r\nARC-Seal: i=x; cv=\r\n" + DK_HEAD + "\r\n",
    "dup-tags": "DKIM-Signature: v=1; v=1; d=a; d=b\r\n" + DK_HEAD + "\r\n",
    "cr-only": DK_HEAD + "\r\nline\rmore\r\r\n",
}
for k, v in dk.items():
    put("fuzz_dkim", k, b"\x07" + v.encode())
# ---- HTTP request heads (fuzz_http): two chunk-seed bytes, then the request
http = {
    "scrape": b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9325\r\nUser-Agent: Prometheus/2.45.0\r\n"
              b"Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n"
              b"Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n",
    "http10": b"GET /metrics?name[]=up HTTP/1.0\r\n\r\n",
    "post": b"POST /api/rules HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
    "chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "smuggle": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
    "fold": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: a\n\n",
    "leading-crlf": b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "v2": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "obs-text": b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
}
for i, (k, v) in enumerate(http.items()):
    put("fuzz_http", k, bytes([i, 3 * i + 1]) + v)


# ---- issue 7: ARC chain validation (fuzz_arc): a chunk-seed byte, the key
# record every lookup answers, LF, then a message. The "dkimpy" seed is a
# two-hop chain made with dkimpy's arc_sign (it verifies with its key).
ARC_KEY = ("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtcf3wouoGkKGHq95fxZj"
           "DJ+2BvbMHyycuN2AlcDy5AkZPse0myRxntgMNW0TSQB09A+rCNNMBcrAz9m9eQHbtW8x08h0OOEOeWaueN9O"
           "dnI/gqWzzbbk3i4vueeC3ECK5/JdeReOv94ur6YBi7/pSsSQxMSfwFwhFC8KNL2am0HS2UlpYSlwFMo71raL"
           "68ABoemrAQs7z+heBFlnckFtMdLlaHsmNn6em0gmR92eyNjknxCqKPqmqHAj4H6wOmaXiHQUye17y2qPvs7L"
           "JG59f5aU94r5hPy6gfd8iH5Gfr2fiag6aQ+t1aa2Or7b+KLy06ltdCDPvLfh3pGTTnrdcwIDAQAB")
ARC_CHAIN = open(os.path.join(here, "..", "unit", "test_arc.c")).read()
ARC_CHAIN = ARC_CHAIN[ARC_CHAIN.index("CHAIN2[] =") + len("CHAIN2[] ="):]
ARC_CHAIN = ARC_CHAIN[:ARC_CHAIN.index(";\n")]
ARC_CHAIN = "".join(ln.strip()[1:-1] for ln in ARC_CHAIN.strip().split("\n"))
ARC_CHAIN = ARC_CHAIN.replace("\\r\\n", "\r\n").replace('\\"', '"')
arc = {
    "dkimpy": ARC_KEY + "\n" + ARC_CHAIN,
    "dkimpy-tempfail": "T\n" + ARC_CHAIN,
    "dkimpy-nokey": "\n" + ARC_CHAIN,
    "dkimpy-ed25519-key": "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n"
                          + ARC_CHAIN,
    "none": ARC_KEY + "\nFrom: a@b.example\r\n\r\nbody\r\n",
    "broken": "v=DKIM1; p=\nARC-Seal: i=1; cv=none; a=rsa-sha256; d=a; s=b; b=AAAA\r\n"
              "ARC-Message-Signature: i=1; a=ed25519-sha256; c=simple; d=a; s=b; h=from;"
              " bh=AAAA; b=AAAA; l=3\r\nARC-Authentication-Results: i=1; a; none\r\n"
              "ARC-Seal: i=51; cv=pass\r\n\r\nx",
}
for k, v in arc.items():
    put("fuzz_arc", k, b"\x05" + v.encode())

# ---- worker decisions (issue 13): two chunking-seed bytes, then stdout
wp = {
    "forward": '{"action":"forward","to":"a@dest.test","headers":{"X-Tag":"t\\u00e9"}}\n',
    "two": '{"action":"forward","to":"a@b.test"}\n\n{"action":"forward","to":"c@d.test"}',
    "reject": '{"action":"reject","reason":"No \\"thanks\\" \\ud83d\\ude00"}\r\n',
    "drop": '{"action":"drop"}\n',
    "garbage": "hello\n",
    "bad-header": '{"action":"forward","to":"a@b.test","headers":{"Subject":"x"}}\n',
    # issue 13: replies (LF and CRLF line ends, the loop guards' fields)
    "reply": '{"action":"forward","to":"a@b.test"}\n{"action":"reply","raw":"From: a@gw.test'
             '\\nTo: s@x.test\\nMessage-ID: <r@gw.test>\\nIn-Reply-To: <r@gw.test>\\n'
             'References: <q@x> (c) <r@gw.test>\\n\\nThanks.\\r\\n"}\n',
    "reply-auto": '{"action":"reply","raw":"Auto-Submitted: auto-replied\\r\\nFrom: \\"A, B\\" '
                  '<a@gw.test>\\r\\nTo: s@x.test\\r\\nIn-Reply-To: <a@b>\\r\\n\\r\\n"}',
    "reply-twice": '{"action":"reply","raw":"x"}\n{"action":"reply","raw":"y"}\n',
    "reply-nul": '{"action":"reply","raw":"From: a\\u0000b\\n\\n"}\n',
}
for k, v in wp.items():
    put("fuzz_workerproto", k, b"\x07\x01" + v.encode())

print("seeds written")


# ---- issue 7: header sections (fuzz_mailhdr; 4 octets of chunking seed first)
hdrs = {
    "simple": "From: A <a@example.com>\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n",
    "forged-ar": "Authentication-Results: mx.test; spf=pass\r\n dkim=pass\r\n"
                 "Authentication-Results: (c) MX.TEST; x\r\n"
                 "Authentication-Results: other.test; spf=fail\r\n\r\nb\r\n",
    "dkim": "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.com;\r\n"
            "\ts=s1; h=from:to; bh=abc=; b=def=\r\nFrom: \"x, y\" <x@example.com>\r\n\r\n",
    "groups": "From: undisclosed:;\r\nFrom: a@b.c, d@e.f\r\nFrom: (c) <a@[1.2.3.4]>\r\n",
    "no-body": "Subject: x\r\nX: y",
    "bare-lf": "Subject: x\nX: y\n\nbody",
}
for name, text in hdrs.items():
    put("fuzz_mailhdr", name, b"\x01\x02\x03\x04" + text.encode())

# ---- issue 7: SPF records (fuzz_spf)
spf = {
    "simple": "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx ptr -all",
    "include": "v=spf1 include:_spf.example.com redirect=other.example ~all",
    "macros": "v=spf1 exists:%{ir}.%{l1r-}.%{d2}._spf.%{h} a:%{o}.%{s}.%{v} -all",
    "exp": "v=spf1 -all exp=explain.%{d}",
    "refused": "v=spf1 a:%{c}%{r}%{t}.x exists:%{d999r}.y -all",
    "cidr": "v=spf1 a/24//64 mx:mx.example/16 ?all",
    "junk": "v=spf1 foo:bar =bad %% %_ %- %{",
}
for name, text in spf.items():
    put("fuzz_spf", name, text)

# ---- issue 12: apid's requests (fuzz_api): a flag byte (bit 0: read-only
# token), "METHOD PATH[?QUERY]", a newline, the body.
api = {
    "list": (0, "GET /zones?page=1&per_page=5", ""),
    "rule": (0, "POST /zones/gw.test/email/routing/rules",
             '{"actions":[{"type":"forward","value":["bob@dest.test"]}],"enabled":true,'
             '"matchers":[{"field":"to","type":"literal","value":"test@gw.test"},'
             '{"field":"from","type":"wildcard","value":"*@x.test"}],"name":"r","priority":0}'),
    "catchall-ro": (1, "PUT /zones/gw.test/email/routing/rules/catch_all",
                    '{"actions":[{"type":"reject","value":["no"],"code":550}],'
                    '"matchers":[{"type":"all"}],"enabled":true}'),
    "settings": (0, "PATCH /zones/gw.test/email/routing",
                 '{"enabled":false,"support_subaddress":true,"skip_wizard":true}'),
    "analytics": (0, "GET /zones/gw.test/email/routing/analytics?since=2026-01-01T00:00:00Z"
                     "&until=1767312000&step=3600", ""),
    "zone-idn": (0, "POST /zones", '{"name":"bücher.test"}'),
    "address": (0, "POST /accounts/x/email/routing/addresses", '{"email":"a@b.test","x":1}'),
}
for name, (flag, line, body) in api.items():
    put("fuzz_api", name, bytes([flag]) + (line + "\n" + body).encode())
