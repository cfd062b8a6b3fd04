"""Crash soak: N messages while a chaos loop kill -9s the daemons.

Invariant (RFC 5321 §6.1, DESIGN.md §2): every message that got a 250 arrives
at the sink at least once (checked by Message-ID); duplicates are counted and
reported, not failed (delivery is at least once); the queue drains to empty;
nothing lands in corrupt/.

Chaos: every 200-600 ms a random daemon (router, smtpd, deliverd, bouncer)
gets SIGKILL. The master restarts a daemon that dies young with a doubling
backoff (500 ms, 1 s, 2 s, ... 60 s), which would soon stall the soak, so
once any daemon has been killed twice the whole gateway is killed -9 (master
included: a crash of everything) and started again, which also resets the
backoff. Each restart of the gateway runs its start-up recovery on a spool
left mid-flight.

CI runs N=200 (MXF_SOAK_N) paced at 8/s (MXF_SOAK_RATE); bench/soak.sh runs the long form and prints the
figures (MXF_SOAK_REPORT names a JSON file for them).
"""
import json
import os
import random
import signal
import smtplib
import threading
import time

from conftest import DAEMONS, kill_pid, make_message, pid_alive, wait_until

N = int(os.environ.get("MXF_SOAK_N", "200"))
SENDERS = int(os.environ.get("MXF_SOAK_SENDERS", "4"))
CHAOS_MIN, CHAOS_MAX = (float(x) / 1000 for x in
                        os.environ.get("MXF_SOAK_CHAOS_MS", "200-600").split("-"))
# Messages started per second (0: as fast as the senders go). CI paces its
# 200 messages over ~25 s so that the chaos loop gets to kill often.
RATE = float(os.environ.get("MXF_SOAK_RATE", "8"))
SEED = int(os.environ.get("MXF_SOAK_SEED", str(int(time.time()))))
# Which daemons the chaos loop kills (issue 4 asks for the router alone).
VICTIMS = [d for d in os.environ.get("MXF_SOAK_VICTIMS", ",".join(DAEMONS)).split(",")
           if d in DAEMONS] or list(DAEMONS)


def send_once(gw, msgid):
    """One attempt. Returns 'ok' (250), 'temp' (a 4xx or a broken session:
    the client retries with the same Message-ID), or raises on a 5xx."""
    try:
        s = smtplib.SMTP("127.0.0.1", gw.smtp_port, local_hostname="soak.sender.test",
                         timeout=10)
    except OSError:
        return "temp"
    try:
        s.ehlo()
        code, resp = s.mail("alice@sender.test")
        if code == 250:
            code, resp = s.rcpt("info@gw.test")
        if code == 250:
            code, resp = s.data(make_message("alice@sender.test", "info@gw.test",
                                             subject=msgid, msgid=msgid,
                                             body=f"soak message {msgid}\n" * 20))
        if code == 250:
            return "ok"
        if 400 <= code < 500 or code == -1:
            return "temp"
        raise AssertionError(f"{msgid}: permanent refusal {code} {resp!r}")
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException, OSError):
        return "temp"
    finally:
        try:
            s.close()
        except OSError:
            pass


