"""The routing model (issue 4): matchers, actions, priorities, disabled rules,
catch-all, subaddressing, IDN domains, unverified destinations, live changes,
and SRS returns."""
import base64
import hashlib
import hmac
import os
import smtplib
import sqlite3
import time

import pytest

from conftest import SRS_DOMAIN, make_message, make_world, wait_until


def rcpt(gw, addr, mail_from="alice@sender.test"):
    """(code, text) of RCPT TO:<addr> in a fresh session."""
    s = gw.smtp()
    try:
        code, _ = s.mail(mail_from)
        assert code == 250
        code, resp = s.rcpt(addr)
        return code, resp.decode("utf-8", "replace")
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            s.close()


def rcpt_settled(gw, addr, want, timeout=10):
    """RCPT until the answer's code is want (a change reaches the router)."""
    last = {}

    def ok():
        last["r"] = rcpt(gw, addr)
        return last["r"][0] == want
    wait_until(ok, timeout, interval=0.1, what=lambda: f"RCPT {addr} -> {want}, got {last}")
    return last["r"]


def send(gw, to, msgid, mail_from="alice@sender.test"):
    return gw.send_retrying(mail_from, to, make_message(mail_from, to, msgid=msgid))


def smtpd_ready(gw):
    """smtpd has connected to the router (before that, RCPT gets 451)."""
    wait_until(lambda: "connected to router" in "".join(
        ln for ln in gw.log_text().splitlines() if "/smtpd[" in ln), 15,
        what="smtpd to connect to the router")


def by_msgid(sink, msgid):
    return [m for m in sink.messages if m.msg.get("Message-ID") == msgid]


def wait_msgid(sink, msgid, timeout=20):
    return wait_until(lambda: by_msgid(sink, msgid), timeout,
                      what=lambda: f"{msgid} at the sink; got {sink.messages}")[0]


@pytest.fixture
def routed(world):
    gw = world.gw
    gw.ctl_ok("domain", "add", "gw.test")
    for a in ("a@dest.test", "b@dest.test"):
        gw.ctl_ok("address", "add", a, "--verified")
    smtpd_ready(gw)
    return world


