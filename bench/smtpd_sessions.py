#!/usr/bin/python3
"""Load test: N concurrent idle SMTP sessions against one smtpd.

    bench/smtpd_sessions.py BINDIR [N]      (default N = 10000)

Runs the whole gateway (mxferryd and its daemons from BINDIR) in a private
network namespace with only loopback, opens N sessions, each waiting for its
220 greeting, and prints: the time to get all N greetings, smtpd's RSS before
and with the N sessions, and the latency of a complete new session (EHLO,
NOOP, QUIT) while the N sit idle. Use a build without sanitizers
(cmake -DMXF_SANITIZE=OFF): ASan's shadow memory dwarfs what is measured.

Not part of ctest: it needs root or user namespaces, ~2*N descriptors and a
few seconds.
"""
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def reexec_in_netns():
    if os.environ.get("MXF_BENCH_NETNS") == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    os.environ["MXF_BENCH_NETNS"] = "1"
    cmd = ["unshare", "--net", "--fork"]
    if os.geteuid() != 0:
        cmd.insert(1, "--map-root-user")
    os.execvp("unshare", cmd + [sys.executable] + sys.argv)


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


def smtpd_pid(spool):
    try:
        with open(os.path.join(spool, "pid", "status")) as f:
            for line in f:
                p = line.split()
                if p and p[0] == "smtpd":
                    return int(p[1])
    except OSError:
        pass
    return None


def one_session(port):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220")
        s.sendall(b"EHLO bench.test\r\nNOOP\r\nQUIT\r\n")
        lines = [f.readline() for _ in range(12)]
        assert any(x.startswith(b"221") for x in lines), lines
    return time.monotonic() - t0


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    bindir = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    reexec_in_netns()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < n + 100:
        sys.exit(f"descriptor limit {hard} is below {n} sessions")

    base = tempfile.mkdtemp(prefix="mxf-bench-")
    os.chmod(base, 0o755)
    port = free_port()
    conf = os.path.join(base, "mxferry.conf")
    with open(conf, "w") as f:
        f.write(f"""[main]
hostname = bench.test
spool_dir = {base}/spool
data_dir = {base}/data
dns_resolver = 127.0.0.1:53
run_as_invoking_user = yes
log_level = warning

[smtpd]
listen = 127.0.0.1:{port}
greet_delay = 0
max_conn_per_ip = 0
command_timeout = 600
""")
    log = open(os.path.join(base, "log"), "wb")
    master = subprocess.Popen([os.path.join(bindir, "mxferryd"), "-c", conf, "-f"],
                              stdout=log, stderr=log, start_new_session=True)
    socks = []
    try:
        deadline = time.monotonic() + 20
        while True:
            pid = smtpd_pid(os.path.join(base, "spool"))
            try:
                if pid:
                    one_session(port)
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or master.poll() is not None:
                sys.exit("gateway did not start; log in " + log.name)
            time.sleep(0.2)
        rss0 = rss_kib(pid)

        # Open N sessions: connects are non-blocking and overlapped; a
        # session counts once its 220 has arrived.
        sel = selectors.DefaultSelector()
        t0 = time.monotonic()
        greeted = 0
        pending = {}
        opened = 0
        while greeted < n:
            while opened < n and len(pending) < 512:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                sel.register(s, selectors.EVENT_READ)
                pending[s] = b""
                socks.append(s)
                opened += 1
            for key, _ in sel.select(timeout=10):
                s = key.fileobj
                d = s.recv(512)
                if not d:
                    sys.exit(f"session closed by smtpd after {greeted} greetings")
                pending[s] += d
                if b"\r\n" in pending[s]:
                    assert pending[s].startswith(b"220"), pending[s]
                    sel.unregister(s)
                    del pending[s]
                    greeted += 1
            if time.monotonic() - t0 > 120:
                sys.exit(f"only {greeted} of {n} greetings after 120 s")
        accept_s = time.monotonic() - t0
        time.sleep(1)
        rss1 = rss_kib(pid)
        lat = sorted(one_session(port) for _ in range(20))
        alive = sum(1 for s in socks if s.fileno() >= 0)
        print(f"sessions           {n} (all greeted, {alive} still open)")
        print(f"accept+greet time  {accept_s:.2f} s ({n / accept_s:.0f} sessions/s)")
        print(f"smtpd RSS          {rss0 / 1024:.1f} MiB idle -> {rss1 / 1024:.1f} MiB with {n} "
              f"sessions ({(rss1 - rss0) * 1024 / n / 1024:.2f} KiB/session)")
        print(f"new session (EHLO, NOOP, QUIT) meanwhile: median {lat[len(lat) // 2] * 1000:.1f} ms, "
              f"max {lat[-1] * 1000:.1f} ms")
        print("PASS" if rss1 < 256 * 1024 else "FAIL: RSS over 256 MiB")
    finally:
        for s in socks:
            s.close()
        master.terminate()
        try:
            master.wait(15)
        except subprocess.TimeoutExpired:
            master.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
