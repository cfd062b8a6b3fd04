"""Workers (issue 13): a rule's worker decides at end of DATA -- forward,
reject, drop -- through the real smtpd, router and workerd, for both
runtimes (`program` and `js`, the latter running scripts written for
Cloudflare Email Workers unchanged); failures tempfail and keep nothing."""
import json
import os
import signal
import smtplib
import subprocess
import threading
import time

import pytest

from conftest import REAL_ROOT, make_message, pid_alive, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
JS = os.path.join(HERE, "workers")


def data_reply(gw, mail_from, rcpts, data):
    """(code, text) of the end of DATA in a fresh session."""
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    s = gw.smtp()
    try:
        code, resp = s.mail(mail_from)
        assert code == 250, (code, resp)
        for r in rcpts:
            code, resp = s.rcpt(r)
            assert code == 250, (r, code, resp)
        try:
            code, resp = s.data(data)
        except smtplib.SMTPDataError as e:
            code, resp = e.smtp_code, e.smtp_error
        return code, resp.decode("utf-8", "replace")
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            s.close()


def setup_domain(gw):
    gw.ctl_ok("domain", "add", "gw.test")
    for d in ("a@dest.test", "b@dest.test"):
        gw.ctl_ok("address", "add", d, "--verified")
    gw._domains = {"gw.test"}  # for gw.forward()
    gw._verified = {"a@dest.test", "b@dest.test"}


def add_worker(gw, addr, name, *args):
    gw.ctl_ok("worker", "add", name, *args)
    gw.ctl_ok("rule", "add", "gw.test", "--to", addr, "--worker", name)


def program(gw, name, body):
    """A shell worker in a directory the worker user can read."""
    d = os.path.join(gw.dir, "progs")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def rows_for(gw, rcpt, status, timeout=10):
    """The rows, once there: the router writes them a moment after the event."""
    return wait_until(lambda: [r for r in gw.activity()
                               if r["rcpt"] == rcpt and r["status"] == status], timeout,
                      what=lambda: f"a {status} row for {rcpt}: {gw.activity()}")


def no_new_mail(sink, n, wait=1.5):
    time.sleep(wait)
    assert len(sink.messages) == n, sink.summary()


def test_program_decisions(world):
    gw, dest = world.gw, world.dest
    setup_domain(gw)
    fwd = program(gw, "fwd", """read hdr
case "$hdr" in *'"to":"prog@gw.test"'*) ;; *) exit 3;; esac
[ "$MXF_TO" = prog@gw.test ] || exit 4
[ "$MXF_FROM" = alice@sender.test ] || exit 5
body=$(cat)
case "$body" in *"Subject: program"*) ;; *) exit 6;; esac
echo '{"action":"forward","to":"a@dest.test","headers":{"X-Prog":"'"$GREETING"'"}}'
""")
    add_worker(gw, "prog@gw.test", "prog", "--program", fwd, "--env", "GREETING=hello")
    add_worker(gw, "progrej@gw.test", "progrej", "--program",
               program(gw, "rej", "echo '{\"action\":\"reject\",\"reason\":\"Program says no\"}'\n"))
    add_worker(gw, "progdrop@gw.test", "progdrop", "--program",
               program(gw, "drop", "cat >/dev/null; echo '{\"action\":\"drop\"}'\n"))

    qid = gw.send("alice@sender.test", "prog@gw.test",
                  make_message("alice@sender.test", "prog@gw.test", subject="program"))
    m = dest.wait_for(1)[0]
    assert m.rcpt_tos == ["a@dest.test"]
    assert m.msg["X-Prog"] == "hello"
    assert m.msg["Subject"] == "program"
    gw.wait_activity(qid, "forwarded")

    code, text = data_reply(gw, "alice@sender.test", "progrej@gw.test",
                            make_message("alice@sender.test", "progrej@gw.test"))
    assert code == 550 and text == "5.7.1 Program says no", (code, text)
    assert rows_for(gw, "progrej@gw.test", "rejected")

    qid = gw.send("alice@sender.test", "progdrop@gw.test",
                  make_message("alice@sender.test", "progdrop@gw.test"))
    rows = gw.wait_activity(qid, "dropped")
    assert rows[0]["action"] == "worker"
    no_new_mail(dest, 1)


