"""Issue 11, rate and concurrency limits per client address and per /24:
sessions at once per network (421 4.7.0), messages per minute (421 4.7.0 at
MAIL), recipients per minute (452 4.5.3 at RCPT); counts reset when the
window ([smtpd] rate_window, shortened here) turns."""
import time

import pytest

from test_smtpd_conformance import Raw

WINDOW = 3


@pytest.fixture
def rgw(dns_server, gateway):
    dns_server.start()
    g = gateway({"smtpd": {"max_conn_per_net": "3", "max_msg_rate": "2",
                           "max_rcpt_rate": "3", "max_rcpt_rate_net": "5",
                           "rate_window": str(WINDOW)}})
    g.forward("alice@gw.test", "bob@dest.test")
    return g


def test_network_concurrency(rgw):
    port = rgw.smtp_port
    held = [Raw(port, source=f"127.0.4.{n}") for n in (31, 32, 33)]
    # A fourth address of the same /24: refused at connect.
    c = Raw(port, greet=False, source="127.0.4.34")
    code, text = c.reply()
    assert code == 421 and text[0].startswith(b"4.7.0"), text
    assert c.closed()
    c.close()
    # One leaves: there is room again.
    held.pop().cmd(b"QUIT")
    time.sleep(0.2)
    held.append(Raw(port, source="127.0.4.34"))
    for h in held:
        h.close()
    assert "too many connections (network concurrency limit)" in rgw.log_text()


def test_message_and_recipient_rates(rgw):
    port = rgw.smtp_port
    t0 = time.monotonic()
    # A /24 of its own (127.0.5.0/24): every window here starts with the test.
    # Messages: two a window per address; the third MAIL gets 421 and the door.
    c = Raw(port, source="127.0.5.40")
    c.expect(b"EHLO a.test", 250)
    for _ in range(2):
        c.expect(b"MAIL FROM:<s@sender.test>", 250)
        c.expect(b"RSET", 250)
    code, text = c.cmd(b"MAIL FROM:<s@sender.test>")
    assert code == 421 and text[0].startswith(b"4.7.0"), text
    assert c.closed()
    c.close()
    # Recipients: three a window per address; the fourth gets 452 and the
    # session goes on with the three.
    c = Raw(port, source="127.0.5.41")
    c.expect(b"EHLO a.test", 250)
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    for _ in range(3):
        c.expect(b"RCPT TO:<alice@gw.test>", 250)
    code, text = c.cmd(b"RCPT TO:<alice@gw.test>")
    assert code == 452 and text[0].startswith(b"4.5.3"), text
    # Per /24: five in all; 127.0.5.42 has its own three, but the network
    # only two left.
    d = Raw(port, source="127.0.5.42")
    d.expect(b"EHLO a.test", 250)
    d.expect(b"MAIL FROM:<s@sender.test>", 250)
    for _ in range(2):
        d.expect(b"RCPT TO:<alice@gw.test>", 250)
    code, text = d.cmd(b"RCPT TO:<alice@gw.test>")
    assert code == 452, text
    assert time.monotonic() - t0 < WINDOW, "the test itself was too slow"
    # The window turns: counts start over, in the same sessions.
    time.sleep(WINDOW + 0.3 - (time.monotonic() - t0))
    c.expect(b"RCPT TO:<alice@gw.test>", 250)
    d.expect(b"RCPT TO:<alice@gw.test>", 250)
    c.close()
    d.close()
    c = Raw(port, source="127.0.5.40")
    c.expect(b"EHLO a.test", 250)
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    c.close()
