"""The Debian package (issue 10), installed on this machine with dpkg.

Runs only when MXF_PKG_DEB names a built mxferry_*.deb, as real root: t/pkg/run.sh
(ctest -R package) builds the package out of the tree, runs lintian, then this
file inside a private network namespace. The tests run in file order: install,
files and users, man pages, the unit, a delivery through the installed programs
with journal fields and pflogsumm, reinstall, remove, purge.
"""
import configparser
import grp
import gzip
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

from conftest import (GW_HOST, REAL_ROOT, SRS_DOMAIN, free_ports, make_message, unit_wrap,
                      wait_until)

DEB = os.environ.get("MXF_PKG_DEB")
pytestmark = [
    pytest.mark.skipif(not DEB, reason="MXF_PKG_DEB is not set: the package test runs through "
                                       "t/pkg/run.sh (ctest -R package), which builds the .deb"),
    pytest.mark.skipif(not REAL_ROOT, reason="dpkg -i needs real root"),
]

CONF = "/etc/mxferry/mxferry.conf"
SPOOL = "/var/spool/mxferry"
DATA = "/var/lib/mxferry"
TLS = "/etc/mxferry/tls"
UNIT = "/lib/systemd/system/mxferry.service"
USERS = ("mxferry", "mxferry-smtpd", "mxferry-router", "mxferry-deliver", "mxferry-bounce",
         "mxferry-worker", "mxferry-api")
DAEMONS = ("smtpd", "router", "deliverd", "bouncer", "workerd")
# systemd-analyze security --offline=true on the unit: the issue asks for < 2.0.
# The master runs as its own user with five ambient capabilities (no root,
# no CAP_CHOWN: the set-up runs as ExecStartPre=+); what is left is what a
# gateway that setuids and chroots its daemons and connects anywhere needs.
MAX_EXPOSURE = 1.9


def run(*cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)
    if check:
        assert r.returncode == 0, f"{' '.join(cmd)}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def installed_status():
    r = run("dpkg-query", "-W", "-f=${Status}", "mxferry", check=False)
    return r.stdout.strip() if r.returncode == 0 else ""


def mode_owner(path):
    st = os.lstat(path)
    return (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name)


@pytest.fixture(scope="module")
def package():
    """dpkg -i the package (purging a leftover of an earlier, interrupted run);
    purged again at the end whatever happened."""
    if installed_status():
        print("package test: purging an mxferry left installed by an earlier run")
        run("dpkg", "--purge", "mxferry")
    files = [line.split()[-1].lstrip(".") for line in run("dpkg-deb", "-c", DEB).stdout.splitlines()]
    r = run("dpkg", "-i", DEB, check=False)
    assert r.returncode == 0, f"dpkg -i {DEB}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    yield {"files": [f for f in files if f and f != "/"]}
    if installed_status():
        run("dpkg", "--purge", "mxferry", check=False)