def test_matchers_actions_priorities(routed):
    gw, sink = routed.gw, routed.dest
    gw.ctl_ok("rule", "add", "gw.test", "--to", "info@gw.test", "--forward", "a@dest.test",
              "--name", "info")
    gw.ctl_ok("rule", "add", "gw.test", "--match", "sales-*@gw.test", "--forward",
              "b@dest.test", "--priority", "5")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "sales-eu@gw.test", "--forward", "a@dest.test",
              "--priority", "10")
    tag_lit_late = gw.ctl_ok("rule", "add", "gw.test", "--to", "late@gw.test", "--forward",
                             "a@dest.test", "--priority", "50").strip()
    gw.ctl_ok("rule", "add", "gw.test", "--match", "*ate@gw.test", "--forward", "b@dest.test",
              "--priority", "40")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "spam@gw.test", "--drop")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "no@gw.test", "--reject",
              "Not here\x07, ask élise")
    rc, out, err = gw.ctl("rule", "add", "gw.test", "--to", "w@gw.test", "--worker", "spamcheck")
    assert rc == 0 and "worker spamcheck is not defined" in err, (rc, out, err)
    off = gw.ctl_ok("rule", "add", "gw.test", "--to", "off@gw.test", "--forward", "a@dest.test",
                    "--disabled").strip()
    # No catch-all yet: unknown recipients are refused.
    assert rcpt(gw, "random@gw.test")[0] == 550
    gw.ctl_ok("catchall", "set", "gw.test", "--forward", "b@dest.test")

    listing = gw.ctl_ok("rule", "list")
    assert "sales-*@gw.test" in listing and "spamcheck" in listing and "info" in listing
    shown = gw.ctl_ok("rule", "show", "info")
    assert "info@gw.test" in shown and "forward" in shown
    # Usage errors.
    assert gw.ctl("rule", "add", "gw.test", "--to", "x@gw.test", "--drop", "--forward",
                  "a@dest.test")[0] == 2
    assert gw.ctl("rule", "add", "gw.test", "--match", "nostar@gw.test", "--drop")[0] == 1

    code, text = rcpt(gw, "no@gw.test")
    assert code == 550 and text.startswith("5.7.1 Not here?, ask ??lise"), (code, text)
    code, text = rcpt(gw, "w@gw.test")
    # A rule naming a worker nobody defined (issue 13): tempfailed, not lost.
    assert code == 451 and "worker not available" in text, (code, text)

    cases = {"info@gw.test": "a@dest.test",      # literal
             "INFO@GW.test": "a@dest.test",      # case-insensitive
             "sales-eu@gw.test": "b@dest.test",  # wildcard of better priority wins
             "sales-us@gw.test": "b@dest.test",  # wildcard
             "late@gw.test": "b@dest.test",      # wildcard 40 before literal 50
             "off@gw.test": "b@dest.test",       # disabled rule: the catch-all
             "random@gw.test": "b@dest.test"}    # catch-all
    qids = {}
    for i, (to, dest) in enumerate(cases.items()):
        qids[to] = send(gw, to, f"<m{i}@sender.test>")
    for i, (to, dest) in enumerate(cases.items()):
        m = wait_msgid(sink, f"<m{i}@sender.test>")
        assert m.rcpt_tos == [dest], (to, m.rcpt_tos)
        assert m.mail_from.startswith("SRS0="), m.mail_from
    q_spam = send(gw, "spam@gw.test", "<spam@sender.test>")
    rows = gw.wait_activity(q_spam, "dropped")
    assert rows[0]["rcpt"] == "spam@gw.test" and rows[0]["size"] > 0
    rej = [r for r in gw.activity() if r["rcpt"] == "no@gw.test"]
    assert rej and rej[0]["status"] == "rejected" and rej[0]["action"] == "reject"
    fwd = gw.wait_activity(qids["info@gw.test"], "forwarded")
    assert fwd[0]["dest"] == "a@dest.test" and fwd[0]["size"] > 0

    # Enable, disable and remove take effect at once.
    gw.ctl_ok("rule", "enable", off)
    send(gw, "off@gw.test", "<on@sender.test>")
    assert wait_msgid(sink, "<on@sender.test>").rcpt_tos == ["a@dest.test"]
    gw.ctl_ok("rule", "remove", tag_lit_late)
    gw.ctl_ok("catchall", "set", "gw.test", "--reject", "Nobody by that name")
    code, text = rcpt(gw, "nobody@gw.test")
    assert code == 550 and "Nobody by that name" in text
    gw.ctl_ok("catchall", "set", "gw.test", "--drop")
    assert rcpt(gw, "nobody@gw.test")[0] == 250
    time.sleep(1)
    assert not by_msgid(sink, "<spam@sender.test>")


