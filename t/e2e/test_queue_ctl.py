"""The queue manager (issue 4): hold/release/delete/retry/flush, the retry
schedule, lifetime expiry, and kill -9 of the router during a burst."""
import os
import random
import signal
import threading
import time

from conftest import make_message, make_world, message_ids, pid_alive, wait_until


def smtpd_ready(gw):
    """smtpd has connected to the router (before that, RCPT gets 451)."""
    wait_until(lambda: "connected to router" in "".join(
        ln for ln in gw.log_text().splitlines() if "/smtpd[" in ln), 15,
        what="smtpd to connect to the router")


def world_with(dns_server, sinks, gateway, **router):
    w = make_world(dns_server, sinks, gateway, {"router": router} if router else None)
    w.gw.forward("info@gw.test", "bob@dest.test")
    smtpd_ready(w.gw)
    return w


def send(gw, msgid, to="info@gw.test"):
    return gw.send_retrying("alice@sender.test", to,
                            make_message("alice@sender.test", to, msgid=msgid))


def test_hold_release_delete_retry(dns_server, sinks, gateway):
    # A long schedule: only the operator's retry/flush/release bring mail back.
    w = world_with(dns_server, sinks, gateway, retry_schedule="1h")
    gw, sink = w.gw, w.dest
    sink.set_mode("tempfail")
    q1 = send(gw, "<h1@sender.test>")
    q2 = send(gw, "<h2@sender.test>")
    q3 = send(gw, "<h3@sender.test>")
    for q in (q1, q2, q3):
        gw.wait_activity(q, "deferred")
    wait_until(lambda: all(q in gw.spool_files(q)["deferred"] for q in (q1, q2, q3)), 10,
               what="three deferred messages")
    out = gw.ctl_ok("queue", "hold", q1)
    assert "1 message" in out
    wait_until(lambda: q1 in gw.spool_files(q1)["hold"], 5, what=f"{q1} in hold/")
    assert "hold" in gw.ctl_ok("queue", "show", q1)
    gw.ctl_ok("queue", "delete", q2)
    wait_until(lambda: not any(gw.spool_files(q2).values()), 5, what=f"{q2} removed")
    assert not os.path.exists(os.path.join(gw.spool, "msg", q2))
    sink.set_mode("accept")
    # retry: q3 goes now (the schedule would wait an hour).
    gw.ctl_ok("queue", "retry", q3)
    sink.wait_for(1, timeout=10)
    # flush retries everything deferred, but not what is held.
    gw.ctl_ok("queue", "flush")
    time.sleep(2)
    assert message_ids(sink.messages) == ["<h3@sender.test>"]
    assert q1 in gw.spool_files(q1)["hold"]
    # A held message survives a restart of the router, still held.
    st = gw.status()["router"]
    gw.expect_restart("router")
    os.kill(st["pid"], signal.SIGKILL)
    wait_until(lambda: gw.status()["router"]["pid"] != st["pid"] and
               pid_alive(gw.status()["router"]["pid"]), 20, what="router restart")
    time.sleep(1)
    assert q1 in gw.spool_files(q1)["hold"]
    wait_until(lambda: gw.ctl("queue", "release", q1)[0] == 0, 10, interval=0.3,
               what="release through the restarted router")
    [_, m] = sink.wait_for(2, timeout=15)
    assert m.msg.get("Message-ID") == "<h1@sender.test>"
    # Unknown IDs are reported.
    rc, _, err = gw.ctl("queue", "hold", q2)
    assert rc == 1 and "not in the queue" in err
    assert gw.ctl("queue", "hold", "not-a-qid")[0] == 1
    assert "<h2@sender.test>" not in message_ids(sink.messages)


def test_retry_schedule(dns_server, sinks, gateway):
    w = world_with(dns_server, sinks, gateway, retry_schedule="1s,2s,3s")
    gw, sink = w.gw, w.dest
    sink.set_mode("tempfail")
    qid = send(gw, "<sched@sender.test>")
    times = []

    def n_attempts(n):
        def f():
            k = len(sink.rcpt_attempts)
            if k > len(times):
                times.extend([time.monotonic()] * (k - len(times)))
            return k >= n
        return f
    wait_until(n_attempts(3), 20, interval=0.05, what="three refused attempts")
    sink.set_mode("accept")
    [m] = sink.wait_for(1, timeout=15)
    times.append(time.monotonic())
    gw.wait_activity(qid, "forwarded")
    gaps = [b - a for a, b in zip(times, times[1:])]
    # 1 s, 2 s, 3 s apart (whole-second timer granularity: within ±1 s).
    assert 0.4 <= gaps[0] <= 2.2 and 1.4 <= gaps[1] <= 3.2 and 2.4 <= gaps[2] <= 4.2, gaps
    rows = gw.activity(qid)
    assert [r["status"] for r in rows] == ["deferred"] * 3 + ["forwarded"], rows


def test_lifetime_expiry_bounces(dns_server, sinks, gateway):
    w = world_with(dns_server, sinks, gateway, retry_schedule="1s", max_queue_lifetime="3")
    gw, sink = w.gw, w.dest
    sender_mx = w.sinks("127.0.0.3")
    sink.set_mode("tempfail")
    qid = send(gw, "<expire@sender.test>")
    [b] = sender_mx.wait_for(1, timeout=20)
    assert b.mail_from == "" and b.rcpt_tos == ["alice@sender.test"]
    rows = gw.wait_activity(qid, "delivery_failed")
    assert rows[0]["reply"].startswith("451"), rows
    gw.wait_activity(qid, "bounced")
    wait_until(lambda: not any(gw.spool_files(qid).values()), 10, what="expired message removed")
    assert len(sink.rcpt_attempts) >= 2


def test_router_kill9_during_burst(dns_server, sinks, gateway):
    """Every message that got a 250 is delivered, however often the router
    dies in the middle (CI form: 200 messages, 3 kills)."""
    n = int(os.environ.get("MXF_BURST", "200"))
    w = world_with(dns_server, sinks, gateway)
    gw, sink = w.gw, w.dest
    accepted, lock, errors = {}, threading.Lock(), []

    def client(k):
        try:
            for i in range(k, n, 4):
                mid = f"<burst-{i}@sender.test>"
                qid = gw.send_retrying("alice@sender.test", "info@gw.test",
                                       make_message("alice@sender.test", "info@gw.test",
                                                    msgid=mid), timeout=60)
                with lock:
                    accepted[mid] = qid
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    kills = 0
    rnd = random.Random(4)
    while any(t.is_alive() for t in threads) and kills < 3:
        time.sleep(rnd.uniform(0.3, 1.5))
        st = gw.status()["router"]
        if not pid_alive(st["pid"]):
            continue
        gw.expect_restart("router")
        os.kill(st["pid"], signal.SIGKILL)
        kills += 1
        wait_until(lambda: gw.status()["router"]["pid"] != st["pid"], 20,
                   what="router restart")
    for t in threads:
        t.join(180)
    assert not errors, errors[:3]
    assert len(accepted) == n
    assert kills >= 1

    def all_there():
        return set(accepted) <= set(message_ids(sink.messages))
    wait_until(all_there, 90, interval=0.5,
               what=lambda: f"all {n} at the sink; missing "
                            f"{len(set(accepted) - set(message_ids(sink.messages)))}")
    wait_until(lambda: not any(any(gw.spool_files(q).values()) for q in accepted.values()), 30,
               interval=0.5, what="the queue to drain")
