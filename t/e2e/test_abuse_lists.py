"""Issue 11: the operator's allow and block lists (mxferryctl block|allow,
rules.db), every refusal an activity row with its reason, mxferryctl stats
by reason, and the coalescing of refusal rows under a flood."""
import json
import socket
import time

import pytest

from conftest import free_ports, wait_until
from test_abuse_dnsbl import nibbles
from test_metrics import Metrics, val
from test_smtpd_conformance import Raw


@pytest.fixture
def lgw(dns_server, gateway):
    dns_server.zone("bl.test", a={"2.0.0.127.bl.test": "127.0.0.2",
                                  nibbles("::1") + ".bl.test": "127.0.0.2"})
    dns_server.start()
    port = free_ports(1)[0]
    g = gateway({"main": {"dns_resolver": f"127.0.0.1:{dns_server.port}"},
                 "smtpd": {"listen": f"127.0.0.1:{port},[::1]:{port}",
                           "dnsbl": "bl.test", "dnsbl_timeout": "1500",
                           "max_message_size": "100000"},
                 "router": {"reject_log_rate": "5"}},
                start=False)
    g.smtp_port = port
    g.start()
    g.forward("alice@gw.test", "bob@dest.test")
    return g


def connect_reply(port, source=None, addr="127.0.0.1"):
    """The server's first reply to a new connection: (code, text)."""
    c = Raw(port, addr=addr, greet=False, source=source)
    try:
        return c.reply()
    finally:
        c.close()


def mail(port, sender, source="127.0.0.5", helo=b"client.example.test"):
    c = Raw(port, source=source)
    c.expect(b"EHLO " + helo, 250)
    code, text = c.cmd(b"MAIL FROM:<" + sender + b">")
    if code == 550:  # the session goes on after a refused MAIL
        c.expect(b"NOOP", 250)
    c.close()
    return code, text


def rcpt(port, source, to=b"alice@gw.test", sender=b"s@sender.test", addr="127.0.0.1"):
    c = Raw(port, addr=addr, source=source)
    c.expect(b"EHLO client.example.test", 250)
    c.expect(b"MAIL FROM:<" + sender + b">", 250)
    code, text = c.cmd(b"RCPT TO:<" + to + b">")
    return c, code, text


def rejected(gw, reason=None):
    return [r for r in gw.activity() if r["status"] == "rejected"
            and (reason is None or r["reason"] == reason)]


def refusals(gw, reason):
    return sum(r["count"] or 1 for r in rejected(gw, reason))


