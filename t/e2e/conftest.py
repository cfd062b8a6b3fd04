"""Fixtures of the end-to-end suite: a real nsd, SMTP sinks, the real gateway.

Run through run.sh (private network namespace, only loopback). Every process
a test starts is stopped by PID in the fixture's teardown, even on failure.
"""
import email
import email.policy
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from aiosmtpd.controller import Controller

NSD = "/usr/sbin/nsd"
DAEMONS = ("smtpd", "router", "deliverd", "bouncer", "workerd")
# apid (issue 12) is off unless a test turns [api] listen on (test_api.py).
PROGRAMS = ("mxferryd", "mxferryctl", "apid") + DAEMONS
USERS = {"smtpd": "mxferry-smtpd", "router": "mxferry-router",
         "deliverd": "mxferry-deliver", "bouncer": "mxferry-bounce",
         "workerd": "mxferry-worker", "api": "mxferry-api"}
# The packaged unit (debian/mxferry.service) runs the master as this user
# with exactly these ambient capabilities (and no CAP_CHOWN).
MASTER_USER = "mxferry"
UNIT_CAPS = ("setuid", "setgid", "sys_chroot", "kill", "net_bind_service")


def unit_wrap(user=MASTER_USER):
    """The command prefix that starts mxferryd the way the unit does (as real
    root): as user, its groups, the unit's ambient capabilities."""
    pw = pwd.getpwnam(user)
    caps = ",".join("+" + c for c in UNIT_CAPS)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
            f"--inh-caps={caps}", f"--ambient-caps={caps}"]


GW_HOST = "mx.gateway.test"
SRS_DOMAIN = "fwd.gateway.test"
SANITIZER_RE = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:")
QID_RE = re.compile(rb"queued as ([0-9A-Za-z]+)")


def real_root():
    """uid 0 in the initial user namespace (not a mapped root of unshare -r)."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


REAL_ROOT = real_root()


def wait_until(pred, timeout, interval=0.1, what="condition"):
    """Polls pred() until it returns a true value; returns it or fails.
    what: text or a callable giving it (evaluated at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for "
                        f"{what() if callable(what) else what}")
        time.sleep(interval)


def free_ports(n, udp=False):
    """n distinct TCP ports free on every loopback address (and UDP if asked)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
            socks.append(s)
            if udp:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    u.bind(("0.0.0.0", port))
                except OSError:
                    u.close()
                    continue
                socks.append(u)
            ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def pid_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def children_of(ppid):
    """PIDs whose parent is ppid."""
    kids = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            kids.append(int(e))
    return kids


def kill_pid(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def make_dir(path):
    os.makedirs(path, exist_ok=True)
    # The gateway's users must traverse the test directories.
    os.chmod(path, 0o755)
    return path


# ---------------------------------------------------------------- session


@pytest.fixture(scope="session")
def tmpbase():
    # Our own base under /tmp, mode 0755 (pytest's is 0700 under root, which
    # the dropped-privilege daemons could not traverse).
    base = tempfile.mkdtemp(prefix="mxf-e2e-", dir="/tmp")
    os.chmod(base, 0o755)
    yield base
    if os.environ.get("MXF_E2E_KEEP") != "1":
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def system_users():
    """As real root, make sure the daemons' system users exist."""
    if not REAL_ROOT:
        return
    for name in USERS.values():
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir",
                            "/nonexistent", "--shell", "/usr/sbin/nologin", name], check=True)


@pytest.fixture(scope="session")
def mxf_bin():
    b = os.environ.get("MXF_BIN")
    if not b:
        pytest.fail("MXF_BIN is not set: run the suite through t/e2e/run.sh BINDIR")
    missing = [p for p in PROGRAMS if not os.access(os.path.join(b, p), os.X_OK)]
    if missing:
        pytest.fail(f"programs missing in {b}: {', '.join(missing)}")
    return b


@pytest.fixture
def workdir(tmpbase, request):
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:24]  # unix socket paths under it must stay < 108 bytes
    return make_dir(tempfile.mkdtemp(prefix=name + "-", dir=tmpbase))


# Logs to show when a test fails: request.node._mxf_logs is a list of
# (title, callable returning text).
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for title, get in getattr(item, "_mxf_logs", []):
            try:
                text = get()
            except Exception as e:  # noqa: BLE001 - report whatever we can
                text = f"(could not read: {e})"
            rep.sections.append((title, text[-20000:]))


