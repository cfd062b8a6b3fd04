"""Issue 11, block lists at the SMTP door: DNSBL for the client address (IPv4
reversed octets, IPv6 reversed nibbles) and RHSBL for the HELO and sender
domains, answered by the real nsd; a list whose server never answers must
not hold a session longer than [smtpd] dnsbl_timeout."""
import ipaddress
import socket
import threading
import time

import dns.message
import pytest

from conftest import free_ports, wait_until
from test_smtpd_conformance import Raw

TIMEOUT_MS = 1000


class DroppingProxy:
    """A UDP DNS forwarder to nsd that silently drops every query under
    `drop`: a block list whose server is dead, while the rest answers."""

    def __init__(self, upstream_port, drop):
        self.port = free_ports(1, udp=True)[0]
        self.upstream = ("127.0.0.1", upstream_port)
        self.drop = drop
        self.dropped = []
        self.seen = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping:
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                name = dns.message.from_wire(data).question[0].name.to_text().lower()
            except Exception:
                continue
            self.seen.append(name)
            if name.endswith(self.drop):
                self.dropped.append(name)
                continue
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            up.settimeout(2)
            try:
                up.sendto(data, self.upstream)
                self.sock.sendto(up.recv(65535), peer)
            except OSError:
                pass
            finally:
                up.close()

    def stop(self):
        self.stopping = True
        self.thread.join(2)
        self.sock.close()


def nibbles(ip):
    return ".".join(reversed(ipaddress.ip_address(ip).exploded.replace(":", "")))


@pytest.fixture
def blgw(dns_server, gateway):
    dns_server.zone("bl.test", a={"2.0.0.127.bl.test": "127.0.0.2",
                                  "3.0.0.127.bl.test": "127.0.0.2",
                                  # answers outside 127/8 are no listing
                                  "6.0.0.127.bl.test": "192.0.2.1"})
    # An allow list (negative weight): 127.0.0.3 is on both.
    dns_server.zone("wl.test", a={"3.0.0.127.wl.test": "127.0.0.2"})
    dns_server.zone("bl6.test", a={nibbles("::1") + ".bl6.test": "127.0.0.4"})
    dns_server.zone("rhs.test", a={"spammer.test.rhs.test": "127.0.0.2",
                                   "badhelo.test.rhs.test": "127.0.0.2"})
    dns_server.start()
    proxy = DroppingProxy(dns_server.port, "dead.test.")
    port = free_ports(1)[0]
    g = gateway({"main": {"dns_resolver": f"127.0.0.1:{proxy.port}"},
                 "smtpd": {"listen": f"127.0.0.1:{port},[::1]:{port}",
                           "dnsbl": "bl.test, bl6.test=127.0.0.4, dead.test, wl.test*-5",
                           "rhsbl": "rhs.test", "dnsbl_timeout": str(TIMEOUT_MS)}},
                start=False)
    g.smtp_port = port
    g.start()
    g.forward("alice@gw.test", "bob@dest.test")
    g.proxy = proxy
    yield g
    proxy.stop()


def rcpt_after(c, helo=b"client.example.test", sender=b"s@sender.test"):
    c.expect(b"EHLO " + helo, 250)
    c.expect(b"MAIL FROM:<" + sender + b">", 250, "2.1.0")
    return c.cmd(b"RCPT TO:<alice@gw.test>")


def test_listed_clients_refused_clean_one_not_held(blgw):
    port = blgw.smtp_port
    # A clean client: the dead list costs at most the timeout, then it goes on.
    t0 = time.monotonic()
    c = Raw(port, source="127.0.0.5")
    code, text = rcpt_after(c)
    took = time.monotonic() - t0
    assert code == 250, text
    assert took < TIMEOUT_MS / 1000 + 1.0, took
    c.expect(b"DATA", 354)
    c.send(b"Subject: t\r\n\r\nclean\r\n.\r\n")
    code, text = c.reply()
    assert code == 250 and b"queued as" in text[0], text
    c.cmd(b"QUIT")
    c.close()
    wait_until(lambda: "no usable answer for" in blgw.log_text() and "dead.test" in blgw.log_text(),
               5, what="the unanswered list to be logged")

    # Listed on bl.test (IPv4, reversed octets): 554 naming the list, at RCPT.
    for _ in range(2):
        c = Raw(port, source="127.0.0.2")
        code, text = rcpt_after(c)
        assert code == 554, text
        assert text[0] == (b"5.7.1 Service unavailable; client [127.0.0.2] blocked using "
                           b"bl.test"), text
        c.cmd(b"QUIT")
        c.close()
    # The second connection was answered from the cache (TTL 5 s).
    assert blgw.proxy.seen.count("2.0.0.127.bl.test.") == 1, blgw.proxy.seen

    # Listed, but on the allow list too: 1 - 5 < 1, accepted.
    c = Raw(port, source="127.0.0.3")
    code, text = rcpt_after(c)
    assert code == 250, text
    c.close()

    # A bl.test answer outside 127/8 is not a listing.
    c = Raw(port, source="127.0.0.6")
    code, text = rcpt_after(c)
    assert code == 250, text
    c.close()

    # IPv6, reversed nibbles, with an address filter that matches.
    c = Raw(port, addr="::1")
    code, text = rcpt_after(c)
    assert code == 554, text
    assert b"client [::1] blocked using bl6.test" in text[0], text
    c.close()

    # RHSBL: the sender's domain, then the HELO name.
    c = Raw(port, source="127.0.0.7")
    code, text = rcpt_after(c, sender=b"x@Spammer.test")
    assert code == 554, text
    assert b"sender domain [spammer.test] blocked using rhs.test" in text[0], text
    # The session goes on: a clean sender in the next transaction is fine.
    c.expect(b"RSET", 250)
    c.expect(b"MAIL FROM:<ok@sender.test>", 250)
    code, text = c.cmd(b"RCPT TO:<alice@gw.test>")
    assert code == 250, text
    c.close()
    c = Raw(port, source="127.0.0.8")
    code, text = rcpt_after(c, helo=b"badhelo.test")
    assert code == 554, text
    assert b"helo [badhelo.test] blocked using rhs.test" in text[0], text
    c.close()

    log = blgw.log_text()
    assert "reject: RCPT from unknown[127.0.0.2]: 554 5.7.1" in log
    assert "reputation: unknown[127.0.0.3] score -4.00 (reject at 1.00): bl.test*1.00 " \
           "wl.test*-5.00" in log


def test_pipelined_commands_wait_for_the_verdict(blgw):
    # MAIL, RCPT and DATA in one packet: RCPT waits for the lists; DATA is
    # only looked at after RCPT's answer, so it sees no recipient.
    c = Raw(blgw.smtp_port, source="127.0.0.2")
    c.expect(b"EHLO client.example.test", 250)
    c.send(b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<alice@gw.test>\r\nDATA\r\n")
    assert c.reply()[0] == 250
    code, text = c.reply()
    assert code == 554 and b"bl.test" in text[0], text
    code, text = c.reply()
    assert code == 554 and text[0].startswith(b"5.5.1"), text
    c.close()
