"""deliverd end to end (issue 5): RFC 5321 §5 host order, IPv6 first, 7-bit
conversion, SIZE, STARTTLS, a dropped DATA, connection reuse.

Sinks here are aiosmtpd servers that can withhold or add EHLO keywords, use TLS
and count connections; RawServer plays the misbehaving hosts."""
import email
import email.policy
import os
import re
import select
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest
from aiosmtpd.controller import Controller

from conftest import Sink, _SinkHandler, add_log, make_message, wait_until

SENDER = "alice@sender.test"


class ExtSink(Sink):
    """Sink with EHLO keywords withheld (drop) or added (add), an optional SIZE
    limit and TLS context; counts connections and TLS sessions."""

    def __init__(self, addr, port, drop=(), add=(), size=None, tls=None):
        super().__init__(addr, port)
        self.drop = {d.upper() for d in drop}
        self.add = list(add)
        self.size = size
        self.tls = tls
        self.connections = 0
        self.tls_messages = 0

    def start(self):
        sink = self

        class Handler(_SinkHandler):
            async def handle_EHLO(self, server, session, envelope, hostname, responses):
                session.host_name = hostname
                kws = [r[4:] for r in responses[1:-1]]
                kws = [k for k in kws if k.split(" ")[0].upper() not in sink.drop] + sink.add
                return ([responses[0]] + ["250-" + k for k in kws] + [responses[-1]])

            async def handle_DATA(self, server, session, envelope):
                if session.ssl is not None:
                    with sink.lock:
                        sink.tls_messages += 1
                return await super().handle_DATA(server, session, envelope)

        class Counting(Controller):
            def factory(self):
                with sink.lock:
                    sink.connections += 1
                return super().factory()

        kw = {}
        if self.size is not None:
            kw["data_size_limit"] = self.size
        if self.tls is not None:
            kw["tls_context"] = self.tls
        self.controller = Counting(Handler(self), hostname=self.addr, port=self.port,
                                   server_hostname=f"sink-{self.addr}", ready_timeout=10,
                                   decode_data=False, **kw)
        self.controller.start()
        # The controller's own readiness probe is a connection too.
        with self.lock:
            self.connections = 0
        return self


