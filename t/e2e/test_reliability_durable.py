"""Durability of an accepted message (DESIGN.md §2, RFC 5321 §6.1).

- The order of the system calls behind one 250, traced with strace on the
  real router and smtpd: content created in msg/ and written, msg/ fsynced;
  content fsynced; envelope written and fsynced → envelope renamed into
  active/ → active/ fsynced → COMMIT_REPLY sent to smtpd → the 250 written to
  the client.
- fsync failures injected into the router (strace -e inject) give 451 (452
  for ENOSPC), never 250, and leave nothing behind.
- A full disk (the spool on a tiny tmpfs): 452 4.3.1, nothing half-written,
  mail flows again once space returns.
"""
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import REAL_ROOT, make_message, wait_until

STRACE = shutil.which("strace")
need_strace = pytest.mark.skipif(not REAL_ROOT or not STRACE,
                                 reason="needs real root (ptrace of the daemons) and strace")

LINE_RE = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$")


def unescape(s):
    """Bytes of a C string as strace prints it (-x: non-printables as \\xHH)."""
    out = bytearray()
    i = 0
    simple = {"n": 10, "r": 13, "t": 9, "v": 11, "f": 12, '"': 34, "\\": 92}
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n == "x":
                out.append(int(s[i + 2:i + 4], 16))
                i += 4
                continue
            if n in simple:
                out.append(simple[n])
                i += 2
                continue
            m = re.match(r"[0-7]{1,3}", s[i + 1:])
            if m:
                out.append(int(m.group(0), 8))
                i += 1 + len(m.group(0))
                continue
        out += c.encode("latin-1", "replace") if ord(c) < 256 else c.encode()
        i += 1
    return bytes(out)


def strings_of(args):
    """The quoted strings in a syscall's argument text, as bytes."""
    return [unescape(m) for m in re.findall(r'"((?:[^"\\]|\\.)*)"', args)]


class Trace:
    """An strace -f of some PIDs, parsed into [(index, pid, syscall, text)].
    A call split into "unfinished"/"resumed" is one event at its entry's
    place: its entry was seen before the kernel ran it, so an event that
    depends on it causally can only come later in the file."""

    def __init__(self, workdir, pids, syscalls, inject=None, extra=(), follow=True):
        self.out = os.path.join(workdir, f"strace-{time.monotonic_ns()}.txt")
        self.err = self.out + ".err"
        # -f with -p attaches every thread of the process; without it, only
        # the threads named.
        cmd = [STRACE] + (["-f"] if follow else []) + ["-qq", "-yy", "-x", "-s", "512", "-o", self.out,
               "-e", "trace=" + ",".join(syscalls)]
        if inject:
            cmd += ["-e", inject]
        cmd += list(extra)
        for p in pids:
            cmd += ["-p", str(p)]
        self.proc = subprocess.Popen(cmd, stderr=open(self.err, "wb"), stdin=subprocess.DEVNULL)
        # strace runs the tracees again only once it has seized them all;
        # give it the moment it needs (it prints nothing with -qq).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            st = open(f"/proc/{pids[0]}/status").read()
            m = re.search(r"TracerPid:\s+(\d+)", st)
            if m and int(m.group(1)) == self.proc.pid:
                break
            time.sleep(0.05)
        time.sleep(0.3)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # detaches, tracees run on
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.events()

    def events(self):
        evs, pending = [], {}
        with open(self.out, encoding="latin-1") as f:
            for line in f:
                m = LINE_RE.match(line.rstrip("\n"))
                if not m:
                    continue
                pid, resumed, name, rest = int(m.group(1)), m.group(2), m.group(3), m.group(4)
                if resumed:
                    i = pending.pop(pid, None)
                    if i is not None:
                        evs[i] = (evs[i][0], pid, evs[i][2], evs[i][3] + rest)
                    continue
                evs.append((len(evs), pid, name, name + "(" + rest))
                if rest.endswith("<unfinished ...>"):
                    pending[pid] = len(evs) - 1
        return evs

    def text(self):
        try:
            return open(self.out, encoding="latin-1").read()[-15000:]
        except OSError as e:
            return str(e)


