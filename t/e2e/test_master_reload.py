"""Reload and stop while a message is being received: smtpd is replaced on
SIGHUP and stops first on SIGTERM, so a message already in DATA still gets
its 250 and is not lost (issue 3)."""
import os
import re
import signal
import socket
import time

from conftest import make_message, pid_alive, wait_until

SENDER = "alice@sender.test"


class Raw:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.f = self.s.makefile("rb")
        self.reply()

    def reply(self):
        lines = []
        while True:
            line = self.f.readline()
            assert line, f"connection closed after {lines!r}"
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), b"".join(lines)

    def cmd(self, line):
        self.s.sendall(line + b"\r\n")
        return self.reply()

    def close(self):
        self.s.close()


def start_data(gw):
    """A session left in the middle of DATA: (client, the message bytes, the part sent)."""
    c = Raw(gw.smtp_port)
    assert c.cmd(b"EHLO client.sender.test")[0] == 250
    assert c.cmd(b"MAIL FROM:<" + SENDER.encode() + b">")[0] == 250
    assert c.cmd(b"RCPT TO:<info@gw.test>")[0] == 250
    assert c.cmd(b"DATA")[0] == 354
    data = make_message(SENDER, "info@gw.test", subject="in flight",
                        msgid=f"<inflight.{time.monotonic_ns()}@sender.test>")
    half = len(data) // 2
    c.s.sendall(data[:half])
    return c, data, half


def finish_data(c, data, half):
    c.s.sendall(data[half:] + b".\r\n")
    return c.reply()


def test_sighup_replaces_smtpd_and_finishes_message_in_data(world):
    gw, sink = world.gw, world.dest
    gw.forward("info@gw.test", "bob@dest.test")
    before = gw.status()
    c, data, half = start_data(gw)
    os.kill(gw.proc.pid, signal.SIGHUP)
    # A new smtpd takes over the listener; the router and the rest stay.
    wait_until(lambda: gw.status()["smtpd"]["pid"] != before["smtpd"]["pid"], 10,
               what="a new smtpd after SIGHUP")
    after = gw.status()
    for d in ("router", "deliverd", "bouncer"):
        assert after[d]["pid"] == before[d]["pid"], (d, before, after)
        assert pid_alive(after[d]["pid"])
    log = gw.log_text()
    new_pid = after["smtpd"]["pid"]
    wait_until(lambda: f"mxferry/smtpd[{new_pid}]: connected to router" in gw.log_text(), 10,
               what="the new smtpd's router link")
    # New sessions are served meanwhile, by the new smtpd.
    qid2 = gw.send(SENDER, "info@gw.test", make_message(SENDER, "info@gw.test",
                                                        msgid="<after-hup@sender.test>"))
    assert qid2
    # The old one still finishes the message it was receiving.
    code, text = finish_data(c, data, half)
    c.close()
    assert code == 250 and b"queued as" in text, text
    got = sink.wait_for(2, timeout=20)
    ids = [m.msg.get("Message-ID") for m in got]
    assert "<after-hup@sender.test>" in ids
    assert any(i and i.startswith("<inflight.") for i in ids), ids
    wait_until(lambda: not pid_alive(before["smtpd"]["pid"]), 10, what="the old smtpd to exit")
    assert "retires after its sessions" in log or "retires after its sessions" in gw.log_text()


def test_sigterm_lets_message_in_data_finish(world):
    gw, sink = world.gw, world.dest
    gw.forward("info@gw.test", "bob@dest.test")
    sink.set_mode("tempfail")  # keep it queued, so the spool must hold it
    c, data, half = start_data(gw)
    t0 = time.monotonic()
    os.kill(gw.proc.pid, signal.SIGTERM)
    time.sleep(0.3)
    code, text = finish_data(c, data, half)
    c.close()
    assert code == 250 and b"queued as" in text, text
    qid = re.search(rb"queued as ([0-9A-Z]+)", text).group(1).decode()
    gw.proc.wait(10)
    assert time.monotonic() - t0 < 5, "the master took more than 5 s to stop"
    # Acknowledged, so on disk: it is in the queue and goes out after a restart.
    assert os.path.exists(os.path.join(gw.spool, "msg", qid))
    gw.proc = None
    sink.set_mode("accept")
    gw.start()
    [m] = sink.wait_for(1, timeout=30)
    assert m.msg.get("Message-ID").startswith("<inflight.")
