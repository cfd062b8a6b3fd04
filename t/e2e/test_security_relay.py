"""Hostile SMTP clients: open-relay probes and injection through commands.

- Open relay: nmap's smtp-open-relay probe set re-expressed here (source
  routes, % hack, bang paths, quoted locals, IP literals, unrouted look-alike
  domains), against a gateway with a catch-all (the most permissive routing
  there is). Zero messages may reach the victim's MX, and no RCPT naming a
  foreign domain may be accepted.
- Injection: CR, LF, NUL, shell and SQL metacharacters in HELO, MAIL, RCPT
  and their parameters reach no header, envelope record or log line
  unescaped, and none is executed as a second command.
"""
import os
import re
import socket
import time

import pytest

from conftest import wait_until

VICTIM = "victim.test"
RELAY_LINE_RE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z mxferry/[a-z]+\[\d+\]: ")


class Raw:
    """A byte-exact SMTP client: send exactly what a test says."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        assert self.reply()[0] == 220

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(4096)
            if not d:
                raise ConnectionError(f"closed; pending {self.buf!r}")
            self.buf += d
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def reply(self):
        """(code, [lines]) of one (possibly multi-line) reply."""
        lines = []
        while True:
            ln = self.line()
            lines.append(ln)
            if len(ln) < 4 or ln[3:4] != b"-":
                return int(ln[:3]), lines

    def cmd(self, data):
        self.s.sendall(data if data.endswith(b"\r\n") else data + b"\r\n")
        return self.reply()

    def pending(self, wait=0.3):
        """Bytes the server sent beyond the replies read so far."""
        self.s.settimeout(wait)
        try:
            while True:
                d = self.s.recv(4096)
                if not d:
                    break
                self.buf += d
        except (socket.timeout, OSError):
            pass
        self.s.settimeout(10)
        return self.buf

    def close(self):
        try:
            self.s.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.s.close()


@pytest.fixture
def relay_world(world):
    """world + a victim domain whose MX is a sink on 127.0.0.4, and a catch-all
    on gw.test (so every local part of ours is accepted)."""
    world.dns.zone(VICTIM, mx=[(10, f"mx.{VICTIM}")], a={f"mx.{VICTIM}": "127.0.0.4"})
    world.victim = world.sinks("127.0.0.4")
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test")
    gw.ctl_ok("catchall", "set", "gw.test", "--forward", "bob@dest.test")
    return world


# (MAIL FROM, RCPT TO) as the client sends them, between the angle brackets.
# [ip] is the gateway's own address; "gw.test" is its domain.
PROBES = [
    ("antispam@sender.test", f"relaytest@{VICTIM}"),
    ("", f"relaytest@{VICTIM}"),
    ("antispam@[127.0.0.1]", f"relaytest@{VICTIM}"),
    ("antispam@gw.test", f"relaytest@{VICTIM}"),
    ("antispam@sender.test", f"relaytest%{VICTIM}@[127.0.0.1]"),
    ("antispam@sender.test", f"relaytest%{VICTIM}@gw.test"),
    ("antispam@sender.test", f'"relaytest@{VICTIM}"'),
    ("antispam@sender.test", f'"relaytest%{VICTIM}"'),
    ("antispam@sender.test", f"relaytest@{VICTIM}@[127.0.0.1]"),
    ("antispam@sender.test", f'"relaytest@{VICTIM}"@[127.0.0.1]'),
    ("antispam@sender.test", f'"relaytest@{VICTIM}"@gw.test'),
    ("antispam@sender.test", f"relaytest@{VICTIM}@gw.test"),
    ("antispam@sender.test", f"@[127.0.0.1]:relaytest@{VICTIM}"),
    ("antispam@sender.test", f"@gw.test:relaytest@{VICTIM}"),
    ("antispam@sender.test", f"@gw.test,@[127.0.0.1]:relaytest@{VICTIM}"),
    ("antispam@sender.test", f"{VICTIM}!relaytest"),
    ("antispam@sender.test", f"{VICTIM}!relaytest@[127.0.0.1]"),
    ("antispam@sender.test", f"{VICTIM}!relaytest@gw.test"),
    ("antispam@sender.test", "relaytest@[127.0.0.4]"),
    ("antispam@sender.test", "relaytest@[IPv6:::1]"),
    ("antispam@sender.test", "postmaster"),
    # Unrouted and look-alike domains.
    ("antispam@sender.test", f"relaytest@gw.test.{VICTIM}"),
    ("antispam@sender.test", "relaytest@sub.gw.test"),
    ("antispam@sender.test", "relaytest@gw.test."),
    ("antispam@sender.test", "relaytest@gw.test\\.victim.test"),
    ("antispam@sender.test", "relaytest@xn--gw-test.test"),
    ("antispam@sender.test", "relaytest@gw.tést"),
    ("antispam@sender.test", "relaytest@unrouted.invalid"),
    ("antispam@sender.test", f"relaytest@{VICTIM.upper()}"),
]


def test_open_relay_probes_relay_nothing(relay_world):
    w = relay_world
    gw = w.gw
    accepted, outcomes = [], []
    for mail_from, rcpt in PROBES:
        c = Raw(gw.smtp_port)
        try:
            c.cmd(b"EHLO probe.sender.test")
            code, _ = c.cmd(f"MAIL FROM:<{mail_from}>".encode())
            if code != 250:
                outcomes.append((mail_from, rcpt, "MAIL", code))
                continue
            code, lines = c.cmd(f"RCPT TO:<{rcpt}>".encode("utf-8"))
            outcomes.append((mail_from, rcpt, "RCPT", code))
            if code == 250:
                accepted.append(rcpt)
                assert c.cmd(b"DATA")[0] == 354
                body = (f"From: <{mail_from}>\r\nTo: <{rcpt}>\r\nSubject: relay probe\r\n"
                        f"Message-ID: <probe-{len(accepted)}@sender.test>\r\n\r\nprobe\r\n.\r\n")
                code, lines = c.cmd(body.encode("utf-8"))
                assert code == 250 or 400 <= code < 600, lines
            else:
                assert 500 <= code < 600 or code in (450, 451, 452), (rcpt, code, lines)
        finally:
            c.close()
    # Accepted recipients are ours only: the local part of gw.test (through the
    # catch-all) or postmaster, never the victim's domain.
    for rcpt in accepted:
        dom = rcpt.rsplit("@", 1)[-1] if "@" in rcpt else ""
        assert rcpt == "postmaster" or dom.lower() in ("gw.test", "gw.test."), \
            f"RCPT accepted for a foreign domain: {rcpt}\n{outcomes}"
    # Let the queue work, then: nothing reached the victim, not even a try.
    time.sleep(2)
    wait_until(lambda: not any(gw.spool_files()[d] for d in ("incoming", "active")), 20,
               what=lambda: f"the queue to settle: {gw.spool_files()}")
    assert not w.victim.messages and not w.victim.rcpt_attempts, \
        f"relayed to the victim: {w.victim.summary()}\n{outcomes}"
    log = gw.log_text()
    assert f"domain={VICTIM}" not in log.lower(), "a delivery to the victim's domain was tried"
    for m in w.dest.messages:
        assert m.rcpt_tos == ["bob@dest.test"], m


def log_lines_clean(gw):
    """Every log line is one well-formed line: no raw control bytes, and no
    injected line (each starts with the timestamp and program tag)."""
    raw = open(gw.log, "rb").read()
    bad = []
    for ln in raw.split(b"\n")[:-1]:
        if not RELAY_LINE_RE.match(ln) and not ln.startswith(b"=="):
            bad.append(ln)
        if any(b < 0x20 and b != 0x09 for b in ln) or b"\x7f" in ln:
            bad.append(ln)
    return bad


HOSTILE_HELO = [b"evil\rX-Injected: helo", b"evil\x00nul", b"$(touch /tmp/pwned)",
                b"'; DROP TABLE activity;--", b"`id`|nc -e /bin/sh", b"evil\nRCPT TO:<x@y>"]


def test_injection_in_commands(world):
    gw, sink = world.gw, world.dest
    gw.forward("info@gw.test", "bob@dest.test")
    sink.set_mode("tempfail")  # keep the message queued to read its envelope
    # Control bytes in HELO: refused, and never a second command. One
    # connection per probe: smtpd hangs up after a few errors (421).
    for helo in HOSTILE_HELO:
        c = Raw(gw.smtp_port)
        try:
            code, lines = c.cmd(b"EHLO " + helo)
            if b"\r" in helo or b"\x00" in helo or b"\n" in helo:
                assert code >= 500, (helo, code, lines)
            if b"\n" in helo:
                # A bare LF ends a command line (answered with an error); what
                # follows is the client's next line, as if it had sent CRLF.
                code2, lines2 = c.reply()
                assert code2 == 503, (helo, code2, lines2)
            # Exactly one reply per line: CR and NUL split nothing.
            assert c.pending() == b"", (helo, c.buf)
        finally:
            c.close()
    # CR, LF or NUL inside MAIL/RCPT/parameters: refused as a whole.
    for bad in (b"MAIL FROM:<a\rb@sender.test>", b"MAIL FROM:<a\x00b@sender.test>",
                b"MAIL FROM:<a@sender.test> BODY=8BITMIME\rX-Injected: p",
                b"MAIL FROM:<a@sender.test> SIZE=1\x00RCPT TO:<v@victim.test>"):
        c = Raw(gw.smtp_port)
        try:
            assert c.cmd(b"EHLO client.sender.test")[0] == 250
            code, lines = c.cmd(bad)
            assert 500 <= code < 600, (bad, code, lines)
            assert c.pending() == b"", (bad, c.buf)
        finally:
            c.close()
    c = Raw(gw.smtp_port)
    try:
        assert c.cmd(b"EHLO client.sender.test")[0] == 250
        c.s.sendall(b"MAIL FROM:<a@sender.test>\nRCPT TO:<info@gw.test>\r\n")
        code, lines = c.reply()
        assert code >= 500, ("bare LF in MAIL", code, lines)
        code, lines = c.reply()
        assert code == 503, ("RCPT after a refused MAIL", code, lines)
        assert c.pending() == b"", c.buf
        assert c.cmd(b"RSET")[0] == 250
        # Metacharacters in a valid quoted local part and parameters: accepted
        # as data, stored and logged escaped.
        sender = b'"a;rm -rf /\'$(id)`id`|x\\"--"@sender.test'
        code, lines = c.cmd(b"MAIL FROM:<" + sender + b"> BODY=8BITMIME")
        assert code == 250, lines
        code, lines = c.cmd(b"RCPT TO:<info@gw.test>")
        assert code == 250, lines
        assert c.cmd(b"DATA")[0] == 354
        code, lines = c.cmd(b"From: x@sender.test\r\nSubject: inj\r\n"
                            b"Message-ID: <inj@sender.test>\r\n\r\nbody\r\n.")
        assert code == 250, lines
        qid = re.search(rb"queued as (\w+)", lines[-1]).group(1).decode()
        c.cmd(b"HELO $(reboot);'--")  # metacharacters that pass HELO syntax or not
    finally:
        c.close()

    # The envelope: every record is one line of printable, encoded values.
    def env_path():
        for d in ("deferred", "active", "incoming"):
            p = os.path.join(gw.spool, d, qid)
            if os.path.exists(p):
                return p
    p = wait_until(env_path, 20, what=f"the envelope of {qid}")
    env = open(p, "rb").read()
    for ln in env.split(b"\n")[:-1]:
        assert all(0x20 <= b < 0x7f for b in ln), f"raw byte in envelope line {ln!r}"
        parts = ln.split(b" ")
        assert parts[0].isalpha() or parts[0].replace(b"_", b"").isalpha(), ln
        if parts[0] in (b"sender", b"srs_sender", b"helo", b"client_name"):
            # One value: the space in the sender is encoded, so it cannot
            # start a new field (metacharacters are plain data here).
            assert len(parts) == 2, f"value split into fields: {ln!r}"
    assert b"X-Injected" not in env
    # The activity log holds the sender as data (a SQL injection would have
    # broken the insert or the table).
    rows = gw.wait_activity(qid, "deferred", timeout=20)
    assert rows[0]["mail_from"] == sender.decode(), rows[0]
    # Delivered later: no injected header, one Received line from us.
    sink.set_mode("accept")
    [m] = sink.wait_for(1, timeout=30)
    assert m.msg.get("X-Injected") is None
    for k, v in m.msg.items():
        v = re.sub(r"\r\n[ \t]", " ", v)  # folding is fine; a bare CR or NUL is not
        assert "\r" not in v and "\n" not in v and "\x00" not in v, (k, v)
    bad = log_lines_clean(gw)
    assert not bad, f"log lines with raw bytes or injected lines: {bad[:5]}"