def test_sender_matchers_and_several_actions(routed):
    """A rule's matchers are AND-ed: the recipient and the envelope sender.
    Several rules may name one address for different senders; several
    --forward actions merge. Checked at RCPT and again at end of DATA."""
    gw, sink = routed.gw, routed.dest
    gw.ctl_ok("address", "add", "c@dest.test", "--verified")
    vip = gw.ctl_ok("rule", "add", "gw.test", "--to", "boss@gw.test", "--from",
                    "*@VIP.test", "--from", "ceo@bücher.test", "--forward", "a@dest.test",
                    "--forward", "c@dest.test", "--name", "boss-vip").strip()
    gw.ctl_ok("rule", "add", "gw.test", "--to", "boss@gw.test", "--forward", "b@dest.test",
              "--priority", "5")
    gw.ctl_ok("rule", "add", "gw.test", "--match", "*@gw.test", "--from", "*@spam.test",
              "--reject", "No mail from spam.test")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "boss@gw.test", "--from", "<>", "--drop",
              "--priority", "1")
    # The same address and senders twice; a catch-all with a sender matcher.
    rc, _, err = gw.ctl("rule", "add", "gw.test", "--to", "BOSS@gw.test", "--from",
                        "ceo@xn--bcher-kva.test,*@vip.test", "--drop")
    assert rc == 1 and "already exists" in err, err
    rc, _, err = gw.ctl("rule", "add", "gw.test", "--to", "x@gw.test", "--from", "no-at",
                        "--drop")
    assert rc == 1 and "--from" in err, err
    assert gw.ctl("catchall", "set", "gw.test", "--from", "*@a.test", "--drop")[0] == 2
    shown = gw.ctl_json("rule", "show", vip)["rules"][0]
    assert shown["from"] == ["*@vip.test", "ceo@xn--bcher-kva.test"], shown
    assert shown["destinations"] == ["a@dest.test", "c@dest.test"], shown
    assert "*@spam.test" in gw.ctl_ok("rule", "list")

    code, text = rcpt(gw, "anyone@gw.test", mail_from="x@spam.test")
    assert code == 550 and "No mail from spam.test" in text, (code, text)
    code, text = rcpt(gw, "boss@gw.test", mail_from="X@Spam.Test")
    assert code == 550, (code, text)
    assert rcpt(gw, "anyone@gw.test", mail_from="x@ok.test")[0] == 550  # no catch-all
    assert rcpt(gw, "boss@gw.test", mail_from="x@ok.test")[0] == 250

    send(gw, "boss@gw.test", "<vip@vip.test>", mail_from="Someone@vip.TEST")
    send(gw, "boss@gw.test", "<idn@buecher.test>", mail_from="ceo@xn--bcher-kva.test")
    send(gw, "boss@gw.test", "<plain@ok.test>", mail_from="someone@ok.test")
    assert sorted(wait_msgid(sink, "<vip@vip.test>").rcpt_tos) == ["a@dest.test", "c@dest.test"]
    assert sorted(wait_msgid(sink, "<idn@buecher.test>").rcpt_tos) == ["a@dest.test",
                                                                      "c@dest.test"]
    assert wait_msgid(sink, "<plain@ok.test>").rcpt_tos == ["b@dest.test"]
    # The null sender: the "<>" rule (priority 1) drops it.
    q_null = send(gw, "boss@gw.test", "<null@x>", mail_from="")
    gw.wait_activity(q_null, "dropped")

    # Edit: the sender matcher replaced, then removed (a clash with the plain
    # rule for the same address), live.
    gw.ctl_ok("rule", "edit", vip, "--from", "*@other-vip.test")
    send(gw, "boss@gw.test", "<vip2@vip.test>", mail_from="someone@vip.test")
    assert wait_msgid(sink, "<vip2@vip.test>").rcpt_tos == ["b@dest.test"]
    rc, _, err = gw.ctl("rule", "edit", vip, "--any-sender")
    assert rc == 1 and "already exists" in err, err
    audit = gw.ctl_json("audit")["entries"]
    assert any(e["action"] == "rule.edit" and e["after"]["from"] == "*@other-vip.test"
               for e in audit), audit


