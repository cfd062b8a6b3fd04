"""Resource abuse against smtpd (issue 9): thousands of idle connections,
slowloris DATA, a huge DATA stream, a flood of RCPTs, deeply nested MIME.
Each must leave memory bounded, get the right reply code, and leave other
sessions working. smtpd's memory is its VmRSS in /proc/PID/status.

The CI forms are small; MXF_ABUSE_BIG=1 makes the DATA stream 1 GiB and the
idle connections 10,000 (see also bench/sessions)."""
import base64
import os
import quopri
import re
import resource
import selectors
import socket
import threading
import time

import pytest

from conftest import make_message, wait_until
from test_delivery import assert_7bit
from test_reliability_upstream import fault_peers  # noqa: F401 (fixture)
from test_smtpd_conformance import Raw, ehlo

BIG = os.environ.get("MXF_ABUSE_BIG") == "1"
SENDER = "s@sender.test"
MiB = 1024 * 1024


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def smtpd_pid(gw):
    return gw.status()["smtpd"]["pid"]


def quick_session(gw, rcpt="alice@gw.test", subject="bystander"):
    """A complete normal session; returns its duration in seconds."""
    t0 = time.monotonic()
    gw.send(SENDER, rcpt, make_message(SENDER, rcpt, subject=subject))
    return time.monotonic() - t0


def make_agw(dns_server, sinks, gateway, extra=None):
    """A gateway for abuse: no per-IP limit, a 1 MiB size limit, 100
    recipients, a 2 s command timeout; a catch-all for gw.test."""
    dns_server.zone("dest.test", mx=[(10, "mx1.dest.test")], a={"mx1.dest.test": "127.0.0.2"})
    dns_server.zone("sender.test", mx=[(10, "mx.sender.test")], a={"mx.sender.test": "127.0.0.3"})
    dns_server.start()
    sink = sinks("127.0.0.2")
    conf = {"smtpd": {"max_conn_per_ip": "0", "max_message_size": str(MiB),
                      "max_recipients": "100", "command_timeout": "2",
                      # issue 9: the whole DATA phase, however steady the trickle
                      "data_timeout": "5"}}
    conf.update(extra or {})
    g = gateway(conf)
    g.forward("alice@gw.test", "bob@dest.test")
    g.ctl_ok("catchall", "set", "gw.test", "--forward", "bob@dest.test")
    g.sink = sink
    return g


@pytest.fixture
def agw(dns_server, sinks, gateway):
    return make_agw(dns_server, sinks, gateway)