def add_log(request, title, get):
    if not hasattr(request.node, "_mxf_logs"):
        request.node._mxf_logs = []
    request.node._mxf_logs.append((title, get))


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"({path}: {e})"


# ---------------------------------------------------------------- DNS


class DNS:
    """A real nsd, authoritative for zones described in Python."""

    def __init__(self, dir, port):
        self.dir = make_dir(dir)
        self.port = port
        self.zones = {}
        self.proc = None
        self.log = os.path.join(self.dir, "nsd.log")

    def zone(self, name, mx=(), a=None, aaaa=None, txt=None, cname=None):
        """mx: [(pref, host)]; a/aaaa: {name: addr or [addrs]}; txt: {name: text};
        cname: {name: target}. Names are absolute (with or without a final dot).
        Restarts nsd if it runs already."""
        name = name.rstrip(".").lower()
        rr = [f"@ IN SOA ns.{name}. hostmaster.{name}. 1 3600 600 86400 5",
              f"@ IN NS ns.{name}.",
              f"ns.{name}. IN A 127.0.0.1"]
        for pref, host in mx:
            rr.append(f"@ IN MX {pref} {host.rstrip('.')}.")
        for kind, table in (("A", a), ("AAAA", aaaa)):
            for owner, addrs in (table or {}).items():
                if isinstance(addrs, str):
                    addrs = [addrs]
                for ad in addrs:
                    rr.append(f"{owner.rstrip('.')}. IN {kind} {ad}")
        for owner, text in (txt or {}).items():
            rr.append(f'{owner.rstrip(".")}. IN TXT "{text}"')
        for owner, target in (cname or {}).items():
            rr.append(f"{owner.rstrip('.')}. IN CNAME {target.rstrip('.')}.")
        self.zones[name] = f"$ORIGIN {name}.\n$TTL 5\n" + "\n".join(rr) + "\n"
        if self.proc:
            self.stop()
            self.start()

    def _write(self):
        conf = [
            "server:",
            "    ip-address: 127.0.0.1",
            f"    port: {self.port}",
            '    username: ""',  # do not switch user (we may be root or not)
            '    chroot: ""',
            f'    pidfile: "{self.dir}/nsd.pid"',
            f'    zonesdir: "{self.dir}"',
            '    database: ""',
            f'    xfrdfile: "{self.dir}/xfrd.state"',
            f'    zonelistfile: "{self.dir}/zone.list"',
            f'    xfrdir: "{self.dir}"',
            f'    logfile: "{self.log}"',
            "    verbosity: 2",
            "    server-count: 1",
            "    do-ip6: no",
            "    hide-version: yes",
            "remote-control:",
            "    control-enable: no",
        ]
        for name, text in self.zones.items():
            with open(os.path.join(self.dir, name + ".zone"), "w") as f:
                f.write(text)
            conf += ["zone:", f'    name: "{name}"', f'    zonefile: "{name}.zone"']
        self.conf = os.path.join(self.dir, "nsd.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(conf) + "\n")

    def query(self, name, rdtype, tcp=False):
        q = dns.message.make_query(name, rdtype)
        f = dns.query.tcp if tcp else dns.query.udp
        return f(q, "127.0.0.1", port=self.port, timeout=1)

    def start(self):
        assert self.proc is None
        assert os.access(NSD, os.X_OK), f"{NSD} is missing (apt-get install nsd)"
        self._write()
        r = subprocess.run([NSD + "-checkconf", self.conf], capture_output=True, text=True)
        assert r.returncode == 0, f"nsd-checkconf: {r.stdout}{r.stderr}"
        self.proc = subprocess.Popen([NSD, "-d", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))

        # Ready when every zone's SOA is answered authoritatively (UDP and TCP).
        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"nsd exited with {self.proc.returncode}:\n{read_text(self.log)}")
            names = list(self.zones) or ["ready.invalid"]
            try:
                for n in names:
                    for tcp in (False, True):
                        r = self.query(n, "SOA", tcp=tcp)
                        if self.zones and not (r.rcode() == dns.rcode.NOERROR
                                               and r.flags & dns.flags.AA):
                            return False
            except (OSError, dns.exception.DNSException):
                return False
            return True
        wait_until(ready, 15, what="nsd to answer")

    def ensure_started(self):
        if self.proc is None:
            self.start()

    def stop(self):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        # nsd forks its xfrd and server processes: stop them with it.
        kids = children_of(p.pid)
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        deadline = time.monotonic() + 5
        while any(pid_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for k in kids:
            if pid_alive(k):
                kill_pid(k)


@pytest.fixture
def dns_port():
    return free_ports(1, udp=True)[0]


@pytest.fixture
def dns_server(workdir, dns_port, request):
    d = DNS(os.path.join(workdir, "nsd"), dns_port)
    add_log(request, "nsd log", lambda: read_text(d.log))
    yield d
    d.stop()


# ---------------------------------------------------------------- SMTP sink


class Message:
    def __init__(self, mail_from, rcpt_tos, data, peer, helo, mail_options):
        self.mail_from = "" if mail_from == "<>" else mail_from  # null sender
        self.rcpt_tos = rcpt_tos
        self.data = data  # bytes as received, dot-unstuffed
        self.peer = peer
        self.helo = helo
        self.mail_options = mail_options
        self.msg = email.message_from_bytes(data, policy=email.policy.compat32)

    def header_all(self, name):
        """All values of header name, unfolded, whitespace collapsed."""
        return [" ".join(str(v).split()) for v in self.msg.get_all(name, [])]

    def __repr__(self):
        return (f"<Message from={self.mail_from!r} to={self.rcpt_tos!r} "
                f"id={self.msg.get('Message-ID')} peer={self.peer}>")


class _SinkHandler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        s = self.sink
        with s.lock:
            s.rcpt_attempts.append((envelope.mail_from, address))
            mode, at = s.mode, s.fail_at
        if mode == "tempfail" and at == "rcpt":
            return "451 4.3.0 Try again later (sink tempfail)"
        if mode == "permfail":
            return "550 5.1.1 No such user here (sink permfail)"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        s = self.sink
        with s.lock:
            mode, at = s.mode, s.fail_at
        if mode == "tempfail" and at == "data":
            return "451 4.3.0 Try again later (sink tempfail)"
        m = Message(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content),
                    session.peer, session.host_name, list(envelope.mail_options))
        with s.cond:
            s.messages.append(m)
            s.cond.notify_all()
        return "250 2.0.0 Ok: stored in sink"