def test_reject_code(routed):
    """`--reject TEXT --code N` (issue 8): the rule's own SMTP code, 4xx making
    the sender try later; the default stays 550; --code goes with --reject."""
    gw = routed.gw
    t = gw.ctl_ok("rule", "add", "gw.test", "--to", "later@gw.test", "--reject",
                  "Mailbox moving, try later", "--code", "451").strip()
    gw.ctl_ok("rule", "add", "gw.test", "--to", "gone@gw.test", "--reject", "Gone")
    gw.ctl_ok("catchall", "set", "gw.test", "--reject", "Nobody here", "--code", "554")
    assert gw.ctl("rule", "add", "gw.test", "--to", "x@gw.test", "--drop", "--code", "451")[0] == 2
    rc, _, err = gw.ctl("rule", "add", "gw.test", "--to", "x@gw.test", "--reject", "no",
                        "--code", "499")
    assert rc == 1 and "--code" in err, err
    code, text = rcpt(gw, "later@gw.test")
    assert code == 451 and text.startswith("4.7.1 Mailbox moving"), (code, text)
    code, text = rcpt(gw, "gone@gw.test")
    assert code == 550 and text.startswith("5.7.1 Gone"), (code, text)
    code, text = rcpt(gw, "anyone@gw.test")
    assert code == 554 and text.startswith("5.7.1 Nobody here"), (code, text)
    assert gw.ctl_json("rule", "show", t)["rules"][0]["code"] == 451
    # Edit: a new code alone; a new action forgets it.
    gw.ctl_ok("rule", "edit", t, "--code", "553")
    assert rcpt_settled(gw, "later@gw.test", 553)[1].startswith("5.7.1")
    gw.ctl_ok("rule", "edit", t, "--reject", "Moved")
    assert rcpt_settled(gw, "later@gw.test", 550)[1].startswith("5.7.1 Moved")


def test_subaddressing(routed):
    gw, sink = routed.gw, routed.dest
    gw.ctl_ok("rule", "add", "gw.test", "--to", "user@gw.test", "--forward", "a@dest.test")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "user+exact@gw.test", "--forward", "b@dest.test")
    # Off by default: user+tag is unknown.
    assert rcpt(gw, "user+tag@gw.test")[0] == 550
    gw.ctl_ok("domain", "set", "gw.test", "subaddressing", "on")
    assert rcpt(gw, "user+tag@gw.test")[0] == 250
    assert rcpt(gw, "user-tag@gw.test")[0] == 550
    send(gw, "user+tag@gw.test", "<sub1@sender.test>")
    send(gw, "user+exact@gw.test", "<sub2@sender.test>")
    assert wait_msgid(sink, "<sub1@sender.test>").rcpt_tos == ["a@dest.test"]
    # A rule naming the address exactly wins over the fallback.
    assert wait_msgid(sink, "<sub2@sender.test>").rcpt_tos == ["b@dest.test"]
    gw.ctl_ok("domain", "set", "gw.test", "subaddressing", "off")
    assert rcpt(gw, "user+tag@gw.test")[0] == 550
    assert gw.ctl("domain", "set", "gw.test", "subaddressing", "maybe")[0] == 1


def test_subaddress_separator_and_case(dns_server, sinks, gateway):
    w = make_world(dns_server, sinks, gateway,
                   {"router": {"subaddress_separator": "-",
                               "local_part_case_insensitive": "no"}})
    gw = w.gw
    smtpd_ready(gw)
    gw.ctl_ok("domain", "add", "gw.test")
    gw.ctl_ok("address", "add", "a@dest.test", "--verified")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "User@gw.test", "--forward", "a@dest.test")
    gw.ctl_ok("domain", "set", "gw.test", "subaddressing", "on")
    assert rcpt(gw, "User-x@GW.TEST")[0] == 250
    assert rcpt(gw, "User+x@gw.test")[0] == 550
    assert rcpt(gw, "user@gw.test")[0] == 550


def test_idn_domains(routed):
    gw, sink = routed.gw, routed.dest
    # Added as a U-label, mail to its A-label.
    out = gw.ctl_ok("domain", "add", "bücher.test")
    assert "xn--bcher-kva.test" in out
    gw.ctl_ok("rule", "add", "bücher.test", "--to", "info@bücher.test", "--forward",
              "a@dest.test")
    send(gw, "info@xn--bcher-kva.test", "<idn1@sender.test>")
    assert wait_msgid(sink, "<idn1@sender.test>").rcpt_tos == ["a@dest.test"]
    # Added as an A-label, the rule written with the U-label, mail to the A-label.
    gw.ctl_ok("domain", "add", "xn--mnchen-3ya.test")
    gw.ctl_ok("rule", "add", "münchen.test", "--to", "hallo@münchen.test", "--forward",
              "b@dest.test")
    send(gw, "hallo@xn--mnchen-3ya.test", "<idn2@sender.test>")
    assert wait_msgid(sink, "<idn2@sender.test>").rcpt_tos == ["b@dest.test"]
    assert "münchen.test" in gw.ctl_ok("domain", "list")
    assert gw.ctl("domain", "add", "münchen.test")[0] == 1  # the same domain


