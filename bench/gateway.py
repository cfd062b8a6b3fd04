"""Shared by bench/sessions and bench/sign: the whole gateway (mxferryd and
its daemons from a build's bin/) on loopback, in a private network
namespace, with a scratch configuration. Not a test fixture: t/e2e has its
own (conftest.py)."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAEMONS = ["mxferryd", "smtpd", "router", "deliverd", "bouncer", "workerd", "apid", "mxferryctl"]


def reexec_in_netns():
    """Runs the calling script again in a network namespace of its own with
    only loopback up (as root, or as a mapped root in a user namespace)."""
    if os.environ.get("MXF_BENCH_NETNS") == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    os.environ["MXF_BENCH_NETNS"] = "1"
    cmd = ["unshare", "--net", "--fork"]
    if os.geteuid() != 0:
        cmd.insert(1, "--map-root-user")
    os.execvp("unshare", cmd + [sys.executable] + sys.argv)


def release_build(targets):
    """Builds targets in build-bench/ (Release, no sanitizers: ASan's shadow
    memory and checks would dwarf what is measured); returns the build dir."""
    b = os.path.join(HERE, "build-bench")
    subprocess.run(["cmake", "-S", HERE, "-B", b, "-DCMAKE_BUILD_TYPE=Release",
                    "-DMXF_SANITIZE=OFF", "-DMXF_TESTS=OFF"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", b, "-j2", "--target", *targets], check=True,
                   stdout=subprocess.DEVNULL)
    return b


def bindir_from_args(args, targets):
    """BINDIR from the first argument if it is a directory, else from the
    environment (the re-exec in the netns keeps it), else a Release build."""
    if args and os.path.isdir(args[0]):
        bindir = os.path.abspath(args.pop(0))
    elif os.environ.get("MXF_BENCH_BINDIR"):
        bindir = os.environ["MXF_BENCH_BINDIR"]
    else:
        bindir = os.path.join(release_build(DAEMONS + targets), "bin")
    os.environ["MXF_BENCH_BINDIR"] = bindir
    return bindir


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class Gateway:
    """mxferryd -f with a scratch spool, data dir and config; extra is
    appended to the config (sections of its own)."""

    def __init__(self, bindir, smtpd_extra="", extra="", log_level="warning"):
        self.bin = bindir
        self.base = tempfile.mkdtemp(prefix="mxf-bench-")
        os.chmod(self.base, 0o755)
        self.port = free_port()
        self.spool = os.path.join(self.base, "spool")
        self.conf = os.path.join(self.base, "mxferry.conf")
        with open(self.conf, "w") as f:
            f.write(f"""[main]
hostname = bench.test
spool_dir = {self.spool}
data_dir = {self.base}/data
dns_resolver = 127.0.0.1:53
run_as_invoking_user = yes
log_level = {log_level}

[smtpd]
listen = 127.0.0.1:{self.port}
{smtpd_extra}
{extra}
""")
        self.logname = os.path.join(self.base, "log")
        self.log = open(self.logname, "wb")
        self.master = subprocess.Popen([os.path.join(bindir, "mxferryd"), "-c", self.conf, "-f"],
                                       stdout=self.log, stderr=self.log, start_new_session=True)

    def pid(self, daemon):
        try:
            with open(os.path.join(self.spool, "pid", "status")) as f:
                for line in f:
                    p = line.split()
                    if p and p[0] == daemon:
                        return int(p[1])
        except OSError:
            pass
        return None

    def wait(self, ready, what, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.master.poll() is not None:
                sys.exit(f"{what} did not happen; log in {self.logname}")
            time.sleep(0.2)

    def log_text(self):
        with open(self.logname, errors="replace") as f:
            return f.read()

    def ctl(self, *args):
        r = subprocess.run([os.path.join(self.bin, "mxferryctl"), "-c", self.conf, *args],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        if r.returncode != 0:
            sys.exit(f"mxferryctl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def stop(self, keep=False):
        self.master.terminate()
        try:
            self.master.wait(15)
        except subprocess.TimeoutExpired:
            self.master.kill()
        self.log.close()
        if not keep:
            shutil.rmtree(self.base, ignore_errors=True)
