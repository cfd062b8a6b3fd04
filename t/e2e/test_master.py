"""The master: supervision, orderly stop, privilege separation (as root)."""
import os
import pwd
import signal
import socket
import subprocess
import time

import pytest

from conftest import DAEMONS, REAL_ROOT, USERS, make_message, pid_alive, wait_until


def _ids(pid):
    """(uids, gids, NoNewPrivs) of a process from /proc/PID/status."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.split()
    return ([int(x) for x in fields["Uid"]], [int(x) for x in fields["Gid"]],
            fields.get("NoNewPrivs", ["?"])[0], [int(x) for x in fields.get("Groups", [])])


def test_status_file_lists_master_and_daemons(world):
    st = world.gw.status()
    with open(os.path.join(world.gw.spool, "pid", "status")) as f:
        first = f.readline().split()
    assert first[0] == "mxferryd" and int(first[1]) == world.gw.proc.pid
    for d in DAEMONS:
        assert d in st and pid_alive(st[d]["pid"]), st
        assert st[d]["restarts"] == 0
    assert len({st[d]["pid"] for d in DAEMONS}) == len(DAEMONS)


def test_restarts_killed_deliverd_and_stops_on_sigterm(world):
    gw, sink = world.gw, world.dest
    gw.forward("info@gw.test", "bob@dest.test")
    before = gw.status()
    old = before["deliverd"]["pid"]
    gw.expect_restart("deliverd")
    os.kill(old, signal.SIGKILL)

    def restarted():
        d = gw.status().get("deliverd")
        return d and d["pid"] != old and d["restarts"] >= 1 and pid_alive(d["pid"])
    wait_until(restarted, 20, interval=0.2, what="the master to restart deliverd")
    after = gw.status()
    for d in ("smtpd", "router", "bouncer"):
        assert after[d]["pid"] == before[d]["pid"], f"{d} restarted too"

    # The new deliverd delivers.
    gw.send("alice@sender.test", "info@gw.test",
            make_message("alice@sender.test", "info@gw.test", msgid="<after@sender.test>"))
    [m] = sink.wait_for(1, timeout=20)
    assert m.msg.get("Message-ID") == "<after@sender.test>"

    pids = [gw.proc.pid] + [after[d]["pid"] for d in DAEMONS]
    took = gw.stop(timeout=5)
    assert took is not None, "mxferryd did not exit within 5 s of SIGTERM"
    time.sleep(0.2)
    left = [p for p in pids if pid_alive(p)]
    assert not left, f"processes left after SIGTERM: {left}"
    assert not gw.our_processes()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gw.smtp_port), timeout=2).close()


@pytest.mark.skipif(not REAL_ROOT, reason="needs real root")
def test_each_daemon_own_user_and_jails(world):
    gw = world.gw
    st = gw.status()
    master_uids, _, _, _ = _ids(gw.proc.pid)
    assert master_uids[0] == 0
    uids = {}
    for d in DAEMONS:
        pw = pwd.getpwnam(USERS[d])
        assert pw.pw_uid != 0
        u, g, nnp, groups = _ids(st[d]["pid"])
        assert u == [pw.pw_uid] * 4, f"{d}: Uid {u}, expected {pw.pw_uid}"
        assert g == [pw.pw_gid] * 4, f"{d}: Gid {g}, expected {pw.pw_gid}"
        assert 0 not in groups, f"{d}: supplementary groups {groups}"
        assert nnp == "1", f"{d}: NoNewPrivs {nnp}"
        uids[d] = pw.pw_uid
    assert len(set(uids.values())) == len(DAEMONS), uids
    private = os.path.realpath(os.path.join(gw.spool, "private"))
    assert os.readlink(f"/proc/{st['smtpd']['pid']}/root") == private


@pytest.mark.skipif(not REAL_ROOT, reason="needs real root")
def test_helpers_chrooted(world):
    st = world.gw.status()
    private = os.path.realpath(os.path.join(world.gw.spool, "private"))
    for d in ("deliverd", "bouncer"):
        assert os.readlink(f"/proc/{st[d]['pid']}/root") == private, d
    # workerd execs programs and node: not chrooted, but its own user (above).
    assert os.readlink(f"/proc/{st['workerd']['pid']}/root") == "/"


@pytest.mark.skipif(not REAL_ROOT, reason="needs real root")
def test_smtpd_user_cannot_open_rules_or_spool(world):
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test")
    world.dest.set_mode("tempfail")
    qid = gw.send("alice@sender.test", "info@gw.test",
                  make_message("alice@sender.test", "info@gw.test"))
    gw.wait_activity(qid, "deferred", timeout=20)
    targets = [os.path.join(gw.data, "rules.db"), os.path.join(gw.spool, "msg", qid)]
    for state in ("deferred", "active", "incoming"):
        p = os.path.join(gw.spool, state, qid)
        if os.path.exists(p):
            targets.append(p)
    assert len(targets) == 3, f"envelope of {qid} not found in the spool: {gw.spool_files()}"
    for t in targets:
        assert os.path.exists(t), t
        r = subprocess.run(["setpriv", f"--reuid={USERS['smtpd']}",
                            f"--regid={pwd.getpwnam(USERS['smtpd']).pw_gid}", "--clear-groups",
                            "cat", t], capture_output=True)
        assert r.returncode != 0 and b"Permission denied" in r.stderr, \
            f"{USERS['smtpd']} can read {t}"
