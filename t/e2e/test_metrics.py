"""The Prometheus endpoint ([main] metrics_listen, issue 8): the router serves
it on a socket the master binds. Scraped with urllib and read with the
Prometheus project's own text-format parser (python3-prometheus-client)."""
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_ports, make_message, make_world, pid_alive, wait_until


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=mx.gateway.test"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


class Metrics:
    def __init__(self, port):
        self.port = port
        self.url = f"http://127.0.0.1:{port}/metrics"

    def scrape_raw(self, timeout=5):
        with urllib.request.urlopen(self.url, timeout=timeout) as r:
            assert r.status == 200
            ctype = r.headers["Content-Type"]
            return ctype, r.read().decode()

    def scrape(self):
        """{(sample name, frozenset(labels)): value}, via the official parser."""
        ctype, text = self.scrape_raw()
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out


def val(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0)


def metrics_world(dns_server, sinks, gateway, workdir, extra=None):
    port = free_ports(1)[0]
    cfg = {"main": {"metrics_listen": f"127.0.0.1:{port}"}}
    for sect, kv in (extra or {}).items():
        cfg.setdefault(sect, {}).update(kv)
    w = make_world(dns_server, sinks, gateway, cfg)
    w.metrics = Metrics(port)
    return w


def raw_http(port, data, timeout=10):
    """Sends data, returns everything the server says until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)


def settle_sessions(metrics):
    """Waits until smtpd's session reports have caught up (they come about
    once a second) with no session open."""
    wait_until(lambda: val(metrics.scrape(), "mxferry_smtp_sessions_total") >= 1, 10,
               what="smtpd's first session report")
    time.sleep(1.5)
    wait_until(lambda: val(metrics.scrape(), "mxferry_smtp_sessions_active") == 0, 10,
               what="no open session")


def test_counters_move_by_exactly_what_was_sent(dns_server, sinks, gateway, workdir):
    cert, key = make_cert(workdir)
    # Long retries: the deferred recipient is tried exactly once in this test.
    w = metrics_world(dns_server, sinks, gateway, workdir, {
        "smtpd": {"tls_cert": cert, "tls_key": key},
        "router": {"retry_min": "600", "retry_max": "600"}})
    dns_server.zone("slow.test", mx=[(10, "mx.slow.test")], a={"mx.slow.test": "127.0.0.4"})
    slow = sinks("127.0.0.4", mode="tempfail")
    gw, mt = w.gw, w.metrics
    gw.forward("fwd@gw.test", "bob@dest.test")
    gw.forward("later@gw.test", "carol@slow.test")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "spam@gw.test", "--drop")
    settle_sessions(mt)
    m0 = mt.scrape()
    assert val(m0, "mxferry_up") == 1
    assert any(k[0] == "mxferry_build_info" for k in m0)

    # 1. forwarded, over STARTTLS
    s = smtplib.SMTP("127.0.0.1", gw.smtp_port, local_hostname="client.sender.test", timeout=30)
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo("client.sender.test")
    s.sendmail("alice@sender.test", ["fwd@gw.test"],
               make_message("alice@sender.test", "fwd@gw.test"))
    s.quit()
    # 2. dropped, 3. deferred (the slow.test sink answers 4xx)
    gw.send("alice@sender.test", "spam@gw.test", make_message("alice@sender.test", "spam@gw.test"))
    q_later = gw.send("alice@sender.test", "later@gw.test",
                      make_message("alice@sender.test", "later@gw.test"))
    # 4. refused at RCPT (no rule): no message at all
    s = gw.smtp()
    s.mail("alice@sender.test")
    code, _ = s.rcpt("nobody@gw.test")
    assert code == 550
    s.quit()
    sessions = 4

    w.dest.wait_for(1)
    gw.wait_activity(q_later, "deferred")
    assert slow.rcpt_attempts, "the tempfail sink was never tried"

    def caught_up():
        m = mt.scrape()
        return m if val(m, "mxferry_smtp_sessions_total") - val(
            m0, "mxferry_smtp_sessions_total") >= sessions else None
    m1 = wait_until(caught_up, 10, what="the session counts")
    time.sleep(0.5)
    m1 = mt.scrape()

    def d(name, **labels):
        return val(m1, name, **labels) - val(m0, name, **labels)

    assert d("mxferry_recipients_total", status="forwarded") == 1
    assert d("mxferry_recipients_total", status="dropped") == 1
    assert d("mxferry_recipients_total", status="rejected") == 1
    # The same refusal by its reason (issue 11's keyword).
    assert d("mxferry_refusals_total", reason="unknown-rcpt") == 1
    assert d("mxferry_recipients_total", status="deferred") == 1
    for st in ("delivery_failed", "bounced", "error"):
        assert d("mxferry_recipients_total", status=st) == 0, st
    assert d("mxferry_messages_received_total", origin="smtpd", tls="yes") == 1
    assert d("mxferry_messages_received_total", origin="smtpd", tls="no") == 2
    assert d("mxferry_messages_received_total", origin="bouncer", tls="no") == 0
    assert d("mxferry_deliveries_total", result="sent") == 1
    assert d("mxferry_deliveries_total", result="deferred") == 1
    assert d("mxferry_deliveries_total", result="failed") == 0
    assert d("mxferry_delivery_latency_seconds_count") == 1
    assert d("mxferry_delivery_latency_seconds_bucket", le="+Inf") == 1
    # A local sink answers within seconds; the sum is that one latency.
    assert 0 <= d("mxferry_delivery_latency_seconds_sum") < 10
    assert d("mxferry_delivery_latency_seconds_bucket", le="10") == 1
    assert val(m1, "mxferry_queue_messages", state="deferred") == 1
    assert val(m1, "mxferry_queue_messages", state="active") == 0
    assert val(m1, "mxferry_queue_messages", state="hold") == 0
    assert d("mxferry_smtp_sessions_total") == sessions
    assert d("mxferry_smtp_tls_sessions_total") == 1
    assert d("mxferry_dns_errors_total") == 0

    # The hold gauge follows mxferryctl.
    gw.ctl_ok("queue", "hold", q_later)
    wait_until(lambda: val(mt.scrape(), "mxferry_queue_messages", state="hold") == 1, 10,
               what="the held message in the gauge")
    assert val(mt.scrape(), "mxferry_queue_messages", state="deferred") == 0

    # An open session is counted as active while it lasts.
    s = gw.smtp()
    wait_until(lambda: val(mt.scrape(), "mxferry_smtp_sessions_active") == 1, 10,
               what="one active session")
    s.quit()
    wait_until(lambda: val(mt.scrape(), "mxferry_smtp_sessions_active") == 0, 10,
               what="no active session")


def test_restarts_counted_and_port_survives_router_restart(dns_server, sinks, gateway, workdir):
    w = metrics_world(dns_server, sinks, gateway, workdir)
    gw, mt = w.gw, w.metrics
    m0 = mt.scrape()
    for dmn in ("router", "deliverd", "bouncer", "smtpd"):
        assert val(m0, "mxferry_daemon_restarts_total", daemon=dmn) == 0
    assert ("mxferry_daemon_restarts_total", frozenset({("daemon", "deliverd")})) in m0

    old = gw.status()["deliverd"]["pid"]
    gw.expect_restart("deliverd")
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: val(mt.scrape(), "mxferry_daemon_restarts_total", daemon="deliverd") == 1,
               20, what="deliverd's restart in the metrics")

    # The router restarts; the master kept the socket, so the endpoint is
    # back on the same port (counters start again from zero).
    st = gw.status()
    old = st["router"]["pid"]
    gw.expect_restart("router")
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: (gw.status().get("router") or {}).get("pid") not in (None, old), 20,
               what="a new router")

    def back():
        try:
            m = mt.scrape()
        except (OSError, urllib.error.URLError):
            return None
        return m if val(m, "mxferry_daemon_restarts_total", daemon="router") == 1 else None
    m = wait_until(back, 20, what="the endpoint after the router restart")
    assert val(m, "mxferry_daemon_restarts_total", daemon="deliverd") == 1
    assert val(m, "mxferry_up") == 1
    gw.forward("info@gw.test", "bob@dest.test")
    gw.send_retrying("alice@sender.test", "info@gw.test",
                     make_message("alice@sender.test", "info@gw.test"))
    w.dest.wait_for(1)
    wait_until(lambda: val(mt.scrape(), "mxferry_recipients_total", status="forwarded") == 1, 10,
               what="the forward counted by the new router")


def test_dns_errors_counted(dns_server, sinks, gateway, workdir):
    w = metrics_world(dns_server, sinks, gateway, workdir,
                      {"router": {"retry_min": "600", "retry_max": "600"}})
    gw, mt = w.gw, w.metrics
    # nowhere.test is no zone of the test's nsd: it answers REFUSED, which
    # deliverd reports as a DNS failure (451 4.4.3).
    gw.forward("lost@gw.test", "x@nowhere.test")
    q = gw.send("alice@sender.test", "lost@gw.test",
                make_message("alice@sender.test", "lost@gw.test"))
    rows = gw.wait_activity(q, "deferred")
    assert "4.4.3" in rows[0]["reply"], rows
    m = mt.scrape()
    assert val(m, "mxferry_dns_errors_total") == 1
    assert val(m, "mxferry_deliveries_total", result="deferred") == 1


def test_hostile_requests(dns_server, sinks, gateway, workdir):
    # Unjailed, so LeakSanitizer checks the router at its exit.
    w = metrics_world(dns_server, sinks, gateway, workdir,
                      {"main": {"run_as_invoking_user": "yes"}})
    port = w.metrics.port
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (9 * 1024) + b"\r\n\r\n"
    assert raw_http(port, big).startswith(b"HTTP/1.1 431 ")
    assert raw_http(port, b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_http(port, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_http(port, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")  # no Host
    r = raw_http(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 405 ") and b"\r\nAllow: GET\r\n" in r
    assert raw_http(port, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert raw_http(port, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 505 ")
    # HTTP/1.0 without Host, a query string: fine.
    r = raw_http(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\n# HELP mxferry_up" in r
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    assert e.value.code == 404

    # One request per connection: a second one on it is not answered.
    r = raw_http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.count(b"HTTP/1.1 ") == 1 and r.startswith(b"HTTP/1.1 200 ")

    # A client that says nothing (or too little) is closed after the deadline.
    for data in (b"", b"GET /metr"):
        t0 = time.monotonic()
        assert raw_http(port, data, timeout=15) == b""
        took = time.monotonic() - t0
        assert 3 <= took <= 8, took

    m = w.metrics.scrape()
    assert val(m, "mxferry_metrics_requests_total", refused="yes") >= 8


def test_idle_connections_cannot_block_scrape_or_mail(dns_server, sinks, gateway, workdir):
    w = metrics_world(dns_server, sinks, gateway, workdir)
    gw, mt = w.gw, w.metrics
    gw.forward("info@gw.test", "bob@dest.test")
    idle = []
    try:
        for _ in range(100):
            idle.append(socket.create_connection(("127.0.0.1", mt.port), timeout=5))
        # A scrape gets through at once although 100 clients sit idle.
        t0 = time.monotonic()
        m = mt.scrape()
        assert time.monotonic() - t0 < 2
        assert val(m, "mxferry_up") == 1
        # The cap closed all but the newest few idle connections.
        time.sleep(0.3)
        closed = 0
        for s in idle:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= 100 - 16, closed

        # Mail flows while the endpoint is under siege.
        stop = threading.Event()

        def siege():
            socks = []
            while not stop.is_set():
                try:
                    socks.append(socket.create_connection(("127.0.0.1", mt.port), timeout=2))
                except OSError:
                    pass
                if len(socks) > 200:
                    for s in socks:
                        s.close()
                    socks = []
            for s in socks:
                s.close()
        t = threading.Thread(target=siege)
        t.start()
        try:
            gw.send("alice@sender.test", "info@gw.test",
                    make_message("alice@sender.test", "info@gw.test"))
            w.dest.wait_for(1)
        finally:
            stop.set()
            t.join()
        # And a scrape still works afterwards.
        assert val(mt.scrape(), "mxferry_recipients_total", status="forwarded") == 1
    finally:
        for s in idle:
            s.close()


def test_metrics_off_by_default(world):
    gw = world.gw
    out = gw.ctl_ok("config")
    [line] = [ln for ln in out.splitlines() if "metrics_listen" in ln]
    assert "127.0.0.1" not in line and ":" not in line.split("metrics_listen", 1)[1], line
    # The router holds no TCP listening socket at all.
    pid = gw.status()["router"]["pid"]
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:  # 0A: LISTEN
                    listening.append(parts[1])
    assert pid_alive(pid)
    assert not listening, listening
    assert "metrics on" not in gw.log_text()