class RawServer:
    """A TCP server on addr:port running talk(conn, n) per connection (n from 1)
    in a thread; for the hosts aiosmtpd cannot imitate."""

    def __init__(self, addr, port, talk):
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(16)
        self.talk = talk
        self.connections = 0
        self.events = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                c.settimeout(10)
                self.talk(self, c, self.connections)
            except OSError:
                pass
            finally:
                c.close()

    def stop(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


def dsn_peer_talk(seen):
    """A RawServer talk function for a host offering DSN that accepts all;
    MAIL and RCPT lines go to seen, "DATA" once the message is in."""
    def talk(srv, c, n):
        f = c.makefile("rb")
        c.sendall(b"220 mx.dsn.test ESMTP\r\n")
        while True:
            line = f.readline()
            if not line:
                return
            cmd = line[:4].upper()
            if cmd == b"EHLO":
                c.sendall(b"250-mx.dsn.test\r\n250-8BITMIME\r\n250 DSN\r\n")
            elif cmd in (b"MAIL", b"RCPT"):
                seen.append(line.rstrip(b"\r\n").decode())
                c.sendall(b"250 ok\r\n")
            elif cmd == b"DATA":
                c.sendall(b"354 go on\r\n")
                while f.readline() not in (b".\r\n", b""):
                    pass
                seen.append("DATA")
                c.sendall(b"250 2.0.0 queued\r\n")
            elif cmd == b"QUIT":
                c.sendall(b"221 bye\r\n")
                return
            else:
                c.sendall(b"250 ok\r\n")
    return talk


@pytest.fixture
def ext_sinks(sink_port, request):
    started = []

    def make(addr, **kw):
        s = ExtSink(addr, sink_port, **kw).start()
        started.append(s)
        add_log(request, f"sink {addr}", s.summary)
        return s
    yield make
    for s in started:
        s.stop()


@pytest.fixture
def raw_servers(sink_port):
    started = []

    def make(addr, talk):
        r = RawServer(addr, sink_port, talk)
        started.append(r)
        return r
    yield make
    for r in started:
        r.stop()


def base_zones(dns):
    dns.zone("sender.test", mx=[(10, "mx.sender.test")], a={"mx.sender.test": "127.0.0.3"})


def deliver_log(gw, qid):
    return [line for line in gw.log_text().splitlines() if qid in line and "deliverd" in line]


def wait_log(gw, pattern, timeout=20):
    rx = re.compile(pattern)
    return wait_until(lambda: rx.search(gw.log_text()), timeout,
                      what=lambda: f"log line matching {pattern!r}")


# ------------------------------------------------------------ host choice


def test_mx_order_refused_then_421_then_accepted(dns_server, ext_sinks, raw_servers, gateway,
                                                 sink_port):
    base_zones(dns_server)
    dns_server.zone("order.test", mx=[(10, "mx1.order.test"), (20, "mx2.order.test"),
                                      (30, "mx3.order.test")],
                    a={"mx1.order.test": "127.0.0.11", "mx2.order.test": "127.0.0.12",
                       "mx3.order.test": "127.0.0.13"})

    def busy(srv, c, n):
        c.sendall(b"421 4.3.2 mx2 is busy\r\n")
    r421 = raw_servers("127.0.0.12", busy)
    good = ext_sinks("127.0.0.13")
    gw = gateway()
    gw.forward("o@gw.test", "bob@order.test")
    qid = gw.send_retrying(SENDER, "o@gw.test", make_message(SENDER, "o@gw.test"))
    [m] = good.wait_for(1)
    assert m.rcpt_tos == ["bob@order.test"]
    assert r421.connections == 1
    wait_log(gw, re.escape(qid) + r".*relay=mx3\.order\.test\[127\.0\.0\.13\].*status=sent")
    lines = deliver_log(gw, qid)
    i1 = next(i for i, l in enumerate(lines)
              if f"mx1.order.test[127.0.0.11]:{sink_port}: Connection refused" in l)
    i2 = next(i for i, l in enumerate(lines)
              if "mx2.order.test[127.0.0.12]" in l and "greeting: 421" in l)
    i3 = next(i for i, l in enumerate(lines) if "status=sent" in l)
    assert i1 < i2 < i3, lines


def test_equal_preference_spreads(dns_server, ext_sinks, gateway):
    base_zones(dns_server)
    dns_server.zone("eq.test", mx=[(10, "a.eq.test"), (10, "b.eq.test")],
                    a={"a.eq.test": "127.0.0.21", "b.eq.test": "127.0.0.22"})
    a, b = ext_sinks("127.0.0.21"), ext_sinks("127.0.0.22")
    # No reuse: every message chooses its host afresh.
    gw = gateway({"deliverd": {"conn_cache_time": "0"}})
    gw.forward("e@gw.test", "bob@eq.test")
    n = 16
    gw.send_retrying(SENDER, "e@gw.test", make_message(SENDER, "e@gw.test", subject="m0"))
    s = gw.smtp()
    for i in range(1, n):
        s.sendmail(SENDER, ["e@gw.test"], make_message(SENDER, "e@gw.test", subject=f"m{i}"))
    s.quit()
    wait_until(lambda: len(a.messages) + len(b.messages) >= n, 30, what="all messages")
    # Random order among equals: both get some (all on one: p = 2^-15).
    assert a.messages and b.messages, (len(a.messages), len(b.messages))


def test_implicit_null_cname_and_unresolvable_mx(dns_server, ext_sinks, gateway):
    base_zones(dns_server)
    dns_server.zone("implicit.test", a={"implicit.test": "127.0.0.31"})
    dns_server.zone("nullmx.test", mx=[(0, ".")], a={"nullmx.test": "127.0.0.32"})
    # An MX name that is a CNAME into another zone (the server answers with
    # the CNAME alone: deliverd follows it), and an MX name that does not
    # exist ahead of one that works (skipped, RFC 5321 §5.1).
    dns_server.zone("cname.test", mx=[(10, "alias.cname.test")],
                    cname={"alias.cname.test": "real.target.test"})
    dns_server.zone("target.test", a={"real.target.test": "127.0.0.33"})
    dns_server.zone("unres.test", mx=[(10, "nowhere.unres.test"), (20, "mx.unres.test")],
                    a={"mx.unres.test": "127.0.0.34"})
    imp = ext_sinks("127.0.0.31")
    nul = ext_sinks("127.0.0.32")
    cn = ext_sinks("127.0.0.33")
    unres = ext_sinks("127.0.0.34")
    gw = gateway()
    gw.forward("i@gw.test", "bob@implicit.test")
    gw.forward("n@gw.test", "bob@nullmx.test")
    gw.forward("c@gw.test", "bob@cname.test")
    gw.forward("u@gw.test", "bob@unres.test")
    gw.send_retrying(SENDER, "i@gw.test", make_message(SENDER, "i@gw.test"))
    qn = gw.send_retrying(SENDER, "n@gw.test", make_message(SENDER, "n@gw.test"))
    gw.send_retrying(SENDER, "c@gw.test", make_message(SENDER, "c@gw.test"))
    qu = gw.send_retrying(SENDER, "u@gw.test", make_message(SENDER, "u@gw.test"))
    [m] = imp.wait_for(1)
    assert m.rcpt_tos == ["bob@implicit.test"]
    [m] = cn.wait_for(1)
    assert m.rcpt_tos == ["bob@cname.test"]
    [m] = unres.wait_for(1)
    assert m.rcpt_tos == ["bob@unres.test"]
    wait_log(gw, re.escape(qu) + r": no address for nowhere\.unres\.test")
    wait_log(gw, re.escape(qn) + r".*to=<bob@nullmx\.test>.*dsn=5\.1\.10, status=bounced")
    assert nul.connections == 0 and not nul.rcpt_attempts


def test_aaaa_preferred_over_a(dns_server, ext_sinks, gateway):
    base_zones(dns_server)
    dns_server.zone("v6.test", mx=[(10, "mx.v6.test")],
                    a={"mx.v6.test": "127.0.0.41"}, aaaa={"mx.v6.test": "::1"})
    v6, v4 = ext_sinks("::1"), ext_sinks("127.0.0.41")
    gw = gateway()
    gw.forward("v@gw.test", "bob@v6.test")
    qid = gw.send_retrying(SENDER, "v@gw.test", make_message(SENDER, "v@gw.test"))
    v6.wait_for(1)
    assert not v4.messages and v4.connections == 0
    wait_log(gw, re.escape(qid) + r".*relay=mx\.v6\.test\[::1\]:\d+, family=ipv6,.*status=sent")


def test_a_used_when_aaaa_refuses(dns_server, ext_sinks, gateway, sink_port):
    base_zones(dns_server)
    dns_server.zone("v6b.test", mx=[(10, "mx.v6b.test")],
                    a={"mx.v6b.test": "127.0.0.42"}, aaaa={"mx.v6b.test": "::1"})
    v4 = ext_sinks("127.0.0.42")  # nothing listens on [::1]
    gw = gateway()
    gw.forward("v@gw.test", "bob@v6b.test")
    qid = gw.send_retrying(SENDER, "v@gw.test", make_message(SENDER, "v@gw.test"))
    v4.wait_for(1)
    wait_log(gw, re.escape(qid) + r".*relay=mx\.v6b\.test\[127\.0\.0\.42\]:\d+, family=ipv4")
    lines = deliver_log(gw, qid)
    assert any(f"connect to mx.v6b.test[::1]:{sink_port}: Connection refused" in l
               for l in lines), lines


def test_relayhost(dns_server, ext_sinks, gateway, sink_port):
    """[deliverd] relayhost: every message goes there, whatever the MX says."""
    base_zones(dns_server)
    dns_server.zone("far.test", mx=[(10, "mx.far.test")], a={"mx.far.test": "127.0.0.51"})
    mx, relay = ext_sinks("127.0.0.51"), ext_sinks("127.0.0.52")
    gw = gateway({"deliverd": {"relayhost": f"[127.0.0.52]:{sink_port}"}})
    gw.forward("r@gw.test", "bob@far.test")
    gw.send_retrying(SENDER, "r@gw.test", make_message(SENDER, "r@gw.test"))
    [m] = relay.wait_for(1)
    assert m.rcpt_tos == ["bob@far.test"]
    assert mx.connections == 0


def test_transport_override_from_rules_db(dns_server, ext_sinks, gateway, sink_port):
    """A per-domain transport in rules.db (mxferryctl transport set) replaces the
    MX lookup for that domain only: by address literal, and by host name."""
    base_zones(dns_server)
    dns_server.zone("tr.test", mx=[(10, "mx.tr.test")], a={"mx.tr.test": "127.0.0.61"})
    dns_server.zone("tr2.test", mx=[(10, "mx.tr2.test")],
                    a={"mx.tr2.test": "127.0.0.64", "hop.tr2.test": "127.0.0.63"})
    dns_server.zone("plain.test", mx=[(10, "mx.plain.test")], a={"mx.plain.test": "127.0.0.65"})
    mx, hop = ext_sinks("127.0.0.61"), ext_sinks("127.0.0.62")
    mx2, hop2 = ext_sinks("127.0.0.64"), ext_sinks("127.0.0.63")
    plain = ext_sinks("127.0.0.65")
    gw = gateway()
    gw.forward("t1@gw.test", "bob@tr.test")
    gw.forward("t2@gw.test", "bob@tr2.test")
    gw.forward("t3@gw.test", "bob@plain.test")
    rc, out, err = gw.ctl("transport", "set", "tr.test", f"[127.0.0.62]:{sink_port}")
    assert rc == 0, err
    rc, out, err = gw.ctl("transport", "set", "tr2.test", f"hop.tr2.test:{sink_port}")
    assert rc == 0, err
    for n in ("t1", "t2", "t3"):
        gw.send_retrying(SENDER, f"{n}@gw.test", make_message(SENDER, f"{n}@gw.test"))
    [m] = hop.wait_for(1)
    assert m.rcpt_tos == ["bob@tr.test"]
    [m] = hop2.wait_for(1)
    assert m.rcpt_tos == ["bob@tr2.test"]
    plain.wait_for(1)  # other domains still follow their MX
    assert mx.connections == 0 and mx2.connections == 0


# ------------------------------------------------------------ the SMTP client


TEXT = "Grüße aus Köln — 8-bit text, 日本語.\n.a dot line\nLast line.\n"


def multipart_8bit(to):
    boundary = "b0undary"
    lines = [f"From: <{SENDER}>", f"To: <{to}>", "Subject: Grüße multipart",
             "Message-ID: <mp.1@sender.test>", "MIME-Version: 1.0",
             f'Content-Type: multipart/mixed; boundary="{boundary}"', "",
             f"--{boundary}", "Content-Type: text/plain; charset=utf-8",
             "Content-Transfer-Encoding: 8bit", "", TEXT.rstrip("\n").replace("\n", "\r\n"),
             f"--{boundary}", "Content-Type: text/plain; charset=iso-8859-1",
             "Content-Transfer-Encoding: 8bit", "", "Stra\xdfe",
             f"--{boundary}--", ""]
    return "\r\n".join(lines).encode("utf-8").replace(b"Stra\xc3\x9fe", b"Stra\xdfe")


def nonmime_8bit(to):
    lines = [f"From: <{SENDER}>", f"To: <{to}>", "Subject: plain", "Message-ID: <nm.1@sender.test>",
             "", TEXT.replace("\n", "\r\n")]
    return "\r\n".join(lines).encode("utf-8")


def crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def assert_7bit(data):
    bad = [i for i, c in enumerate(data) if c >= 0x80]
    assert not bad, data[max(0, bad[0] - 60):bad[0] + 60]


def test_8bit_converted_for_7bit_peer(dns_server, ext_sinks, gateway):
    base_zones(dns_server)
    dns_server.zone("seven.test", mx=[(10, "mx.seven.test")], a={"mx.seven.test": "127.0.0.61"})
    dns_server.zone("eight.test", mx=[(10, "mx.eight.test")], a={"mx.eight.test": "127.0.0.62"})
    seven = ext_sinks("127.0.0.61", drop=["8BITMIME"])
    eight = ext_sinks("127.0.0.62")
    gw = gateway()
    gw.forward("s@gw.test", "bob@seven.test")
    gw.forward("e@gw.test", "bob@eight.test")
    gw.send_retrying(SENDER, "s@gw.test", make_message(SENDER, "s@gw.test", subject="Grüße", body=TEXT))
    gw.send_retrying(SENDER, "s@gw.test", multipart_8bit("s@gw.test"))
    gw.send_retrying(SENDER, "s@gw.test", nonmime_8bit("s@gw.test"))
    original = make_message(SENDER, "e@gw.test", body=TEXT)
    gw.send_retrying(SENDER, "e@gw.test", original)

    msgs = seven.wait_for(3)
    by_subject = {}
    for m in msgs:
        assert_7bit(m.data)
        assert not any(o.upper().startswith("BODY=8BITMIME") for o in m.mail_options)
        p = email.message_from_bytes(m.data, policy=email.policy.default)
        assert not p.defects, p.defects
        by_subject[str(p["subject"])] = p
    assert set(by_subject) == {"Grüße", "Grüße multipart", "plain"}, by_subject.keys()

    single = by_subject["Grüße"]
    assert single["Content-Transfer-Encoding"].lower() in ("quoted-printable", "base64")
    assert single.get_content() == crlf(TEXT)

    mp = by_subject["Grüße multipart"]
    parts = [p for p in mp.walk() if not p.is_multipart()]
    assert len(parts) == 2
    assert parts[0].get_content() == crlf(TEXT.rstrip("\n"))
    assert parts[1].get_content() == "Straße"
    for p in parts:
        assert p["Content-Transfer-Encoding"].lower() in ("quoted-printable", "base64")

    plain = by_subject["plain"]
    assert plain.get_content_type() == "text/plain"
    assert plain.get_content_charset() == "utf-8"
    assert plain["Content-Transfer-Encoding"].lower() == "quoted-printable"
    assert plain["MIME-Version"] == "1.0"
    assert plain.get_content() == crlf(TEXT)

    # A peer with 8BITMIME gets the message unchanged, with BODY=8BITMIME.
    [m] = eight.wait_for(1)
    assert "BODY=8BITMIME" in [o.upper() for o in m.mail_options]
    assert m.data.endswith(original)


def test_size_limit_fails_without_sending(dns_server, ext_sinks, gateway):
    base_zones(dns_server)
    dns_server.zone("small.test", mx=[(10, "mx.small.test")], a={"mx.small.test": "127.0.0.71"})
    small = ext_sinks("127.0.0.71", size=2000)
    gw = gateway()
    gw.forward("s@gw.test", "bob@small.test")
    qid = gw.send_retrying(SENDER, "s@gw.test", make_message(SENDER, "s@gw.test", body=("x" * 70 + "\n") * 80))
    wait_log(gw, re.escape(qid) + r".*to=<bob@small\.test>.*dsn=5\.3\.4, status=bounced "
             r"\(552 message size \d+ exceeds size limit 2000")
    assert not small.rcpt_attempts and not small.messages
    gw.wait_activity(qid, "delivery_failed")


@pytest.fixture
def self_signed(workdir):
    key, crt = os.path.join(workdir, "sink.key"), os.path.join(workdir, "sink.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=mx.tls.test"],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    return ctx


def test_starttls_to_self_signed_peer(dns_server, ext_sinks, gateway, self_signed):
    base_zones(dns_server)
    dns_server.zone("tls.test", mx=[(10, "mx.tls.test")], a={"mx.tls.test": "127.0.0.81"})
    sink = ext_sinks("127.0.0.81", tls=self_signed)
    gw = gateway()
    gw.forward("t@gw.test", "bob@tls.test")
    qid = gw.send_retrying(SENDER, "t@gw.test", make_message(SENDER, "t@gw.test"))
    sink.wait_for(1)
    assert sink.tls_messages == 1
    # Opportunistic: delivered although the certificate does not verify,
    # and the log says what was negotiated.
    wait_log(gw, r"Unverified TLS connection established to mx\.tls\.test\[127\.0\.0\.81\]:\d+: "
             r"TLSv1\.[23] with cipher \S+")
    wait_log(gw, re.escape(qid) + r".*tls=TLSv1\.[23]/\S+/verified=no.*status=sent")


def test_drop_mid_data_deferred_then_sent(dns_server, ext_sinks,
                                                                raw_servers, gateway):
    base_zones(dns_server)
    dns_server.zone("drop.test", mx=[(10, "mx.drop.test")], a={"mx.drop.test": "127.0.0.91"})
    dropped = threading.Event()

    def drop_in_data(srv, c, n):
        f = c.makefile("rb")
        c.sendall(b"220 mx.drop.test ESMTP\r\n")
        while True:
            line = f.readline()
            if not line:
                return
            cmd = line[:4].upper()
            if cmd == b"EHLO":
                c.sendall(b"250-mx.drop.test\r\n250 8BITMIME\r\n")
            elif cmd in (b"MAIL", b"RCPT", b"RSET"):
                c.sendall(b"250 ok\r\n")
            elif cmd == b"DATA":
                c.sendall(b"354 go on\r\n")
                f.readline()  # a little of the message, then gone
                dropped.set()
                return
            else:
                c.sendall(b"502 no\r\n")
    raw = raw_servers("127.0.0.91", drop_in_data)
    gw = gateway()
    gw.forward("d@gw.test", "bob@drop.test")
    qid = gw.send_retrying(SENDER, "d@gw.test", make_message(SENDER, "d@gw.test"))
    assert dropped.wait(20)
    gw.wait_activity(qid, "deferred")
    wait_log(gw, re.escape(qid) + r".*dsn=4\.4\.2, status=deferred \(451 lost connection with "
             r"mx\.drop\.test\[127\.0\.0\.91\] while (sending message body|waiting for the reply)")
    raw.stop()
    sink = ext_sinks("127.0.0.91")
    [m] = sink.wait_for(1, timeout=30)
    assert m.rcpt_tos == ["bob@drop.test"]
    gw.wait_activity(qid, "forwarded")


def test_connection_reuse(dns_server, ext_sinks, gateway):
    base_zones(dns_server)
    dns_server.zone("reuse.test", mx=[(10, "mx.reuse.test")], a={"mx.reuse.test": "127.0.0.101"})
    sink = ext_sinks("127.0.0.101", add=["PIPELINING"])
    gw = gateway({"deliverd": {"dest_concurrency": "5"}})
    gw.forward("r@gw.test", "bob@reuse.test")
    n = 100
    t0 = time.monotonic()
    gw.send_retrying(SENDER, "r@gw.test", make_message(SENDER, "r@gw.test", subject="m0"))
    s = gw.smtp()
    for i in range(1, n):
        s.sendmail(SENDER, ["r@gw.test"], make_message(SENDER, "r@gw.test", subject=f"m{i}"))
    s.quit()
    sink.wait_for(n, timeout=60)
    took = time.monotonic() - t0
    print(f"reuse: {n} messages in {took:.2f}s over {sink.connections} connections")
    # At most dest_concurrency sessions at once, each reused.
    assert sink.connections <= 10, sink.connections
    uses = [int(u) for u in re.findall(r"conn_use=(\d+)", gw.log_text())]
    assert max(uses) >= 10, uses


def rset_peer_talk(log, pipelining=True, refuse_rset_on=()):
    """A RawServer talk function that writes each command, per connection,
    to log as (n, verb, alone); alone: for RSET, whether the client waited
    for its reply before sending more (nothing further came within 1 s).
    RSET is answered 451 on the connections numbered in refuse_rset_on."""
    def talk(srv, c, n):
        buf = b""

        def readline():
            nonlocal buf
            while b"\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return b""
                buf += d
            line, buf = buf.split(b"\n", 1)
            return line + b"\n"
        c.sendall(b"220 mx.pipe.test ESMTP\r\n")
        while True:
            line = readline()
            if not line:
                return
            verb = line[:4].upper().decode()
            alone = verb == "RSET" and not buf and not select.select([c], [], [], 1.0)[0]
            log.append((n, verb, alone))
            if verb == "EHLO":
                c.sendall(b"250-mx.pipe.test\r\n250-8BITMIME\r\n" +
                          (b"250-PIPELINING\r\n" if pipelining else b"") + b"250 SIZE 100000\r\n")
            elif verb == "RSET" and n in refuse_rset_on:
                c.sendall(b"451 4.3.0 not now\r\n")
            elif verb == "DATA":
                c.sendall(b"354 go on\r\n")
                while (body := readline()) != b".\r\n":
                    if not body:
                        return
                log.append((n, "DOT", False))
                c.sendall(b"250 2.0.0 queued\r\n")
            elif verb == "QUIT":
                c.sendall(b"221 bye\r\n")
                return
            else:
                c.sendall(b"250 ok\r\n")
    return talk


@pytest.mark.parametrize("pipelining", [True, False])
def test_reused_connection_rset_pipelined_with_the_transaction(dns_server, raw_servers, gateway,
                                                               pipelining):
    """A cached connection is checked with RSET before its next message: to a
    peer with PIPELINING the RSET leads the MAIL/RCPT/DATA group (one round
    trip less), to one without it goes alone and is answered first."""
    base_zones(dns_server)
    dns_server.zone("pipe.test", mx=[(10, "mx.pipe.test")], a={"mx.pipe.test": "127.0.0.97"})
    log = []
    raw_servers("127.0.0.97", rset_peer_talk(log, pipelining))
    gw = gateway()
    gw.forward("p@gw.test", "bob@pipe.test")
    for i in range(2):
        qid = gw.send_retrying(SENDER, "p@gw.test", make_message(SENDER, "p@gw.test"))
        wait_log(gw, re.escape(qid) + r".*to=<bob@pipe\.test>.*status=sent")
    assert [v for n, v, _ in log] == ["EHLO", "MAIL", "RCPT", "DATA", "DOT",
                                      "RSET", "MAIL", "RCPT", "DATA", "DOT"], log
    assert {n for n, _, _ in log} == {1}
    [alone] = [a for _, v, a in log if v == "RSET"]
    assert alone == (not pipelining), log


def test_refused_pipelined_rset_retries_on_a_fresh_connection(dns_server, raw_servers, gateway):
    """A pipelined RSET that is refused condemns the connection as a refused
    RSET probe did: it is closed without QUIT or content, and the message goes
    out once, on a new connection."""
    base_zones(dns_server)
    dns_server.zone("pipe.test", mx=[(10, "mx.pipe.test")], a={"mx.pipe.test": "127.0.0.98"})
    log = []
    raw_servers("127.0.0.98", rset_peer_talk(log, refuse_rset_on={1}))
    gw = gateway()
    gw.forward("p@gw.test", "bob@pipe.test")
    for i in range(2):
        qid = gw.send_retrying(SENDER, "p@gw.test", make_message(SENDER, "p@gw.test"))
        wait_log(gw, re.escape(qid) + r".*to=<bob@pipe\.test>.*status=sent")
    first = [v for n, v, _ in log if n == 1]
    assert first[:6] == ["EHLO", "MAIL", "RCPT", "DATA", "DOT", "RSET"], log
    assert first.count("DOT") == 1 and "QUIT" not in first, log
    assert [v for n, v, _ in log if n == 2] == ["EHLO", "MAIL", "RCPT", "DATA", "DOT"], log


def test_dsn_parameters_passed_on(dns_server, raw_servers, gateway):
    """RFC 3461 parameters given to smtpd reach a peer that offers DSN: RET and
    ENVID on MAIL, NOTIFY on RCPT, and an ORCPT naming the address the sender
    used (the custom address, since the client gave none)."""
    base_zones(dns_server)
    dns_server.zone("dsn.test", mx=[(10, "mx.dsn.test")], a={"mx.dsn.test": "127.0.0.95"})
    seen = []
    dsn_peer = dsn_peer_talk(seen)

    raw_servers("127.0.0.95", dsn_peer)
    gw = gateway()
    gw.forward("d@gw.test", "bob@dsn.test")
    s = gw.smtp()
    try:
        s.ehlo()
        assert s.has_extn("dsn")
        s.sendmail(SENDER, ["d@gw.test"], make_message(SENDER, "d@gw.test"),
                   mail_options=["RET=HDRS", "ENVID=QQ+2B123"],
                   rcpt_options=["NOTIFY=FAILURE,DELAY"])
    finally:
        s.quit()
    wait_until(lambda: len(seen) >= 2, 20, what="MAIL and RCPT at the DSN peer")
    mail, rcpt = seen[0], seen[1]
    assert mail.startswith("MAIL FROM:<SRS0=") and " RET=HDRS" in mail and \
        " ENVID=QQ+2B123" in mail, mail
    assert rcpt.startswith("RCPT TO:<bob@dsn.test>"), rcpt
    assert " NOTIFY=FAILURE,DELAY" in rcpt, rcpt
    assert " ORCPT=rfc822;d@gw.test" in rcpt, rcpt