def test_network_only_when_granted(world):
    """A worker reaches the network only with `worker add --network` (issue 13:
    "only the network access the operator grants"): without it socket(AF_INET)
    fails (EPERM from the seccomp filter), AF_UNIX still works."""
    gw, dest = world.gw, world.dest
    setup_domain(gw)
    probe = program(gw, "netprobe", f"""cat >/dev/null
exec /usr/bin/python3 - <<'PY'
import errno, json, socket
try:
    s = socket.create_connection(("127.0.0.2", {dest.port}), timeout=5)
    s.close()
    print(json.dumps({{"action": "forward", "to": "a@dest.test"}}))
except OSError as e:
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # still allowed
    u.close()
    print(json.dumps({{"action": "reject", "reason": "no network: " + errno.errorcode.get(e.errno, "?")}}))
PY
""")
    add_worker(gw, "closed@gw.test", "closed", "--program", probe)
    add_worker(gw, "open@gw.test", "open", "--program", probe, "--network")
    code, text = data_reply(gw, "alice@sender.test", "closed@gw.test",
                            make_message("alice@sender.test", "closed@gw.test"))
    assert code == 550 and text == "5.7.1 no network: EPERM", (code, text)
    qid = gw.send("alice@sender.test", "open@gw.test",
                  make_message("alice@sender.test", "open@gw.test", subject="net"))
    gw.wait_activity(qid, "forwarded")
    workers = {w["name"]: w for w in gw.ctl_json("worker", "list")}
    assert workers["open"]["network"] is True and workers["closed"]["network"] is False
    # The dry run has the same limits.
    r = subprocess.run([os.path.join(gw.bin, "mxferryctl"), "-c", gw.conf, "worker", "test",
                        "closed", "--from", "a@b.test", "--to", "closed@gw.test"],
                       input=make_message("a@b.test", "closed@gw.test"), capture_output=True,
                       timeout=30)
    assert b"no network: EPERM" in r.stdout, (r.stdout, r.stderr)


def test_js_documentation_examples(world):
    gw, dest = world.gw, world.dest
    setup_domain(gw)
    gw.ctl_ok("domain", "set", "gw.test", "subaddressing", "on")
    add_worker(gw, "allow@gw.test", "allow", "--js", os.path.join(JS, "allowlist.mjs"))
    add_worker(gw, "block@gw.test", "block", "--js", os.path.join(JS, "blocklist.mjs"))
    gw.ctl_ok("worker", "add", "plus", "--js", os.path.join(JS, "plus.mjs"),
              "--env", "SALES=a@dest.test", "--env", "SUPPORT=b@dest.test")
    gw.ctl_ok("rule", "add", "gw.test", "--match", "team+*@gw.test", "--worker", "plus")

    # Allow list: a listed sender is forwarded, another is refused with the reason.
    gw.send("alice@sender.test", "allow@gw.test",
            make_message("alice@sender.test", "allow@gw.test"))
    assert dest.wait_for(1)[0].rcpt_tos == ["a@dest.test"]
    code, text = data_reply(gw, "mallory@sender.test", "allow@gw.test",
                            make_message("mallory@sender.test", "allow@gw.test"))
    assert code == 550 and text == "5.7.1 Address not allowed", (code, text)

    # Block list: setReject seen by the client as 550 with the reason.
    code, text = data_reply(gw, "spammer@sender.test", "block@gw.test",
                            make_message("spammer@sender.test", "block@gw.test"))
    assert code == 550 and text == "5.7.1 Address is blocked", (code, text)
    gw.send("alice@sender.test", "block@gw.test",
            make_message("alice@sender.test", "block@gw.test"))
    dest.wait_for(2)

    # Plus-address routing with the worker's variables and an X- header.
    gw.send("alice@sender.test", "team+support@gw.test",
            make_message("alice@sender.test", "team+support@gw.test", subject="plus"))
    msgs = dest.wait_for(3)
    m = [m for m in msgs if m.msg["Subject"] == "plus"][0]
    assert m.rcpt_tos == ["b@dest.test"] and m.msg["X-Routed-Tag"] == "support"
    code, text = data_reply(gw, "alice@sender.test", "team+nope@gw.test",
                            make_message("alice@sender.test", "team+nope@gw.test"))
    assert code == 550 and text == "5.7.1 Unknown tag nope", (code, text)
    no_new_mail(dest, 3)


