"""The queue: deferral and retry, a router crash with mail queued, bounces."""
import os
import signal
import time

from conftest import make_message, message_ids, pid_alive, wait_until


def _queue_list(gw):
    rc, out, err = gw.ctl("queue", "list")
    assert rc == 0, f"mxferryctl queue list: rc={rc} stderr={err!r}"
    return out


def _wait_drained(gw, qids, timeout=20):
    """Neither `queue list` nor the spool's state directories know the IDs."""
    def drained():
        out = _queue_list(gw)
        left = [q for q in qids if q in out or any(gw.spool_files(q).values())]
        return not left
    wait_until(drained, timeout, interval=0.5,
               what=lambda: f"queue to drain; queue list: {_queue_list(gw)!r}; "
                            f"spool: {gw.spool_files()}")


def test_deferred_then_delivered(world):
    gw, sink = world.gw, world.dest
    gw.forward("info@gw.test", "bob@dest.test")
    sink.set_mode("tempfail")
    qid = gw.send("alice@sender.test", "info@gw.test",
                  make_message("alice@sender.test", "info@gw.test", msgid="<defer@sender.test>"))
    gw.wait_activity(qid, "deferred", timeout=20)
    assert sink.messages == []

    # Between retries the envelope sits in deferred/ and queue list says so.
    seen = {}

    def listed_deferred():
        out = _queue_list(gw)
        seen["out"] = out
        listed = any(qid in line and "deferred" in line.lower() for line in out.splitlines())
        return listed and qid in gw.spool_files(qid)["deferred"]
    wait_until(listed_deferred, 20, interval=0.2,
               what=lambda: f"{qid} listed as deferred (last queue list: {seen.get('out')!r}, "
                            f"spool: {gw.spool_files()})")

    attempts = len(sink.rcpt_attempts)
    sink.set_mode("accept")
    [m] = sink.wait_for(1, timeout=20)
    assert m.msg.get("Message-ID") == "<defer@sender.test>"
    assert m.rcpt_tos == ["bob@dest.test"]
    assert attempts >= 1
    gw.wait_activity(qid, "forwarded", timeout=10)
    _wait_drained(gw, [qid])


def test_router_kill9_loses_nothing(world):
    gw, sink = world.gw, world.dest
    gw.forward("info@gw.test", "bob@dest.test")
    sink.set_mode("tempfail")
    ids = [f"<kill9-{i}@sender.test>" for i in range(20)]
    qids = [gw.send("alice@sender.test", "info@gw.test",
                    make_message("alice@sender.test", "info@gw.test", msgid=mid,
                                 subject=f"message {i}"))
            for i, mid in enumerate(ids)]
    assert len(set(qids)) == 20
    # Delivery has been tried (the mail is queued, not only received).
    wait_until(lambda: sink.rcpt_attempts, 20, what="a first delivery attempt")

    before = gw.status()["router"]
    gw.expect_restart("router")
    os.kill(before["pid"], signal.SIGKILL)

    def restarted():
        st = gw.status()
        r = st.get("router")
        return r and r["pid"] != before["pid"] and r["restarts"] >= 1 and pid_alive(r["pid"])
    wait_until(restarted, 20, interval=0.2, what="the master to restart the router")
    assert not pid_alive(before["pid"])

    # The other daemons find the new router: a message sent now goes through too.
    ids.append("<after-restart@sender.test>")
    # (smtpd may answer 4xx until it has reconnected: retry like a client.)
    qids.append(gw.send_retrying("alice@sender.test", "info@gw.test",
                                 make_message("alice@sender.test", "info@gw.test",
                                              msgid=ids[-1])))

    sink.set_mode("accept")

    def all_arrived():
        return set(ids) <= set(message_ids(sink.messages))
    wait_until(all_arrived, 60, interval=0.5,
               what=lambda: f"all {len(ids)} messages at the sink; missing: "
                            f"{sorted(set(ids) - set(message_ids(sink.messages)))}")
    _wait_drained(gw, qids, timeout=30)


def _bounce_text(m):
    """Raw bytes plus every decoded MIME part, as text."""
    parts = [m.data.decode("utf-8", "replace")]
    for p in m.msg.walk():
        payload = p.get_payload(decode=True)
        if payload:
            parts.append(payload.decode("utf-8", "replace"))
        elif p.is_multipart() is False and isinstance(p.get_payload(), str):
            parts.append(p.get_payload())
    return "\n".join(parts)


def test_permanent_failure_bounces_to_sender(world):
    gw, dest = world.gw, world.dest
    sender_mx = world.sinks("127.0.0.3")
    gw.forward("info@gw.test", "bob@dest.test")
    dest.set_mode("permfail")
    qid = gw.send("alice@sender.test", "info@gw.test",
                  make_message("alice@sender.test", "info@gw.test", subject="will fail",
                               msgid="<permfail@sender.test>"))
    [b] = sender_mx.wait_for(1, timeout=30)
    assert b.mail_from == "", f"bounce envelope sender {b.mail_from!r} is not null"
    assert b.rcpt_tos == ["alice@sender.test"]
    assert "MAILER-DAEMON" in (b.msg.get("From") or "").upper(), b.msg.get("From")
    text = _bounce_text(b)
    assert "bob@dest.test" in text or "info@gw.test" in text, text[:3000]
    gw.wait_activity(qid, "delivery_failed", timeout=10)
    assert dest.messages == []
    _wait_drained(gw, [qid])


def test_null_sender_failure_not_bounced(world):
    gw, dest = world.gw, world.dest
    sender_mx = world.sinks("127.0.0.3")
    gw.forward("info@gw.test", "bob@dest.test")
    dest.set_mode("permfail")
    q_null = gw.send("", "info@gw.test",
                     make_message("alice@sender.test", "info@gw.test", msgid="<null@sender.test>"))
    gw.wait_activity(q_null, "delivery_failed", timeout=30)
    # Control: a failure with a real sender afterwards is bounced, so the
    # bouncer was up and had every chance to (wrongly) bounce the first one.
    q_real = gw.send("alice@sender.test", "info@gw.test",
                     make_message("alice@sender.test", "info@gw.test", msgid="<real@sender.test>"))
    sender_mx.wait_for(1, timeout=30)
    gw.wait_activity(q_real, "delivery_failed", timeout=10)
    time.sleep(3)
    assert len(sender_mx.messages) == 1, sender_mx.messages
    assert sender_mx.messages[0].rcpt_tos == ["alice@sender.test"]
    assert not [r for r in gw.activity(q_null) if r.get("status") == "bounced"]
    _wait_drained(gw, [q_null, q_real])
