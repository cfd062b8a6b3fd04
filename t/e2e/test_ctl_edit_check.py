"""mxferryctl rule edit and check (issue 8)."""
import json
import os
import sqlite3

from conftest import make_message, wait_until


def j(gw, *args):
    return json.loads(gw.ctl_ok(*args, "--json"))


def test_rule_edit(world):
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test")
    gw.ctl_ok("address", "add", "carol@dest.test", "--verified")
    gw.ctl_ok("address", "add", "eve@dest.test")
    tag = j(gw, "rule", "list")["rules"][0]["tag"]
    assert gw.ctl_ok("rule", "edit", tag, "--forward", "carol@dest.test", "--name", "info",
                     "--priority", "5").strip() == f"rule {tag} edited"
    r = j(gw, "rule", "show", tag)["rules"][0]
    assert (r["destinations"], r["name"], r["priority"], r["enabled"]) == (
        ["carol@dest.test"], "info", 5, True)
    q = gw.send_retrying("alice@sender.test", "info@gw.test",
                         make_message("alice@sender.test", "info@gw.test"))
    # (eve's verification mail goes to the same sink.)
    wait_until(lambda: [m for m in world.dest.messages if m.rcpt_tos == ["carol@dest.test"]],
               20, what=f"{q} at carol")
    # By name, in JSON; the matcher changes, the tag stays.
    assert j(gw, "rule", "edit", "info", "--match", "info*@gw.test", "--disable") == {
        "rule": "info", "result": "edited"}
    r = j(gw, "rule", "show", tag)["rules"][0]
    assert (r["matcher"], r["to"], r["enabled"]) == ("wildcard", "info*@gw.test", False)
    gw.ctl_ok("rule", "edit", tag, "--reject", "gone", "--enable")
    s = gw.smtp()
    try:
        s.mail("alice@sender.test")
        code, msg = s.rcpt("info-old@gw.test")
        assert code == 550 and b"gone" in msg, (code, msg)
    finally:
        s.quit()
    # Refused edits change nothing and leave no audit entry.
    n = len(j(gw, "audit")["entries"])
    for bad in (("--forward", "eve@dest.test"), ("--to", "x@other.test"),
                ("--match", "nostar@gw.test"), ("--priority", "-1")):
        rc, out, err = gw.ctl("rule", "edit", tag, *bad)
        assert rc == 1 and len(err.strip().splitlines()) == 1, (bad, rc, out, err)
    assert gw.ctl("rule", "edit", "nosuchrule", "--drop")[0] == 1
    assert gw.ctl("rule", "edit", tag)[0] == 2  # nothing to change
    assert gw.ctl("rule", "edit", tag, "--drop", "--reject", "x")[0] == 2
    gw.ctl_ok("catchall", "set", "gw.test", "--drop")
    ca = [r for r in j(gw, "rule", "list")["rules"] if r["matcher"] == "all"][0]["tag"]
    assert gw.ctl("rule", "edit", ca, "--to", "a@gw.test")[0] == 1
    assert j(gw, "rule", "show", tag)["rules"][0]["action"] == "reject"
    entries = j(gw, "audit")["entries"]
    assert len(entries) == n + 1 and entries[-1]["action"] == "catchall.set"
    edits = [e for e in entries if e["action"] == "rule.edit"]
    assert len(edits) == 3 and all(e["object"] == tag for e in edits)
    assert edits[0]["before"]["destinations"] == ["bob@dest.test"]
    assert edits[0]["after"]["destinations"] == ["carol@dest.test"]
    assert edits[2]["before"]["action"] == "forward" and edits[2]["after"]["argument"] == "gone"


def test_check(world):
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test")
    out = gw.ctl_ok("check")
    assert out.strip().endswith("0 problems") and "PROBLEM" not in out, out
    d = j(gw, "check")
    assert d["ok"] is True and d["problems"] == 0
    assert {c["check"] for c in d["checks"]} >= {"configuration", "rules.db", "rules",
                                                 "activity.db", "corrupt envelopes"}
    # A quarantined envelope is a problem.
    with open(os.path.join(gw.spool, "corrupt", "01AAAAAAAAAAAAAAAAAAAAAAAA"), "w") as f:
        f.write("garbage")
    rc, out, err = gw.ctl("check")
    assert rc == 1 and "PROBLEM  corrupt envelopes" in out and "1 problem found" in err, out
    os.unlink(os.path.join(gw.spool, "corrupt", "01AAAAAAAAAAAAAAAAAAAAAAAA"))
    # A rule the router would refuse to load (a forward without destinations,
    # written behind mxferryctl's back) is a problem too.
    db = sqlite3.connect(os.path.join(gw.data, "rules.db"))
    with db:
        db.execute("DELETE FROM rule_dests")
    db.close()
    rc, out, err = gw.ctl("check", "--json")
    d = json.loads(out)
    assert rc == 1 and d["ok"] is False, out
    bad = [c for c in d["checks"] if not c["ok"]]
    assert [c["check"] for c in bad] == ["rules"], bad
    # A broken configuration: exit 1 with the reason.
    with open(gw.conf, "a") as f:
        f.write("\n[router]\nretry_min = forever\n")
    rc, out, err = gw.ctl("check")
    assert rc == 1 and "retry_min" in err, (rc, out, err)