class Chaos(threading.Thread):
    def __init__(self, gw, rng):
        super().__init__(daemon=True)
        self.gw, self.rng = gw, rng
        self.stop_ev = threading.Event()
        self.kills = {d: 0 for d in DAEMONS}
        self.whole_restarts = 0
        self.error = None
        self.lock = threading.Lock()  # held while the gateway is down

    def kill_everything(self):
        gw = self.gw
        # The master first: until it is dead it may start a daemon that no
        # list taken earlier names (an orphan that would outlive the crash).
        if gw.proc is not None:
            kill_pid(gw.proc.pid)
            gw.proc.wait(10)

        def none_left():
            left = [p for p in gw.our_processes() if pid_alive(p)]
            for p in left:
                kill_pid(p)
            return not left
        wait_until(none_left, 10, interval=0.05, what="the killed gateway's processes to exit")

    def run(self):
        gw = self.gw
        epoch_kills = {d: 0 for d in DAEMONS}
        try:
            while not self.stop_ev.wait(self.rng.uniform(CHAOS_MIN, CHAOS_MAX)):
                victim = self.rng.choice(VICTIMS)
                if epoch_kills[victim] >= 2:
                    with self.lock:
                        self.kill_everything()
                        self.whole_restarts += 1
                        gw.allowed_restarts = {}
                        gw.start(timeout=60)
                    epoch_kills = {d: 0 for d in DAEMONS}
                    continue
                st = gw.status(missing_ok=True) or {}
                pid = st.get(victim, {}).get("pid")
                if pid and pid_alive(pid):
                    gw.expect_restart(victim)
                    kill_pid(pid, signal.SIGKILL)
                    self.kills[victim] += 1
                    epoch_kills[victim] += 1
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def test_crash_soak_no_acknowledged_message_lost(world, request):
    gw, sink = world.gw, world.dest
    gw.forward("info@gw.test", "bob@dest.test")
    rng = random.Random(SEED)
    print(f"soak: N={N} senders={SENDERS} rate={RATE}/s chaos={CHAOS_MIN}-{CHAOS_MAX}s "
          f"seed={SEED}")

    acked, attempts = {}, {"temp": 0}
    todo = [f"<soak-{i}.{SEED}@sender.test>" for i in range(N)]
    todo_lock = threading.Lock()
    errors = []
    t0 = time.monotonic()

    def sender():
        while True:
            with todo_lock:
                if not todo:
                    return
                msgid = todo.pop()
                k = N - len(todo) - 1
            if RATE > 0:
                time.sleep(max(0.0, t0 + k / RATE - time.monotonic()))
            deadline = time.monotonic() + 120
            while True:
                try:
                    r = send_once(gw, msgid)
                except AssertionError as e:
                    errors.append(str(e))
                    return
                if r == "ok":
                    with todo_lock:
                        acked[msgid] = time.monotonic()
                    break
                with todo_lock:
                    attempts["temp"] += 1
                if time.monotonic() > deadline:
                    errors.append(f"{msgid}: no 250 within 120 s of retries")
                    break
                time.sleep(0.1)

    chaos = Chaos(gw, rng)
    chaos.start()
    threads = [threading.Thread(target=sender, daemon=True) for _ in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(N * 2 + 120)
    chaos.stop_ev.set()
    chaos.join(90)
    t_sent = time.monotonic() - t0
    assert chaos.error is None, f"chaos loop failed: {chaos.error!r}"
    assert not errors, errors[:10]
    assert len(acked) == N, f"only {len(acked)} of {N} messages got a 250"
    # After the chaos, the gateway must be whole again (the master restarts
    # what was killed last) and deliver everything it acknowledged.
    wait_until(lambda: all(pid_alive(v["pid"]) for d, v in (gw.status() or {}).items()
                           if d in DAEMONS) and len(gw.status()) >= 5, 60, interval=0.2,
               what="every daemon to run again after the chaos")

    def missing():
        got = {m.msg.get("Message-ID") for m in sink.messages}
        return [m for m in acked if m not in got]
    wait_until(lambda: not missing(), max(120, N / 50), interval=0.5,
               what=lambda: f"{len(missing())} acknowledged messages to arrive, e.g. "
                            f"{missing()[:5]}; spool: {gw.spool_files()}")
    t_done = time.monotonic() - t0
    counts = {}
    for m in sink.messages:
        mid = m.msg.get("Message-ID")
        counts[mid] = counts.get(mid, 0) + 1
    dups = sum(c - 1 for c in counts.values() if c > 1)
    stray = [m for m in counts if m not in acked]

    def drained():
        left = {d: os.listdir(os.path.join(gw.spool, d))
                for d in ("incoming", "active", "deferred", "msg")}
        return not any(left.values())
    wait_until(drained, 60, interval=0.5, what=lambda: f"the queue to drain: {gw.spool_files()}")
    corrupt = os.listdir(os.path.join(gw.spool, "corrupt"))
    figures = {
        "messages": N, "acknowledged": len(acked), "arrived_distinct": len(counts),
        "duplicates": dups, "unacknowledged_arrivals": len(stray),
        "temp_failures_retried": attempts["temp"], "daemon_kills": chaos.kills,
        "whole_gateway_kill9": chaos.whole_restarts, "seconds_sending": round(t_sent, 1),
        "seconds_until_all_delivered": round(t_done, 1),
        "acked_per_second": round(N / t_sent, 1), "rate_limit": RATE, "corrupt": len(corrupt), "seed": SEED,
    }
    print("soak figures: " + json.dumps(figures))
    if os.environ.get("MXF_SOAK_REPORT"):
        with open(os.environ["MXF_SOAK_REPORT"], "w") as f:
            json.dump(figures, f, indent=1)
    assert not corrupt, f"files in corrupt/: {corrupt}"
    assert sum(chaos.kills.values()) > 0, "the chaos loop killed nothing"
    # Arrivals that never got a 250 are fine (the 250 was lost with a killed
    # smtpd), but only for messages we sent.
    assert all(m.startswith("<soak-") for m in stray), stray
