"""The web dashboard (issue 12) in a real browser: Debian's chromium driven by
playwright-core (t/e2e/dashboard/dash.mjs) against a real gateway's apid.

The browser logs in with a token from `mxferryctl token add`, adds the domain
and creates a forward rule; the test then sends a message through smtpd with
smtplib (and has a second recipient refused); the browser finds them in the
activity log and in the chart (asserting on the DOM and the chart's data, not
on pixels) and saves screenshots: under the test's directory and, if
MXF_ARTIFACTS is set, copied there.

test_dashboard_queue_routing (t/e2e/dashboard/queue_routing.mjs) covers the
Queue view and an activity row's queue entry with messages deferred by a sink
that answers 451 (hold, release, retry, delete, checked with mxferryctl too),
the catch-all, destination addresses and their verification, a rule's
enable/disable, the DNS records table and the audit log view.

Skips only when apid is not built; chromium and playwright-core are installed
by scripts/install-deps.sh --test.
"""
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import GW_HOST, add_log, free_ports, make_message, make_world, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
WWW = os.path.normpath(os.path.join(HERE, "..", "..", "apid", "www"))
DASH_DIR = os.path.join(HERE, "dashboard")
CHROMIUM = "/usr/bin/chromium"
TOKEN_RE = re.compile(r"\bmxf_[0-9a-f]{64}\b")
ZONE = "dash.test"
RCPT = f"hello@{ZONE}"
DEST = "dest@dest.test"
NOBODY = f"nobody@{ZONE}"


def copy_www(dst):
    """The dashboard's files where every daemon user can read them (the
    worktree may not be traversable by apid's user)."""
    shutil.copytree(WWW, dst)
    for root, _, files in os.walk(dst):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    return dst


def save_artifacts(out):
    """The screenshots dash.mjs saved in out (dashboard-failure.png too), copied
    to $MXF_ARTIFACTS if set; returns their paths."""
    names = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    dest = os.environ.get("MXF_ARTIFACTS")
    if not dest:
        return [os.path.join(out, f) for f in names]
    os.makedirs(dest, exist_ok=True)
    for f in names:
        shutil.copy(os.path.join(out, f), os.path.join(dest, f))
    return [os.path.join(dest, f) for f in names]


def api_get(base, path, token):
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()



def browser_setup(mxf_bin, workdir, request):
    """Skips without apid; checks the browser is installed; returns the
    screenshot folder (saved to $MXF_ARTIFACTS afterwards, a failing run's
    too), a copy of the dashboard's files, apid's port and base URL."""
    if not os.access(os.path.join(mxf_bin, "apid"), os.X_OK):
        pytest.skip("apid is not built")
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: scripts/install-deps.sh --test"
    assert os.path.isdir(os.path.join(DASH_DIR, "node_modules", "playwright-core")), \
        "playwright-core is missing: scripts/install-deps.sh --test"
    out = os.path.join(workdir, "artifacts")
    os.makedirs(out)
    request.addfinalizer(lambda: save_artifacts(out))
    www = copy_www(os.path.join(workdir, "www"))
    port = free_ports(1)[0]
    return out, www, port, f"http://127.0.0.1:{port}"


def tokens_when_up(gw, base, name, ro_name):
    """A read-write and a read-only token from mxferryctl, once apid answers."""
    toks = []
    for args in ((name,), (ro_name, "--read-only")):
        m = TOKEN_RE.search(gw.ctl_ok("token", "add", *args))
        assert m, f"mxferryctl token add {' '.join(args)} printed no token"
        toks.append(m.group(0))

    def up():
        try:
            return api_get(base, "/client/v4/user/tokens/verify", toks[0])[0] == 200
        except OSError:
            return False
    wait_until(up, 20, interval=0.2, what=f"apid to answer on {base}")
    return toks[0], toks[1]

