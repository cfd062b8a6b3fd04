"""Routing end to end: forward with SRS, unknown recipients, drop, catch-all,
MX preference."""
import re
import smtplib
import time

from conftest import GW_HOST, SRS_DOMAIN, make_message

# postsrsd's SRS0 form: SRS0=HHHH=TT=domain=local@srs_domain
SRS0_RE = re.compile(r"^SRS0=[A-Za-z0-9+/_]{4}=[A-Za-z2-7]{2}=(?P<domain>[^=@]+)=(?P<local>[^@]+)@"
                     + re.escape(SRS_DOMAIN) + "$", re.IGNORECASE)


def test_forward_srs_received_activity_and_intact_body(world):
    forward_roundtrip(world)


def test_forward_unjailed_leak_checked(world_unjailed):
    """The same path with every daemon unjailed: the teardown's sanitizer check
    then covers LeakSanitizer for smtpd, deliverd and bouncer too."""
    forward_roundtrip(world_unjailed)


def forward_roundtrip(world):
    gw, sink = world.gw, world.dest
    gw.forward("info@gw.test", "bob@dest.test")
    body = ("Hello Bob,\n"
            ".this line starts with a dot\n"
            "..and this one with two\n"
            ".\n"
            "Grüße aus Köln — 8-bit text, 日本語.\n"
            "\n"
            "Last line.\n")
    data = make_message("alice@sender.test", "info@gw.test", subject="forward me", body=body)
    qid = gw.send("alice@sender.test", "info@gw.test", data)

    [m] = sink.wait_for(1, timeout=20)
    assert m.rcpt_tos == ["bob@dest.test"]
    srs = SRS0_RE.match(m.mail_from)
    assert srs, f"envelope sender {m.mail_from!r} is not an SRS0 address at {SRS_DOMAIN}"
    assert srs.group("domain").lower() == "sender.test"
    assert srs.group("local") == "alice"

    received = m.header_all("Received")
    assert any(re.search(r"\bfrom .+ by " + re.escape(GW_HOST) + r" \(mxferry\)", r)
               for r in received), received
    # The gateway only prepends headers: the original message follows intact,
    # byte for byte (dot lines unstuffed, 8-bit preserved, CRLF kept).
    assert m.data.endswith(data), (m.data[-400:], data[-400:])
    prepended = m.data[:-len(data)]
    assert prepended.endswith(b"\r\n"), prepended
    assert prepended.startswith(b"Received:") or b"\r\nReceived:" in prepended, prepended

    rows = gw.wait_activity(qid, "forwarded", timeout=20)
    assert any("bob@dest.test" in str(r.get("dest")) for r in rows), rows
    assert any(r.get("rcpt") and "info@gw.test" in str(r.get("rcpt")) for r in rows), rows


def test_unknown_recipient_and_relay_refused(world):
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test")
    s = gw.smtp()
    try:
        code, _ = s.mail("alice@sender.test")
        assert code == 250
        code, msg = s.rcpt("nobody@gw.test")
        assert code == 550 and msg.startswith(b"5.1.1"), (code, msg)
        code, msg = s.rcpt("someone@foreign.test")
        assert 500 <= code <= 599, f"relay to a foreign domain not refused: {code} {msg!r}"
        # The routed address still works in the same transaction.
        code, msg = s.rcpt("info@gw.test")
        assert code == 250, (code, msg)
        s.rset()
    finally:
        s.quit()
    # smtplib's view of the same refusal.
    s = gw.smtp()
    try:
        try:
            s.sendmail("alice@sender.test", ["nobody@gw.test"],
                       make_message("alice@sender.test", "nobody@gw.test"))
            raise AssertionError("unknown recipient accepted")
        except smtplib.SMTPRecipientsRefused as e:
            code, msg = e.recipients["nobody@gw.test"]
            assert code == 550 and msg.startswith(b"5.1.1")
    finally:
        s.quit()
    time.sleep(1)
    assert world.dest.messages == []