def test_js_forward_two_destinations_and_drop(world):
    gw, dest = world.gw, world.dest
    setup_domain(gw)
    add_worker(gw, "fan@gw.test", "fan", "--js", os.path.join(JS, "fanout.mjs"))
    add_worker(gw, "quiet@gw.test", "quiet", "--js", os.path.join(JS, "nothing.mjs"))
    add_worker(gw, "half@gw.test", "half", "--js", os.path.join(JS, "forward_unverified.mjs"))

    data = make_message("alice@sender.test", "fan@gw.test", subject="fan out")
    qid = gw.send("alice@sender.test", "fan@gw.test", data)
    wait_until(lambda: sum(len(m.rcpt_tos) for m in dest.messages) >= 2, 20,
               what=dest.summary)
    msgs = list(dest.messages)
    assert sorted(r for m in msgs for r in m.rcpt_tos) == ["a@dest.test", "b@dest.test"]
    for m in msgs:
        assert m.msg["X-Fanout-Subject"] == "fan out"
        assert m.msg["X-Fanout-Size"] == str(len(data))
    rows = [r for r in gw.wait_activity(qid, "forwarded") if r["status"] == "forwarded"]
    wait_until(lambda: len([r for r in gw.activity(qid) if r["status"] == "forwarded"]) == 2,
               20, what="two forwarded rows")

    qid = gw.send("alice@sender.test", "quiet@gw.test",
                  make_message("alice@sender.test", "quiet@gw.test"))
    gw.wait_activity(qid, "dropped")

    # A forward to an address that is not a verified destination is refused
    # and logged; the verified one goes out.
    qid = gw.send("alice@sender.test", "half@gw.test",
                  make_message("alice@sender.test", "half@gw.test", subject="half"))
    msgs = dest.wait_for(len(msgs) + 1)
    assert [m.rcpt_tos for m in msgs if m.msg["Subject"] == "half"] == [["a@dest.test"]]
    bad = gw.wait_activity(qid, "rejected")
    assert bad[0]["dest"] == "stranger@elsewhere.test"
    assert "forward to <stranger@elsewhere.test> refused: not a verified destination" \
        in gw.log_text()
    del rows


def test_worker_failures_tempfail(world):
    gw, dest = world.gw, world.dest
    setup_domain(gw)
    add_worker(gw, "loop@gw.test", "loop", "--program",
               program(gw, "loop", "while :; do :; done\n"), "--timeout", "2")
    add_worker(gw, "exit@gw.test", "exit", "--program", program(gw, "exit", "exit 3\n"))
    add_worker(gw, "junk@gw.test", "junk", "--program",
               program(gw, "junk", "echo 'this is not JSON'\n"))
    add_worker(gw, "nonx@gw.test", "nonx", "--program",
               program(gw, "nonx", "echo '{\"action\":\"forward\",\"to\":\"a@dest.test\","
                                   "\"headers\":{\"Subject\":\"hijack\"}}'\n"))
    add_worker(gw, "throw@gw.test", "throw", "--js", os.path.join(JS, "throws.mjs"))
    gw.forward("ok@gw.test", "b@dest.test")

    t0 = time.monotonic()
    # With a second, ordinary recipient: the whole transaction is tempfailed,
    # never half-forwarded.
    code, text = data_reply(gw, "alice@sender.test", ["ok@gw.test", "loop@gw.test"],
                            make_message("alice@sender.test", "loop@gw.test"))
    took = time.monotonic() - t0
    assert code == 451 and text.startswith("4.3.0"), (code, text)
    assert 1.5 < took < 8, took
    row = rows_for(gw, "loop@gw.test", "error")
    assert row and "timeout" in row[0]["reply"], gw.activity()
    # The spinning worker is gone (killed with its process group).
    out = subprocess.run(["pgrep", "-f", os.path.join(gw.dir, "progs", "loop")],
                         capture_output=True, text=True).stdout.split()
    assert out == [], out

    for addr, why in (("exit@gw.test", "exit status 3"), ("junk@gw.test", "bad answer"),
                      ("nonx@gw.test", "X- headers"), ("throw@gw.test", "exit status 1")):
        code, text = data_reply(gw, "alice@sender.test", addr,
                                make_message("alice@sender.test", addr))
        assert code == 451 and text.startswith("4.3.0"), (addr, code, text)
        row = rows_for(gw, addr, "error")
        assert row and why in row[0]["reply"], (addr, row)
    no_new_mail(dest, 0)
    for state, names in gw.spool_files().items():
        assert names == [], (state, names)


