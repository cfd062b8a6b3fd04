"""Issue 11, the reputation score: block-list weights plus no PTR, a PTR that
does not resolve back, a HELO that is not a FQDN or another host's address
literal, commands pipelined without PIPELINING, bad commands and earlier
refusals of the same address. Scores at or above reject_threshold get 554."""
import pytest

from test_smtpd_conformance import Raw


@pytest.fixture
def sgw(dns_server, gateway):
    dns_server.zone("bl.test", a={"2.0.0.127.bl.test": "127.0.0.2"})
    dns_server.zone("good.test", a={"good.test": "127.0.0.9", "liar.test.good.test": "127.0.0.99"})
    dns_server.zone("0.0.127.in-addr.arpa")
    # PTRs: .9 confirmed forward, .10 names a host that is elsewhere; none
    # for the others.
    dns_server.zones["0.0.127.in-addr.arpa"] += ("9 IN PTR good.test.\n"
                                                 "10 IN PTR liar.test.good.test.\n")
    dns_server.start()
    g = gateway({"smtpd": {"dnsbl": "bl.test", "dnsbl_timeout": "1500"}})
    g.forward("alice@gw.test", "bob@dest.test")
    return g


def session(port, source, helo=b"good.test", bad=0, pipeline=False):
    c = Raw(port, source=source)
    if pipeline:
        c.send(b"EHLO " + helo + b"\r\nMAIL FROM:<s@sender.test>\r\n")
        assert c.reply()[0] == 250
        assert c.reply()[0] == 250
    else:
        c.expect(b"EHLO " + helo, 250)
        for _ in range(bad):
            assert c.cmd(b"FROB")[0] == 500
        c.expect(b"MAIL FROM:<s@sender.test>", 250)
    code, text = c.cmd(b"RCPT TO:<alice@gw.test>")
    c.close()
    return code, text


def test_reputation_score(sgw):
    port = sgw.smtp_port
    # Confirmed reverse DNS, proper HELO: nothing against it.
    code, text = session(port, "127.0.0.9")
    assert code == 250, text
    # No PTR (0.3) and a single-label HELO (0.3): 0.6, under the threshold.
    code, text = session(port, "127.0.0.11", helo=b"localhost")
    assert code == 250, text
    # PTR not confirmed (0.2) + another host's literal (0.5): 0.7, passes.
    code, text = session(port, "127.0.0.10", helo=b"[127.0.0.1]")
    assert code == 250, text
    # No PTR (0.3) + single label (0.3) + pipelining before the EHLO reply
    # (0.5): 1.1, refused. (Under the threshold without the PTR answer, so
    # the verdict waits for it.)
    code, text = session(port, "127.0.0.14", helo=b"localhost", pipeline=True)
    assert code == 554, text
    assert text[0].startswith(b"5.7.1 Service unavailable; client [127.0.0.14] has a poor "
                              b"reputation (no_ptr*0.30 helo_fqdn*0.30 pipelining*0.50)"), text
    # Its own literal is fine; a listing alone refuses (weight 1 = threshold).
    code, text = session(port, "127.0.0.9", helo=b"[127.0.0.9]")
    assert code == 250, text
    code, text = session(port, "127.0.0.2")
    assert code == 554 and b"blocked using bl.test" in text[0], text

    # History: no PTR + localhost + 2 bad commands = 1.0: refused...
    code, text = session(port, "127.0.0.12", helo=b"localhost", bad=2)
    assert code == 554, text
    # ...and that refusal (0.25) tips its next 0.8 session over, while the
    # same session from an address without a past passes.
    code, text = session(port, "127.0.0.13", helo=b"localhost", bad=1)
    assert code == 250, text
    code, text = session(port, "127.0.0.12", helo=b"localhost", bad=1)
    assert code == 554 and b"history*0.25" in text[0], text

    log = sgw.log_text()
    assert "reputation: unknown[127.0.0.11] score 0.60 (reject at 1.00): no_ptr*0.30 " \
           "helo_fqdn*0.30" in log
    assert "unknown[127.0.0.10] score 0.70 (reject at 1.00): fcrdns*0.20 helo_literal*0.50" \
        in log
    assert "improper command pipelining after CONNECT from unknown[127.0.0.14]" in log