def test_users_files_and_modes(package):
    assert installed_status() == "install ok installed"
    for name in USERS:
        pw = pwd.getpwnam(name)
        assert pw.pw_uid < 1000, f"{name} is not a system user (uid {pw.pw_uid})"
        assert pw.pw_shell in ("/usr/sbin/nologin", "/bin/false"), (name, pw.pw_shell)
        assert not os.path.exists(pw.pw_dir) or pw.pw_dir == "/nonexistent", (name, pw.pw_dir)
        assert grp.getgrnam(name).gr_gid == pw.pw_gid, f"{name}'s group"
    grp.getgrnam("mxferry-admin")
    # The master starts smtpd, which reads the TLS key before dropping to
    # mxferry-smtpd.
    assert "mxferry" in grp.getgrnam("mxferry-smtpd").gr_mem

    for prog in ("/usr/sbin/mxferryd", "/usr/sbin/mxferryctl",
                 *(f"/usr/lib/mxferry/{d}" for d in (*DAEMONS, "apid"))):
        assert mode_owner(prog) == (0o755, "root", "root"), prog
    # The dashboard's files (issue 12), when the tree has them (apid/www).
    www = os.path.join(os.path.dirname(__file__), "..", "..", "apid", "www")
    for name in (os.listdir(www) if os.path.isdir(www) else []):
        assert mode_owner(f"/usr/share/mxferry/www/{name}")[1:] == ("root", "root"), name
    # The js worker runtime, beside workerd.
    assert mode_owner("/usr/lib/mxferry/runner.mjs") == (0o644, "root", "root")
    assert mode_owner(CONF) == (0o644, "root", "root")
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "mxferry").stdout
    assert CONF in conffiles, conffiles
    assert mode_owner(UNIT)[0] == 0o644
    for page in ("man8/mxferryd.8.gz", "man8/mxferryctl.8.gz", "man5/mxferry.conf.5.gz"):
        assert os.path.isfile("/usr/share/man/" + page), page

    # Made by postinst: directories with the master's owners and modes, the
    # SRS key (router only) and a self-signed certificate (smtpd's group).
    assert mode_owner(SPOOL) == (0o755, "root", "root")
    # 1770 (issue 12): apid writes rules.db through the router's group.
    assert mode_owner(DATA) == (0o1770, "mxferry-router", "mxferry-router")
    assert mode_owner(f"{DATA}/srs.secret") == (0o600, "mxferry-router", "mxferry-router")
    assert os.path.getsize(f"{DATA}/srs.secret") == 32
    assert mode_owner(TLS) == (0o750, "root", "mxferry-smtpd")
    assert mode_owner(f"{TLS}/key.pem") == (0o640, "root", "mxferry-smtpd")
    assert mode_owner(f"{TLS}/cert.pem") == (0o644, "root", "mxferry-smtpd")
    run("openssl", "x509", "-in", f"{TLS}/cert.pem", "-noout", "-subject")

    # Not a mail-transport-agent: it installs beside a local Postfix.
    rel = run("dpkg-query", "-W", "-f=${Provides}|${Conflicts}|${Replaces}", "mxferry").stdout
    assert "mail-transport-agent" not in rel, rel
    assert not os.path.exists("/usr/sbin/sendmail") or "mxferry" not in os.path.realpath(
        "/usr/sbin/sendmail")


def test_man_pages_render_and_list_every_key(package):
    for page in ("mxferryd.8", "mxferryctl.8"):
        r = run("man", "--warnings", "-l", f"/usr/share/man/man8/{page}.gz",
                env={**os.environ, "MANWIDTH": "80", "MAN_DISABLE_SECCOMP": "1"})
        assert r.stderr == "", (page, r.stderr)
    with gzip.open("/usr/share/man/man5/mxferry.conf.5.gz", "rt") as f:
        src = f.read()
    # Keys per section as the man page has them (.Ss [section] / .It Cm key).
    documented, section = set(), None
    for line in src.splitlines():
        m = re.match(r"\.Ss \[(\w+)\]", line)
        if m:
            section = m.group(1)
        m = re.match(r"\.It Cm (\w+)", line)
        if m and section:
            documented.add((section, m.group(1)))
    # Every key the programs know, from the installed mxferryctl.
    out = run("/usr/sbin/mxferryctl", "-c", CONF, "config").stdout
    keys, section = set(), None
    for line in out.splitlines():
        m = re.match(r"\[(\w+)\]$", line)
        if m:
            section = m.group(1)
        elif "=" in line and section:
            keys.add((section, line.split("=", 1)[0].strip()))
    assert keys, out
    missing = sorted(f"[{s}] {k}" for s, k in keys - documented)
    assert not missing, f"keys missing from mxferry.conf(5) (doc/man/mxferry.conf.5): {missing}"
    stale = sorted(f"[{s}] {k}" for s, k in documented - keys)
    assert not stale, f"mxferry.conf(5) documents keys the programs do not know: {stale}"


