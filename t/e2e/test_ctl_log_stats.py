"""mxferryctl log and stats over activity.db (issue 8), and the activity
retention pruning in the router."""
import json
import os
import re
import sqlite3
import subprocess
import threading
import time

from conftest import QID_RE, make_message, pid_alive, wait_until


def j(gw, *args):
    out = gw.ctl_ok(*args, "--json")
    return json.loads(out)


def rejected_rcpt(gw, rcpt):
    s = gw.smtp()
    try:
        s.mail("mallory@sender.test")
        code, msg = s.rcpt(rcpt)
        assert code == 550, (code, msg)
    finally:
        s.quit()


def test_log_and_stats(world):
    gw, sink = world.gw, world.dest
    gw.forward("info@gw.test", "bob@dest.test")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "spam@gw.test", "--drop")
    assert gw.ctl_ok("log").strip() == "No activity" or "rejected" not in gw.ctl_ok("log")
    q1 = gw.send_retrying("alice@sender.test", "info@gw.test",
                          make_message("alice@sender.test", "info@gw.test"))
    q2 = gw.send_retrying("carol@sender.test", "info@gw.test",
                          make_message("carol@sender.test", "info@gw.test"))
    q3 = gw.send_retrying("alice@sender.test", "spam@gw.test",
                          make_message("alice@sender.test", "spam@gw.test"))
    rejected_rcpt(gw, "nobody@gw.test")
    rejected_rcpt(gw, "someone@elsewhere.test")
    for q in (q1, q2):
        gw.wait_activity(q, "forwarded")
    gw.wait_activity(q3, "dropped")
    sink.set_mode("permfail")
    # The null sender: no bounce, so the counts stay exactly these.
    q4 = gw.send_retrying("", "info@gw.test", make_message("", "info@gw.test"))
    gw.wait_activity(q4, "delivery_failed")
    wait_until(lambda: len([r for r in gw.activity() if r["status"] == "rejected"]) == 2, 10,
               what="two rejected rows")

    # log: human form, one line per row with the SPF/DKIM/DMARC columns.
    out = gw.ctl_ok("log")
    lines = out.strip().splitlines()
    assert len(lines) == 6, out
    assert all("spf=" in ln and "dkim=" in ln and "dmarc=" in ln for ln in lines)
    fwd = [ln for ln in lines if q1 in ln][0]
    assert "forwarded" in fwd and "from=<alice@sender.test>" in fwd
    assert "to=<info@gw.test>" in fwd and "dest=<bob@dest.test>" in fwd
    assert "relay=" in fwd and "(250 " in fwd  # the remote reply
    assert "someone@elsewhere.test" in out

    # JSON and the filters.
    entries = j(gw, "log")["entries"]
    assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)
    keys = {"id", "ts", "time", "queue_id", "client_ip", "helo", "from", "rcpt", "dest", "rule",
            "action", "spf", "dkim", "dmarc", "status", "remote_host", "reply", "size",
            "arc", "auth",  # issue 7
            "reason", "count",  # issue 11: why a refusal, how many a row stands for
            "message_id", "subject"}  # issue 12
    assert all(set(e) == keys for e in entries), entries[0]
    by_q = {e["queue_id"]: e for e in entries if e["queue_id"]}
    assert by_q[q1]["reply"].startswith("250") and by_q[q1]["size"] > 0
    assert by_q[q4]["status"] == "delivery_failed" and by_q[q4]["reply"].startswith("5")
    assert [e["queue_id"] for e in j(gw, "log", "--id", q2)["entries"]] == [q2]
    assert {e["status"] for e in j(gw, "log", "--status", "rejected")["entries"]} == {"rejected"}
    assert len(j(gw, "log", "--status", "rejected")["entries"]) == 2
    assert {e["queue_id"] for e in j(gw, "log", "--from", "CAROL@")["entries"]} == {q2}
    assert {e["queue_id"] for e in j(gw, "log", "--to", "spam@")["entries"]} == {q3}
    assert len(j(gw, "log", "--to", "bob@dest.test")["entries"]) == 3  # dest matches too
    last2 = j(gw, "log", "--limit", "2")["entries"]
    assert len(last2) == 2 and last2 == entries[-2:]
    assert j(gw, "log", "--since", "@%d" % (time.time() + 3600))["entries"] == []
    assert j(gw, "log", "--until", "2000-01-01")["entries"] == []
    assert len(j(gw, "log", "--since", "1h", "--until", "@%d" % (time.time() + 60))
               ["entries"]) == 6
    assert gw.ctl("log", "--status", "lost")[0] == 1
    assert gw.ctl("log", "--since", "soon")[0] == 1
    assert gw.ctl("log", "--bogus", "x")[0] == 2

    # stats equal what was sent, by status.
    st = j(gw, "stats")
    want = {"received": 4, "forwarded": 2, "dropped": 1, "rejected": 2, "delivery_failed": 1,
            "bounced": 0, "deferred": 0}
    assert st["total"] == want, st
    assert st["by"] == "hour" and len(st["buckets"]) in (1, 2)  # an hour may turn meanwhile
    assert sum(b["forwarded"] for b in st["buckets"]) == 2
    assert j(gw, "stats", "--by", "day")["total"] == want
    assert j(gw, "stats", "--since", "@%d" % (time.time() + 3600))["total"]["received"] == 0
    out = gw.ctl_ok("stats")
    head = out.splitlines()[0].split()
    assert head == ["HOUR", "RECEIVED", "FORWARDED", "DROPPED", "REJECTED", "FAILED", "BOUNCED",
                    "DEFERRED"], out
    total = [ln for ln in out.splitlines() if ln.startswith("total")][0].split()
    assert total[1:] == ["4", "2", "1", "2", "1", "0", "0"], out
    assert "##" in out and "xx" in out and "# forwarded" in out
    assert gw.ctl("stats", "--by", "week")[0] == 1

    # log --follow prints new rows as they come (JSON lines with --json).
    p = subprocess.Popen([os.path.join(gw.bin, "mxferryctl"), "-c", gw.conf, "log", "--follow",
                          "--json", "--status", "rejected", "--limit", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(p.stdout.readline())
        assert first["status"] == "rejected"
        rejected_rcpt(gw, "late@gw.test")
        nxt = json.loads(p.stdout.readline())
        assert nxt["rcpt"] == "late@gw.test" and nxt["id"] > first["id"]
    finally:
        p.terminate()
        p.wait(5)
    assert p.returncode == 0, p.stderr.read()


def burst(gw, targets, conns=4):
    """Sends len(targets) messages at once from conns threads, the message
    to targets[i], each after a refused RCPT (nobody@gw.test). Returns
    {queue ID: target}."""
    got, errors = {}, []

    def session(part):
        try:
            # A new connection every 5 messages: smtpd ends a session after
            # 10 errors (the refused RCPTs).
            for i in range(0, len(part), 5):
                s = gw.smtp()
                for to in part[i:i + 5]:
                    assert s.mail("alice@sender.test")[0] == 250
                    assert s.rcpt("nobody@gw.test")[0] == 550
                    assert s.rcpt(to)[0] == 250
                    code, resp = s.data(make_message("alice@sender.test", to))
                    assert code == 250, (code, resp)
                    got[QID_RE.search(resp).group(1).decode()] = to
                s.quit()
        except Exception as e:  # noqa: BLE001 (reported by the test)
            errors.append(repr(e))
    threads = [threading.Thread(target=session, args=(targets[i::conns],))
               for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(got) == len(targets), errors
    return got


def test_activity_burst_and_clean_stop(dns_server, sinks, gateway):
    """Issue 14: the router writes activity rows off its event loop, batched.
    A burst gives exactly one row per recipient outcome, in event order; a
    clean stop right after a burst loses none."""
    from conftest import make_world
    # Every refusal a row of its own (no coalescing); unjailed, so that
    # LeakSanitizer checks the router's writer thread and queue at exit.
    w = make_world(dns_server, sinks, gateway, {"main": {"run_as_invoking_user": "yes"},
                                                "router": {"reject_log_rate": "0"}})
    gw, sink = w.gw, w.dest
    gw.forward("info@gw.test", "bob@dest.test")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "spam@gw.test", "--drop")
    sent = burst(gw, ["info@gw.test", "spam@gw.test"] * 100)
    fwd = {q for q, to in sent.items() if to == "info@gw.test"}
    sink.wait_for(100, timeout=60)

    def settled():
        rows = gw.activity()
        return rows if len(rows) >= 400 else None
    rows = wait_until(settled, 20, what=lambda: f"400 rows, got {len(gw.activity())}")
    assert len(rows) == 400, len(rows)  # and no more later: the counts below
    mine = [r for r in rows if r["queue_id"]]
    assert sorted(r["queue_id"] for r in mine) == sorted(sent)
    for r in mine:
        want = "forwarded" if r["queue_id"] in fwd else "dropped"
        assert r["status"] == want and r["rcpt"] == sent[r["queue_id"]], r
    rej = [r for r in rows if not r["queue_id"]]
    assert len(rej) == 200 and all(r["status"] == "rejected" and r["rcpt"] == "nobody@gw.test"
                                   and r["count"] is None for r in rej)
    # In event order: ts (taken at the event) never goes back along the ids.
    rows.sort(key=lambda r: r["id"])
    assert all(a["ts"] <= b["ts"] for a, b in zip(rows, rows[1:]))

    # Another process holds activity.db's write lock: SMTP goes on (the loop
    # never waits for the writer) and the rows wait in the router. The stop
    # comes while they wait, the lock goes once the router is stopping: it
    # writes them all before it exits.
    lock = sqlite3.connect(os.path.join(gw.data, "activity.db"), isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        sent2 = burst(gw, ["spam@gw.test"] * 50, conns=5)
        assert len(gw.activity()) == 400  # nothing written yet
        took = []
        stopper = threading.Thread(target=lambda: took.append(gw.stop()))
        stopper.start()
        wait_until(lambda: re.search(r"mxferry/router\[\d+\]: stopping on signal",
                                     gw.log_text()), 5, what="the router stopping")
    finally:
        lock.rollback()
        lock.close()
    stopper.join(10)
    assert took and took[0] is not None, "mxferryd did not stop"
    rows = gw.activity()
    dropped = [r["queue_id"] for r in rows if r["status"] == "dropped"]
    assert sorted(set(sent2) & set(dropped)) == sorted(sent2), \
        f"{len(set(sent2) - set(dropped))} drop row(s) lost at the stop"
    assert len(dropped) == 150 and len([r for r in rows if r["status"] == "rejected"]) == 250
    log = gw.log_text()
    assert "row(s) dropped" not in log, log[-3000:]
    assert re.search(r"mxferry/router\[\d+\]: stopped", log), log[-2000:]


def test_activity_retention(dns_server, sinks, gateway):
    from conftest import make_world
    w = make_world(dns_server, sinks, gateway, {"router": {"activity_retention": "2h"}})
    gw = w.gw
    gw.forward("info@gw.test", "bob@dest.test")
    q = gw.send_retrying("alice@sender.test", "info@gw.test",
                         make_message("alice@sender.test", "info@gw.test"))
    gw.wait_activity(q, "forwarded")
    assert gw.stop() is not None
    # Rows from three hours and one hour ago: only the first is past retention.
    db = sqlite3.connect(os.path.join(gw.data, "activity.db"))
    now = int(time.time())
    with db:
        db.execute("INSERT INTO activity (ts, queue_id, status) VALUES (?, 'OLD', 'forwarded')",
                   (now - 3 * 3600,))
        db.execute("INSERT INTO activity (ts, queue_id, status) VALUES (?, 'RECENT', 'dropped')",
                   (now - 3600,))
    db.close()
    gw.start()
    wait_until(lambda: not gw.activity("OLD"), 10, what="old row pruned at start")
    assert gw.activity("RECENT") and gw.activity(q)
    assert "pruned 1 row(s)" in gw.log_text()
    assert [e["queue_id"] for e in j(gw, "log", "--id", "RECENT")["entries"]] == ["RECENT"]


def test_log_subject_and_message_id(world):
    """The activity log keeps the message's Subject and Message-ID as smtpd
    read them (unfolded, made safe for a log and JSON), on every row of the
    message, also after a router restart (they travel in the envelope)."""
    gw, sink = world.gw, world.dest
    gw.forward("info@gw.test", "bob@dest.test")
    sink.set_mode("tempfail")
    subject = "Caf\u00e9 report\r\n\tpart two \x01 =?utf-8?q?x?="
    msg = make_message("alice@sender.test", "info@gw.test", subject=subject,
                       msgid="<subj-1@sender.test>")
    qid = gw.send_retrying("alice@sender.test", "info@gw.test", msg)
    gw.wait_activity(qid, "deferred")
    want_subject = "Caf\u00e9 report part two   =?utf-8?q?x?="
    row = [e for e in j(gw, "log", "--id", qid)["entries"] if e["status"] == "deferred"][0]
    assert row["subject"] == want_subject, row
    assert row["message_id"] == "<subj-1@sender.test>"
    line = [ln for ln in gw.ctl_ok("log", "--id", qid).splitlines() if "deferred" in ln][0]
    assert 'subject="Caf\u00e9 report part two' in line, line

    # A router restarted with the message queued still knows both.
    before = gw.status()["router"]
    gw.expect_restart("router")
    os.kill(before["pid"], 9)
    wait_until(lambda: (gw.status().get("router") or {}).get("pid") not in (None, before["pid"])
               and pid_alive(gw.status()["router"]["pid"]), 20, what="the router back")
    sink.set_mode("accept")
    gw.wait_activity(qid, "forwarded", timeout=60)
    fwd = [e for e in j(gw, "log", "--id", qid)["entries"] if e["status"] == "forwarded"][0]
    assert fwd["subject"] == want_subject and fwd["message_id"] == "<subj-1@sender.test>"

    # No Subject, no Message-ID: null, not "".
    raw = (b"From: <alice@sender.test>\r\nTo: <info@gw.test>\r\n"
           b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\nbare\r\n")
    q2 = gw.send_retrying("alice@sender.test", "info@gw.test", raw)
    gw.wait_activity(q2, "forwarded")
    e2 = j(gw, "log", "--id", q2)["entries"][0]
    assert e2["subject"] is None and e2["message_id"] is None