def test_block_client_ip_and_cidr_at_connect(lgw):
    port = lgw.smtp_port
    out = lgw.ctl_ok("block", "add", "127.0.0.7", "--reason", "spam source seen 2026-11-01")
    assert "127.0.0.7 added to the block list" in out
    t0 = time.monotonic()
    # Takes effect at once (mxferryctl tells the router), without a restart.
    code, text = connect_reply(port, source="127.0.0.7")
    assert code == 554, text
    assert text[0] == (b"5.7.1 Service unavailable; client [127.0.0.7] blocked: "
                       b"spam source seen 2026-11-01"), text
    assert time.monotonic() - t0 < 1.0
    # Neighbours are not blocked.
    assert connect_reply(port, source="127.0.0.8")[0] == 220

    # A CIDR range, IPv4, stored as its network; the generic text without a reason.
    out = json.loads(lgw.ctl_ok("--json", "block", "add", "127.0.1.77/24"))
    assert out == {"list": "block", "value": "127.0.1.0/24", "kind": "ip", "result": "added"}
    for src in ("127.0.1.1", "127.0.1.200"):
        code, text = connect_reply(port, source=src)
        assert code == 554, text
        assert text[0].endswith(b"blocked by local policy"), text
    assert connect_reply(port, source="127.0.2.1")[0] == 220

    # IPv6.
    assert connect_reply(port, addr="::1")[0] == 220
    lgw.ctl_ok("block", "add", "::/127")
    code, text = connect_reply(port, addr="::1")
    assert code == 554 and b"client [::1] blocked" in text[0], text

    # Removing works as fast.
    lgw.ctl_ok("block", "remove", "127.0.0.7")
    assert connect_reply(port, source="127.0.0.7")[0] == 220

    # Invalid values are refused with a reason, nothing written.
    rc, _, err = lgw.ctl("block", "add", "127.0.0.300")
    assert rc == 1 and "not an IP address" in err, err
    rc, _, err = lgw.ctl("block", "add", "127.0.1.0/24")
    assert rc == 1 and "already on the block list" in err, err
    rc, _, err = lgw.ctl("block", "remove", "192.0.2.1")
    assert rc == 1 and "unknown" in err, err

    # list --json and the audit trail.
    lst = json.loads(lgw.ctl_ok("--json", "block", "list"))
    assert lst["list"] == "block"
    assert sorted((e["value"], e["kind"], e["reason"]) for e in lst["entries"]) == [
        ("127.0.1.0/24", "ip", ""), ("::/127", "ip", "")]
    text_list = lgw.ctl_ok("block", "list")
    assert "127.0.1.0/24" in text_list and "::/127" in text_list
    audit = json.loads(lgw.ctl_ok("--json", "audit"))["entries"]
    acts = [(a["action"], a["object"]) for a in audit if a["action"].startswith("block.")]
    assert acts == [("block.add", "block:127.0.0.7"), ("block.add", "block:127.0.1.0/24"),
                    ("block.add", "block:::/127"), ("block.remove", "block:127.0.0.7")], acts
    first = [a for a in audit if a["action"] == "block.add"][0]
    assert first["before"] is None
    assert first["after"] == {"list": "block", "kind": "ip", "value": "127.0.0.7",
                              "reason": "spam source seen 2026-11-01"}
    assert first["who"].startswith("unix:")

    # Each connect refusal is an activity row with its reason (written a
    # moment after the refusal).
    wait_until(lambda: len(rejected(lgw, "blocklist")) >= 4, 5, what="refusal rows")
    rows = rejected(lgw, "blocklist")
    assert len(rows) == 4, rows
    assert all(r["reply"].startswith("554 5.7.1") for r in rows)
    assert {r["client_ip"] for r in rows} == {"127.0.0.7", "127.0.1.1", "127.0.1.200", "::1"}


def test_block_sender_address_domain_and_helo_at_mail(lgw):
    port = lgw.smtp_port
    lgw.ctl_ok("block", "add", "Spam@Bad.Test", "--reason", "known spammer")
    lgw.ctl_ok("block", "add", "evil.test")
    lgw.ctl_ok("block", "add", "badhelo.test", "--reason", "bad HELO")
    code, text = mail(port, b"spam@bad.test")
    assert code == 550, text
    assert text[0] == b"5.7.1 <spam@bad.test>: Sender address rejected: known spammer", text
    assert mail(port, b"other@bad.test")[0] == 250
    # A domain entry covers its subdomains.
    for s in (b"x@evil.test", b"x@mx.sub.evil.test"):
        code, text = mail(port, s)
        assert code == 550 and b"Sender address rejected: Access denied" in text[0], text
    assert mail(port, b"x@notevil.test")[0] == 250
    # ... and the HELO name, which can get a client refused (never allowed).
    code, text = mail(port, b"x@good.test", helo=b"mx1.badhelo.test")
    assert code == 550 and text[0] == b"5.7.1 Client host rejected: bad HELO", text
    wait_until(lambda: len(rejected(lgw, "blocklist")) >= 4, 5, what="refusal rows")
    rows = rejected(lgw, "blocklist")
    assert len(rows) == 4, rows
    assert sorted(r["mail_from"] for r in rows) == ["spam@bad.test", "x@evil.test",
                                                    "x@good.test", "x@mx.sub.evil.test"]
    helo_row = [r for r in rows if r["mail_from"] == "x@good.test"][0]
    assert helo_row["helo"] == "mx1.badhelo.test" and helo_row["reply"].startswith("550 5.7.1")
    # A sender allow entry beats a sender block, not a client one.
    lgw.ctl_ok("allow", "add", "spam@bad.test")
    assert mail(port, b"spam@bad.test")[0] == 250
    assert mail(port, b"spam@bad.test", helo=b"badhelo.test")[0] == 550