def test_unit_is_hardened_notify_and_reloads_with_sighup(package):
    unit = open(UNIT).read()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ReadWritePaths=/var/spool/mxferry /var/lib/mxferry"):
        assert line in unit, line
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M).group(1).split()
    assert "CAP_NET_BIND_SERVICE" in caps and "CAP_SYS_ADMIN" not in caps, caps
    assert re.search(r"^SystemCallFilter=@system-service", unit, re.M)
    r = run("systemd-analyze", "verify", UNIT, check=False)
    assert r.returncode == 0, r.stderr
    r = run("systemd-analyze", "security", "--offline=true", "--no-pager", UNIT, check=False)
    m = re.search(r"Overall exposure level for mxferry.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    exposure = float(m.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE, r.stdout


# ---------------------------------------------------------------- a delivery


class FakeJournal:
    """journald's native socket, as far as the gateway sees it: records every
    datagram as a dict of fields."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.entries = []
        self.lock = threading.Lock()
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @staticmethod
    def parse(data):
        fields, i = {}, 0
        while i < len(data):
            nl = data.index(b"\n", i)
            line = data[i:nl]
            if b"=" in line:
                k, v = line.split(b"=", 1)
                i = nl + 1
            else:  # KEY\n, little-endian u64 length, value, \n
                k = line
                n = int.from_bytes(data[nl + 1:nl + 9], "little")
                v = data[nl + 9:nl + 9 + n]
                assert data[nl + 9 + n:nl + 10 + n] == b"\n", data
                i = nl + 10 + n
            fields[k.decode()] = v.decode("utf-8", "replace")
        return fields

    def _loop(self):
        self.sock.settimeout(0.2)
        while not self.stopped:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            e = self.parse(data)
            e["_time"] = time.time()
            with self.lock:
                self.entries.append(e)

    def all(self):
        with self.lock:
            return list(self.entries)

    def close(self):
        self.stopped = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def mxf_bin(workdir):
    """The installed programs, seen by the harness as one BINDIR of links;
    mxferryd resolves itself to /usr/sbin and finds the daemons in the
    compiled-in /usr/lib/mxferry."""
    b = os.path.join(workdir, "bin")
    os.makedirs(b)
    for p in ("mxferryd", "mxferryctl"):
        os.symlink(f"/usr/sbin/{p}", os.path.join(b, p))
    for d in DAEMONS:
        os.symlink(f"/usr/lib/mxferry/{d}", os.path.join(b, d))
    return b


def installed_config_copy(g, dns_port, sink_port):
    """The installed mxferry.conf with only the test's network pointed at the
    harness (DNS, listener, sinks' port); paths and users as installed."""
    cp = configparser.ConfigParser(inline_comment_prefixes=(";",), interpolation=None)
    cp.read(CONF)
    cp["main"]["hostname"] = GW_HOST
    cp["main"]["dns_resolver"] = f"127.0.0.1:{dns_port}"
    cp["smtpd"]["listen"] = f"127.0.0.1:{g.smtp_port}"
    cp["router"]["srs_domain"] = SRS_DOMAIN
    cp["router"]["retry_min"] = "1"
    cp["deliverd"]["smtp_port"] = str(sink_port)
    g.api_port = free_ports(1)[0]
    cp["api"]["listen"] = f"127.0.0.1:{g.api_port}"
    with open(g.conf, "w") as f:
        cp.write(f)
    os.chmod(g.conf, 0o644)
    assert cp["main"]["spool_dir"] == SPOOL and cp["main"]["data_dir"] == DATA
    g.spool, g.data = SPOOL, DATA


def syslog_line(e):
    ts = time.strftime("%b %e %H:%M:%S", time.localtime(e["_time"]))
    return f"{ts} {GW_HOST} {e['SYSLOG_IDENTIFIER']}[{e['SYSLOG_PID']}]: {e['MESSAGE']}"


def test_installed_gateway_delivers_logs_to_journal_pflogsumm(package, dns_server, sinks, gateway,
                                                              workdir, monkeypatch):
    # A short path: workdir's is too long for sun_path.
    jdir = tempfile.mkdtemp(prefix="mxfj-", dir="/tmp")
    os.chmod(jdir, 0o755)  # the master runs as mxferry
    journal = FakeJournal(os.path.join(jdir, "journal.sock"))
    try:
        dns_server.zone("dest.test", mx=[(10, "mx1.dest.test")], a={"mx1.dest.test": "127.0.0.2"})
        dns_server.zone("sender.test", mx=[(10, "mx.sender.test")],
                        a={"mx.sender.test": "127.0.0.3"})
        dns_server.start()
        sink = sinks("127.0.0.2")
        g = gateway(start=False)
        installed_config_copy(g, dns_server.port, sink.port)
        # stderr (the log file) plays the journal's stream: JOURNAL_STREAM
        # names it, so every program logs entries to the (fake) journal.
        open(g.log, "ab").close()
        st = os.stat(g.log)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.setenv("MXF_JOURNAL_SOCKET", journal.path)
        # As the unit runs it: set-up as root, then the master as mxferry
        # with its ambient capabilities.
        run("/usr/sbin/mxferryd", "-c", g.conf, "-S", "mxferry")
        g.wrap = unit_wrap("mxferry")
        g.start()
        with open(f"/proc/{g.proc.pid}/status") as f:
            muid = re.search(r"^Uid:\s+(.*)$", f.read(), re.M).group(1).split()
        assert set(muid) == {str(pwd.getpwnam("mxferry").pw_uid)}, muid

        # The daemons run as their users, from the installed paths.
        status = g.status()
        # (USERS[0] is the master's.)
        for d, user in zip(DAEMONS, USERS[1:]):
            pid = status[d]["pid"]
            assert os.path.realpath(f"/proc/{pid}/exe") == f"/usr/lib/mxferry/{d}"
            with open(f"/proc/{pid}/status") as f:
                uids = re.search(r"^Uid:\s+(.*)$", f.read(), re.M).group(1).split()
            assert set(uids) == {str(pwd.getpwnam(user).pw_uid)}, (d, uids)

        g.forward("info@gw.test", "bob@dest.test")
        data = make_message("alice@sender.test", "info@gw.test", subject="installed")
        qid = g.send("alice@sender.test", "info@gw.test", data)
        [m] = sink.wait_for(1, timeout=30)
        assert m.rcpt_tos == ["bob@dest.test"] and m.data.endswith(data)
        g.wait_activity(qid, "forwarded", timeout=20)

        # apid (issue 12) runs as mxferry-api with the router's group only,
        # and reads and writes rules.db through it.
        apid = [p for p in os.listdir("/proc") if p.isdigit() and
                os.path.exists(f"/proc/{p}/exe") and
                os.path.realpath(f"/proc/{p}/exe") == "/usr/lib/mxferry/apid"]
        assert len(apid) == 1, apid
        with open(f"/proc/{apid[0]}/status") as f:
            st = f.read()
        assert set(re.search(r"^Uid:\s+(.*)$", st, re.M).group(1).split()) == {
            str(pwd.getpwnam("mxferry-api").pw_uid)}
        rgid = str(pwd.getpwnam("mxferry-router").pw_gid)
        assert set(re.search(r"^Gid:\s+(.*)$", st, re.M).group(1).split()) == {rgid}
        assert re.search(r"^Groups:\s*(.*)$", st, re.M).group(1).split() in ([], [rgid])
        tok = json.loads(run("/usr/sbin/mxferryctl", "-c", g.conf, "--json", "token", "add",
                             "pkg").stdout)["token"]

        def api(method, path, body=None):
            req = urllib.request.Request(
                f"http://127.0.0.1:{g.api_port}/client/v4{path}", method=method,
                data=json.dumps(body).encode() if body is not None else None,
                headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=20) as r:
                return json.loads(r.read())
        assert "gw.test" in [z["name"] for z in api("GET", "/zones")["result"]]
        assert api("POST", "/zones", {"name": "api.test"})["success"] is True
        assert "api.test" in run("/usr/sbin/mxferryctl", "-c", g.conf, "domain", "list").stdout

        # The master made the spool with the owners the package expects.
        assert mode_owner(f"{SPOOL}/incoming") == (0o700, "mxferry-router", "mxferry-router")
        assert mode_owner(f"{SPOOL}/private") == (0o711, "mxferry-router", "mxferry-router")
        assert mode_owner(f"{SPOOL}/pid")[1] == "mxferry"
        assert mode_owner(DATA) == (0o1770, "mxferry-router", "mxferry-router")
        assert pwd.getpwuid(os.stat(f"{DATA}/activity.db").st_uid).pw_name == "mxferry-router"

        def about_qid():
            return [e for e in journal.all() if e.get("QUEUE_ID") == qid]
        # The router's delivery line is the last of the message's path.
        wait_until(lambda: any("status=sent" in e["MESSAGE"] for e in about_qid()), 10,
                   what=lambda: f"journal entries for {qid}: {about_qid()}")
        assert g.stop() is not None
    finally:
        journal.close()
        shutil.rmtree(jdir, ignore_errors=True)

    entries = journal.all()
    idents = {e.get("SYSLOG_IDENTIFIER") for e in entries}
    for d in ("mxferryd", *DAEMONS):
        assert f"mxferry/{d}" in idents, (d, idents)
    for e in entries:
        assert e["SYSLOG_FACILITY"] == "2" and e["PRIORITY"] in ("3", "4", "6", "7"), e
        assert int(e["SYSLOG_PID"]) > 1, e
    mine = [e for e in entries if e.get("QUEUE_ID") == qid]
    assert {e["SYSLOG_IDENTIFIER"] for e in mine} >= {"mxferry/smtpd", "mxferry/router"}, mine
    assert all(e["MESSAGE"].startswith(qid + ": ") for e in mine), mine
    # Nothing went to the stream as flat lines while the journal took them.
    assert qid not in g.log_text(), g.log_text()[-3000:]

    # pflogsumm on the entries as journalctl -o short prints them.
    lines = "\n".join(syslog_line(e) for e in entries) + "\n"
    r = subprocess.run(["pflogsumm", "--syslog-name=mxferry"], input=lines, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rep = r.stdout

    def count(what):
        m = re.search(r"^\s*(\d+)\s+" + what + r"\s*$", rep, re.M)
        return int(m.group(1)) if m else None
    assert count("received") == 1, rep
    assert count("delivered") == 1, rep
    assert count("bounced") == 0 and count(r"rejected \(0%\)") == 0, rep
    assert re.search(r"^\s*1\s.*\sdest\.test$", rep, re.M), rep  # per-domain summary
    assert "sender.test" in rep, rep


# ---------------------------------------------------------------- life cycle


def test_reinstall_keeps_secrets_and_config(package):
    with open(f"{DATA}/srs.secret", "rb") as f:
        secret = f.read()
    with open(f"{TLS}/cert.pem", "rb") as f:
        cert = f.read()
    run("dpkg", "-i", DEB)
    with open(f"{DATA}/srs.secret", "rb") as f:
        assert f.read() == secret, "srs.secret replaced on upgrade"
    with open(f"{TLS}/cert.pem", "rb") as f:
        assert f.read() == cert, "certificate replaced on upgrade"
    assert os.path.exists(f"{DATA}/rules.db")


def test_remove_keeps_data_and_purge_removes_everything(package):
    run("dpkg", "--remove", "mxferry")
    assert installed_status() == "deinstall ok config-files"
    for p in ("/usr/sbin/mxferryd", "/usr/lib/mxferry/router", UNIT):
        assert not os.path.exists(p), p
    for p in (CONF, f"{DATA}/srs.secret", f"{DATA}/rules.db", f"{DATA}/activity.db",
              f"{SPOOL}/incoming", f"{TLS}/key.pem"):
        assert os.path.exists(p), f"{p} removed by dpkg --remove"

    run("dpkg", "--purge", "mxferry")
    assert installed_status() == ""
    left = [f for f in package["files"] if os.path.lexists(f) and not os.path.isdir(f)]
    assert not left, left
    for p in ("/etc/mxferry", SPOOL, DATA, "/usr/lib/mxferry"):
        assert not os.path.lexists(p), f"{p} left after purge"
    # The users stay (README.Debian), owning nothing of the package's.
    uids = {pwd.getpwnam(u).pw_uid for u in USERS}
    owned = []
    for top in ("/etc", "/var/spool", "/var/lib", "/usr", "/run"):
        for dirpath, dirnames, filenames in os.walk(top):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                try:
                    if os.lstat(p).st_uid in uids:
                        owned.append(p)
                except OSError:
                    pass
    assert not owned, owned[:20]