@pytest.fixture
def agw_measured(dns_server, sinks, gateway, monkeypatch):
    """agw whose daemons run unjailed with ASan's quarantine of freed memory
    off: otherwise ASan holds up to 256 MiB of freed blocks in RSS, and the
    measure would be ASan's, not smtpd's (no effect on a build without ASan)."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (opts + ":" if opts else "") + "quarantine_size_mb=0")
    return make_agw(dns_server, sinks, gateway, {"main": {"run_as_invoking_user": "yes"}})


# ------------------------------------------------------------ idle connections


def test_thousands_of_idle_connections(dns_server, sinks, gateway):
    # A 6 s timeout: all n are still open while the normal session runs.
    agw = make_agw(dns_server, sinks, gateway, {"smtpd": {
        "max_conn_per_ip": "0", "max_message_size": str(MiB), "command_timeout": "6"}})
    n = 10000 if BIG else 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < n + 200:
        pytest.skip(f"descriptor limit {hard} < {n + 200}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pid = smtpd_pid(agw)
    before = rss_kib(pid)
    socks = []
    sel = selectors.DefaultSelector()
    t0 = time.monotonic()
    try:
        for i in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", agw.smtp_port))
            socks.append(s)
            sel.register(s, selectors.EVENT_READ)
        greeted = 0
        deadline = time.monotonic() + 60
        while greeted < n and time.monotonic() < deadline:
            for key, _ in sel.select(1):
                d = key.fileobj.recv(512)
                assert d.startswith(b"220"), d
                sel.unregister(key.fileobj)
                greeted += 1
        assert greeted == n, f"{greeted} of {n} sessions greeted"
        greet_secs = time.monotonic() - t0
        idle = rss_kib(pid)
        # While they sit idle (the command timeout is 2 s, so within it), a
        # normal session completes promptly.
        took = quick_session(agw)
        agw.sink.wait_for(1)
        print(f"idle: {n} sessions greeted in {greet_secs:.1f}s; smtpd VmRSS {before} KiB -> {idle} KiB "
              f"({(idle - before) / n:.1f} KiB a session); a normal session took {took:.2f}s")
        assert took < 5, took
        # Bounded: ASan's shadow and redzones included, well under 64 KiB
        # a session (libuv handles + buffers are a few KiB).
        assert idle - before < 64 * n, (before, idle)
        # All of them are then timed out (421 4.4.2) and closed.
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        closed, timed_out = 0, 0
        deadline = time.monotonic() + 40
        while closed < n and time.monotonic() < deadline:
            for key, _ in sel.select(1):
                try:
                    d = key.fileobj.recv(512)
                except ConnectionResetError:
                    d = b""
                if d.startswith(b"421 4.4.2"):
                    timed_out += 1
                if not d:
                    sel.unregister(key.fileobj)
                    closed += 1
        assert closed == n and timed_out == n, (closed, timed_out)
    finally:
        sel.close()
        for s in socks:
            s.close()
    wait_until(lambda: rss_kib(pid) - before < 64 * 1024 + 8 * n, 10,
               what=lambda: f"smtpd VmRSS to fall back (before {before}, now {rss_kib(pid)})")
    print(f"idle: after close VmRSS {rss_kib(pid)} KiB")


# ------------------------------------------------------------ slowloris


def trickle(c, data, interval, stop_after):
    """Sends data one byte at a time every interval seconds until the server
    closes or stop_after seconds pass; returns (seconds, replies text)."""
    t0 = time.monotonic()
    c.sock.settimeout(interval)
    got = b""
    for b in data:
        if time.monotonic() - t0 > stop_after:
            break
        try:
            c.send(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            d = c.sock.recv(4096)
            if not d:
                break
            got += d
        except socket.timeout:
            pass
        except ConnectionResetError:
            break
    return time.monotonic() - t0, got


def slow_begin(gw):
    c = Raw(gw.smtp_port)
    ehlo(c)
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    c.expect(b"RCPT TO:<alice@gw.test>", 250)
    c.expect(b"DATA", 354)
    return c


def test_slowloris_data_slower_than_timeout(agw):
    """One byte every 3 s with a 2 s timeout: cut with 421 4.4.2 at the first
    gap, and a normal session meanwhile is not slowed."""
    c = slow_begin(agw)
    took_normal = []
    t = threading.Thread(target=lambda: took_normal.append(quick_session(agw)))
    t.start()
    secs, got = trickle(c, b"Subject: slow\r\n\r\n" + b"x" * 100, 3, 15)
    t.join(20)
    c.close()
    assert got.startswith(b"421 4.4.2"), got
    assert secs < 8, secs
    assert took_normal and took_normal[0] < 5, took_normal
    agw.sink.wait_for(1)
    assert not any(m.msg.get("Subject") == "slow" for m in agw.sink.messages)


def test_slowloris_data_one_byte_a_second(agw):
    """One byte a second, each within the 2 s command timeout: [smtpd]
    data_timeout (5 s here) still cuts the session at the deadline with 421
    4.4.2, and the opened queue file is dropped (nothing kept)."""
    c = slow_begin(agw)
    t0 = time.monotonic()
    took = quick_session(agw)
    secs, got = trickle(c, b"Subject: slow\r\n\r\n" + b"x" * 100, 1, 12)
    cut = time.monotonic() - t0
    c.close()
    assert took < 5, took
    assert got.startswith(b"421 4.4.2"), f"still open after {secs:.1f}s; got {got!r}"
    assert 4.5 <= cut < 8, cut
    assert "data timeout" in agw.log_text()
    # The queue file the router opened for it (msg/QID: content is received
    # in place) is gone, nothing was queued; tmp/ holds at most spare
    # envelope files kept for reuse.
    def clean():
        tmp = [n for n in os.listdir(os.path.join(agw.spool, "tmp")) if not n.startswith("spare.")]
        return not tmp and not os.listdir(os.path.join(agw.spool, "msg"))
    wait_until(clean, 5, what="the aborted queue file to be removed")
    time.sleep(0.5)
    assert not any(m.msg.get("Subject") == "slow" for m in agw.sink.messages)
    rows = wait_until(lambda: [r for r in agw.activity() if r.get("reason") == "data-timeout"],
                      5, what="the data-timeout row")
    assert len(rows) == 1 and rows[0]["reply"].startswith("421 4.4.2"), rows


# ------------------------------------------------------------ huge DATA


def stream_data(port, total, result):
    """A session that streams total bytes of content (64 KiB lines of 'x')
    against the size limit; result gets (code, text, seconds)."""
    c = Raw(port)
    try:
        ehlo(c)
        c.expect(b"MAIL FROM:<s@sender.test>", 250)
        c.expect(b"RCPT TO:<alice@gw.test>", 250)
        c.expect(b"DATA", 354)
        t0 = time.monotonic()
        line = b"x" * 1022 + b"\r\n"
        block = b"Subject: huge\r\n\r\n" + line * 1023
        c.send(block)
        sent = len(block)
        chunk = line * 1024
        while sent < total:
            c.send(chunk)
            sent += len(chunk)
        c.send(b".\r\n")
        c.sock.settimeout(60)
        code, text = c.reply()
        result.append((code, text, time.monotonic() - t0))
        c.expect(b"NOOP", 250)  # the session goes on
        c.cmd(b"QUIT")
    finally:
        c.close()


def test_huge_data_stream_552_memory_bounded(agw_measured):
    agw = agw_measured
    total = (1024 if BIG else 64) * MiB
    pid = smtpd_pid(agw)
    before = rss_kib(pid)
    peak = [before]
    result = []
    t = threading.Thread(target=stream_data, args=(agw.smtp_port, total, result))
    t.start()
    bystander = []
    t_start = time.monotonic()
    while t.is_alive():
        peak[0] = max(peak[0], rss_kib(pid))
        if not bystander and time.monotonic() - t_start > 0.3:  # mid-stream
            bystander.append(quick_session(agw))
        time.sleep(0.05)
    t.join()
    if not bystander:  # the stream was quicker than that
        bystander.append(quick_session(agw))
    after = rss_kib(pid)
    assert result, "the streaming session failed"
    code, text, secs = result[0]
    print(f"huge DATA: {total // MiB} MiB in {secs:.1f}s ({total / MiB / secs:.0f} MiB/s) -> "
          f"{code} {text[-1]!r}; smtpd VmRSS before {before} KiB, peak {peak[0]} KiB, "
          f"after {after} KiB; a normal session meanwhile took {bystander[0]:.2f}s")
    assert code == 552 and text[-1].startswith(b"5.3.4"), (code, text)
    assert bystander and bystander[0] < 5, bystander
    # Bounded: content beyond the limit is read and dropped, never buffered.
    assert peak[0] - before < 32 * 1024, (before, peak[0])
    assert after - before < 32 * 1024, (before, after)
    # Nothing of it stays in the spool.
    left = {d: v for d, v in agw.spool_files().items() if v and d != "active"}
    wait_until(lambda: not any(agw.spool_files().values()), 10,
               what=lambda: f"an empty spool, not {agw.spool_files()} ({left})")
    subjects = [m.msg.get("Subject") for m in agw.sink.wait_for(1)]
    assert "huge" not in subjects, subjects


# ------------------------------------------------------------ RCPT flood


def rcpt_flood(gw, n):
    """Pipelines n RCPTs in one transaction; returns (client, replies)."""
    c = Raw(gw.smtp_port)
    ehlo(c)
    c.expect(b"MAIL FROM:<s@sender.test>", 250)
    # Distinct recipients (the catch-all takes them): duplicates are not counted.
    c.send(b"".join(b"RCPT TO:<u%d@gw.test>\r\n" % i for i in range(n)))
    c.sock.settimeout(20)
    replies = []
    try:
        while len(replies) < n:
            replies.append(c.reply())
    except (EOFError, ConnectionResetError, socket.timeout):
        pass
    return c, replies


def test_rcpt_flood_452_bounded(agw):
    """Past max_recipients (100) RCPT gets 452 4.5.3; memory stays bounded and
    other sessions are unaffected."""
    pid = smtpd_pid(agw)
    before = rss_kib(pid)
    c, replies = rcpt_flood(agw, 1000)
    after = rss_kib(pid)
    codes = [r[0] for r in replies]
    print(f"rcpt flood: {len(replies)} replies, codes {sorted(set(codes))}; "
          f"smtpd VmRSS {before} -> {after} KiB")
    assert codes[:100] == [250] * 100, codes[:110]
    assert codes[100] == 452 and replies[100][1][-1].startswith(b"4.5.3"), replies[100]
    assert after - before < 16 * 1024, (before, after)
    c.close()
    assert quick_session(agw) < 5


def test_rcpt_flood_session_survives(agw):
    """RFC 5321 §4.5.3.1.10: a client told 452 sends the message to the
    recipients accepted so far and the rest later. After 1,000 pipelined
    RCPTs the session must still take the DATA for the first 100."""
    c, replies = rcpt_flood(agw, 1000)
    codes = [r[0] for r in replies]
    try:
        assert len(replies) == 1000 and codes.count(250) == 100 and \
            codes.count(452) == 900, (len(replies), sorted(set(codes)), replies[-1])
        c.expect(b"DATA", 354)
        c.send(make_message(SENDER, "alice@gw.test", subject="flood") + b".\r\n")
        code, text = c.reply()
        assert code == 250, text
    finally:
        c.close()


# ------------------------------------------------------------ nested MIME


def nested_mime(depth, to):
    """depth levels of multipart/mixed around one 8-bit text part."""
    head = [f"From: <{SENDER}>", f"To: <{to}>", "Subject: nested",
            f"Message-ID: <nested.{depth}.{time.monotonic_ns()}@sender.test>", "MIME-Version: 1.0"]
    out = ["\r\n".join(head)]
    for i in range(depth):
        out.append(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n')
    out.append("Content-Type: text/plain; charset=utf-8\r\n"
               "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus der Tiefe.\r\n")
    for i in reversed(range(depth)):
        out.append(f"--b{i}--\r\n")
    return ("\r\n".join(out[:1]) + "\r\n" + "".join(out[1:])).encode("utf-8")


def nested_world(dns_server, fault_peers, gateway):
    dns_server.zone("sender.test", mx=[(10, "mx.sender.test")], a={"mx.sender.test": "127.0.0.3"})
    dns_server.zone("eight.test", mx=[(10, "mx.eight.test")], a={"mx.eight.test": "127.0.2.8"})
    dns_server.zone("seven.test", mx=[(10, "mx.seven.test")], a={"mx.seven.test": "127.0.2.7"})
    eight = fault_peers("127.0.2.8", {})
    seven = fault_peers("127.0.2.7", {}, eightbitmime=False)
    gw = gateway()
    gw.forward("e@gw.test", "bob@eight.test")
    gw.forward("s@gw.test", "bob@seven.test")
    return gw, eight, seven


def outcome_7bit(gw, seven, qid):
    """'sent' once the 7-bit peer has a copy, 'bounced' if deliverd gave up."""
    if seven.data:
        return "sent"
    log = "\n".join(l for l in gw.log_text().splitlines() if qid in l and "deliverd" in l)
    return "bounced" if "status=bounced" in log else None


def test_deeply_nested_mime(dns_server, fault_peers, gateway):
    """10,000 levels of multipart with 8-bit content are forwarded unchanged to
    a peer with 8BITMIME; 1,000 levels (within GMime's nesting limit) go
    through deliverd's 7-bit converter to a peer without it. No daemon
    crashes (the gateway fixture fails the test on any daemon restart or
    sanitizer report)."""
    gw, eight, seven = nested_world(dns_server, fault_peers, gateway)
    pid = smtpd_pid(gw)
    before = rss_kib(pid)
    m8 = nested_mime(10000, "e@gw.test")
    gw.send_retrying(SENDER, "e@gw.test", m8)
    q7 = gw.send_retrying(SENDER, "s@gw.test", nested_mime(1000, "s@gw.test"))
    print(f"nested MIME: {len(m8)} bytes, 10000 levels; smtpd VmRSS {before} -> "
          f"{rss_kib(pid)} KiB")
    wait_until(lambda: eight.data, 30, what="the 8BITMIME peer's copy")
    assert eight.data[0].endswith(m8)
    assert wait_until(lambda: outcome_7bit(gw, seven, q7), 30, what="the 7-bit delivery") == "sent"
    assert_7bit(seven.data[0])
    # The innermost part, decoded, is the original text.
    leaf = seven.data[0].split(b"Content-Type: text/plain", 1)[1]
    head, body = leaf.split(b"\r\n\r\n", 1)
    body = body.split(b"\r\n--b", 1)[0]
    cte = re.search(rb"Content-Transfer-Encoding: *(\S+)", head, re.I).group(1).lower()
    text = (base64.b64decode(body) if cte == b"base64" else quopri.decodestring(body))
    assert text.decode("utf-8").rstrip("\r\n") == "Grüße aus der Tiefe.", (cte, body)
    assert gw.unexpected_restarts() == {}, gw.unexpected_restarts()


def test_deeply_nested_mime_to_7bit_peer(dns_server, fault_peers, gateway):
    """10,000 levels of multipart with 8-bit content to a peer without
    8BITMIME: it must arrive 7-bit, or be bounced; never sent 8-bit."""
    gw, eight, seven = nested_world(dns_server, fault_peers, gateway)
    q7 = gw.send_retrying(SENDER, "s@gw.test", nested_mime(10000, "s@gw.test"))
    res = wait_until(lambda: outcome_7bit(gw, seven, q7), 30, what="the 7-bit delivery's outcome")
    print(f"nested MIME (10000) to a 7-bit peer: {res}")
    if res == "sent":
        assert_7bit(seven.data[0])


SHAPES = {
    # A part that declares 7bit but is not: GMime trusts the label.
    "cte-lie": ("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 7bit\r\n\r\nK\u00f6ln\r\n"),
    # 8-bit text in a multipart's preamble and epilogue (kept verbatim).
    "preamble": ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
                 "Pr\u00e4mbel\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n"
                 "Epil\u00f6g\r\n"),
    # An attached message with an 8-bit body.
    "rfc822": ("MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
               "Subject: inner\r\n\r\nb\u00f6dy\r\n"),
}


def test_7bit_conversion_hostile_shapes(dns_server, fault_peers, gateway):
    """Message shapes a client can send that the converter must still make
    7-bit (or refuse) for a peer without 8BITMIME."""
    gw, eight, seven = nested_world(dns_server, fault_peers, gateway)
    qids = {}
    for name, rest in SHAPES.items():
        msg = (f"From: <{SENDER}>\r\nTo: <s@gw.test>\r\nSubject: {name}\r\n"
               f"Message-ID: <{name}.{time.monotonic_ns()}@sender.test>\r\n" + rest)
        qids[name] = gw.send_retrying(SENDER, "s@gw.test", msg.encode("utf-8"))
    wait_until(lambda: all(outcome_7bit(gw, seven, q) for q in qids.values())
               and len(seven.data) + sum(outcome_7bit(gw, seven, q) == "bounced"
                                         for q in qids.values()) >= len(qids), 30,
               what="every shape delivered or bounced")
    leaked = [d.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for d in seven.data
              if any(c >= 0x80 for c in d)]
    assert not leaked, f"sent 8-bit to a peer without 8BITMIME: {leaked}"