class Sink:
    """An SMTP sink on ADDR:PORT (aiosmtpd). mode: accept | tempfail | permfail."""

    def __init__(self, addr, port):
        self.addr = addr
        self.port = port
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.messages = []
        self.rcpt_attempts = []
        self.mode = "accept"
        self.fail_at = "rcpt"
        self.controller = None

    def start(self):
        self.controller = Controller(_SinkHandler(self), hostname=self.addr, port=self.port,
                                     server_hostname=f"sink-{self.addr}", ready_timeout=10,
                                     decode_data=False)
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            c, self.controller = self.controller, None
            c.stop()

    def set_mode(self, mode, at="rcpt"):
        assert mode in ("accept", "tempfail", "permfail")
        assert at in ("rcpt", "data")
        with self.lock:
            self.mode, self.fail_at = mode, at

    def wait_for(self, n, timeout=20):
        """Waits until at least n messages arrived; returns all of them."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"sink {self.addr}:{self.port}: {len(self.messages)} of {n} "
                                f"messages after {timeout}s; rcpt attempts: "
                                f"{self.rcpt_attempts[-10:]}")
                self.cond.wait(left)
            return list(self.messages)

    def summary(self):
        with self.lock:
            return (f"mode={self.mode} at={self.fail_at} rcpt_attempts={self.rcpt_attempts}\n"
                    + "\n".join(repr(m) for m in self.messages))


@pytest.fixture
def sink_port():
    return free_ports(1)[0]


@pytest.fixture
def sinks(sink_port, request):
    """Factory: sinks("127.0.0.2") starts a sink on that address and the test's sink port."""
    started = []

    def make(addr, mode="accept"):
        s = Sink(addr, sink_port)
        s.set_mode(mode)
        s.start()
        started.append(s)
        add_log(request, f"sink {addr}", s.summary)
        return s
    yield make
    for s in started:
        s.stop()


# ---------------------------------------------------------------- gateway