@pytest.mark.skipif(not REAL_ROOT, reason="needs the daemons' real users (run as root)")
def test_worker_cannot_read_spool_or_dbs(world):
    gw = world.gw
    setup_domain(gw)
    spy = program(gw, "spy", f"""
for f in {gw.spool}/msg/* {gw.spool}/active/* {gw.data}/rules.db {gw.data}/activity.db \\
         {gw.data}/srs.secret; do
  if cat "$f" >/dev/null 2>&1; then
    echo '{{"action":"reject","reason":"read '"$(basename $f)"'"}}'; exit 0
  fi
done
ls {gw.spool}/msg >/dev/null 2>&1 && {{ echo '{{"action":"reject","reason":"listed msg"}}'; exit 0; }}
echo '{{"action":"reject","reason":"no access as '"$(id -un)"'"}}'
""")
    add_worker(gw, "spy@gw.test", "spy", "--program", spy)
    # Something in the spool to try.
    world.dest.set_mode("tempfail")
    gw.forward("held@gw.test", "a@dest.test")
    gw.send("alice@sender.test", "held@gw.test",
            make_message("alice@sender.test", "held@gw.test"))
    code, text = data_reply(gw, "alice@sender.test", "spy@gw.test",
                            make_message("alice@sender.test", "spy@gw.test"))
    assert (code, text) == (550, "5.7.1 no access as mxferry-worker"), (code, text)


def test_worker_test_dry_run(world):
    gw = world.gw
    setup_domain(gw)
    gw.ctl_ok("worker", "add", "block", "--js", os.path.join(JS, "blocklist.mjs"))
    gw.ctl_ok("worker", "add", "fan", "--js", os.path.join(JS, "fanout.mjs"))
    listing = gw.ctl_ok("worker", "list")
    assert "block" in listing and "fan" in listing and "js" in listing
    data = make_message("spammer@sender.test", "x@gw.test", subject="dry")

    def run(*args):
        r = subprocess.run([os.path.join(gw.bin, "mxferryctl"), "-c", gw.conf, "worker", "test",
                            *args], input=data, capture_output=True, timeout=30)
        return r.returncode, r.stdout.decode(), r.stderr.decode()
    rc, out, err = run("block", "--from", "spammer@sender.test", "--to", "x@gw.test")
    assert rc == 0, (out, err)
    assert "reject Address is blocked" in out and "verdict: 550 5.7.1 Address is blocked" in out
    rc, out, err = run("fan", "--from", "alice@sender.test", "--to", "x@gw.test", "--json")
    j = json.loads(out)
    assert j["ok"] and [d["to"] for d in j["decisions"]] == ["a@dest.test", "b@dest.test"]
    # Header names as a Headers object gives them (lower case, like the hosted runtime).
    assert "x-fanout-subject: dry\r\n" in j["decisions"][0]["headers"]
    # Nothing was sent: a dry run.
    assert gw.activity() == []
    audit = gw.ctl_ok("audit")
    assert "worker.add" in audit
    # A worker a rule names cannot be removed.
    gw.ctl_ok("rule", "add", "gw.test", "--to", "x@gw.test", "--worker", "fan")
    rc, _, err = gw.ctl("worker", "remove", "fan")
    assert rc == 1 and "used by 1 rule" in err
    gw.ctl_ok("worker", "remove", "block")
    assert "block" not in gw.ctl_ok("worker", "list")


