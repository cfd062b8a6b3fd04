"""mxferryctl: status, rules, exit codes."""
from conftest import DAEMONS, GW_HOST


def test_status_lists_daemons(world):
    out = world.gw.ctl_ok("status")
    for d in DAEMONS:
        assert d in out, f"{d} missing in status output:\n{out}"


def test_rule_list_shows_rules(world):
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test", "carol@dest.test")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "spam@gw.test", "--drop")
    out = gw.ctl_ok("rule", "list")
    for s in ("info@gw.test", "bob@dest.test", "carol@dest.test", "spam@gw.test"):
        assert s in out, f"{s} missing in rule list:\n{out}"


def test_exit_codes(world):
    gw = world.gw
    rc, out, err = gw.ctl("frobnicate")
    assert rc == 2, (rc, out, err)
    rc, out, err = gw.ctl("rule", "add")
    assert rc == 2, (rc, out, err)
    gw.ctl_ok("domain", "add", "gw.test")
    # A destination nobody verified is refused, with one line on stderr.
    rc, out, err = gw.ctl("rule", "add", "gw.test", "--to", "info@gw.test",
                          "--forward", "mallory@dest.test")
    assert rc == 1, (rc, out, err)
    assert len(err.strip().splitlines()) == 1, err
    # Refused means not stored: the address stays unknown at RCPT.
    out = gw.ctl_ok("rule", "list")
    assert "mallory@dest.test" not in out
    s = gw.smtp()
    try:
        s.mail("alice@sender.test")
        code, msg = s.rcpt("info@gw.test")
        assert code == 550 and msg.startswith(b"5.1.1"), (code, msg)
    finally:
        s.quit()


def test_config_prints_effective_values(world):
    out = world.gw.ctl_ok("config")
    assert GW_HOST in out
    assert world.gw.spool in out
    assert "retry_min" in out


def test_address_verification_by_mail(world):
    """`address add` mails the destination a one-time code through the router;
    `address verify ADDR CODE` verifies it; wrong, spent and expired codes are
    refused; `address resend` replaces the code (issue 8)."""
    import json
    import os
    import re
    import sqlite3
    import time

    from conftest import make_message, wait_until
    gw, sink = world.gw, world.dest
    gw.ctl_ok("domain", "add", "gw.test")
    wait_until(lambda: "connected to router" in gw.log_text(), 15, what="smtpd up")

    def mail_for(addr, n=1):
        def got():
            ms = [m for m in sink.messages if m.rcpt_tos == [addr]]
            return ms if len(ms) >= n else None
        return wait_until(got, 30, what=f"{n} verification message(s) for {addr}")

    def code_of(m):
        body = m.msg.get_payload(decode=True).decode()
        return re.search(r"address verify \S+ ([a-z0-9]{20})\r?\n", body).group(1)

    out = json.loads(gw.ctl_ok("address", "add", "vera@dest.test", "--json"))
    assert out["verified"] is False and out["verification"]["sent"] is True, out
    [m] = mail_for("vera@dest.test")
    assert m.mail_from == ""  # nothing bounces back to us
    assert m.msg["Subject"] == "Verify forwarding to vera@dest.test"
    assert m.msg["Auto-Submitted"] == "auto-generated"
    code = code_of(m)
    # Not verified yet: no rule may forward there.
    rc, _, err = gw.ctl("rule", "add", "gw.test", "--to", "v@gw.test", "--forward",
                        "vera@dest.test")
    assert rc == 1 and "not verified" in err, err
    # Wrong code, then the right one, then the spent one.
    rc, _, err = gw.ctl("address", "verify", "vera@dest.test", "a" * 20)
    assert rc == 1 and "wrong or expired" in err, err
    assert "verified" in gw.ctl_ok("address", "verify", "VERA@dest.test", code)
    rc, _, err = gw.ctl("address", "verify", "vera@dest.test", code)
    assert rc == 1 and "already" in err, err
    gw.ctl_ok("rule", "add", "gw.test", "--to", "v@gw.test", "--forward", "vera@dest.test")
    gw.send_retrying("alice@sender.test", "v@gw.test",
                     make_message("alice@sender.test", "v@gw.test", msgid="<after@verify>"))
    wait_until(lambda: [x for x in sink.messages if x.msg["Message-ID"] == "<after@verify>"],
               20, what="forwarded once verified")

    # Resend replaces the code; an expired code is refused like a wrong one.
    gw.ctl_ok("address", "add", "walt@dest.test")
    first = code_of(mail_for("walt@dest.test")[0])
    assert "queued as" in gw.ctl_ok("address", "resend", "walt@dest.test")
    second = code_of(mail_for("walt@dest.test", 2)[1])
    assert first != second
    rc, _, err = gw.ctl("address", "verify", "walt@dest.test", first)
    assert rc == 1 and "wrong or expired" in err, err
    db = sqlite3.connect(os.path.join(gw.data, "rules.db"), timeout=5)
    db.execute("UPDATE addresses SET token_expires = ? WHERE email = 'walt@dest.test'",
               (int(time.time()) - 1,))
    db.commit()
    db.close()
    rc, _, err = gw.ctl("address", "verify", "walt@dest.test", second)
    assert rc == 1 and "wrong or expired" in err, err
    # A verified address gets no new code.
    rc, _, err = gw.ctl("address", "resend", "vera@dest.test")
    assert rc == 1, err
    # The audit names the token's making and the verification, never the code.
    audit = json.loads(gw.ctl_ok("audit", "--json"))["entries"]
    acts = [(e["action"], e["object"].lower()) for e in audit if "vera" in e["object"].lower()]
    assert acts == [("address.add", "vera@dest.test"), ("address.token", "vera@dest.test"),
                    ("address.verify", "vera@dest.test")], acts
    assert code not in json.dumps(audit) and first not in json.dumps(audit)

    # Router down: the address is added, the mail is not sent, and the
    # operator is told how to send it later.
    gw.stop()
    rc, out, err = gw.ctl("address", "add", "zed@dest.test")
    assert rc == 0 and "added, not verified" in out and "address resend" in err, (out, err)


def test_verification_mail_survives_router_restart(world):
    """A queued verification message (origin ctl) is read back after a router
    crash: not moved to corrupt/, delivered once the destination answers."""
    import json
    import os
    import signal

    from conftest import kill_pid, wait_until
    gw, sink = world.gw, world.dest
    gw.ctl_ok("domain", "add", "gw.test")
    wait_until(lambda: "connected to router" in gw.log_text(), 15, what="smtpd up")
    sink.set_mode("tempfail")
    out = json.loads(gw.ctl_ok("address", "add", "late@dest.test", "--json"))
    qid = out["verification"]["queue_id"]
    gw.wait_activity(qid, "deferred")
    gw.expect_restart("router")
    kill_pid(gw.status()["router"]["pid"], signal.SIGKILL)
    wait_until(lambda: qid in gw.ctl_ok("queue", "list"), 20, what="the message queued again")
    assert not os.listdir(os.path.join(gw.spool, "corrupt"))
    sink.set_mode("accept")
    # (once the restarted router answers)
    wait_until(lambda: gw.ctl("queue", "flush")[0] == 0, 20, what="queue flush")
    wait_until(lambda: [m for m in sink.messages if m.rcpt_tos == ["late@dest.test"]], 30,
               what="the verification message delivered")
