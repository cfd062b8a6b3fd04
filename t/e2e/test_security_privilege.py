"""Privilege separation on disk (as real root; test_master.py checks the
daemons' identities, jails and that smtpd cannot read the spool or rules):

- the router alone can write the spool: no other daemon's user can create,
  change, rename or delete anything in any spool directory;
- the SRS secret (the key of the return path) is readable by the router's
  user alone, and so are the activity log and the rules' writable state.

Each check runs a real process as the daemon's user (setpriv), with the
router's user as the positive control, so a check that cannot fail is seen.
"""
import os
import pwd
import re
import stat
import subprocess

import pytest

from conftest import (DAEMONS, MASTER_USER, REAL_ROOT, UNIT_CAPS, USERS, make_message,
                      make_world, unit_wrap)

pytestmark = pytest.mark.skipif(not REAL_ROOT, reason="needs real root")

OTHERS = ("smtpd", "deliverd", "bouncer")
STATE_DIRS = ("tmp", "incoming", "active", "deferred", "hold", "corrupt", "msg")


def as_user(daemon, script):
    pw = pwd.getpwnam(USERS[daemon])
    return subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                           "--clear-groups", "/bin/sh", "-c", script],
                          capture_output=True, text=True, timeout=20)


def queued_message(world):
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test")
    world.dest.set_mode("tempfail")
    qid = gw.send("alice@sender.test", "info@gw.test",
                  make_message("alice@sender.test", "info@gw.test"))
    gw.wait_activity(qid, "deferred", timeout=20)
    for d in ("deferred", "active", "incoming"):
        p = os.path.join(gw.spool, d, qid)
        if os.path.exists(p):
            return qid, p
    pytest.fail(f"envelope of {qid} not found: {gw.spool_files()}")


def test_only_router_writes_spool(world):
    gw = world.gw
    qid, env = queued_message(world)
    content = os.path.join(gw.spool, "msg", qid)
    spool = gw.spool
    # Positive control: the router's user can create a file in tmp/.
    probe = os.path.join(spool, "tmp", "privprobe")
    r = as_user("router", f"echo x > '{probe}' && rm '{probe}'")
    assert r.returncode == 0, f"control failed: the router's user cannot write tmp/: {r.stderr}"
    for d in OTHERS:
        for sd in STATE_DIRS:
            p = os.path.join(spool, sd, "privprobe")
            r = as_user(d, f"echo x > '{p}'")
            assert r.returncode != 0, f"{USERS[d]} created a file in {sd}/"
            assert not os.path.exists(p)
        for target in (env, content):
            r = as_user(d, f"echo x >> '{target}'")
            assert r.returncode != 0, f"{USERS[d]} appended to {target}"
            r = as_user(d, f"mv '{target}' '{target}.x' || rm -f '{target}'")
            assert os.path.exists(target), f"{USERS[d]} moved or removed {target}"
            assert r.returncode != 0
    # The spool's directories themselves: owned by the router, no group/other write.
    router_uid = pwd.getpwnam(USERS["router"]).pw_uid
    for sd in STATE_DIRS:
        st = os.stat(os.path.join(spool, sd))
        assert st.st_uid == router_uid, f"{sd}/ owned by uid {st.st_uid}"
        assert not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH), f"{sd}/ mode {oct(st.st_mode)}"


