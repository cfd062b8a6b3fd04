"""smtpd's connection-level defences and lifecycle: pregreet, per-IP
concurrency and rate limits, command timeout, SIGTERM letting a message in
DATA finish."""
import os
import signal
import time

import pytest

from conftest import make_message, wait_until
from test_smtpd_conformance import Raw, begin


@pytest.fixture
def lgw(dns_server, sinks, gateway):
    dns_server.zone("dest.test", mx=[(10, "mx1.dest.test")], a={"mx1.dest.test": "127.0.0.2"})
    dns_server.start()
    sinks("127.0.0.2")
    g = gateway({"smtpd": {"greet_delay": "400", "max_conn_per_ip": "2", "max_conn_rate": "4",
                           "command_timeout": "2"}})
    g.forward("alice@gw.test", "bob@dest.test")
    return g


def test_pregreet_limits_timeout(lgw):
    port = lgw.smtp_port
    # Pregreet: talking before the 220 gets 554 and the door.
    c = Raw(port, greet=False)
    c.send(b"EHLO hasty.test\r\n")
    code, text = c.reply()
    assert code == 554 and text[0].startswith(b"5.5.0"), text
    assert c.closed()
    c.close()
    # A patient client is greeted after the delay.
    t0 = time.monotonic()
    a = Raw(port)
    assert time.monotonic() - t0 >= 0.35
    # Concurrency: two sessions from 127.0.0.1 (a is one), the third is refused.
    b = Raw(port)
    third = Raw(port, greet=False)
    code, text = third.reply()
    assert code == 421 and text[0].startswith(b"4.7.0"), text
    assert third.closed()
    # Rate (4 a minute), counted per address: a fresh one gets 4, not 5.
    for _ in range(4):
        x = Raw(port, source="127.0.0.7")
        x.cmd(b"QUIT")
        x.close()
    y = Raw(port, greet=False, source="127.0.0.7")
    code, text = y.reply()
    assert code == 421 and text[0].startswith(b"4.7.0"), text
    # Command timeout (2 s): 421 4.4.2, then closed.
    a.sock.settimeout(6)
    code, text = a.reply()
    assert code == 421 and text[0].startswith(b"4.4.2"), text
    for s in (a, b, third, y):
        s.close()


def test_sigterm_finishes_message_in_data(world):
    gw, sink = world.gw, world.dest
    gw.forward("alice@gw.test", "bob@dest.test")
    busy, idle = Raw(gw.smtp_port), Raw(gw.smtp_port)
    begin(busy)
    busy.expect(b"DATA", 354)
    msg = make_message("s@sender.test", "alice@gw.test", subject="in flight")
    busy.send(msg[:40])
    pid = gw.status()["smtpd"]["pid"]
    gw.expect_restart("smtpd")
    os.kill(pid, signal.SIGTERM)
    # The idle session is told at once; the one in DATA may finish.
    code, text = idle.reply()
    assert code == 421 and text[0].startswith(b"4.3.2"), text
    time.sleep(0.3)
    busy.send(msg[40:] + b".\r\nNOOP\r\n")
    code, text = busy.reply()
    assert code == 250 and b"queued as" in text[0], text
    code, text = busy.reply()
    assert code == 421, text     # a new command after the message
    assert busy.closed()
    [m] = sink.wait_for(1)
    assert m.msg.get("Subject") == "in flight"
    wait_until(lambda: "smtpd" in gw.status() and gw.status()["smtpd"]["pid"] != pid, 10,
               what="smtpd restarted")