def test_workerd_killed_mid_run(world):
    gw, dest = world.gw, world.dest
    setup_domain(gw)
    marker = os.path.join(gw.dir, "progs", "go")
    slow = program(gw, "slow", f"""read hdr
[ -e {marker} ] || sleep 24.75
echo '{{"action":"forward","to":"a@dest.test"}}'
""")
    add_worker(gw, "slow@gw.test", "slow", "--program", slow)
    data = make_message("alice@sender.test", "slow@gw.test", subject="retry me")
    result = {}

    def client():
        result["r"] = data_reply(gw, "alice@sender.test", "slow@gw.test", data)
    t = threading.Thread(target=client)
    t.start()

    def running(pattern):
        r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        return r.stdout.split() or None
    pids = wait_until(lambda: running(slow), 15, what="the worker to run")
    pids += wait_until(lambda: running("sleep 24.75"), 15, what="the worker's child to run")
    old = gw.status()["workerd"]["pid"]
    gw.expect_restart("workerd")
    os.kill(old, signal.SIGKILL)
    t.join(20)
    assert not t.is_alive()
    code, text = result["r"]
    assert code == 451 and text.startswith("4.3.0"), (code, text)
    # The worker and what it started died with workerd (no orphan keeps running).
    wait_until(lambda: not any(pid_alive(int(p)) for p in pids), 5,
               what="the worker and its child to die")
    assert rows_for(gw, "slow@gw.test", "error")
    no_new_mail(dest, 0, wait=0.5)

    # The master restarts workerd; the client's retry goes through.
    wait_until(lambda: gw.status()["workerd"]["pid"] not in (0, old)
               and f"mxferry/workerd[{gw.status()['workerd']['pid']}]: connected to router"
               in gw.log_text(), 20, what="workerd to be back")
    with open(marker, "w"):
        pass
    os.chmod(marker, 0o644)
    qid = gw.send_retrying("alice@sender.test", "slow@gw.test", data)
    m = dest.wait_for(1)[0]
    assert m.msg["Subject"] == "retry me"
    gw.wait_activity(qid, "forwarded")


def test_workers_unjailed_leak_check(world_unjailed):
    """The same paths with every daemon unjailed, so LeakSanitizer checks the
    router's and workerd's bookkeeping (forward, reject, failure, drop)."""
    w = world_unjailed
    gw, dest = w.gw, w.dest
    setup_domain(gw)
    add_worker(gw, "fan@gw.test", "fan", "--js", os.path.join(JS, "fanout.mjs"))
    add_worker(gw, "block@gw.test", "block", "--js", os.path.join(JS, "blocklist.mjs"))
    add_worker(gw, "junk@gw.test", "junk", "--program", program(gw, "junk", "echo junk\n"))
    add_worker(gw, "quiet@gw.test", "quiet", "--js", os.path.join(JS, "nothing.mjs"))
    gw.send("alice@sender.test", ["fan@gw.test", "quiet@gw.test"],
            make_message("alice@sender.test", "fan@gw.test"))
    wait_until(lambda: sum(len(m.rcpt_tos) for m in dest.messages) >= 2, 20, what=dest.summary)
    assert data_reply(gw, "spammer@sender.test", "block@gw.test",
                      make_message("spammer@sender.test", "block@gw.test"))[0] == 550
    assert data_reply(gw, "alice@sender.test", ["fan@gw.test", "junk@gw.test"],
                      make_message("alice@sender.test", "junk@gw.test"))[0] == 451
    assert rows_for(gw, "quiet@gw.test", "dropped")


# ---- replies (issue 13): message.reply / {"action":"reply"} ----

REPLY_CLIENT_IP = "192.0.2.78"  # not loopback: libspf2 passes 127/8 unseen