def result(text):
    m = re.search(r"\)\s+=\s+(-?\d+)", text)
    return int(m.group(1)) if m else None


@need_strace
def test_durable_write_order(world, workdir, request):
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test")
    # One message first, so everything that happens once (connections,
    # databases opened) is out of the way.
    gw.send("alice@sender.test", "info@gw.test", make_message("alice@sender.test", "info@gw.test"))
    world.dest.wait_for(1, timeout=20)
    st = gw.status()
    router, smtpd = st["router"]["pid"], st["smtpd"]["pid"]
    tr = Trace(workdir, [router, smtpd],
               ["write", "writev", "pwrite64", "pwritev", "pwritev2", "fsync", "fdatasync",
                "sync_file_range", "rename", "renameat", "renameat2", "sendmsg", "sendto",
                "openat"])
    request.node._mxf_logs = getattr(request.node, "_mxf_logs", []) + [("strace", tr.text)]
    try:
        body = ("durable " * 10 + "\n") * 300
        qid = gw.send("alice@sender.test", "info@gw.test",
                      make_message("alice@sender.test", "info@gw.test", body=body,
                                   msgid="<durable@sender.test>"))
        time.sleep(0.3)
    finally:
        evs = tr.stop()
    spool = os.path.realpath(gw.spool)

    def find(pred, what):
        hits = [e for e in evs if pred(e)]
        assert hits, f"no {what} in the trace of router {router} / smtpd {smtpd}"
        return hits

    def on_path(e, rel):
        return f"<{spool}/{rel}>" in e[3] or (gw.chrooted and f"<{rel}>" in e[3])

    # The router makes msg/QID at OPEN — a new file, or a removed message's
    # content file kept in tmp/ (spare.cN) renamed there and truncated —
    # and smtpd writes the content there through the descriptor it was
    # handed (received in place, never renamed after).
    made_re = re.compile(r'"spare\.c\d+", \d+<[^>]*>, "%s"' % qid)
    create = find(lambda e: e[1] == router and on_path(e, "msg") and (
                  (e[2] == "openat" and f'"{qid}"' in e[3] and "O_CREAT" in e[3]) or
                  (e[2].startswith("rename") and made_re.search(e[3]))),
                  f"creation of msg/{qid}")
    content_writes = find(lambda e: e[1] != router and e[2].startswith(("write", "pwrite"))
                          and on_path(e, f"msg/{qid}"), "write of the content by smtpd")
    assert all(result(e[3]) is not None and result(e[3]) > 0 for e in content_writes)
    fsync_content = find(lambda e: e[2] in ("fsync", "fdatasync") and on_path(e, f"msg/{qid}"),
                         f"fsync of msg/{qid}")
    # The envelope is written in tmp/ (into a spare envelope file reused in
    # place, or tmp/QID.env) and renamed from there into active/QID.
    ren_re = re.compile(r'"([^"/]+)", \d+<[^>]*>, "%s"' % qid)
    ren_env = find(lambda e: e[2].startswith("rename") and ren_re.search(e[3])
                   and on_path(e, "active") and on_path(e, "tmp"),
                   f"rename of the envelope from tmp/ into active/{qid}")
    src = ren_re.search(ren_env[0][3]).group(1)
    assert src == f"{qid}.env" or re.fullmatch(r"spare\.\d+", src), src
    env_write = find(lambda e: e[2].startswith(("write", "pwrite")) and on_path(e, f"tmp/{src}")
                     and e[0] < ren_env[0][0], f"write of tmp/{src}")
    fsync_env = find(lambda e: e[2] in ("fsync", "fdatasync") and on_path(e, f"tmp/{src}")
                     and e[0] < ren_env[0][0], f"fsync of tmp/{src}")
    # Until it is committed (a delivered message's content file may later
    # move to tmp/ to be reused).
    assert not [e for e in evs if e[2].startswith("rename") and f'"{qid}"' in e[3]
                and on_path(e, "msg") and create[0][0] < e[0] < ren_env[0][0]], \
        "the content is never renamed"
    # msg/ fsync'ed after the content's entry was made, before the envelope
    # that points at it is published (group commit: one such fsync covers
    # every file created before it began).
    fsync_msgdir = find(lambda e: e[2] == "fsync" and on_path(e, "msg") and
                        create[0][0] < e[0] < ren_env[0][0],
                        "fsync of msg/ between the content's creation and the envelope's rename")
    fsync_actdir = find(lambda e: e[2] == "fsync" and on_path(e, "active") and e[0] > ren_env[0][0],
                        "fsync of active/ after the rename")
    # COMMIT_REPLY: magic "XM", type 8, carrying the queue ID.
    commit_reply = find(lambda e: e[1] == router and e[2] in ("sendmsg", "sendto")
                        and any(s.startswith(b"XM\x08\x00") and qid.encode() in s
                                for s in strings_of(e[3])), "COMMIT_REPLY to smtpd")
    reply_250 = find(lambda e: e[1] != router and e[2] in ("write", "writev", "sendto", "sendmsg")
                     and "TCP" in e[3] and any(b"250 2.0.0" in s and qid.encode() in s
                                               for s in strings_of(e[3])),
                     "250 written to the client")

    for e in create + fsync_content + fsync_env + fsync_msgdir[-1:] + fsync_actdir[:1] + ren_env:
        assert result(e[3]) is not None and result(e[3]) >= 0, \
            f"failed call in the durable path: {e[3]}"
    # Content and envelope fsync'ed (each after its last write; the two in
    # either order: a group commit runs them at once) before the rename.
    for (a, ia), (b, ib) in ((("creation of msg/QID", create[0][0]),
                              ("last content write", content_writes[-1][0])),
                             (("last content write", content_writes[-1][0]),
                              ("fsync(content)", fsync_content[0][0])),
                             (("fsync(content)", fsync_content[0][0]),
                              ("rename(envelope) into active/", ren_env[0][0])),
                             (("write(envelope)", env_write[-1][0]),
                              ("fsync(envelope)", fsync_env[-1][0]))):
        assert ia < ib, f"{a} (event {ia}) is not before {b} (event {ib})"
    order = [
        ("fsync(envelope)", fsync_env[-1][0]),
        ("rename(envelope) into active/", ren_env[0][0]),
        ("fsync(active/)", fsync_actdir[0][0]),
        ("COMMIT_REPLY", commit_reply[0][0]),
        ("250 to the client", reply_250[0][0]),
    ]
    for (a, ia), (b, ib) in zip(order, order[1:]):
        assert ia < ib, f"{a} (event {ia}) is not before {b} (event {ib}): {order}"
    # No 250 left smtpd before the COMMIT_REPLY.
    early = [e for e in evs if e[1] != router and e[0] < commit_reply[0][0]
             and any(b"250 2.0.0" in s and b"queued" in s for s in strings_of(e[3]))
             and qid.encode() in e[3].encode("latin-1")]
    assert not early, f"a 250 for {qid} before the COMMIT_REPLY: {early}"
    world.dest.wait_for(2, timeout=20)