class Gateway:
    def __init__(self, bindir, dir, dns, sink_port, extra=None):
        self.bin = bindir
        self.dir = make_dir(dir)
        self.dns = dns
        self.smtp_port = free_ports(1)[0]
        self.sink_port = sink_port
        self.spool = os.path.join(self.dir, "spool")
        self.data = os.path.join(self.dir, "data")
        self.conf = os.path.join(self.dir, "mxferry.conf")
        self.log = os.path.join(self.dir, "mxferryd.log")
        self.proc = None
        # A command prefix for mxferryd (e.g. setpriv, to run the master the
        # way the systemd unit does).
        self.wrap = []
        self.seen_pids = set()
        # Daemon restarts a test caused on purpose; any other restart is a
        # crash the master hid, and fails the test at teardown.
        self.allowed_restarts = {}
        sections = {
            "main": {
                "hostname": GW_HOST,
                "spool_dir": self.spool,
                "data_dir": self.data,
                "dns_resolver": f"127.0.0.1:{dns.port}",
                "run_as_invoking_user": "no" if REAL_ROOT else "yes",
            },
            # greet_delay 0: no pregreet wait on every test connection.
            "smtpd": {"listen": f"127.0.0.1:{self.smtp_port}", "greet_delay": "0"},
            "router": {"srs_domain": SRS_DOMAIN, "retry_min": "1", "retry_max": "2"},
            "deliverd": {"smtp_port": str(sink_port)},
            # Issue 7: the tests send unsigned mail from senders without SPF;
            # the hosted-service rule (on by default) would refuse it.
            # test_auth_in.py turns it back on where it is tested.
            "auth": {"require_spf_or_dkim": "no"},
            # Issue 12: apid only where a test asks for it (test_api.py).
            "api": {"listen": "off"},
        }
        for sect, kv in (extra or {}).items():
            sections.setdefault(sect, {}).update(kv)
        self.chrooted = sections["main"]["run_as_invoking_user"] == "no"
        with open(self.conf, "w") as f:
            for sect, kv in sections.items():
                f.write(f"[{sect}]\n")
                for k, v in kv.items():
                    f.write(f"{k} = {v}\n")
                f.write("\n")
        os.chmod(self.conf, 0o644)

    # --- process control

    def start(self, timeout=30):
        self.dns.ensure_started()
        logf = open(self.log, "ab")
        env = dict(os.environ)
        if self.chrooted:
            # LeakSanitizer needs /proc, which a chrooted daemon no longer
            # sees; leaks are checked by the tests that run the same daemons
            # unjailed (run_as_invoking_user = yes).
            env["ASAN_OPTIONS"] = "detect_leaks=0"
        self.proc = subprocess.Popen([*self.wrap, os.path.join(self.bin, "mxferryd"), "-c",
                                      self.conf, "-f"],
                                     stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     start_new_session=True, env=env)
        logf.close()

        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"mxferryd exited with {self.proc.returncode}:\n"
                            f"{read_text(self.log)[-5000:]}")
            st = self.status(missing_ok=True)
            if not st or any(d not in st or not pid_alive(st[d]["pid"]) for d in DAEMONS):
                return False
            if not os.path.exists(os.path.join(self.spool, "private", "router")):
                return False
            # Until a daemon has its router link, smtpd answers 451 (correct,
            # but not what a test that sends at once expects).
            # (Only when the daemons log to our file, not to a journal.)
            log = self.log_text()
            if f"mxferry/router[{st['router']['pid']}]" in log:
                for d in ("smtpd", "deliverd", "bouncer", "workerd"):
                    if f"mxferry/{d}[{st[d]['pid']}]: connected to router" not in log:
                        return False
            try:
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=2) as s:
                    s.settimeout(5)
                    banner = s.recv(512)
                    s.sendall(b"QUIT\r\n")
                    return banner.startswith(b"220")
            except OSError:
                return False
        wait_until(ready, timeout, interval=0.2, what="mxferryd to be ready")
        return self

    def expect_restart(self, name):
        self.allowed_restarts[name] = self.allowed_restarts.get(name, 0) + 1

    def unexpected_restarts(self):
        st = self.status(missing_ok=True) or {}
        return {d: v["restarts"] for d, v in st.items()
                if (d in DAEMONS or d == "apid") and
                v["restarts"] > self.allowed_restarts.get(d, 0)}

    def status(self, missing_ok=False):
        """spool_dir/pid/status as {name: {pid, start, restarts}}."""
        path = os.path.join(self.spool, "pid", "status")
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            if missing_ok:
                return None
            raise
        st = {}
        for line in lines:
            parts = line.split()
            if len(parts) >= 4 and parts[1].isdigit():
                st[parts[0]] = {"pid": int(parts[1]), "start": int(parts[2]),
                                "restarts": int(parts[3])}
                self.seen_pids.add(int(parts[1]))
        return st

    def our_processes(self):
        """PIDs of live processes whose command line names our config."""
        conf = self.conf.encode()
        found = []
        for e in os.listdir("/proc"):
            if e.isdigit() and conf in pid_cmdline(int(e)) and pid_alive(int(e)):
                found.append(int(e))
        return found

    def stop(self, timeout=5):
        """SIGTERM the master; returns the seconds it took to exit, or None if it did not."""
        if self.proc is None:
            return 0
        try:
            self.status(missing_ok=True)
        except OSError:
            pass
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        return time.monotonic() - t0

    def kill_all(self):
        """Last-resort cleanup, by PID: the master and any daemon of ours left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for pid in set(self.seen_pids) | set(self.our_processes()):
            if pid_alive(pid) and self.conf.encode() in pid_cmdline(pid):
                kill_pid(pid)

    def log_text(self):
        return read_text(self.log)

    # --- admin

    def ctl(self, *args, timeout=30):
        r = subprocess.run([os.path.join(self.bin, "mxferryctl"), "-c", self.conf, *args],
                           capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout, r.stderr

    def ctl_ok(self, *args):
        rc, out, err = self.ctl(*args)
        assert rc == 0, f"mxferryctl {' '.join(args)}: rc={rc} stdout={out!r} stderr={err!r}"
        return out

    def ctl_json(self, *args):
        """mxferryctl --json ARGS, exit 0, parsed."""
        return json.loads(self.ctl_ok(*args, "--json"))

    def forward(self, address, *dests):
        """Domain (if new), verified destinations and a forward rule."""
        domain = address.rsplit("@", 1)[1]
        if domain not in getattr(self, "_domains", set()):
            self.ctl_ok("domain", "add", domain)
            self._domains = getattr(self, "_domains", set()) | {domain}
        for d in dests:
            if d not in getattr(self, "_verified", set()):
                self.ctl_ok("address", "add", d, "--verified")
                self._verified = getattr(self, "_verified", set()) | {d}
        self.ctl_ok("rule", "add", domain, "--to", address, "--forward", ",".join(dests))

    # --- SMTP client

    def smtp(self):
        s = smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="client.sender.test",
                         timeout=30)
        code, _ = s.ehlo()
        assert code == 250
        return s

    def send(self, mail_from, rcpts, data):
        """Sends one message; returns the queue ID from the final 250."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        s = self.smtp()
        try:
            opts = ["BODY=8BITMIME"] if s.has_extn("8bitmime") else []
            code, resp = s.mail(mail_from, opts)
            assert code == 250, f"MAIL FROM:<{mail_from}> -> {code} {resp!r}"
            for r in rcpts:
                code, resp = s.rcpt(r)
                assert code == 250, f"RCPT TO:<{r}> -> {code} {resp!r}"
            try:
                code, resp = s.data(data)
            except smtplib.SMTPDataError as e:  # refused before the 354
                code, resp = e.smtp_code, e.smtp_error
            assert code == 250, f"DATA -> {code} {resp!r}"
            assert resp.startswith(b"2.0.0"), resp
            m = QID_RE.search(resp)
            assert m, f"no queue ID in {resp!r}"
            return m.group(1).decode()
        finally:
            try:
                s.quit()
            except smtplib.SMTPException:
                s.close()

    def send_retrying(self, mail_from, rcpts, data, timeout=15):
        """send(), retried like a real client while the gateway answers 4xx
        (e.g. smtpd has not yet reconnected to a restarted router)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.send(mail_from, rcpts, data)
            except AssertionError as e:
                if " -> 4" not in str(e) or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    # --- activity log and spool

    def activity(self, queue_id=None):
        path = os.path.join(self.data, "activity.db")
        if not os.path.exists(path):
            return []
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return []
        try:
            db.row_factory = sqlite3.Row
            if queue_id is None:
                rows = db.execute("SELECT * FROM activity").fetchall()
            else:
                rows = db.execute("SELECT * FROM activity WHERE queue_id = ?",
                                  (queue_id,)).fetchall()
            return [dict(r) for r in rows]
        except sqlite3.OperationalError as e:
            if "no such table" in str(e) or "locked" in str(e):
                return []
            raise
        finally:
            db.close()

    def wait_activity(self, queue_id, status, timeout=20):
        def found():
            rows = [r for r in self.activity(queue_id) if r.get("status") == status]
            return rows or None
        deadline = time.monotonic() + timeout
        while True:
            rows = found()
            if rows:
                return rows
            if time.monotonic() > deadline:
                pytest.fail(f"no activity row status={status!r} for {queue_id} after {timeout}s; "
                            f"rows: {self.activity(queue_id)}")
            time.sleep(0.2)

    def spool_files(self, queue_id=None):
        """{state dir: [names]} for incoming/active/deferred/hold/corrupt."""
        out = {}
        for d in ("incoming", "active", "deferred", "hold", "corrupt"):
            try:
                names = sorted(os.listdir(os.path.join(self.spool, d)))
            except FileNotFoundError:
                names = []
            if queue_id is not None:
                names = [n for n in names if n.startswith(queue_id)]
            out[d] = names
        return out


@pytest.fixture
def gateway(mxf_bin, system_users, workdir, dns_server, sink_port, request):
    """Factory: gateway(extra=None) -> a started Gateway. Stopped (and checked for
    sanitizer reports) at teardown."""
    started = []

    def make(extra=None, start=True):
        g = Gateway(mxf_bin, os.path.join(workdir, f"gw{len(started)}"), dns_server, sink_port,
                    extra)
        started.append(g)
        add_log(request, f"mxferryd log ({g.dir})", g.log_text)
        if start:
            g.start()
        return g
    yield make
    problems = []
    for g in started:
        if g.proc is not None and g.proc.poll() is None:
            crashed = g.unexpected_restarts()
            if crashed:
                problems.append(f"daemons restarted without the test killing them: {crashed}")
        took = g.stop()
        if took is None:
            problems.append(f"mxferryd did not exit within 5 s of SIGTERM ({g.dir})")
        g.kill_all()
        m = SANITIZER_RE.search(g.log_text())
        if m:
            problems.append(f"sanitizer report in {g.log}")
    if problems:
        pytest.fail("; ".join(problems))


# ---------------------------------------------------------------- helpers


def make_message(mail_from, to, subject="test", body=None, msgid=None, extra_headers=()):
    """An RFC 5322 message as CRLF bytes. body: str (may contain 8-bit text)."""
    if msgid is None:
        msgid = f"<{time.monotonic_ns()}.{os.getpid()}@sender.test>"
    if body is None:
        body = "Hello.\n"
    lines = [f"From: <{mail_from}>", f"To: <{to}>", f"Subject: {subject}",
             f"Message-ID: {msgid}", "Date: Thu, 01 Jan 2026 00:00:00 +0000",
             "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
             "Content-Transfer-Encoding: 8bit", *extra_headers, ""]
    text = "\r\n".join(lines) + "\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")
    return text.encode("utf-8")


class World:
    """The common scene: gateway for gw.test; dest.test's MX is a sink on
    127.0.0.2; sender.test's MX is 127.0.0.3 (a sink only if a test starts one)."""


@pytest.fixture
def world(dns_server, sinks, gateway):
    return make_world(dns_server, sinks, gateway)


@pytest.fixture
def world_unjailed(dns_server, sinks, gateway):
    """Like world, but every daemon runs as the invoking user without a chroot,
    so LeakSanitizer can check them even when the suite runs as root."""
    return make_world(dns_server, sinks, gateway, {"main": {"run_as_invoking_user": "yes"}})


def make_world(dns_server, sinks, gateway, extra=None):
    w = World()
    w.dns = dns_server
    dns_server.zone("dest.test", mx=[(10, "mx1.dest.test")], a={"mx1.dest.test": "127.0.0.2"})
    dns_server.zone("sender.test", mx=[(10, "mx.sender.test")],
                    a={"mx.sender.test": "127.0.0.3"})
    dns_server.start()
    w.sinks = sinks
    w.dest = sinks("127.0.0.2")
    w.gw = gateway(extra)
    return w


def message_ids(messages):
    return [m.msg.get("Message-ID") for m in messages]