def test_secrets_readable_by_router_alone(world):
    gw = world.gw
    queued_message(world)  # the router has made its SRS secret by now
    secret = os.path.join(gw.data, "srs.secret")
    assert os.path.exists(secret), os.listdir(gw.data)
    st = os.stat(secret)
    router = pwd.getpwnam(USERS["router"])
    assert st.st_uid == router.pw_uid, f"srs.secret owned by uid {st.st_uid}"
    assert not st.st_mode & 0o077, f"srs.secret mode {oct(st.st_mode)}"
    r = as_user("router", f"cat '{secret}' > /dev/null")
    assert r.returncode == 0, f"control failed: the router cannot read its secret: {r.stderr}"
    for d in OTHERS:
        r = as_user(d, f"cat '{secret}'")
        assert r.returncode != 0 and not r.stdout, f"{USERS[d]} can read srs.secret"
        for name in ("activity.db", "rules.db"):
            p = os.path.join(gw.data, name)
            if os.path.exists(p):
                r = as_user(d, f"echo x >> '{p}'")
                assert r.returncode != 0, f"{USERS[d]} can write {name}"
        r = as_user(d, f"echo x > '{os.path.join(gw.data, 'privprobe')}'")
        assert r.returncode != 0, f"{USERS[d]} can create files in data_dir"

    # The DKIM private keys (issue 7/9): the router reads them, nobody else.
    gw.ctl_ok("dkim", "keygen", "gw.test", "--selector", "priv")
    keys = [os.path.join(gw.data, "dkim", n) for n in os.listdir(os.path.join(gw.data, "dkim"))]
    assert keys
    for k in keys:
        st = os.stat(k)
        assert st.st_uid == router.pw_uid and not st.st_mode & 0o077, (k, oct(st.st_mode))
        r = as_user("router", f"cat '{k}' > /dev/null")
        assert r.returncode == 0, f"control failed: the router cannot read {k}: {r.stderr}"
        for d in OTHERS:
            r = as_user(d, f"cat '{k}'")
            assert r.returncode != 0 and not r.stdout, f"{USERS[d]} can read {k}"


# The packaged unit (debian/mxferry.service): the master runs as its own user
# with exactly the ambient capabilities UNIT_CAPS, no CAP_CHOWN; its
# ExecStartPre (`mxferryd -S mxferry`, as root) sets the directories up.
CAP_NUM = {"chown": 0, "kill": 5, "setgid": 6, "setuid": 7, "net_bind_service": 10,
           "sys_chroot": 18}


def caps_of(pid):
    with open(f"/proc/{pid}/status") as f:
        st = f.read()
    return {k: int(re.search(rf"^{k}:\s+([0-9a-f]+)$", st, re.M).group(1), 16)
            for k in ("CapEff", "CapPrm", "CapAmb", "CapInh")}, \
        re.search(r"^Uid:\s+(.*)$", st, re.M).group(1).split()


def test_master_as_service_user_with_ambient_caps(dns_server, sinks, gateway, mxf_bin):
    try:
        pw = pwd.getpwnam(MASTER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", MASTER_USER], check=True)
        pw = pwd.getpwnam(MASTER_USER)
    w = make_world(dns_server, sinks, lambda extra=None: gateway(extra, start=False))
    gw = w.gw
    # Without the set-up, the master (no CAP_CHOWN) refuses to start.
    gw.wrap = unit_wrap()
    r = subprocess.run([*gw.wrap, os.path.join(mxf_bin, "mxferryd"), "-c", gw.conf, "-f"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "mxferryd -S" in r.stderr, r.stderr
    r = subprocess.run([os.path.join(mxf_bin, "mxferryd"), "-c", gw.conf, "-S", MASTER_USER],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert pwd.getpwuid(os.stat(os.path.join(gw.spool, "pid")).st_uid).pw_name == MASTER_USER
    assert os.stat(gw.spool).st_uid == 0
    gw.start()

    st = gw.status()
    want = sum(1 << CAP_NUM[c] for c in UNIT_CAPS)
    mcaps, muids = caps_of(gw.proc.pid)
    assert set(muids) == {str(pw.pw_uid)}, muids
    assert mcaps["CapEff"] == want and mcaps["CapAmb"] == want, mcaps
    for d in DAEMONS:
        dcaps, duids = caps_of(st[d]["pid"])
        assert set(duids) == {str(pwd.getpwnam(USERS[d]).pw_uid)}, (d, duids)
        # Not one capability is left to a daemon: the uid change from a
        # non-root master does not clear them, privdrop must.
        assert not any(dcaps.values()), (d, dcaps)
    gw.forward("info@gw.test", "bob@dest.test")
    gw.send("alice@sender.test", "info@gw.test",
            make_message("alice@sender.test", "info@gw.test", msgid="<unitway@s.test>"))
    [m] = w.dest.wait_for(1, timeout=30)
    assert m.msg["Message-ID"] == "<unitway@s.test>"