def test_allow_list_bypasses_dnsbl_and_wins_over_block(lgw):
    port = lgw.smtp_port
    c, code, text = rcpt(port, "127.0.0.2")
    c.close()
    assert code == 554 and b"blocked using bl.test" in text[0], text
    lgw.ctl_ok("allow", "add", "127.0.0.2")
    c, code, text = rcpt(port, "127.0.0.2")
    assert code == 250, text
    c.expect(b"DATA", 354)
    c.send(b"Subject: allowed\r\n\r\nhello\r\n.\r\n")
    code, text = c.reply()
    assert code == 250 and b"queued as" in text[0], text
    c.close()
    assert "allow-listed: unknown[127.0.0.2]" in lgw.log_text()
    # Allow wins over block for the same client; the rest of the range is blocked.
    lgw.ctl_ok("block", "add", "127.0.0.0/24")
    assert connect_reply(port, source="127.0.0.2")[0] == 220
    assert connect_reply(port, source="127.0.0.3")[0] == 554
    # IPv6 listed on bl.test, allow-listed by range.
    c, code, _ = rcpt(port, None, addr="::1")
    c.close()
    assert code == 554
    lgw.ctl_ok("allow", "add", "::/64")
    c, code, text = rcpt(port, None, addr="::1")
    c.close()
    assert code == 250, text
    lst = json.loads(lgw.ctl_ok("--json", "allow", "list"))
    assert sorted(e["value"] for e in lst["entries"]) == ["127.0.0.2", "::/64"]
    # Removing the allow entry restores the block (within the router's reload).
    lgw.ctl_ok("allow", "remove", "127.0.0.2")
    assert connect_reply(port, source="127.0.0.2")[0] == 554


def test_every_refusal_logged_with_reason_and_counted(lgw):
    port = lgw.smtp_port
    lgw.ctl_ok("block", "add", "127.0.0.66")
    lgw.ctl_ok("block", "add", "junk.test")
    assert connect_reply(port, source="127.0.0.66")[0] == 554           # blocklist
    assert mail(port, b"a@junk.test")[0] == 550                          # blocklist
    c, code, _ = rcpt(port, "127.0.0.2")                                 # dnsbl:bl.test
    assert code == 554
    c.close()
    c, code, _ = rcpt(port, "127.0.0.5", to=b"x@elsewhere.test")         # relay
    assert code == 550
    code, _ = c.cmd(b"RCPT TO:<nobody@gw.test>")                         # unknown-rcpt
    assert code == 550
    c.close()
    c = Raw(port, source="127.0.0.5")
    c.expect(b"EHLO client.example.test", 250)
    code, _ = c.cmd(b"MAIL FROM:<s@sender.test> SIZE=999999999")         # size
    assert code == 552
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    c.expect(b"RCPT TO:<alice@gw.test>", 250)
    c.expect(b"DATA", 354)
    c.send(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 120 + b".\r\n")  # size
    assert c.reply()[0] == 552
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    c.expect(b"RCPT TO:<alice@gw.test>", 250)
    c.expect(b"DATA", 354)
    c.send(b"Subject: bare\r\n\r\nbare\nLF\r\n.\r\n")                   # content
    assert c.reply()[0] == 554
    c.close()
    want = {"blocklist": 2, "dnsbl:bl.test": 1, "relay": 1, "unknown-rcpt": 1, "size": 2,
            "content": 1}
    wait_until(lambda: len(rejected(lgw)) >= sum(want.values()), 5, what="refusal rows")
    time.sleep(0.3)
    got = {}
    for r in rejected(lgw):
        got[r["reason"]] = got.get(r["reason"], 0) + (r["count"] or 1)
    assert got == want, got
    relay = rejected(lgw, "relay")[0]
    assert (relay["client_ip"], relay["helo"], relay["mail_from"], relay["rcpt"]) == (
        "127.0.0.5", "client.example.test", "s@sender.test", "x@elsewhere.test")
    stats = json.loads(lgw.ctl_ok("--json", "stats"))
    assert stats["rejected_by_reason"] == want, stats
    assert stats["total"]["rejected"] == sum(want.values())
    text = lgw.ctl_ok("stats")
    assert "REJECTED BY REASON" in text and "dnsbl:bl.test" in text
    log = lgw.ctl_ok("log", "--status", "rejected")
    assert "reason=dnsbl:bl.test" in log and "reason=relay" in log
    entries = json.loads(lgw.ctl_ok("--json", "log", "--status", "rejected"))["entries"]
    assert sorted({e["reason"] for e in entries}) == sorted(want)