def reply_world(world):
    """DMARC-passing and -failing sender domains, the senders' MX a sink.
    From 127.0.0.1 SPF passes (libspf2 gives loopback a pass), so a domain
    with a DMARC record passes DMARC; replyfail.test publishes -all and is
    sent from a documentation address, so it fails (p=none: accepted)."""
    dns = world.dns
    dns.zone("test")
    dns.zone("replyok.test", mx=[(10, "mx.replyok.test")], a={"mx.replyok.test": "127.0.0.3"},
             txt={"_dmarc.replyok.test": "v=DMARC1; p=none"})
    dns.zone("replyfail.test", mx=[(10, "mx.replyfail.test")],
             a={"mx.replyfail.test": "127.0.0.3"},
             txt={"_dmarc.replyfail.test": "v=DMARC1; p=none", "replyfail.test": "v=spf1 -all"})
    setup_domain(world.gw)
    return world.sinks("127.0.0.3")


def msgid_of(data):
    line = [ln for ln in data.split(b"\r\n") if ln.lower().startswith(b"message-id:")][0]
    return line.split(b":", 1)[1].strip().decode()


def reply_rows(gw, why):
    return [r for r in gw.activity() if r["status"] == "dropped" and why in (r["reply"] or "")]


def check_reply(m, sender, original):
    assert m.mail_from == "", m  # RFC 3834: from the null sender
    assert m.rcpt_tos == [sender]
    assert m.msg["In-Reply-To"] == msgid_of(original)
    assert m.msg["Auto-Submitted"] == "auto-replied"
    assert m.msg["Received"].startswith("by ")


def test_js_reply(world):
    gw, dest = world.gw, world.dest
    back = reply_world(world)
    add_worker(gw, "auto@gw.test", "auto", "--js", os.path.join(JS, "autoreply.mjs"),
               "--env", "FORWARD=a@dest.test")
    add_worker(gw, "streamed@gw.test", "streamed", "--js", os.path.join(JS, "autoreply.mjs"),
               "--env", "MODE=stream")
    add_worker(gw, "wrong@gw.test", "wrong", "--js", os.path.join(JS, "autoreply.mjs"),
               "--env", "MODE=wrong")
    add_worker(gw, "twice@gw.test", "twice", "--js", os.path.join(JS, "autoreply.mjs"),
               "--env", "MODE=twice")

    # Replied to and forwarded.
    data = make_message("alice@replyok.test", "auto@gw.test", subject="hello")
    qid = gw.send("alice@replyok.test", "auto@gw.test", data)
    m = back.wait_for(1)[0]
    check_reply(m, "alice@replyok.test", data)
    assert m.msg["Subject"] == "Re: hello"
    assert m.msg["From"] == "Auto-reply <auto@gw.test>"
    assert dest.wait_for(1)[0].msg["Subject"] == "hello"
    gw.wait_activity(qid, "forwarded")
    assert f"{qid}: worker reply queued as" in gw.log_text()
    # The reply is a message of its own in the activity log (custom address
    # to the sender), delivered like any other.
    wait_until(lambda: [r for r in gw.activity() if r["queue_id"] != qid
                        and r["dest"] == "alice@replyok.test" and r["status"] == "forwarded"],
               20, what="the reply's activity row")

    # A ReadableStream reply; no forward: the original is dropped.
    data = make_message("bob@replyok.test", "streamed@gw.test", subject="streamed")
    qid = gw.send("bob@replyok.test", "streamed@gw.test", data)
    msgs = back.wait_for(2)
    check_reply(msgs[1], "bob@replyok.test", data)
    assert msgs[1].msg.get_payload().strip() == "We got your message, thank you."
    assert gw.wait_activity(qid, "dropped")[0]["action"] == "worker"

    # In-Reply-To not naming the original: not sent, the message goes on.
    qid = gw.send("alice@replyok.test", "wrong@gw.test",
                  make_message("alice@replyok.test", "wrong@gw.test"))
    rows = gw.wait_activity(qid, "dropped")
    assert any("In-Reply-To does not name" in (r["reply"] or "") and
               r["dest"] == "alice@replyok.test" for r in rows), rows

    # A second reply() throws; uncaught, the worker fails: 451, nothing kept.
    code, text = data_reply(gw, "alice@replyok.test", "twice@gw.test",
                            make_message("alice@replyok.test", "twice@gw.test"))
    assert code == 451 and text.startswith("4.3.0"), (code, text)
    no_new_mail(back, 2)
    no_new_mail(dest, 1, wait=0)


