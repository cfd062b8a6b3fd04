"""What the systemd unit relies on, with the build under test: sd_notify from
the master (READY, RELOADING, STOPPING) and journal entries with fields when
stderr is the journal's stream (JOURNAL_STREAM). Fake systemd sockets."""
import os
import shutil
import signal
import socket
import tempfile
import threading
import time

import pytest

from conftest import make_message, wait_until
from test_package import FakeJournal


class NotifySocket:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.states = []
        self.lock = threading.Lock()
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopped:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            with self.lock:
                self.states.append(data.decode())

    def all(self):
        with self.lock:
            return list(self.states)

    def close(self):
        self.stopped = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def shortdir():
    # AF_UNIX paths are limited to 107 bytes; the test workdirs are longer.
    d = tempfile.mkdtemp(prefix="mxfsd-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_sd_notify_ready_reload_stopping(gateway, shortdir, monkeypatch):
    n = NotifySocket(os.path.join(shortdir, "notify"))
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", n.path)
        g = gateway()
        wait_until(lambda: any("READY=1" in s for s in n.all()), 10, what=lambda: n.all())
        # The daemons must not inherit the socket (NotifyAccess=main).
        for d, v in g.status().items():
            if d != "mxferryd":
                with open(f"/proc/{v['pid']}/environ", "rb") as f:
                    assert b"NOTIFY_SOCKET=" not in f.read(), d
        before = len(n.all())
        g.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: n.all()[before:] == ["RELOADING=1", "READY=1"], 10,
                   what=lambda: n.all())
        assert g.stop() is not None
        assert n.all()[-1] == "STOPPING=1", n.all()
    finally:
        n.close()


def test_journal_entries_with_queue_id(world, shortdir, monkeypatch):
    """The same gateway as the other tests, restarted with its stderr as the
    'journal stream': every line becomes a journal entry with fields."""
    j = FakeJournal(os.path.join(shortdir, "journal"))
    try:
        gw, sink = world.gw, world.dest
        assert gw.stop() is not None
        st = os.stat(gw.log)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.setenv("MXF_JOURNAL_SOCKET", j.path)
        gw.start()
        gw.forward("info@gw.test", "bob@dest.test")
        qid = gw.send("alice@sender.test", "info@gw.test",
                      make_message("alice@sender.test", "info@gw.test"))
        sink.wait_for(1)
        wait_until(lambda: any(e.get("QUEUE_ID") == qid and "status=sent" in e["MESSAGE"]
                               for e in j.all()), 10, what=lambda: j.all()[-10:])
        mine = [e for e in j.all() if e.get("QUEUE_ID") == qid]
        assert {e["SYSLOG_IDENTIFIER"] for e in mine} >= {"mxferry/smtpd", "mxferry/router",
                                                          "mxferry/deliverd"}, mine
        # A line not about one message has no QUEUE_ID field.
        assert any("QUEUE_ID" not in e and e["SYSLOG_IDENTIFIER"] == "mxferry/mxferryd"
                   for e in j.all())
        # Stream lines stop while the journal takes the entries.
        assert qid not in gw.log_text()
    finally:
        j.close()
    # A redirected stderr (no matching JOURNAL_STREAM) keeps the plain lines.
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    gw.stop()
    gw.start()
    time.sleep(0.2)
    qid2 = gw.send("alice@sender.test", "info@gw.test",
                   make_message("alice@sender.test", "info@gw.test"))
    sink.wait_for(2)
    wait_until(lambda: qid2 in gw.log_text(), 10, what="plain log lines on stderr")
