"""smtpd conformance over raw sockets: ESMTP extensions, reply codes, RFC 5321
limits, pipelining, BDAT, STARTTLS (Python ssl and openssl s_client), SMTPUTF8,
SMTP smuggling, NUL, DSN parameters in the envelope, the Received header.

One gateway serves the whole module (starting one costs about a second)."""
import os
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from conftest import (DNS, GW_HOST, SANITIZER_RE, Gateway, Sink, free_ports, make_dir,
                      make_message, read_text, wait_until)

ESC_RE = re.compile(rb"^[245]\.\d{1,3}\.\d{1,3} ")
MAX_RCPT = 5
MAX_SIZE = 200000


# ---------------------------------------------------------------- raw client


class Raw:
    """A raw SMTP client: bytes out, replies in, nothing normalised."""

    def __init__(self, port, addr="127.0.0.1", greet=True, source=None):
        self.sock = socket.create_connection((addr, port), timeout=10,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        if greet:
            code, _ = self.reply()
            assert code == 220

    def send(self, data):
        self.sock.sendall(data)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """(code, [text lines]) of one reply, multi-line included."""
        lines = []
        while True:
            line = self._line()
            assert re.match(rb"^\d{3}[ -]", line), f"malformed reply line {line!r}"
            lines.append(line[4:])
            if line[3:4] == b" ":
                return int(line[:3]), lines

    def cmd(self, line):
        self.send(line + b"\r\n")
        return self.reply()

    def expect(self, line, code, esc=None):
        c, text = self.cmd(line)
        assert c == code, f"{line[:80]!r} -> {c} {text}, want {code}"
        if esc is not None:
            assert text[-1].startswith(esc.encode() + b" "), f"{line[:80]!r} -> {c} {text}"
        return text

    def closed(self, timeout=5):
        """True when the server closed the connection (after any pending replies)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def starttls(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname=GW_HOST)
        return self.sock

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def ehlo(c, name=b"client.sender.test"):
    code, lines = c.cmd(b"EHLO " + name)
    assert code == 250
    return [line.split(b" ")[0].upper() for line in lines[1:]]


def begin(c, rcpts=(b"alice@gw.test",), mail=b"MAIL FROM:<s@sender.test>"):
    ehlo(c)
    c.expect(mail, 250, "2.1.0")
    for r in rcpts:
        c.expect(b"RCPT TO:<" + r + b">", 250, "2.1.5")


# ---------------------------------------------------------------- fixtures


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", f"/CN={GW_HOST}"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


class Scene:
    pass


@pytest.fixture(scope="module")
def scene(mxf_bin, system_users, tmpbase):
    import tempfile
    base = make_dir(tempfile.mkdtemp(prefix="smtpd-conformance-", dir=tmpbase))
    dns_port = free_ports(1, udp=True)[0]
    sink_port = free_ports(1)[0]
    sc = Scene()
    sc.dns = DNS(os.path.join(base, "nsd"), dns_port)
    sc.dns.zone("dest.test", mx=[(10, "mx1.dest.test")], a={"mx1.dest.test": "127.0.0.2"})
    # sender.test's MX has no server: mail to it stays queued (deferred).
    sc.dns.zone("sender.test", mx=[(10, "mx.sender.test")], a={"mx.sender.test": "127.0.0.3"})
    sc.dns.start()
    sc.sink = Sink("127.0.0.2", sink_port).start()
    cert, key = make_cert(base)
    sc.gw = Gateway(mxf_bin, os.path.join(base, "gw"), sc.dns, sink_port, {
        "smtpd": {"tls_cert": cert, "tls_key": key, "max_recipients": str(MAX_RCPT),
                  "max_message_size": str(MAX_SIZE), "max_conn_per_ip": "0"},
    })
    try:
        sc.gw.start()
        gw = sc.gw
        gw.forward("alice@gw.test", "bob@dest.test")
        for i in range(1, MAX_RCPT + 2):
            gw.forward(f"r{i}@gw.test", "bob@dest.test")
        # bücher.test, stored as its A-label.
        gw.forward("info@xn--bcher-kva.test", "idn@dest.test")
        gw.forward("dsn@gw.test", "held@sender.test")
        yield sc
    finally:
        problems = []
        crashed = sc.gw.unexpected_restarts() if sc.gw.proc else {}
        if crashed:
            problems.append(f"daemons restarted: {crashed}")
        if sc.gw.stop() is None:
            problems.append("mxferryd did not exit within 5 s of SIGTERM")
        sc.gw.kill_all()
        sc.sink.stop()
        sc.dns.stop()
        if SANITIZER_RE.search(sc.gw.log_text()):
            problems.append(f"sanitizer report in {sc.gw.log}")
        if os.environ.get("MXF_E2E_KEEP") != "1":
            shutil.rmtree(base, ignore_errors=True)
        if problems:
            pytest.fail("; ".join(problems) + "\n" + sc.gw.log_text()[-5000:])


@pytest.fixture
def gw(scene, request):
    request.node._mxf_logs = [("mxferryd log", lambda: scene.gw.log_text()[-20000:])]
    return scene.gw


@pytest.fixture
def raw(gw):
    made = []

    def make(**kw):
        c = Raw(gw.smtp_port, **kw)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def sink_wait(sink, pred, timeout=20):
    """The first sink message satisfying pred."""
    def found():
        with sink.lock:
            return next((m for m in sink.messages if pred(m)), None)
    return wait_until(found, timeout, what="the message at the sink")


def marker():
    return f"m{time.monotonic_ns()}"


# ---------------------------------------------------------------- tests


def test_ehlo_advertises_every_extension(raw):
    c = raw()
    ext = ehlo(c)
    for e in (b"PIPELINING", b"SIZE", b"8BITMIME", b"SMTPUTF8", b"STARTTLS", b"CHUNKING",
              b"DSN", b"ENHANCEDSTATUSCODES"):
        assert e in ext, ext
    code, lines = c.cmd(b"EHLO x")
    assert any(line == f"SIZE {MAX_SIZE}".encode() for line in lines)
    # HELO: plain SMTP, one line.
    code, lines = c.cmd(b"HELO client.sender.test")
    assert code == 250 and len(lines) == 1


def test_reply_codes_and_enhanced_status(raw):
    c = raw()
    seen = []

    def ex(line, code, esc):
        seen.append(c.expect(line, code, esc))
    ex(b"MAIL FROM:<s@sender.test>", 503, "5.5.1")   # before EHLO
    ex(b"EHLO", 501, "5.5.4")
    ex(b"FOO bar", 500, "5.5.2")
    ehlo(c)
    ex(b"RCPT TO:<alice@gw.test>", 503, "5.5.1")     # before MAIL
    ex(b"DATA", 503, "5.5.1")
    ex(b"BDAT 0 LAST", 503, "5.5.1")
    ex(b"QUIT", 221, "2.0.0")
    c = raw()   # a fresh error count (10 errors are allowed per session)
    ehlo(c)
    ex(b"VRFY alice", 252, "2.5.2")
    ex(b"HELP", 214, "2.0.0")
    ex(b"NOOP", 250, "2.0.0")
    ex(b"MAIL FROM:s@sender.test", 501, "5.5.4")
    ex(b"MAIL FROM:<s@sender.test> X-FOO=1", 555, "5.5.4")
    ex(b"MAIL FROM:<s@sender.test> SIZE=%d" % (MAX_SIZE + 1), 552, "5.3.4")
    ex(b"MAIL FROM:<s@sender.test> SIZE=100", 250, "2.1.0")
    ex(b"MAIL FROM:<s@sender.test>", 503, "5.5.1")   # nested
    ex(b"DATA", 554, "5.5.1")                        # no recipients
    ex(b"RCPT TO:<nobody@gw.test>", 550, "5.1.1")
    ex(b"RCPT TO:<x@elsewhere.test>", 550, "5.7.1")
    ex(b"RSET", 250, "2.0.0")
    c.expect(b"STARTTLS now", 501, "5.5.4")
    ex(b"QUIT", 221, "2.0.0")
    assert c.closed()


def test_too_many_recipients(raw):
    c = raw()
    begin(c, rcpts=[f"r{i}@gw.test".encode() for i in range(1, MAX_RCPT + 1)])
    c.expect(f"RCPT TO:<r{MAX_RCPT + 1}@gw.test>".encode(), 452, "4.5.3")


def test_too_many_errors_disconnects(raw):
    c = raw()
    for _ in range(10):
        c.expect(b"BOGUS", 500, "5.5.2")
    c.expect(b"BOGUS", 421, "4.7.0")
    assert c.closed()


def test_rfc5321_length_limits(raw):
    c = raw()
    ehlo(c)
    # Command line: 512 octets with CRLF.
    ok = b"NOOP " + b"x" * (512 - 2 - 5)
    c.expect(ok, 250)
    c.expect(ok + b"x", 500, "5.5.2")
    c.expect(b"NOOP", 250)  # still in step after the skipped line
    # Local part 64, domain 255, path 256.
    c.expect(b"MAIL FROM:<" + b"l" * 64 + b"@sender.test>", 250)
    c.expect(b"RSET", 250)
    c.expect(b"MAIL FROM:<" + b"l" * 65 + b"@sender.test>", 501, "5.1.7")
    label = b"d" * 63
    dom255 = b".".join([label] * 3) + b"." + b"e" * 63   # 255 octets
    assert len(dom255) == 255
    c.expect(b"MAIL FROM:<>", 250)
    c.expect(b"RCPT TO:<a@" + dom255 + b"x>", 501, "5.1.3")    # domain 256
    c.expect(b"RCPT TO:<" + b"a" * 2 + b"@" + dom255 + b">", 501, "5.1.3")  # path > 256


def test_text_line_limit_and_size(raw, gw):
    c = raw()
    begin(c)
    c.expect(b"DATA", 354)
    c.send(b"Subject: long\r\n\r\n" + b"x" * 998 + b"\r\n.\r\n")
    code, text = c.reply()
    assert code == 250, text
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    c.expect(b"RCPT TO:<alice@gw.test>", 250)
    c.expect(b"DATA", 354)
    # RFC 5321 4.5.3.1.6 is a floor (what must be accepted), not a ceiling:
    # a longer line is accepted as is, and logged.
    c.send(b"Subject: long\r\n\r\n" + b"x" * 2000 + b"\r\n.\r\n")
    code, text = c.reply()
    assert code == 250, text
    wait_until(lambda: "1 line longer than 998 octets" in gw.log_text(), 5, what="log line")
    # Over the SIZE limit: read to the end, refused, nothing kept.
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    c.expect(b"RCPT TO:<alice@gw.test>", 250)
    c.expect(b"DATA", 354)
    c.send((b"y" * 500 + b"\r\n") * (MAX_SIZE // 500 + 10) + b".\r\n")
    code, text = c.reply()
    assert code == 552 and text[0].startswith(b"5.3.4"), text
    c.expect(b"NOOP", 250)


def test_whole_transaction_pipelined_in_one_write(raw, gw, scene):
    m = marker()
    c = raw()
    body = make_message("s@sender.test", "alice@gw.test", subject=m)
    c.send(b"EHLO client.sender.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<alice@gw.test>\r\n"
           b"RCPT TO:<nobody@gw.test>\r\nDATA\r\n" + body + b".\r\nNOOP\r\nQUIT\r\n")
    codes = [c.reply()[0] for _ in range(8)]
    assert codes == [250, 250, 250, 550, 354, 250, 250, 221], codes
    assert c.closed()
    got = sink_wait(scene.sink, lambda x: x.msg.get("Subject") == m)
    assert got.rcpt_tos == ["bob@dest.test"]


def test_bdat_several_chunks_with_last(raw, scene):
    m = marker()
    msg = make_message("s@sender.test", "alice@gw.test", subject=m,
                       body="first\n.dot line stays as is\nlast\n")
    parts = [msg[:10], msg[10:57], msg[57:]]
    c = raw()
    begin(c)
    # Pipelined: every chunk and its command in one write.
    data = b"".join(b"BDAT %d%s\r\n" % (len(p), b" LAST" if i == len(parts) - 1 else b"") + p
                    for i, p in enumerate(parts))
    c.send(data)
    for p in parts[:-1]:
        code, text = c.reply()
        assert code == 250 and text[0] == b"2.0.0 Ok: %d octets received" % len(p), text
    code, text = c.reply()
    assert code == 250 and b"queued as" in text[0], text
    got = sink_wait(scene.sink, lambda x: x.msg.get("Subject") == m)
    assert got.data.endswith(msg[msg.index(b"\r\n\r\n"):])
    assert b"\r\n.dot line stays as is\r\n" in got.data
    # BDAT and DATA do not mix; a refused BDAT's octets are read past.
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    c.expect(b"RCPT TO:<alice@gw.test>", 250)
    c.send(b"BDAT 4\r\nab\r\n")
    assert c.reply()[0] == 250
    c.expect(b"DATA", 503, "5.5.1")
    c.expect(b"RSET", 250)
    c.send(b"BDAT 9\r\nQUIT\r\nxyz")   # no transaction: 503, and "QUIT..." is chunk data
    assert c.reply()[0] == 503
    c.expect(b"NOOP", 250)
    # Bare LF in a chunk: the message is refused at LAST.
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    c.expect(b"RCPT TO:<alice@gw.test>", 250)
    bad = b"Subject: x\r\n\r\nsmuggle\n.\nMAIL FROM:<e@x>\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(bad) + bad)
    code, text = c.reply()
    assert code == 554 and text[0].startswith(b"5.6.0"), text


def test_starttls_python_ssl_and_received_header(raw, scene):
    m = marker()
    c = raw()
    assert b"STARTTLS" in ehlo(c)
    c.expect(b"STARTTLS", 220, "2.0.0")
    tls = c.starttls()
    assert tls.version() in ("TLSv1.2", "TLSv1.3")
    # State reset: EHLO again is required, and STARTTLS is no longer offered.
    c.expect(b"MAIL FROM:<s@sender.test>", 503, "5.5.1")
    assert b"STARTTLS" not in ehlo(c)
    c.expect(b"STARTTLS", 503, "5.5.1")
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    c.expect(b"RCPT TO:<alice@gw.test>", 250)
    c.expect(b"DATA", 354)
    c.send(make_message("s@sender.test", "alice@gw.test", subject=m) + b".\r\n")
    code, text = c.reply()
    assert code == 250, text
    c.expect(b"QUIT", 221)
    got = sink_wait(scene.sink, lambda x: x.msg.get("Subject") == m)
    rec = got.header_all("Received")
    ours = [r for r in rec if "(mxferry)" in r]
    assert ours, rec
    assert "with ESMTPS id" in ours[0], ours
    cipher = tls.cipher()[0]
    assert f"(using {tls.version()} with cipher {cipher} (" in ours[0], ours


def test_starttls_with_openssl_s_client(gw):
    p = subprocess.Popen(["openssl", "s_client", "-starttls", "smtp", "-connect",
                          f"127.0.0.1:{gw.smtp_port}", "-quiet", "-crlf"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)   # the handshake
        for line in (b"EHLO s-client.test\n", b"NOOP\n", b"QUIT\n"):
            p.stdin.write(line)
            p.stdin.flush()
            time.sleep(0.2)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert b"250-" + GW_HOST.encode() in out or b"250 " + GW_HOST.encode() in out, out
    assert b"250 2.0.0 Ok" in out and b"221 2.0.0" in out, out
    assert b"STARTTLS" not in out.split(b"250-" + GW_HOST.encode(), 1)[-1], out


def test_commands_pipelined_after_starttls_are_discarded(raw, gw):
    c = raw()
    ehlo(c)
    # CVE-2011-0411: the injected commands ride in the same plaintext write.
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@inject.test>\r\nRCPT TO:<alice@gw.test>\r\n")
    code, text = c.reply()
    assert code == 220, text
    assert c.buf == b"", c.buf   # nothing answered for the injected lines
    c.starttls()
    # Had they been executed after the handshake, NOOP would not be the first
    # reply and EHLO would not be required for MAIL.
    c.expect(b"NOOP", 250, "2.0.0")
    c.expect(b"RCPT TO:<alice@gw.test>", 503, "5.5.1")
    wait_until(lambda: "bytes pipelined after STARTTLS" in gw.log_text(), 5,
               what="the discard log line")


def test_smtputf8_ulabel_domain_routed_to_alabel_rule(raw, scene):
    m = marker()
    c = raw()
    ehlo(c)
    # Without SMTPUTF8 a UTF-8 address is refused.
    c.expect("MAIL FROM:<jörg@sender.test>".encode(), 553, "5.6.7")
    c.expect("MAIL FROM:<jörg@sender.test> SMTPUTF8".encode(), 250, "2.1.0")
    c.expect("RCPT TO:<info@bücher.test>".encode(), 250, "2.1.5")
    c.expect(b"DATA", 354)
    c.send(make_message("jörg@sender.test", "info@bücher.test", subject=m) + b".\r\n")
    code, text = c.reply()
    assert code == 250, text
    got = sink_wait(scene.sink, lambda x: x.msg.get("Subject") == m)
    assert got.rcpt_tos == ["idn@dest.test"]
    ours = [r for r in got.header_all("Received") if "(mxferry)" in r]
    assert "with UTF8SMTP id" in ours[0], ours


SMUGGLE = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\r.\r\n",
           b"\r\n.\r", b"\r\n.\r\r\n", b"\r\n\0.\r\n"]


@pytest.mark.parametrize("variant", SMUGGLE, ids=[repr(v)[2:-1] for v in SMUGGLE])
def test_smuggling_variant_refused(raw, gw, variant):
    c = raw()
    begin(c)
    c.expect(b"DATA", 354)
    # If the variant ended the data, the smuggled transaction would be
    # answered: 250, 250, 250, 354, 250.
    c.send(b"Subject: smuggle\r\n\r\nbody" + variant +
           b"MAIL FROM:<evil@inject.test>\r\nRCPT TO:<alice@gw.test>\r\nDATA\r\n"
           b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
    code, text = c.reply()
    assert code == 554 and text[0].startswith(b"5.6.0"), (code, text)
    c.expect(b"NOOP", 250)   # exactly one reply for the whole stream
    assert c.buf == b""


@pytest.mark.parametrize("where", ["header-lf", "header-cr", "body-lf", "body-cr"])
def test_bare_cr_lf_in_headers_and_body(raw, where):
    bad = b"\n" if where.endswith("lf") else b"\r"
    head, body = b"Subject: a\r\nX-A: 1", b"line one\r\nline two"
    if where.startswith("header"):
        head = head.replace(b"\r\nX-A", bad + b"X-A")
    else:
        body = body.replace(b"\r\nline two", bad + b"line two")
    c = raw()
    begin(c)
    c.expect(b"DATA", 354)
    c.send(head + b"\r\n\r\n" + body + b"\r\n.\r\n")
    code, text = c.reply()
    assert code == 554 and text[0].startswith(b"5.6.0"), text


def test_bare_cr_lf_and_nul_in_commands(raw):
    c = raw()
    ehlo(c)
    c.send(b"NOOP\rRSET\r\n")            # bare CR: no line end, the line is refused
    code, text = c.reply()
    assert code == 500 and b"bare CR" in text[0], text
    c.expect(b"NOOP\0", 500, "5.5.2")
    c.expect(b"MAIL FROM:<a\0b@sender.test>", 500, "5.5.2")
    c.expect(b"NOOP", 250)
    # Bare LF: the line before it is refused (never executed), the rest is
    # the next line.
    c.send(b"MAIL FROM:<a@sender.test>\nRSET\r\n")
    code, text = c.reply()
    assert code == 500 and b"bare LF" in text[0], text
    assert c.reply()[0] == 250
    c.expect(b"RCPT TO:<alice@gw.test>", 503, "5.5.1")   # no MAIL was taken


def test_nul_in_data_refused(raw):
    c = raw()
    begin(c)
    c.expect(b"DATA", 354)
    c.send(b"Subject: nul\r\n\r\na\0b\r\n.\r\n")
    code, text = c.reply()
    assert code == 554 and b"NUL" in text[0], text


def test_overlong_command_lines(raw):
    c = raw()
    ehlo(c)
    c.send(b"MAIL FROM:<" + b"a" * 5000 + b"@sender.test>\r\nNOOP\r\n")
    code, text = c.reply()
    assert code == 500 and text[0].startswith(b"5.5.2"), text
    assert c.reply()[0] == 250


def find_envelope(gw, qid, timeout=10):
    def found():
        for d in ("incoming", "active", "deferred", "hold"):
            p = os.path.join(gw.spool, d, qid)
            if os.path.exists(p):
                with open(p, "rb") as f:
                    return f.read()
        return None
    return wait_until(found, timeout, what=f"envelope {qid}")


def test_dsn_parameters_stored_in_envelope(raw, gw):
    c = raw()
    ehlo(c)
    c.expect(b"MAIL FROM:<s@sender.test> RET=HDRS ENVID=QQ+2Bid1", 250)
    c.expect(b"RCPT TO:<dsn@gw.test> NOTIFY=failure,delay ORCPT=rfc822;orig+2Bx@gw.test", 250)
    c.expect(b"RCPT TO:<alice@gw.test> NOTIFY=NEVER", 250)
    c.expect(b"DATA", 354)
    c.send(make_message("s@sender.test", "dsn@gw.test") + b".\r\n")
    code, text = c.reply()
    assert code == 250, text
    qid = re.search(rb"queued as (\S+)", text[0]).group(1).decode()
    env = find_envelope(gw, qid).decode()
    lines = env.splitlines()
    assert "ret HDRS" in lines and "envid QQ+2Bid1" in lines, env
    rc = {ln.split()[2]: ln.split() for ln in lines if ln.startswith("rcpt ")}
    # rcpt ORIG DEST RULE ACTION STATUS ATTEMPTS NEXT_TRY REPLY RELAY NOTIFY ORCPT
    assert rc["held@sender.test"][-2:] == ["FAILURE,DELAY", "rfc822;orig+2Bx@gw.test"], env
    # No ORCPT given: a forwarded recipient gets the address it was sent to.
    assert rc["bob@dest.test"][-2:] == ["NEVER", "rfc822;alice@gw.test"], env
