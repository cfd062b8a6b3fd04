"""mxferryctl (issue 8): --json on every command, exit codes 0/1/2, -c after
the command, the new domain/address/catch-all commands, config --defaults /
--changed, and the audit log (who, what, before/after) of every change."""
import getpass
import json
import os
import pwd

from conftest import GW_HOST, make_message


def j(gw, *args):
    """Runs mxferryctl --json ARGS, checks exit 0 and returns the parsed document."""
    out = gw.ctl_ok(*args, "--json")
    assert out.endswith("\n") and out.count("\n") == 1, out
    return json.loads(out)


def refused(gw, *args):
    rc, out, err = gw.ctl(*args)
    assert rc == 1, (args, rc, out, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("mxferryctl: "), err
    return err


def test_json_everywhere_and_exit_codes(world):
    gw = world.gw
    # --json before the command too; objects with stable keys.
    rc, out, err = gw.ctl("--json", "domain", "add", "gw.test")
    assert rc == 0, err
    assert json.loads(out) == {"domain": "gw.test", "result": "added"}
    assert j(gw, "domain", "add", "bücher.test") == {"domain": "xn--bcher-kva.test",
                                                       "result": "added"}
    doms = {d["domain"]: d for d in j(gw, "domain", "list")["domains"]}
    assert doms["xn--bcher-kva.test"]["unicode"] == "bücher.test"
    assert doms["gw.test"]["enabled"] is True and doms["gw.test"]["catchall"] is None
    assert j(gw, "domain", "set", "gw.test", "subaddressing", "on") == {
        "domain": "gw.test", "key": "subaddressing", "value": "on"}
    assert j(gw, "address", "add", "bob@dest.test", "--verified") == {
        "address": "bob@dest.test", "result": "added", "verified": True}
    assert j(gw, "address", "add", "carol@dest.test")["verified"] is False
    assert j(gw, "address", "verify", "carol@dest.test") == {"address": "carol@dest.test",
                                                            "verified": True}
    addrs = {a["address"]: a for a in j(gw, "address", "list")["addresses"]}
    assert addrs["carol@dest.test"]["verified"] is True and addrs["bob@dest.test"]["rules"] == 0
    tag = j(gw, "rule", "add", "gw.test", "--to", "info@gw.test", "--forward",
            "bob@dest.test,carol@dest.test", "--name", "info")["tag"]
    assert len(tag) == 32
    rules = j(gw, "rule", "list")["rules"]
    assert len(rules) == 1 and rules[0]["tag"] == tag
    assert rules[0]["destinations"] == ["bob@dest.test", "carol@dest.test"]
    assert rules[0]["matcher"] == "literal" and rules[0]["to"] == "info@gw.test"
    assert j(gw, "rule", "show", "info")["rules"][0]["tag"] == tag
    assert [r["tag"] for r in j(gw, "rule", "list", "gw.test")["rules"]] == [tag]
    assert j(gw, "rule", "list", "bücher.test")["rules"] == []
    assert gw.ctl_ok("rule", "list", "bücher.test").strip() == "No rules"
    assert tag in gw.ctl_ok("rule", "list", "GW.test")
    assert j(gw, "rule", "disable", tag) == {"rule": tag, "result": "disabled"}
    assert j(gw, "rule", "show", tag)["rules"][0]["enabled"] is False
    assert j(gw, "rule", "enable", tag)["result"] == "enabled"
    assert j(gw, "catchall", "set", "gw.test", "--reject", "no such user") == {
        "domain": "gw.test", "catchall": "reject"}
    assert j(gw, "transport", "set", "dest.test", "127.0.0.2:25")["nexthop"] == "127.0.0.2:25"
    assert j(gw, "transport", "remove", "dest.test")["result"] == "removed"

    # Mail through, then the queue and status in JSON.
    qid = gw.send_retrying("alice@sender.test", "info@gw.test",
                           make_message("alice@sender.test", "info@gw.test"))
    world.dest.wait_for(1)
    from conftest import wait_until
    wait_until(lambda: not any(gw.spool_files(qid).values()), 10, what="message removed")
    st = j(gw, "status")
    names = {d["name"]: d for d in st["daemons"]}
    assert names["router"]["state"] == "running" and names["router"]["pid"] > 0
    assert set(st["queue"]) == {"incoming", "active", "deferred", "hold", "corrupt"}
    assert st["listen"].startswith("127.0.0.1:")
    assert j(gw, "queue", "list") == {"messages": []}  # delivered and removed
    refused(gw, "queue", "show", qid)  # delivered: no longer queued
    assert "not a queue ID" in refused(gw, "queue", "show", "nonsense")
    assert j(gw, "queue", "flush") == {"operation": "flush", "count": 0, "requested": 0}

    # config: effective, defaults, changed.
    keys = j(gw, "config")["keys"]
    host = [k for k in keys if k["section"] == "main" and k["key"] == "hostname"][0]
    assert host["value"] == GW_HOST and host["changed"] is True
    ret = [k for k in keys if k["key"] == "activity_retention"][0]
    assert ret["default"] == "2678400" and ret["changed"] is False
    changed = {(k["section"], k["key"]) for k in j(gw, "config", "--changed")["keys"]}
    assert ("main", "hostname") in changed and ("router", "activity_retention") not in changed
    assert ("smtpd", "listen") in changed
    out = gw.ctl_ok("config", "--changed")
    assert "[main]" in out and "hostname = " + GW_HOST in out and "retry_max = 2" in out
    assert "activity_retention" not in out
    out = gw.ctl_ok("config", "--defaults")
    assert "activity_retention = 2678400" in out and GW_HOST not in out

    # Exit codes: 2 usage, 1 refused with one line, -c accepted after the command.
    for bad in (("frobnicate",), ("domain",), ("rule", "add"), ("config", "--bogus"),
                ("audit", "--nope"), ("queue", "list", "--state")):
        rc, out, err = gw.ctl(*bad)
        assert rc == 2, (bad, rc, out, err)
    refused(gw, "domain", "add", "gw.test")
    refused(gw, "domain", "remove", "nope.test")
    refused(gw, "address", "remove", "bob@dest.test")  # still a destination
    refused(gw, "catchall", "disable", "xn--bcher-kva.test")
    refused(gw, "audit", "--since", "yesterday-ish")
    binary = os.path.join(gw.bin, "mxferryctl")
    import subprocess
    r = subprocess.run([binary, "domain", "list", "--json", "-c", gw.conf],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "gw.test" in r.stdout, r
    r = subprocess.run([binary, "-c", "/nonexistent/mxferry.conf", "domain", "list"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("mxferryctl: "), r


def test_new_commands_take_effect(world):
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test")
    gw.ctl_ok("catchall", "set", "gw.test", "--drop")
    s = gw.smtp()
    try:
        s.mail("alice@sender.test")
        assert s.rcpt("anyone@gw.test")[0] == 250
    finally:
        s.quit()
    assert "catch-all of gw.test removed" in gw.ctl_ok("catchall", "disable", "gw.test")
    assert "domain gw.test disabled" in gw.ctl_ok("domain", "disable", "gw.test")
    s = gw.smtp()
    try:
        s.mail("alice@sender.test")
        code, msg = s.rcpt("info@gw.test")
        assert code == 550 and msg.startswith(b"5.7.1"), (code, msg)  # not ours any more
    finally:
        s.quit()
    gw.ctl_ok("domain", "enable", "gw.test")
    s = gw.smtp()
    try:
        s.mail("alice@sender.test")
        assert s.rcpt("info@gw.test")[0] == 250
        code, msg = s.rcpt("anyone@gw.test")
        assert code == 550 and msg.startswith(b"5.1.1"), (code, msg)  # no catch-all now
    finally:
        s.quit()
    assert "domain gw.test removed" in gw.ctl_ok("domain", "remove", "gw.test")
    assert gw.ctl_ok("rule", "list").strip() == "No rules"
    assert "address bob@dest.test removed" in gw.ctl_ok("address", "remove", "bob@dest.test")
    assert gw.ctl_ok("address", "list").strip() == "No addresses"


def test_audit_records_every_change(world):
    gw = world.gw
    me = "unix:" + pwd.getpwuid(os.getuid()).pw_name
    gw.ctl_ok("domain", "add", "gw.test")
    gw.ctl_ok("address", "add", "bob@dest.test")
    gw.ctl_ok("address", "verify", "bob@dest.test")
    tag = gw.ctl_ok("rule", "add", "gw.test", "--to", "info@gw.test", "--forward",
                    "bob@dest.test").strip()
    gw.ctl_ok("rule", "disable", tag)
    gw.ctl_ok("domain", "set", "gw.test", "subaddressing", "on")
    gw.ctl_ok("catchall", "set", "gw.test", "--drop")
    gw.ctl_ok("catchall", "set", "gw.test", "--reject", "go away")
    gw.ctl_ok("transport", "set", "dest.test", "127.0.0.2:25")
    gw.ctl_ok("transport", "remove", "dest.test")
    gw.ctl_ok("catchall", "disable", "gw.test")
    gw.ctl_ok("domain", "disable", "gw.test")
    # Refused changes leave no trace.
    refused(gw, "rule", "add", "gw.test", "--to", "x@gw.test", "--forward", "nobody@dest.test")
    refused(gw, "address", "remove", "bob@dest.test")
    gw.ctl_ok("domain", "remove", "gw.test")  # takes the rule with it
    gw.ctl_ok("address", "remove", "bob@dest.test")

    entries = j(gw, "audit")["entries"]
    # Adding an unverified address made (and audited) a verification token;
    # the audit keeps no token, only that one was made.
    tokens = [e for e in entries if e["action"] == "address.token"]
    assert [e["object"] for e in tokens] == ["bob@dest.test"], tokens
    assert "token" not in json.dumps(tokens[0]["after"]), tokens
    entries = [e for e in entries if e["action"] != "address.token"]
    acts = [(e["action"], e["object"]) for e in entries]
    assert acts == [
        ("domain.add", "gw.test"), ("address.add", "bob@dest.test"),
        ("address.verify", "bob@dest.test"), ("rule.add", tag), ("rule.disable", tag),
        ("domain.set", "gw.test"), ("catchall.set", "gw.test"), ("catchall.set", "gw.test"),
        ("transport.set", "dest.test"), ("transport.remove", "dest.test"),
        ("catchall.remove", "gw.test"), ("domain.disable", "gw.test"),
        ("rule.remove", tag), ("domain.remove", "gw.test"),
        ("address.remove", "bob@dest.test")], acts
    assert all(e["who"] == me for e in entries), {e["who"] for e in entries}
    assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)
    by = dict(zip(range(len(entries)), entries))
    assert by[0]["before"] is None and by[0]["after"]["domain"] == "gw.test"
    assert by[2]["before"]["verified"] == 0 and by[2]["after"]["verified"] == 1
    assert by[3]["after"]["destinations"] == ["bob@dest.test"]
    assert by[4]["before"]["enabled"] == 1 and by[4]["after"]["enabled"] == 0
    assert by[5]["before"]["subaddressing"] == 0 and by[5]["after"]["subaddressing"] == 1
    assert by[6]["before"] is None and by[6]["after"]["action"] == "drop"
    assert by[7]["before"]["action"] == "drop"
    assert by[7]["after"] == dict(by[6]["after"], action="reject", argument="go away")
    assert by[8]["after"] == {"domain": "dest.test", "nexthop": "127.0.0.2:25"}
    assert by[9]["before"]["nexthop"] == "127.0.0.2:25" and by[9]["after"] is None
    assert by[10]["before"]["argument"] == "go away" and by[10]["after"] is None
    assert by[12]["before"]["to"] == "info@gw.test" and by[12]["after"] is None
    assert by[13]["before"]["enabled"] == 0 and by[13]["after"] is None
    for e in entries:
        assert e["time"].endswith("Z") and e["ts"] > 0

    # Human form, --since and --limit.
    out = gw.ctl_ok("audit")
    assert out.splitlines()[0].split() == ["TIME", "WHO", "ACTION", "OBJECT", "BEFORE", "AFTER"]
    assert "domain.remove" in out and me in out
    assert len(j(gw, "audit", "--limit", "2")["entries"]) == 2
    assert j(gw, "audit", "--limit", "2")["entries"][-1]["action"] == "address.remove"
    assert len(j(gw, "audit", "--since", "1h")["entries"]) == len(entries) + len(tokens)
    assert j(gw, "audit", "--since", "2999-01-01")["entries"] == []
    assert gw.ctl_ok("audit", "--since", "@4102444800").strip() == "No changes recorded"

    # A row written behind rulesdb's back with text that is not JSON still
    # gives valid JSON (as a string), and control characters are escaped.
    import sqlite3
    db = sqlite3.connect(os.path.join(gw.data, "rules.db"))
    with db:
        db.execute("INSERT INTO audit (ts, who, action, object, before, after) VALUES "
                   "(1, 'x', 'forged', 'o\x1b[2J', '{broken', NULL)")
    db.close()
    forged = [e for e in j(gw, "audit")["entries"] if e["action"] == "forged"][0]
    assert forged["before"] == "{broken" and forged["after"] is None
    assert forged["object"] == "o\x1b[2J"
    out = gw.ctl_ok("audit")
    assert "\x1b" not in out and "o\\x1b[2J" in out