def test_unverified_destination(routed):
    gw, sink = routed.gw, routed.dest
    gw.ctl_ok("address", "add", "c@dest.test")
    # A rule cannot name an unverified destination...
    rc, _, err = gw.ctl("rule", "add", "gw.test", "--to", "x@gw.test", "--forward", "c@dest.test")
    assert rc == 1 and "not verified" in err
    gw.ctl_ok("address", "verify", "c@dest.test")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "x@gw.test", "--forward", "c@dest.test")
    # ... and when verification is withdrawn, nothing is forwarded there.
    gw.ctl_ok("address", "unverify", "c@dest.test")
    qid = send(gw, "x@gw.test", "<unv@sender.test>")
    rows = gw.wait_activity(qid, "deferred")
    assert "unverified destination" in rows[0]["reply"], rows
    time.sleep(1.5)
    assert not by_msgid(sink, "<unv@sender.test>")
    assert "unverified destination" in gw.ctl_ok("queue", "show", qid)
    # Verified again: it goes at once.
    gw.ctl_ok("address", "verify", "c@dest.test")
    assert wait_msgid(sink, "<unv@sender.test>").rcpt_tos == ["c@dest.test"]
    # The domain may refuse at RCPT instead.
    gw.ctl_ok("address", "unverify", "c@dest.test")
    assert rcpt(gw, "x@gw.test")[0] == 250
    gw.ctl_ok("domain", "set", "gw.test", "unverified", "reject")
    code, text = rcpt(gw, "x@gw.test")
    assert code == 550 and "not verified" in text


def test_live_change_without_reload(routed):
    """A write to rules.db that nobody announces is seen within 1 s
    (the router polls PRAGMA data_version)."""
    gw = routed.gw
    gw.ctl_ok("rule", "add", "gw.test", "--to", "live@gw.test", "--forward", "a@dest.test")
    assert rcpt(gw, "live@gw.test")[0] == 250
    db = sqlite3.connect(os.path.join(gw.data, "rules.db"), timeout=5)
    try:
        db.execute("UPDATE rules SET enabled = 0 WHERE match_to = 'live@gw.test'")
        db.commit()
    finally:
        db.close()
    t0 = time.monotonic()
    rcpt_settled(gw, "live@gw.test", 550, timeout=3)
    took = time.monotonic() - t0
    assert took < 1.0, f"change seen after {took:.2f}s"
    # A rule set that fails validation is not loaded: the old one stays.
    db = sqlite3.connect(os.path.join(gw.data, "rules.db"), timeout=5)
    try:
        db.execute("UPDATE rules SET enabled = 1, match_to = 'live@elsewhere.test' "
                   "WHERE match_to = 'live@gw.test'")
        db.commit()
    finally:
        db.close()
    time.sleep(1.2)
    assert "keeping the current rules" in gw.log_text()
    assert rcpt(gw, "live@gw.test")[0] == 550


def srs_key(gw):
    with open(os.path.join(gw.data, "srs.secret"), "rb") as f:
        return f.read().splitlines()[0].strip()


def srs_hash(key, *parts):
    d = "".join(parts).lower().encode()
    h = base64.b64encode(hmac.new(key, d, hashlib.sha1).digest()).decode()[:4]
    return h.replace("/", "_")


def b32stamp(days):
    t = days % 1024
    a = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return a[t >> 5] + a[t & 31]


