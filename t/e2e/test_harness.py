"""Self-test of the harness: the DNS fixture (real nsd) and the SMTP sink work
on their own, without the gateway."""
import errno
import os
import smtplib
import socket

import dns.rcode
import pytest

from conftest import make_message, pid_alive


def test_network_is_private():
    if os.environ.get("MXF_E2E_NETNS") != "1":
        pytest.skip("not run through run.sh")
    # /proc/self/net follows our network namespace (/sys/class/net may not).
    with open("/proc/self/net/dev") as f:
        ifaces = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
    assert ifaces == ["lo"]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(OSError) as e:
            s.sendto(b"x", ("192.0.2.1", 53))
        assert e.value.errno == errno.ENETUNREACH
    finally:
        s.close()


def test_dns_fixture(dns_server):
    dns_server.zone("dest.test", mx=[(20, "mx2.dest.test"), (10, "mx1.dest.test")],
                    a={"mx1.dest.test": "127.0.0.2", "mx2.dest.test": "127.0.0.3"})
    dns_server.start()
    for tcp in (False, True):
        r = dns_server.query("dest.test", "MX", tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR
        mx = sorted((rr.preference, rr.exchange.to_text()) for rrset in r.answer for rr in rrset)
        assert mx == [(10, "mx1.dest.test."), (20, "mx2.dest.test.")]
        r = dns_server.query("mx2.dest.test", "A", tcp=tcp)
        assert [rr.address for rrset in r.answer for rr in rrset] == ["127.0.0.3"]
    # Out of zone: not answered from data we do not have.
    assert dns_server.query("example.com", "MX").rcode() == dns.rcode.REFUSED
    # A zone added later restarts nsd with both zones.
    dns_server.zone("sender.test", mx=[(5, "mx.sender.test")], a={"mx.sender.test": "127.0.0.4"})
    r = dns_server.query("sender.test", "MX")
    assert [rr.exchange.to_text() for rrset in r.answer for rr in rrset] == ["mx.sender.test."]
    assert dns_server.query("dest.test", "MX").rcode() == dns.rcode.NOERROR
    pid = dns_server.proc.pid
    dns_server.stop()
    assert not pid_alive(pid)


def _send(addr, port, mail_from, rcpts, data):
    with smtplib.SMTP(addr, port, local_hostname="client.test", timeout=10) as s:
        return s.sendmail(mail_from, rcpts, data)


def test_sink_stores_envelope_and_exact_bytes(sinks, sink_port):
    sink = sinks("127.0.0.2")
    body = ("first line\n.starts with a dot\n..two dots\n.\nUTF-8: Grüße, 日本語\n"
            "no final newline")
    data = make_message("alice@sender.test", "bob@dest.test", body=body)
    _send("127.0.0.2", sink_port, "alice@sender.test", ["bob@dest.test", "carol@dest.test"], data)
    [m] = sink.wait_for(1, timeout=5)
    assert m.mail_from == "alice@sender.test"
    assert m.rcpt_tos == ["bob@dest.test", "carol@dest.test"]
    assert m.peer[0] == "127.0.0.1"
    # The sink stores the content dot-unstuffed and CRLF-terminated (smtplib
    # adds the final CRLF the message lacked).
    assert m.data == data + b"\r\n"
    assert "Grüße, 日本語".encode() in m.data
    assert b"\r\n.starts with a dot\r\n..two dots\r\n.\r\n" in m.data
    # Nothing listens on another loopback address at the same port.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.9", sink_port), timeout=2).close()


def test_sink_modes(sinks, sink_port):
    sink = sinks("127.0.0.3")
    data = make_message("a@sender.test", "b@dest.test")
    sink.set_mode("tempfail")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        _send("127.0.0.3", sink_port, "a@sender.test", ["b@dest.test"], data)
    code, msg = e.value.recipients["b@dest.test"]
    assert code == 451 and msg.startswith(b"4.3.0")
    sink.set_mode("permfail")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        _send("127.0.0.3", sink_port, "a@sender.test", ["b@dest.test"], data)
    code, msg = e.value.recipients["b@dest.test"]
    assert code == 550 and msg.startswith(b"5.1.1")
    sink.set_mode("tempfail", at="data")
    with pytest.raises(smtplib.SMTPDataError) as e:
        _send("127.0.0.3", sink_port, "a@sender.test", ["b@dest.test"], data)
    assert e.value.smtp_code == 451
    assert sink.messages == []
    sink.set_mode("accept")
    _send("127.0.0.3", sink_port, "", ["b@dest.test"], data)
    [m] = sink.wait_for(1, timeout=5)
    assert m.mail_from == ""  # null sender recorded as empty
    assert len(sink.rcpt_attempts) == 4


def test_dns_and_sink_together(dns_server, sinks, sink_port):
    """What deliverd will do: MX lookup at the fixture, then SMTP to the host."""
    dns_server.zone("dest.test", mx=[(10, "mx1.dest.test")], a={"mx1.dest.test": "127.0.0.2"})
    dns_server.start()
    sink = sinks("127.0.0.2")
    r = dns_server.query("dest.test", "MX")
    host = [rr.exchange.to_text() for rrset in r.answer for rr in rrset][0]
    addr = [rr.address for rrset in dns_server.query(host, "A").answer for rr in rrset][0]
    _send(addr, sink_port, "x@sender.test", ["y@dest.test"], make_message("x@sender.test",
                                                                          "y@dest.test"))
    [m] = sink.wait_for(1, timeout=5)
    assert m.rcpt_tos == ["y@dest.test"]
