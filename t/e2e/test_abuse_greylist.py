"""Issue 11, greylisting: (client /24, sender, recipient) deferred with 451
4.7.1 on first sight, accepted when retried after the delay; allow-listed
ranges and clients scoring under greylist_threshold are not greylisted;
unknown recipients still get their 5xx at once."""
import time

import pytest

from test_smtpd_conformance import Raw

DELAY = 2


@pytest.fixture
def ggw(dns_server, gateway):
    dns_server.zone("good.test", a={"good.test": "127.0.0.9"})
    dns_server.zone("0.0.127.in-addr.arpa")
    dns_server.zones["0.0.127.in-addr.arpa"] += "9 IN PTR good.test.\n"
    dns_server.start()
    # No PTR scores 0.3: greylisted; confirmed reverse DNS scores 0: not.
    g = gateway({"smtpd": {"greylisting": "yes", "greylist_delay": str(DELAY),
                           "greylist_window": "60", "greylist_threshold": "0.3",
                           "greylist_allow": "127.0.0.128/25, 2001:db8::/32",
                           "dnsbl_timeout": "1500"}})
    g.forward("alice@gw.test", "bob@dest.test")
    return g


def rcpt(port, source, sender=b"a@sender.test", to=b"alice@gw.test"):
    c = Raw(port, source=source)
    c.expect(b"EHLO good.test", 250)
    c.expect(b"MAIL FROM:<" + sender + b">", 250)
    code, text = c.cmd(b"RCPT TO:<" + to + b">")
    c.close()
    return code, text


def test_greylisting(ggw):
    port = ggw.smtp_port
    t0 = time.monotonic()
    code, text = rcpt(port, "127.0.0.20")
    assert code == 451 and text[0].startswith(b"4.7.1 Greylisted"), text
    # Too early: still deferred.
    code, text = rcpt(port, "127.0.0.20")
    assert code == 451, text
    # An unknown recipient is refused for what it is, not greylisted.
    code, text = rcpt(port, "127.0.0.20", to=b"nobody@gw.test")
    assert code >= 500, text
    # Allow-listed range, and a client with a good reputation: no delay.
    assert rcpt(port, "127.0.0.130")[0] == 250
    assert rcpt(port, "127.0.0.9")[0] == 250
    assert time.monotonic() - t0 < DELAY, "the test itself was too slow"
    time.sleep(DELAY + 0.2 - (time.monotonic() - t0))
    # The retry after the delay passes, from any address of the same /24,
    # and keeps passing.
    assert rcpt(port, "127.0.0.21")[0] == 250
    assert rcpt(port, "127.0.0.20")[0] == 250
    # Another sender is another triplet.
    code, text = rcpt(port, "127.0.0.20", sender=b"b@sender.test")
    assert code == 451, text
    log = ggw.log_text()
    assert "greylisting: delay 2 s, window 60 s, from score 0.30, 2 allowed ranges" in log
    assert "reject: RCPT from unknown[127.0.0.20]: 451 4.7.1 Greylisted" in log