def test_dashboard(mxf_bin, dns_server, sinks, gateway, workdir, request):
    out, www, port, base = browser_setup(mxf_bin, workdir, request)
    # The domain's MX points at the gateway, so the DNS view finds it live.
    dns_server.zone(ZONE, mx=[(10, GW_HOST)])
    w = make_world(dns_server, sinks, gateway,
                   {"api": {"listen": f"127.0.0.1:{port}", "www_dir": www}})
    gw = w.gw
    # The destination is verified out of band (a verification round trip is
    # the API tests' business); the browser adds the domain and the rule.
    gw.ctl_ok("address", "add", DEST, "--verified")
    token, ro_token = tokens_when_up(gw, base, "dash", "viewer")
    # apid serves the dashboard from / (relative paths, no-cache).
    st, hdr, body = api_get(base, "/", token)
    assert st == 200 and b'src="app.js"' in body, (st, body[:200])
    assert hdr.get("Content-Type", "").startswith("text/html")
    for f, ctype in (("app.js", "javascript"), ("chart.js", "javascript"), ("style.css", "text/css")):
        st, hdr, _ = api_get(base, "/" + f, token)
        assert st == 200 and ctype in hdr.get("Content-Type", ""), (f, st, hdr.get("Content-Type"))

    def api_state():
        out = []
        for path in (f"/client/v4/zones/{ZONE}/email/routing/activity?to={RCPT}",
                     f"/client/v4/zones/{ZONE}/email/routing/analytics"):
            try:
                st, _, body = api_get(base, path, token)
                out.append(f"GET {path}: {st} {body[:3000].decode('utf-8', 'replace')}")
            except OSError as e:
                out.append(f"GET {path}: {e}")
        return "\n".join(out)
    add_log(request, "API state", api_state)

    env = dict(os.environ, DASH_URL=base + "/", DASH_TOKEN=token, DASH_ZONE=ZONE, DASH_RCPT=RCPT,
               DASH_DEST=DEST, DASH_NOBODY=NOBODY, DASH_OUT=out, DASH_RO_TOKEN=ro_token, HOME=workdir, TMPDIR=workdir)
    proc = subprocess.Popen(["node", os.path.join(DASH_DIR, "dash.mjs")], cwd=DASH_DIR, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    add_log(request, "dash.mjs", lambda: "\n".join(lines))
    need_mail = threading.Event()

    def reader():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("NEED-MAIL"):
                need_mail.set()
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 40
        while not need_mail.wait(0.2):
            assert proc.poll() is None, "dash.mjs ended before the mail:\n" + "\n".join(lines)
            assert time.monotonic() < deadline, "dash.mjs: no rule after 40 s:\n" + "\n".join(lines)
        qid = gw.send_retrying("alice@sender.test", RCPT,
                               make_message("alice@sender.test", RCPT, subject="dashboard test"))
        gw.wait_activity(qid, "forwarded")
        assert [m.rcpt_tos for m in w.dest.wait_for(1)] == [[DEST]]
        # And one refused at RCPT (no rule, no catch-all): a "rejected" row.
        s = gw.smtp()
        try:
            assert s.mail("alice@sender.test")[0] == 250
            code, resp = s.rcpt(NOBODY)
            assert code == 550, (code, resp)
        finally:
            s.quit()
        wait_until(lambda: [r for r in gw.activity()
                            if r["rcpt"] == NOBODY and r["status"] == "rejected"], 15,
                   what=lambda: f"a rejected activity row for {NOBODY}: {gw.activity()}")
        proc.stdin.write(f"SENT {qid}\n")
        proc.stdin.close()
        rc = proc.wait(40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        t.join(5)
    print("\n".join(lines))
    assert rc == 0, "dash.mjs failed:\n" + "\n".join(lines)
    res = json.loads(next(ln for ln in reversed(lines) if ln.startswith("RESULT "))[7:])
    assert res["qid"] == qid and res["totals"]["forwarded"] >= 1

    # The rule the browser made is the one that routed the mail, and its
    # audit entry names the token.
    rules = gw.ctl_json("rule", "list", ZONE)["rules"]
    assert [r for r in rules if r["tag"] == res["rule_id"] and r["to"] == RCPT], rules
    adds = [e for e in gw.ctl_json("audit")["entries"]
            if e["action"] == "rule.add" and e["object"] == res["rule_id"]]
    assert len(adds) == 1 and "dash" in adds[0]["who"], adds
    shots = save_artifacts(out)
    assert any(f.endswith("/dashboard.png") for f in shots), shots
    # (The test's directory is removed at the end unless MXF_E2E_KEEP=1.)
    print(f"dashboard screenshots: {', '.join(shots)}")


def test_dashboard_chart_units():
    """The chart's axis helpers (apid/www/chart.js) under node --test: needs
    neither apid nor a browser, so it runs before the merge too."""
    r = subprocess.run(["node", "--test", os.path.join(DASH_DIR, "chart_test.mjs")],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, TZ="UTC"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "# fail 0" in r.stdout, r.stdout


QZONE = "dash2.test"
SLOW = "slow@slow.test"          # its MX is a sink the test tells to tempfail
QRCPT = f"q@{QZONE}"             # forwarded to SLOW: the queue's messages
RRCPT = f"r@{QZONE}"             # forwarded to DEST: the rule switched off and on
NEWDEST = "new@dest.test"        # added (unverified) and removed in the browser


def test_dashboard_queue_routing(mxf_bin, dns_server, sinks, gateway, workdir, request):
    """The Queue view and an activity row's queue entry, the catch-all, the
    destination addresses, a rule's switch, the DNS table and the audit view,
    against the real apid (t/e2e/dashboard/queue_routing.mjs). The browser
    asks this test for what only it can do (send mail, switch the sink,
    look at the spool through mxferryctl) with "NEED <verb> <args>" lines and
    gets "OK <json>" or "ERR <text>" back."""
    out, www, port, base = browser_setup(mxf_bin, workdir, request)
    # The MX published, a wrong SPF record, no DMARC: the DNS table has an ok
    # row, a wrong one and missing ones.
    dns_server.zone(QZONE, mx=[(10, GW_HOST)], txt={QZONE: "v=spf1 -all"})
    dns_server.zone("slow.test", mx=[(10, "mx.slow.test")], a={"mx.slow.test": "127.0.0.4"})
    # A long retry schedule: only Release/Retry in the browser bring mail back.
    w = make_world(dns_server, sinks, gateway,
                   {"api": {"listen": f"127.0.0.1:{port}", "www_dir": www},
                    "router": {"retry_schedule": "1h"}})
    gw = w.gw
    slow = sinks("127.0.0.4", "tempfail")
    gw.ctl_ok("domain", "add", QZONE)
    gw.ctl_ok("address", "add", DEST, "--verified")
    gw.ctl_ok("address", "add", SLOW, "--verified")
    gw.ctl_ok("rule", "add", QZONE, "--to", QRCPT, "--forward", SLOW)
    gw.ctl_ok("rule", "add", QZONE, "--to", RRCPT, "--forward", DEST)
    token, ro_token = tokens_when_up(gw, base, "dash2", "viewer2")

    def api_state():
        acct = json.loads(api_get(base, "/client/v4/accounts", token)[2])["result"][0]["id"]
        res = []
        for path in (f"/client/v4/accounts/{acct}/email/routing/queue",
                     f"/client/v4/zones/{QZONE}/email/routing/activity",
                     f"/client/v4/accounts/{acct}/audit_logs?per_page=50"):
            try:
                st, _, body = api_get(base, path, token)
                res.append(f"GET {path}: {st} {body[:4000].decode('utf-8', 'replace')}")
            except OSError as e:
                res.append(f"GET {path}: {e}")
        return "\n".join(res)
    add_log(request, "API state", api_state)

    def queue_ids():
        return {m["queue_id"]: m for m in gw.ctl_json("queue", "list")["messages"]}

    def msgids(sink):
        return [x.msg.get("Message-ID") for x in sink.messages]

    sent = {}

    # What the browser may ask for; each returns what is sent back as JSON.
    def need_send_deferred():
        qids = []
        for n in (1, 2):
            mid = f"<queued-{n}@sender.test>"
            q = gw.send_retrying("alice@sender.test", QRCPT,
                                 make_message("alice@sender.test", QRCPT, msgid=mid,
                                              subject=f"queued {n}"))
            sent[q] = mid
            qids.append(q)
        for q in qids:
            gw.wait_activity(q, "deferred")
        wait_until(lambda: all(queue_ids().get(q, {}).get("state") == "deferred" for q in qids),
                   15, what=lambda: f"{qids} deferred in mxferryctl queue: {queue_ids()}")
        return qids

    def need_ctl_state(qid, st):
        # mxferryctl sees the state the browser shows (st "gone": not queued).
        if st == "gone":
            wait_until(lambda: qid not in queue_ids(), 15,
                       what=lambda: f"{qid} gone from mxferryctl queue: {queue_ids()}")
            return None
        wait_until(lambda: queue_ids().get(qid, {}).get("state") == st, 15,
                   what=lambda: f"{qid} {st} in mxferryctl queue: {queue_ids()}")
        return queue_ids()[qid]

    def need_accept():
        slow.set_mode("accept")

    def need_arrived(qid):
        wait_until(lambda: sent[qid] in msgids(slow), 20,
                   what=lambda: f"{qid} {sent[qid]} at the sink: {msgids(slow)}")
        return [x.rcpt_tos for x in slow.messages if x.msg.get("Message-ID") == sent[qid]][0]

    def need_verification_mail(addr):
        def got():
            return [x for x in w.dest.messages if x.rcpt_tos == [addr]]
        [v] = wait_until(got, 30, what=f"the verification mail to {addr}")
        m = re.search(r"address verify \S+ ([a-z0-9]{20})\r?\n",
                      v.msg.get_payload(decode=True).decode())
        assert m, f"no code in the verification mail: {v.msg.get_payload(decode=True)!r}"
        return {"subject": v.msg["Subject"], "code": m.group(1)}

    needs = {"send-deferred": need_send_deferred, "ctl-state": need_ctl_state,
             "accept": need_accept, "arrived": need_arrived,
             "verification-mail": need_verification_mail}

    env = dict(os.environ, DASH_URL=base + "/", DASH_TOKEN=token, DASH_ZONE=QZONE,
               DASH_QRCPT=QRCPT, DASH_RRCPT=RRCPT, DASH_SLOW=SLOW, DASH_DEST=DEST,
               DASH_NEWDEST=NEWDEST, DASH_OUT=out, DASH_RO_TOKEN=ro_token, HOME=workdir,
               TMPDIR=workdir)
    proc = subprocess.Popen(["node", os.path.join(DASH_DIR, "queue_routing.mjs")], cwd=DASH_DIR,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    add_log(request, "queue_routing.mjs", lambda: "\n".join(lines))
    asks = []
    cond = threading.Condition()

    def reader():
        for line in proc.stdout:
            with cond:
                lines.append(line.rstrip("\n"))
                if line.startswith("NEED "):
                    asks.append(line.split()[1:])
                cond.notify_all()
        with cond:
            cond.notify_all()
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 90
        while True:
            with cond:
                while not asks and proc.poll() is None and time.monotonic() < deadline:
                    cond.wait(0.2)
                ask = asks.pop(0) if asks else None
            if ask is None:
                assert time.monotonic() < deadline, \
                    "queue_routing.mjs: not done after 90 s:\n" + "\n".join(lines)
                break  # the script ended
            try:
                ans = "OK " + json.dumps(needs[ask[0]](*ask[1:]))
            except BaseException as e:  # noqa: BLE001 - reported to the script and below
                ans = "ERR " + " ".join(str(e).split())[:2000]
                lines.append(f"(test) NEED {' '.join(ask)}: {ans}")
            proc.stdin.write(ans + "\n")
            proc.stdin.flush()
        rc = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        t.join(5)
    print("\n".join(lines))
    assert rc == 0, "queue_routing.mjs failed:\n" + "\n".join(lines)
    res = json.loads(next(ln for ln in reversed(lines) if ln.startswith("RESULT "))[7:])
    q1, q2 = res["qids"]

    # The spool agrees with what the browser saw: q1 delivered, q2 deleted
    # and never delivered; the catch-all drops; the rule is enabled again;
    # the removed destination is gone.
    assert not queue_ids()
    assert sent[q1] in msgids(slow) and sent[q2] not in msgids(slow)
    rules = gw.ctl_json("rule", "list", QZONE)["rules"]
    rr = [r for r in rules if r["to"] == RRCPT]
    assert rr and all(r["enabled"] for r in rr), rules
    ca = [r for r in rules if r["matcher"] == "all"]
    assert len(ca) == 1 and ca[0]["action"] == "drop" and ca[0]["enabled"], rules
    q = gw.send("alice@sender.test", f"anyone@{QZONE}",
                make_message("alice@sender.test", f"anyone@{QZONE}"))
    gw.wait_activity(q, "dropped")
    assert NEWDEST not in [a["address"] for a in gw.ctl_json("address", "list")["addresses"]]
    # Every change made in the browser is audited under the token's name.
    entries = [e for e in gw.ctl_json("audit")["entries"] if "dash2" in e["who"]]
    acts = [e["action"] for e in entries]
    for a in ("catchall.set", "address.add", "address.verify", "address.remove"):
        assert a in acts, acts
    assert acts.count("catchall.set") >= 2, acts
    assert any(a in acts for a in ("rule.disable", "rule.edit")), acts
    shots = save_artifacts(out)
    assert any(f.endswith("/dashboard-queue.png") for f in shots), shots
    print(f"dashboard screenshots: {', '.join(shots)}")