def test_rate_and_greylist_refusals_logged(dns_server, gateway):
    dns_server.start()
    g = gateway({"smtpd": {"greylisting": "yes", "greylist_delay": "60",
                           "max_msg_rate": "2", "rate_window": "60"}})
    g.forward("alice@gw.test", "bob@dest.test")
    port = g.smtp_port
    c = Raw(port, source="127.0.0.5")
    c.expect(b"EHLO client.example.test", 250)
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    code, text = c.cmd(b"RCPT TO:<alice@gw.test>")                       # greylist
    assert code == 451 and text[0].startswith(b"4.7.1 Greylisted"), text
    c.expect(b"RSET", 250)
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    c.expect(b"RSET", 250)
    code, _ = c.cmd(b"MAIL FROM:<s@sender.test>")                        # rate
    assert code == 421
    c.close()
    wait_until(lambda: len(rejected(g)) >= 2, 5, what="refusal rows")
    got = sorted((r["reason"], r["reply"][:9]) for r in rejected(g))
    assert got == [("greylist", "451 4.7.1"), ("rate", "421 4.7.0")], got
    assert json.loads(g.ctl_ok("--json", "stats"))["rejected_by_reason"] == {
        "greylist": 1, "rate": 1}


def test_refusal_flood_is_coalesced(lgw):
    """reject_log_rate = 5: a flood of refused connections from one network
    writes at most 5 rows a second of its own and one summary row per second
    with the count of the rest; the total is exact."""
    lgw.ctl_ok("block", "add", "127.0.3.0/24")
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        for i in range(10):
            s = socket.create_connection(("127.0.0.1", lgw.smtp_port), timeout=5,
                                         source_address=(f"127.0.3.{1 + (n + i) % 250}", 0))
            assert s.recv(100).startswith(b"554 5.7.1")
            s.close()
        n += 10
    assert n >= 40
    # The summaries are written once their second is over.
    wait_until(lambda: refusals(lgw, "blocklist") == n, 5,
               what=f"{n} refusals accounted for")
    rows = rejected(lgw, "blocklist")
    single = [r for r in rows if r["count"] is None]
    summaries = [r for r in rows if r["count"] is not None]
    assert len(rows) < n / 2, len(rows)
    # Per second, at most 5 rows of their own.
    per_sec = {}
    for r in single:
        per_sec[r["ts"]] = per_sec.get(r["ts"], 0) + 1
    assert len(single) <= 5 * (len(summaries) + 1) and summaries, (single, summaries)
    assert all(r["client_ip"] == "127.0.3.0/24" and "not logged one by one" in r["reply"]
               for r in summaries), summaries
    assert json.loads(lgw.ctl_ok("--json", "stats"))["rejected_by_reason"]["blocklist"] == n
    assert "activity log: " in lgw.log_text()


def test_mail_asks_the_lists_only_when_an_entry_could_match(gateway):
    """The connect answer says when no HELO/sender entry exists (or the
    client is allow-listed): MAIL then gets its 250 without a second
    ACCESS_CHECK (the router's counter by stage shows it); a sender entry
    brings the check at MAIL back, and it still refuses."""
    mport = free_ports(1)[0]
    g = gateway({"main": {"metrics_listen": f"127.0.0.1:{mport}"}})
    mt = Metrics(mport)
    port = g.smtp_port

    def checks(stage):
        return val(mt.scrape(), "mxferry_access_checks_total", stage=stage)

    g.ctl_ok("block", "add", "127.0.0.7")  # an address entry only
    c0 = checks("connect")
    assert mail(port, b"s@sender.test")[0] == 250
    assert mail(port, b"")[0] == 250
    assert checks("connect") == c0 + 2 and checks("mail") == 0
    # A session keeps the verdict it got at connect, even across a reload.
    c = Raw(port, source="127.0.0.5")
    c.expect(b"EHLO client.example.test", 250)
    g.ctl_ok("block", "add", "bad.test", "--reason", "no thanks")
    c.expect(b"MAIL FROM:<x@bad.test>", 250)
    c.close()
    assert checks("mail") == 0
    # With a sender entry, MAIL asks again, and the entry refuses.
    code, text = mail(port, b"x@bad.test")
    assert code == 550 and text[0] == b"5.7.1 <x@bad.test>: Sender address rejected: no thanks"
    assert mail(port, b"s@sender.test")[0] == 250
    assert checks("mail") == 2
    # An allow-listed client: no entry can override that, no check at MAIL.
    g.ctl_ok("allow", "add", "127.0.0.6")
    assert mail(port, b"x@bad.test", source="127.0.0.6")[0] == 250
    assert checks("mail") == 2