def test_drop_rule(world):
    gw, sink = world.gw, world.dest
    gw.ctl_ok("domain", "add", "gw.test")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "spam@gw.test", "--drop")
    gw.ctl_ok("address", "add", "bob@dest.test", "--verified")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "info@gw.test", "--forward", "bob@dest.test")

    dropped = gw.send("alice@sender.test", "spam@gw.test",
                      make_message("alice@sender.test", "spam@gw.test", msgid="<drop@sender.test>"))
    gw.wait_activity(dropped, "dropped", timeout=20)
    # A message sent after it is delivered: proof that delivery works and the
    # dropped one had its chance to (wrongly) arrive first.
    gw.send("alice@sender.test", "info@gw.test",
            make_message("alice@sender.test", "info@gw.test", msgid="<keep@sender.test>"))
    sink.wait_for(1, timeout=20)
    time.sleep(2)
    assert [m.msg.get("Message-ID") for m in sink.messages] == ["<keep@sender.test>"]
    assert not [r for r in gw.activity(dropped) if r.get("status") == "forwarded"]


def test_catchall(world):
    gw, sink = world.gw, world.dest
    gw.ctl_ok("domain", "add", "gw.test")
    gw.ctl_ok("address", "add", "bob@dest.test", "--verified")
    gw.ctl_ok("address", "add", "carol@dest.test", "--verified")
    gw.ctl_ok("catchall", "set", "gw.test", "--forward", "bob@dest.test")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "info@gw.test", "--forward", "carol@dest.test")

    q1 = gw.send("alice@sender.test", "random-name@gw.test",
                 make_message("alice@sender.test", "random-name@gw.test", msgid="<c1@sender.test>"))
    q2 = gw.send("alice@sender.test", "info@gw.test",
                 make_message("alice@sender.test", "info@gw.test", msgid="<c2@sender.test>"))
    msgs = sink.wait_for(2, timeout=20)
    got = {m.msg.get("Message-ID"): m.rcpt_tos for m in msgs}
    # The catch-all takes what no literal rule names; a literal rule wins.
    assert got == {"<c1@sender.test>": ["bob@dest.test"], "<c2@sender.test>": ["carol@dest.test"]}
    gw.wait_activity(q1, "forwarded")
    gw.wait_activity(q2, "forwarded")


def test_mx_preference_and_fallback(dns_server, sinks, gateway):
    # pref.test: both MX up, the preferred one (listed last in the zone) must
    # get the mail. fall.test: the preferred MX has nothing listening.
    dns_server.zone("pref.test", mx=[(20, "mxb.pref.test"), (10, "mxa.pref.test")],
                    a={"mxa.pref.test": "127.0.0.2", "mxb.pref.test": "127.0.0.3"})
    dns_server.zone("fall.test", mx=[(10, "mxa.fall.test"), (20, "mxb.fall.test")],
                    a={"mxa.fall.test": "127.0.0.4", "mxb.fall.test": "127.0.0.3"})
    dns_server.start()
    s2, s3 = sinks("127.0.0.2"), sinks("127.0.0.3")
    gw = gateway()
    gw.forward("a@gw.test", "x@pref.test")
    gw.forward("b@gw.test", "y@fall.test")

    gw.send("alice@sender.test", "a@gw.test",
            make_message("alice@sender.test", "a@gw.test", msgid="<pref@sender.test>"))
    [m] = s2.wait_for(1, timeout=20)
    assert m.rcpt_tos == ["x@pref.test"]

    q = gw.send("alice@sender.test", "b@gw.test",
                make_message("alice@sender.test", "b@gw.test", msgid="<fall@sender.test>"))
    [m] = s3.wait_for(1, timeout=30)
    assert m.rcpt_tos == ["y@fall.test"]
    assert m.msg.get("Message-ID") == "<fall@sender.test>"
    gw.wait_activity(q, "forwarded")
    assert len(s2.messages) == 1