def test_program_reply_guards(world):
    gw, dest = world.gw, world.dest
    back = reply_world(world)
    reply = program(gw, "reply", r"""read hdr
id=$(sed -n 's/^[Mm]essage-[Ii][Dd]: *\(<[^>]*>\).*/\1/p' | head -n 1)
printf '{"action":"forward","to":"a@dest.test"}\n'
printf '{"action":"reply","raw":"From: prog@gw.test\\nTo: %s\\nSubject: got it\\nIn-Reply-To: %s\\n\\nProgram reply.\\n"}\n' "$MXF_FROM" "$id"
[ -z "$TWICE" ] || printf '{"action":"reply","raw":"From: prog@gw.test\\nTo: x\\n\\n"}\n'
""")
    add_worker(gw, "prog@gw.test", "prog", "--program", reply)
    add_worker(gw, "twice@gw.test", "ptwice", "--program", reply, "--env", "TWICE=1")

    data = make_message("carol@replyok.test", "prog@gw.test", subject="program")
    qid = gw.send("carol@replyok.test", "prog@gw.test", data)
    m = back.wait_for(1)[0]
    check_reply(m, "carol@replyok.test", data)
    assert m.msg["Subject"] == "got it" and m.msg["From"] == "prog@gw.test"
    dest.wait_for(1)
    gw.wait_activity(qid, "forwarded")

    # Two replies: garbage like any protocol violation (451, an error row).
    code, text = data_reply(gw, "carol@replyok.test", "twice@gw.test",
                            make_message("carol@replyok.test", "twice@gw.test"))
    assert code == 451 and text.startswith("4.3.0"), (code, text)
    row = rows_for(gw, "twice@gw.test", "error")
    assert row and "more than one reply" in row[0]["reply"], row

    # No DMARC record (dmarc=none is not a pass): forwarded, no reply.
    qid = gw.send("alice@sender.test", "prog@gw.test",
                  make_message("alice@sender.test", "prog@gw.test"))
    gw.wait_activity(qid, "forwarded")
    assert any(r["queue_id"] == qid for r in reply_rows(gw, "did not pass DMARC"))

    # DMARC fail (SPF -all from a non-loopback address, p=none): no reply.
    out = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                         text=True, check=True).stdout
    if f"{REPLY_CLIENT_IP}/" not in out:
        subprocess.run(["ip", "addr", "add", f"{REPLY_CLIENT_IP}/32", "dev", "lo"], check=True)
    s = smtplib.SMTP("127.0.0.1", gw.smtp_port, local_hostname="client.replyfail.test",
                     timeout=30, source_address=(REPLY_CLIENT_IP, 0))
    try:
        s.sendmail("dave@replyfail.test", ["prog@gw.test"],
                   make_message("dave@replyfail.test", "prog@gw.test", subject="failing"))
    finally:
        s.quit()
    wait_until(lambda: len(dest.messages) >= 3, 20, what=dest.summary)
    fwd = [m for m in dest.messages if m.msg["Subject"] == "failing"][0]
    assert "dmarc=fail" in " ".join(fwd.header_all("Authentication-Results"))
    wait_until(lambda: len(reply_rows(gw, "did not pass DMARC")) == 2, 10, what="the row")

    # The null sender gets no reply (never answer a bounce).
    qid = gw.send("<>", "prog@gw.test", make_message("postmaster@replyok.test", "prog@gw.test"))
    gw.wait_activity(qid, "forwarded")
    assert any(r["queue_id"] == qid for r in reply_rows(gw, "sender is null"))
    no_new_mail(back, 1)
