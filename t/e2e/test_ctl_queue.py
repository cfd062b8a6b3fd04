"""mxferryctl queue (issue 8): list filters, show --body, export, --all, in
human and JSON form."""
import json
import os
import subprocess
import time

from conftest import make_message, make_world, wait_until


def j(gw, *args):
    return json.loads(gw.ctl_ok(*args, "--json"))


def test_queue_filters_export_all(dns_server, sinks, gateway):
    w = make_world(dns_server, sinks, gateway, {"router": {"retry_schedule": "1h"}})
    gw, sink = w.gw, w.dest
    gw.forward("info@gw.test", "bob@dest.test")
    gw.forward("sales@gw.test", "carol@dest.test")
    sink.set_mode("tempfail")
    qa = gw.send_retrying("alice@sender.test", "info@gw.test",
                          make_message("alice@sender.test", "info@gw.test", subject="first",
                                       body="line one\r\nline \x1b[31mtwo\r\n"))
    qb = gw.send_retrying("dave@sender.test", "sales@gw.test",
                          make_message("dave@sender.test", "sales@gw.test", subject="second"))
    for q in (qa, qb):
        gw.wait_activity(q, "deferred")
    wait_until(lambda: len(j(gw, "queue", "list", "--state", "deferred")["messages"]) == 2, 10,
               what="two deferred")

    msgs = j(gw, "queue", "list")["messages"]
    assert [m["queue_id"] for m in msgs] == sorted([qa, qb])
    m = [m for m in msgs if m["queue_id"] == qa][0]
    assert m["sender"] == "alice@sender.test" and m["state"] == "deferred"
    assert m["recipients"][0]["orig"] == "info@gw.test"
    assert m["recipients"][0]["dest"] == "bob@dest.test"
    assert m["recipients"][0]["status"] == "deferred" and m["recipients"][0]["attempts"] >= 1
    ids = lambda *a: [x["queue_id"] for x in j(gw, "queue", "list", *a)["messages"]]
    assert ids("--from", "ALICE@") == [qa]
    assert ids("--to", "sales@gw.test") == [qb]
    assert ids("--to", "carol@") == [qb]  # the destination matches too
    assert ids("--state", "hold") == []
    assert ids("--older-than", "1h") == []
    time.sleep(1.1)
    assert sorted(ids("--older-than", "1s")) == sorted([qa, qb])
    out = gw.ctl_ok("queue", "list", "--from", "dave")
    assert qb in out and qa not in out and "1 message" in out
    assert gw.ctl("queue", "list", "--state", "lost")[0] == 1
    assert gw.ctl("queue", "list", "--older-than", "soon")[0] == 1
    assert gw.ctl("queue", "list", "--colour", "red")[0] == 2

    # show --body: the content, terminal controls escaped; JSON has it too.
    out = gw.ctl_ok("queue", "show", qa, "--body")
    assert "Subject: first" in out and "line one" in out
    assert "\x1b" not in out and "\\x1b[31mtwo" in out
    assert "Subject:" not in gw.ctl_ok("queue", "show", qa)
    d = j(gw, "queue", "show", qa, "--body")
    assert d["queue_id"] == qa and "Subject: first" in d["body"] and "\x1b[31mtwo" in d["body"]
    assert d["client_ip"] == "127.0.0.1" and d["recipients"][0]["rule"]
    assert "body" not in j(gw, "queue", "show", qa)

    # export: the Received block the router prepends, then the content, byte for byte.
    r = subprocess.run([os.path.join(gw.bin, "mxferryctl"), "-c", gw.conf, "queue", "export",
                        qa], capture_output=True)
    assert r.returncode == 0, r.stderr
    raw = r.stdout
    assert raw.startswith(b"Received: from "), raw[:200]
    assert b"\r\n\tfor <info@gw.test>;" in raw
    assert b"\r\nSubject: first\r\n" in raw and raw.endswith(b"line \x1b[31mtwo\r\n")
    assert gw.ctl("queue", "export", "01AAAAAAAAAAAAAAAAAAAAAAAA")[0] == 1

    # --all: hold everything, release everything, delete everything.
    assert j(gw, "queue", "hold", "--all") == {"operation": "hold", "count": 2, "requested": 2}
    wait_until(lambda: len(ids("--state", "hold")) == 2, 10, what="both held")
    assert "release: 2 messages" in gw.ctl_ok("queue", "release", "--all")
    wait_until(lambda: len(ids("--state", "hold")) == 0, 10, what="both released")
    assert j(gw, "queue", "retry", "--all")["count"] == 2
    assert j(gw, "queue", "delete", "--all")["count"] == 2
    wait_until(lambda: ids() == [], 10, what="queue empty")
    assert gw.ctl_ok("queue", "list").strip() == "Mail queue is empty"
    assert j(gw, "queue", "delete", "--all") == {"operation": "delete", "count": 0,
                                                 "requested": 0}
    assert sink.messages == []