def smtp_one(gw, body_tag):
    """One SMTP transaction; returns (code, text) of the reply to DATA (or to
    the command that failed first)."""
    s = smtplib.SMTP("127.0.0.1", gw.smtp_port, local_hostname="client.sender.test", timeout=30)
    try:
        s.ehlo()
        code, resp = s.mail("alice@sender.test")
        if code != 250:
            return code, resp
        code, resp = s.rcpt("info@gw.test")
        if code != 250:
            return code, resp
        code, resp = s.data(make_message("alice@sender.test", "info@gw.test",
                                         msgid=f"<{body_tag}@sender.test>"))
        return code, resp
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            s.close()


def spool_leftovers(gw):
    """Files of any message in tmp/, msg/ and the state directories (not the
    spare envelope files the router keeps in tmp/ for reuse)."""
    out = {}
    for d in ("tmp", "msg", "incoming", "active", "deferred", "hold", "corrupt"):
        try:
            names = sorted(n for n in os.listdir(os.path.join(gw.spool, d))
                           if not (d == "tmp" and n.startswith("spare.")))
        except FileNotFoundError:
            names = []
        if names:
            out[d] = names
    return out


def router_threads(pid):
    """{tid: name} of the router's threads."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(t)] = open(f"/proc/{pid}/task/{t}/comm").read().strip()
        except OSError:
            pass
    return out


# Every fsync behind one 250, made to fail in turn. They run on several
# threads (group commit): msg/ on the syncer thread (named mxf-msgsync), the
# content and the envelope at once on two pool threads, active/ on whichever
# leads the publish. strace counts injections per thread, so each kind is
# aimed at on its own: a directory by its path (-P), the files as the first
# fdatasync of each pool thread (files are fdatasync'ed, directories
# fsync'ed; the activity log's writer thread, mxf-activity, is no pool
# thread: its checkpoints may sync at any time).
@need_strace
@pytest.mark.parametrize("what,err,code", [("msg", "EIO", 451), ("files", "EIO", 451),
                                           ("active", "EIO", 451), ("msg", "ENOSPC", 452),
                                           ("files", "ENOSPC", 452)])
def test_fsync_failure_is_4xx_never_250(world, workdir, request, what, err, code):
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test")
    # One message first: the pool and syncer threads exist, and later tests
    # of this file see a used gateway.
    got, resp = smtp_one(gw, f"warm-{what}-{err}")
    assert got == 250, (got, resp)
    world.dest.wait_for(1, timeout=20)
    router = gw.status()["router"]["pid"]
    spool = os.path.realpath(gw.spool)
    if what == "files":
        pids = [t for t, name in router_threads(router).items()
                if t != router and name not in ("mxf-msgsync", "mxf-activity")]
        # Files are fdatasync'ed (directories fsync'ed): the first
        # fdatasync of a pool thread is a content's or an envelope's.
        tr = Trace(workdir, pids, ["fsync", "fdatasync"],
                   inject=f"inject=fdatasync:error={err}:when=1", follow=False)
    else:
        assert "mxf-msgsync" in router_threads(router).values()
        tr = Trace(workdir, [router], ["fsync", "fdatasync"],
                   inject=f"inject=fsync:error={err}", extra=["-P", f"{spool}/{what}"])
    request.node._mxf_logs = getattr(request.node, "_mxf_logs", []) + [("strace", tr.text)]
    try:
        got, resp = smtp_one(gw, f"fsync-{what}-{err}")
    finally:
        evs = tr.stop()
    failed = [e for e in evs if f"= -1 {err}" in e[3] and "INJECTED" in e[3]]
    assert failed, f"no fsync failed (injection missed): {[e[3] for e in evs]}"
    if what == "files":
        assert all("/msg>" not in e[3] and "/active>" not in e[3] for e in failed), failed
    assert got == code, f"fsync of {what} -> {err}: DATA answered {got} {resp!r}"
    want = b"4.3.1" if code == 452 else b"4.3.0"
    assert resp.startswith(want), resp
    # Nothing of the refused message stays: no content, no envelope.
    wait_until(lambda: not spool_leftovers(gw), 5, what="an empty spool")
    assert len(world.dest.messages) == 1
    # The next message goes through: the failure was not sticky.
    code2, resp2 = smtp_one(gw, f"after-{what}-{err}")
    assert code2 == 250, (code2, resp2)
    ms = world.dest.wait_for(2, timeout=20)
    assert ms[-1].msg.get("Message-ID") == f"<after-{what}-{err}@sender.test>"


def mounted_tmpfs(path, size):
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
                       capture_output=True, text=True)
    return r.returncode == 0, r.stderr


@pytest.mark.skipif(not REAL_ROOT, reason="needs real root (mount)")
def test_disk_full_452_then_recovers(dns_server, sinks, gateway, workdir, request):
    """The spool on a 2 MiB tmpfs mounted under the test's own directory
    (lazily unmounted at the end), filled up to ~200 KiB by a filler file."""
    from conftest import make_world  # noqa: PLC0415
    spool = os.path.join(workdir, "tinyspool")
    os.makedirs(spool)
    ok, why = mounted_tmpfs(spool, "2m")
    if not ok:
        pytest.skip(f"cannot mount a tmpfs: {why}")
    w = None
    try:
        dns_server.zone("dest.test", mx=[(10, "mx1.dest.test")],
                        a={"mx1.dest.test": "127.0.0.2"})
        dns_server.start()
        sink = sinks("127.0.0.2")
        gw = gateway({"main": {"spool_dir": spool}}, start=False)
        gw.spool = spool
        gw.start()
        w = gw
        gw.forward("info@gw.test", "bob@dest.test")
        sink.set_mode("tempfail")  # keep what is accepted in the queue
        # Fill the file system, leaving ~200 KiB.
        filler = os.path.join(spool, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        os.truncate(filler, os.path.getsize(filler) - 200 * 1024)
        codes = []
        big = "x" * 998 + "\n"
        for i in range(6):
            s = smtplib.SMTP("127.0.0.1", gw.smtp_port, local_hostname="c.sender.test", timeout=30)
            try:
                s.ehlo()
                code, _ = s.mail("alice@sender.test")
                if code == 250:
                    code, _ = s.rcpt("info@gw.test")
                if code == 250:
                    try:
                        code, resp = s.data(make_message("alice@sender.test", "info@gw.test",
                                                         body=big * 100, msgid=f"<full{i}@s.test>"))
                    except smtplib.SMTPResponseException as e:
                        code, resp = e.smtp_code, e.smtp_error
                    codes.append((code, resp))
                else:
                    codes.append((code, b"before DATA: " + _))
                s.quit()
            except (smtplib.SMTPServerDisconnected, OSError) as e:
                codes.append((None, str(e).encode()))
        refused = [c for c in codes if c[0] != 250]
        assert refused, f"a full disk refused nothing: {codes}"
        for c, resp in refused:
            assert c in (451, 452), f"disk full answered {c} {resp!r}: {codes}"
        accepted = len(codes) - len(refused)
        # Nothing half-written: tmp/ empty (but for spare envelope files kept
        # for reuse), every msg/ file has its envelope.
        tmp = [n for n in os.listdir(os.path.join(spool, "tmp")) if not n.startswith("spare.")]
        assert not tmp, tmp
        msgs = set(os.listdir(os.path.join(spool, "msg")))
        envs = set()
        for d in ("incoming", "active", "deferred"):
            envs |= set(os.listdir(os.path.join(spool, d)))
        assert msgs == envs, f"content without envelope or the reverse: {msgs ^ envs}"
        assert len(msgs) == accepted, (msgs, codes)
        assert not os.listdir(os.path.join(spool, "corrupt"))
        # Space returns: mail flows again, the queue drains.
        os.unlink(filler)
        sink.set_mode("accept")
        gw.send("alice@sender.test", "info@gw.test",
                make_message("alice@sender.test", "info@gw.test", msgid="<after-full@s.test>"))
        got = sink.wait_for(accepted + 1, timeout=30)
        assert "<after-full@s.test>" in [m.msg.get("Message-ID") for m in got]
        wait_until(lambda: not any(os.listdir(os.path.join(spool, d))
                                   for d in ("msg", "incoming", "active", "deferred")),
                   20, what=lambda: f"the queue to drain: {spool_leftovers(gw)}")
        # DESIGN.md §2: a full disk is 452 4.3.1 wherever the space ran out.
        wrong = [c for c in refused if not (c[0] == 452 and b"4.3.1" in c[1])]
        assert not wrong, f"a full disk must be answered 452 4.3.1: {wrong}"
    finally:
        if w is not None:
            w.stop()  # before the spool goes away under it
        subprocess.run(["umount", "-l", spool], capture_output=True)


def test_queue_file_opened_ahead(world):
    """After a RCPT's 250 the router opens the queue file ahead for DATA
    (no OPEN round trip before the 354). A transaction that ends without
    DATA — RSET, a new MAIL after RSET, QUIT, a dropped connection, only
    refused recipients — leaves no file behind; one that sends DATA (or
    BDAT) delivers as ever, pipelined or not."""
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test")
    msg_dir = os.path.join(gw.spool, "msg")

    def empty_spool():
        wait_until(lambda: not spool_leftovers(gw), 10,
                   what=lambda: f"an empty spool: {spool_leftovers(gw)}")

    def session():
        s = smtplib.SMTP("127.0.0.1", gw.smtp_port, local_hostname="client.sender.test",
                         timeout=30)
        s.ehlo()
        return s

    # RSET after an accepted RCPT, then MAIL/RCPT again and QUIT.
    s = session()
    assert s.mail("alice@sender.test")[0] == 250
    assert s.rcpt("info@gw.test")[0] == 250
    wait_until(lambda: os.listdir(msg_dir), 10, what="the file opened ahead in msg/")
    assert s.rset()[0] == 250
    empty_spool()
    assert s.mail("alice@sender.test")[0] == 250
    assert s.rcpt("info@gw.test")[0] == 250
    s.quit()
    empty_spool()
    # A dropped connection after the RCPT.
    s = session()
    assert s.mail("alice@sender.test")[0] == 250
    assert s.rcpt("info@gw.test")[0] == 250
    s.close()  # the socket and its reader: the connection drops, no QUIT
    empty_spool()
    # Only refused recipients: nothing opened.
    s = session()
    assert s.mail("alice@sender.test")[0] == 250
    assert s.rcpt("nobody@elsewhere.test")[0] >= 500
    with pytest.raises(smtplib.SMTPDataError) as ei:
        s.data(b"Subject: x\r\n\r\nx\r\n")
    assert ei.value.smtp_code == 554
    s.quit()
    empty_spool()
    # DATA right behind the RCPT in one write (PIPELINING): the 354 comes
    # whether the file is there yet or not; then a second message in the
    # same session, with a refused recipient first.
    raw = socket.create_connection(("127.0.0.1", gw.smtp_port), timeout=30)
    f = raw.makefile("rb")

    def reply():
        while True:
            ln = f.readline()
            assert ln, "connection closed"
            if ln[3:4] != b"-":
                return int(ln[:3])

    assert reply() == 220
    raw.sendall(b"EHLO client.sender.test\r\n")
    assert reply() == 250
    for i, rcpts in enumerate((["info@gw.test"], ["nobody@elsewhere.test", "info@gw.test"])):
        body = make_message("alice@sender.test", "info@gw.test", msgid=f"<ahead{i}@sender.test>")
        raw.sendall(b"MAIL FROM:<alice@sender.test>\r\n" +
                    b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts) + b"DATA\r\n")
        assert reply() == 250
        codes = [reply() for _ in rcpts]
        assert codes[-1] == 250, codes
        assert reply() == 354
        raw.sendall(body + b".\r\n")
        assert reply() == 250
    raw.sendall(b"QUIT\r\n")
    assert reply() == 221
    raw.close()
    got = world.dest.wait_for(2, timeout=20)
    assert sorted(m.msg.get("Message-ID") for m in got[-2:]) == ["<ahead0@sender.test>",
                                                                  "<ahead1@sender.test>"]
    empty_spool()


def test_reused_queue_file_cut_to_length(world):
    """A delivered message's content file is reused for the next one, which
    smtpd writes over the old bytes: the router cuts it to the new length at
    the commit, so a short message after a long one arrives exactly as sent."""
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test")
    long_body = ("0123456789 long message line to be left behind\n" * 2000)
    sent = []
    for i, body in enumerate((long_body, "short\n", long_body[:5000] + "\n", "tiny\n")):
        data = make_message("alice@sender.test", "info@gw.test", body=body,
                            msgid=f"<cut{i}@sender.test>")
        gw.send("alice@sender.test", "info@gw.test", data)
        got = world.dest.wait_for(len(sent) + 1, timeout=20)
        sent.append(data)
        m = got[-1]
        assert m.msg.get("Message-ID") == f"<cut{i}@sender.test>"
        # Our Received (and Authentication-Results) come first; the rest is
        # the message as sent, to the last byte.
        assert m.data.endswith(data), (i, len(m.data), len(data), m.data[-200:])
        assert b"left behind" not in m.data or i in (0, 2)
    wait_until(lambda: any(n.startswith("spare.c")
                           for n in os.listdir(os.path.join(gw.spool, "tmp"))),
               10, what="a content file kept for reuse")