def test_srs_roundtrip_forged_and_expired(routed):
    gw, sink = routed.gw, routed.dest
    sender_mx = routed.sinks("127.0.0.3")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "info@gw.test", "--forward", "a@dest.test")
    send(gw, "info@gw.test", "<srs@sender.test>")
    m = wait_msgid(sink, "<srs@sender.test>")
    srs = m.mail_from
    assert srs.startswith("SRS0=") and srs.endswith("@" + SRS_DOMAIN), srs
    assert "/" not in srs.split("@")[0]
    # The key in srs.secret produces this hash (postsrsd's scheme, '/' -> '_').
    h, tt, dom, local = srs.split("@")[0].split("=", 4)[1:]
    assert h == srs_hash(srs_key(gw), tt, dom, local)

    # The destination bounces it: the DSN to the SRS address reaches alice.
    bounce = make_message("MAILER-DAEMON@dest.test", srs, subject="Undelivered",
                          msgid="<bounce@dest.test>")
    qid = gw.send("", srs, bounce)
    got = wait_msgid(sender_mx, "<bounce@dest.test>")
    assert got.rcpt_tos == ["alice@sender.test"]
    assert got.mail_from == ""
    rows = gw.wait_activity(qid, "forwarded")
    assert rows[0]["action"] == "relay" and rows[0]["dest"] == "alice@sender.test"

    # Forged (hash changed), and expired (valid hash, 30 days old): 550 5.1.1.
    forged = srs.replace("=" + h + "=", "=" + ("AAAA" if h != "AAAA" else "BBBB") + "=")
    code, text = rcpt(gw, forged, mail_from="")
    assert code == 550 and text.startswith("5.1.1"), (code, text)
    old = b32stamp(int(time.time()) // 86400 - 30)
    expired_local = f"SRS0={srs_hash(srs_key(gw), old, 'sender.test', 'alice')}={old}=sender.test=alice"
    code, text = rcpt(gw, f"{expired_local}@{SRS_DOMAIN}", mail_from="")
    assert code == 550 and text.startswith("5.1.1"), (code, text)
    fresh = b32stamp(int(time.time()) // 86400 - 20)
    ok_local = f"SRS0={srs_hash(srs_key(gw), fresh, 'sender.test', 'alice')}={fresh}=sender.test=alice"
    assert rcpt(gw, f"{ok_local}@{SRS_DOMAIN}", mail_from="")[0] == 250

    # A sender already in SRS form gets SRS1; its return goes to the first hop.
    hop = "SRS0=abcd=G3=orig.test=bob@sender.test"
    send(gw, "info@gw.test", "<srs1@sender.test>", mail_from=hop)
    s1 = wait_msgid(sink, "<srs1@sender.test>").mail_from
    assert s1.startswith("SRS1=") and "=sender.test==abcd=G3=orig.test=bob@" in s1, s1
    gw.send("", s1, make_message("MAILER-DAEMON@dest.test", s1, msgid="<b1@dest.test>"))
    assert wait_msgid(sender_mx, "<b1@dest.test>").rcpt_tos == [hop]


def test_srs_long_sender_short_form(routed):
    gw, sink = routed.gw, routed.dest
    sender_mx = routed.sinks("127.0.0.3")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "info@gw.test", "--forward", "a@dest.test")
    longs = "a.rather.long.local.part.for.srs.testing.x@sender.test"
    send(gw, "info@gw.test", "<long@sender.test>", mail_from=longs)
    srs = wait_msgid(sink, "<long@sender.test>").mail_from
    local = srs.split("@")[0]
    assert srs.startswith("SRS0=") and len(local) <= 64, srs
    gw.send("", srs, make_message("MAILER-DAEMON@dest.test", srs, msgid="<lb@dest.test>"))
    assert wait_msgid(sender_mx, "<lb@dest.test>").rcpt_tos == [longs]


def test_transport_commands(routed):
    gw = routed.gw
    out = gw.ctl_ok("transport", "set", "dest.test", "[127.0.0.2]:2525")
    assert "127.0.0.2" in out
    assert gw.ctl("transport", "set", "dest.test", "no port")[0] == 1
    gw.ctl_ok("transport", "remove", "dest.test")
    assert gw.ctl("transport", "remove", "dest.test")[0] == 1
