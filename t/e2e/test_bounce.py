"""The bouncer (issue 6): standard DSNs (RFC 3464/6522, RFC 6533), NOTIFY and
RET honoured, no backscatter (null sender, double-bounce), and bounces that
come back from upstream to an SRS address."""
import email
import email.policy
import re
import time

from conftest import GW_HOST, make_message, make_world, wait_until

SENDER_MX = "127.0.0.3"


def smtpd_ready(gw):
    wait_until(lambda: "connected to router" in "".join(
        ln for ln in gw.log_text().splitlines() if "/smtpd[" in ln), 15,
        what="smtpd to connect to the router")


def bounce_world(dns_server, sinks, gateway, **router):
    w = make_world(dns_server, sinks, gateway, {"router": router} if router else None)
    w.gw.forward("info@gw.test", "bob@dest.test")
    smtpd_ready(w.gw)
    w.sender_mx = sinks(SENDER_MX)
    return w


def send_dsn(gw, mail_from, rcpt, data, mail_opts=(), rcpt_opts=()):
    """One message with DSN parameters; returns the queue ID."""
    s = gw.smtp()
    try:
        assert s.has_extn("dsn")
        opts = list(mail_opts) + (["BODY=8BITMIME"] if s.has_extn("8bitmime") else [])
        code, resp = s.mail(mail_from, opts)
        assert code == 250, (code, resp)
        code, resp = s.rcpt(rcpt, list(rcpt_opts))
        assert code == 250, (code, resp)
        code, resp = s.data(data)
        assert code == 250, (code, resp)
        return re.search(rb"queued as ([0-9A-Z]{26})", resp).group(1).decode()
    finally:
        s.quit()


def report(m):
    """(top message, [per-message, per-recipient...] field blocks, third part)."""
    msg = email.message_from_bytes(m.data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert len(parts) == 3, [p.get_content_type() for p in parts]
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() in ("message/delivery-status",
                                           "message/global-delivery-status")
    blocks = parts[1].get_payload()
    if parts[1].get_content_type() == "message/global-delivery-status":
        # Python reads it as one message/*: split the field blocks by hand.
        text = blocks[0].as_string() if isinstance(blocks, list) else blocks
        blocks = [email.message_from_string(b)
                  for b in re.split(r"\r?\n\r?\n", text.strip())]
    return msg, blocks, parts[2]


def test_5xx_produces_standard_dsn(dns_server, sinks, gateway):
    w = bounce_world(dns_server, sinks, gateway)
    w.dest.set_mode("permfail")
    qid = send_dsn(w.gw, "alice@sender.test", "info@gw.test",
                   make_message("alice@sender.test", "info@gw.test", subject="will fail",
                                msgid="<dsn5xx@sender.test>"),
                   mail_opts=["ENVID=env+2B42"])
    [b] = w.sender_mx.wait_for(1, timeout=30)
    assert b.mail_from == "" and b.rcpt_tos == ["alice@sender.test"]
    msg, blocks, third = report(b)
    assert "MAILER-DAEMON@" + GW_HOST in msg["From"]
    assert msg["Auto-Submitted"] == "auto-replied"
    permsg, rc = blocks[0], blocks[1]
    assert permsg["Reporting-MTA"] == "dns; " + GW_HOST
    assert permsg["Original-Envelope-Id"] == "env+2B42"
    assert rc["Final-Recipient"] == "rfc822; bob@dest.test"
    assert rc["Original-Recipient"] == "rfc822; info@gw.test"
    assert rc["Action"] == "failed"
    assert rc["Status"] == "5.1.1"
    assert rc["Remote-MTA"] == "dns; mx1.dest.test"
    assert rc["Diagnostic-Code"].startswith("smtp; 550 5.1.1 No such user here"), rc.items()
    assert rc["Last-Attempt-Date"]
    # RET absent: the headers, not the body.
    assert third.get_content_type() == "text/rfc822-headers"
    assert "<dsn5xx@sender.test>" in third.get_payload()
    assert "Hello." not in third.get_payload()
    w.gw.wait_activity(qid, "bounced", timeout=10)


def test_ret_full_returns_message_and_notify_never_none(dns_server, sinks, gateway):
    w = bounce_world(dns_server, sinks, gateway)
    w.dest.set_mode("permfail")
    # NOTIFY=NEVER, then a NOTIFY list without FAILURE: no DSN for either.
    q_never = send_dsn(w.gw, "alice@sender.test", "info@gw.test",
                       make_message("alice@sender.test", "info@gw.test", msgid="<never@s.test>"),
                       rcpt_opts=["NOTIFY=NEVER"])
    q_delay = send_dsn(w.gw, "alice@sender.test", "info@gw.test",
                       make_message("alice@sender.test", "info@gw.test", msgid="<delay@s.test>"),
                       rcpt_opts=["NOTIFY=DELAY"])
    # Null sender: never a DSN.
    q_null = send_dsn(w.gw, "", "info@gw.test",
                      make_message("alice@sender.test", "info@gw.test", msgid="<null@s.test>"))
    for q in (q_never, q_delay, q_null):
        w.gw.wait_activity(q, "delivery_failed", timeout=20)
    # RET=FULL with NOTIFY=FAILURE: the DSN carries the whole message. It
    # is sent last, so its DSN arriving means the others had their chance.
    q_full = send_dsn(w.gw, "alice@sender.test", "info@gw.test",
                      make_message("alice@sender.test", "info@gw.test", msgid="<full@s.test>",
                                   body="the body line\n"),
                      mail_opts=["RET=FULL"], rcpt_opts=["NOTIFY=FAILURE,DELAY"])
    [b] = w.sender_mx.wait_for(1, timeout=30)
    time.sleep(2)
    assert len(w.sender_mx.messages) == 1, w.sender_mx.messages
    _, blocks, third = report(b)
    assert third.get_content_type() == "message/rfc822"
    inner = third.get_payload()[0]
    assert inner["Message-ID"] == "<full@s.test>"
    assert "the body line" in inner.get_payload()
    w.gw.wait_activity(q_full, "bounced", timeout=10)
    log = w.gw.log_text()
    assert re.search(q_never + r": to=<info@gw\.test>: no bounce: .*NOTIFY=NEVER", log)
    assert re.search(q_delay + r": to=<info@gw\.test>: no bounce: .*NOTIFY=DELAY", log)
    assert re.search(q_null + r": bounce suppressed for null sender", log)


def test_smtputf8_original_gets_global_dsn(dns_server, sinks, gateway):
    w = bounce_world(dns_server, sinks, gateway)
    w.dest.set_mode("permfail")
    send_dsn(w.gw, "alice@sender.test", "info@gw.test",
             make_message("alice@sender.test", "info@gw.test", subject="gr\u00fc\u00dfe",
                          msgid="<utf8@s.test>"),
             mail_opts=["SMTPUTF8"])
    [b] = w.sender_mx.wait_for(1, timeout=30)
    _, blocks, third = report(b)
    msg = email.message_from_bytes(b.data)
    assert msg.get_payload()[1].get_content_type() == "message/global-delivery-status"
    assert third.get_content_type() == "message/global-headers"
    assert blocks[1]["Action"] == "failed"


def test_lifetime_expiry_dsn_4_4_7(dns_server, sinks, gateway):
    w = bounce_world(dns_server, sinks, gateway, retry_schedule="1s", max_queue_lifetime="3")
    w.dest.set_mode("tempfail")
    qid = send_dsn(w.gw, "alice@sender.test", "info@gw.test",
                   make_message("alice@sender.test", "info@gw.test", msgid="<exp@s.test>"))
    [b] = w.sender_mx.wait_for(1, timeout=20)
    _, blocks, _ = report(b)
    rc = blocks[1]
    assert rc["Action"] == "failed" and rc["Status"] == "4.4.7", rc.items()
    assert "451" in rc["Diagnostic-Code"], rc.items()
    w.gw.wait_activity(qid, "bounced", timeout=10)


def test_double_bounce_dropped(dns_server, sinks, gateway):
    w = bounce_world(dns_server, sinks, gateway)
    w.dest.set_mode("permfail")
    w.sender_mx.set_mode("permfail")
    qid = send_dsn(w.gw, "alice@sender.test", "info@gw.test",
                   make_message("alice@sender.test", "info@gw.test", msgid="<dbl@s.test>"))
    w.gw.wait_activity(qid, "bounced", timeout=20)
    wait_until(lambda: "double-bounce" in w.gw.log_text(), 20, what="double-bounce log line")
    line = [ln for ln in w.gw.log_text().splitlines() if "double-bounce" in ln][0]
    assert "alice@sender.test" in line and "550" in line, line
    # dropped: the spool drains, and nothing was sent anywhere
    wait_until(lambda: not any(w.gw.spool_files().values()), 15, what="spool empty")
    assert w.sender_mx.messages == [] and w.dest.messages == []
    assert len(w.sender_mx.rcpt_attempts) == 1, w.sender_mx.rcpt_attempts


def test_double_bounce_expired_dropped(dns_server, sinks, gateway):
    """A bounce that keeps failing temporarily is dropped at the end of its
    lifetime with the same log line: never bounced, never retried forever."""
    w = bounce_world(dns_server, sinks, gateway, retry_schedule="1s", max_queue_lifetime="3")
    w.dest.set_mode("permfail")
    w.sender_mx.set_mode("tempfail")
    qid = send_dsn(w.gw, "alice@sender.test", "info@gw.test",
                   make_message("alice@sender.test", "info@gw.test", msgid="<dbl2@s.test>"))
    w.gw.wait_activity(qid, "bounced", timeout=20)
    wait_until(lambda: "double-bounce" in w.gw.log_text(), 20, what="double-bounce log line")
    line = [ln for ln in w.gw.log_text().splitlines() if "double-bounce" in ln][0]
    assert "alice@sender.test" in line and "451" in line, line
    wait_until(lambda: not any(w.gw.spool_files().values()), 15, what="spool empty")
    n = len(w.sender_mx.rcpt_attempts)
    assert n >= 2, w.sender_mx.rcpt_attempts
    time.sleep(2)
    assert len(w.sender_mx.rcpt_attempts) == n


def test_delay_warning_once(dns_server, sinks, gateway):
    w = make_world(dns_server, sinks, gateway, {"router": {"retry_schedule": "1s"},
                                                "bouncer": {"delay_warning_time": "2"}})
    w.gw.forward("info@gw.test", "bob@dest.test")
    smtpd_ready(w.gw)
    w.sender_mx = sinks(SENDER_MX)
    w.dest.set_mode("tempfail")
    q1 = send_dsn(w.gw, "alice@sender.test", "info@gw.test",
                  make_message("alice@sender.test", "info@gw.test", msgid="<late@s.test>"))
    q2 = send_dsn(w.gw, "alice@sender.test", "info@gw.test",
                  make_message("alice@sender.test", "info@gw.test", msgid="<nodelay@s.test>"),
                  rcpt_opts=["NOTIFY=FAILURE"])
    [b] = w.sender_mx.wait_for(1, timeout=20)
    msg, blocks, third = report(b)
    assert msg["Subject"].startswith("Delayed Mail"), msg["Subject"]
    rc = blocks[1]
    assert rc["Action"] == "delayed" and rc["Status"] == "4.3.0", rc.items()
    assert "<late@s.test>" in third.get_payload()
    # one warning per message, none for NOTIFY=FAILURE; then it is delivered
    time.sleep(4)
    assert len(w.sender_mx.messages) == 1, w.sender_mx.messages
    w.dest.set_mode("accept")
    w.dest.wait_for(2, timeout=20)
    w.gw.wait_activity(q1, "forwarded")
    w.gw.wait_activity(q2, "forwarded")
    assert len(w.sender_mx.messages) == 1
    assert re.search(q1 + r": sender delay notification", w.gw.log_text())


UPSTREAM_DSN = """\
From: MAILER-DAEMON@inner.dest.test (Mail Delivery System)
To: {srs}
Subject: Undelivered Mail Returned to Sender
Message-ID: <upstream-bounce@dest.test>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="UPB"

--UPB
Content-Type: text/plain

The mail system could not deliver your message.

--UPB
Content-Type: message/delivery-status

Reporting-MTA: dns; inner.dest.test

Final-Recipient: rfc822; bob@inner.dest.test
Action: failed
Status: 5.2.2
Remote-MTA: dns; store.inner.dest.test
Diagnostic-Code: smtp; 552 5.2.2 <bob@inner.dest.test>: mailbox
    full

--UPB
Content-Type: text/rfc822-headers

{headers}
--UPB--
"""


def test_upstream_bounce_to_srs_flips_activity(dns_server, sinks, gateway):
    w = bounce_world(dns_server, sinks, gateway)
    gw = w.gw
    qid = send_dsn(gw, "alice@sender.test", "info@gw.test",
                   make_message("alice@sender.test", "info@gw.test", msgid="<up@s.test>"))
    [fwd] = w.dest.wait_for(1, timeout=20)
    gw.wait_activity(qid, "forwarded")
    srs = fwd.mail_from
    assert srs.endswith("@fwd.gateway.test"), srs
    # The delivered copy's headers (our Received line with the queue ID).
    hdrs = fwd.data.split(b"\r\n\r\n", 1)[0].decode()
    assert f"(mxferry)" in hdrs and qid in hdrs, hdrs
    dsn = UPSTREAM_DSN.format(srs=srs, headers=hdrs.replace("\r\n", "\n"))
    bq = gw.send("", srs, dsn.replace("\n", "\r\n").encode())
    # Relayed to alice, and the original's activity says bounced, with the
    # upstream's diagnostic.
    [got] = w.sender_mx.wait_for(1, timeout=20)
    assert got.rcpt_tos == ["alice@sender.test"] and got.mail_from == ""
    assert got.msg["Message-ID"] == "<upstream-bounce@dest.test>"
    rows = gw.wait_activity(qid, "bounced", timeout=15)
    assert "552 5.2.2 <bob@inner.dest.test>: mailbox full" in rows[-1]["reply"], rows
    assert rows[-1]["rcpt"] == "bob@inner.dest.test"
    assert rows[-1]["remote_host"] == "store.inner.dest.test"
    assert re.search(bq + r": returned bounce of " + qid, gw.log_text())

    # A forged report naming a queue ID alice never sent changes nothing.
    other = send_dsn(gw, "carol@sender.test", "info@gw.test",
                     make_message("carol@sender.test", "info@gw.test", msgid="<c@s.test>"))
    w.dest.wait_for(2, timeout=20)
    gw.wait_activity(other, "forwarded")
    forged = UPSTREAM_DSN.format(srs=srs, headers=hdrs.replace(qid, other).replace("\r\n", "\n"))
    fq = gw.send("", srs, forged.replace("\n", "\r\n").encode())
    w.sender_mx.wait_for(2, timeout=20)
    wait_until(lambda: re.search(fq + r": delivery report names " + other, gw.log_text()), 10,
               what="forged report refused")
    assert not [r for r in gw.activity(other) if r["status"] == "bounced"]

    # A success report (NOTIFY=SUCCESS passed on upstream) is relayed, not a bounce.
    ok = UPSTREAM_DSN.format(srs=srs, headers=hdrs.replace("\r\n", "\n")).replace(
        "Action: failed", "Action: delivered")
    sq = gw.send("", srs, ok.replace("\n", "\r\n").encode())
    w.sender_mx.wait_for(3, timeout=20)
    wait_until(lambda: re.search(sq + r": delivery report for " + qid + r" with action=delivered",
                                 gw.log_text()), 10, what="success report not counted")
    assert len([r for r in gw.activity(qid) if r["status"] == "bounced"]) == 1


def test_notify_success_relayed_when_peer_lacks_dsn(dns_server, sinks, gateway):
    """NOTIFY=SUCCESS (RFC 3461 4.1): a host that offers DSN takes the request
    on, so we send nothing; one without DSN (the aiosmtpd sink) cannot, so
    the sender gets an "Action: relayed" notice from us once delivered. Never
    for NOTIFY without SUCCESS, never to the null sender."""
    from test_delivery import RawServer, dsn_peer_talk
    w = bounce_world(dns_server, sinks, gateway)
    gw = w.gw
    q_ok = send_dsn(gw, "alice@sender.test", "info@gw.test",
                    make_message("alice@sender.test", "info@gw.test", msgid="<succ@s.test>"),
                    mail_opts=["ENVID=succ1"], rcpt_opts=["NOTIFY=SUCCESS,FAILURE"])
    [fwd] = w.dest.wait_for(1, timeout=20)
    [n] = w.sender_mx.wait_for(1, timeout=30)
    assert n.mail_from == "" and n.rcpt_tos == ["alice@sender.test"]
    msg, blocks, third = report(n)
    assert "Successful" in msg["Subject"], msg["Subject"]
    permsg, rc = blocks[0], blocks[1]
    assert permsg["Original-Envelope-Id"] == "succ1"
    assert rc["Action"] == "relayed", rc.items()
    assert rc["Status"].startswith("2."), rc.items()
    assert rc["Final-Recipient"] == "rfc822; bob@dest.test"
    assert rc["Original-Recipient"] == "rfc822; info@gw.test"
    assert rc["Remote-MTA"] == "dns; mx1.dest.test"
    assert third.get_content_type() == "text/rfc822-headers"
    assert "<succ@s.test>" in third.get_payload()
    gw.wait_activity(q_ok, "forwarded")
    wait_until(lambda: re.search(q_ok + r": sender success notification: ", gw.log_text()), 10,
               what="success notification logged")
    # The message left the queue once the notice was queued.
    wait_until(lambda: not gw.ctl_json("queue", "list")["messages"], 20, what="queue empty")

    # No notice: NOTIFY without SUCCESS, the null sender.
    q_f = send_dsn(gw, "alice@sender.test", "info@gw.test",
                   make_message("alice@sender.test", "info@gw.test", msgid="<nosucc@s.test>"),
                   rcpt_opts=["NOTIFY=FAILURE"])
    q_n = send_dsn(gw, "", "info@gw.test",
                   make_message("alice@sender.test", "info@gw.test", msgid="<nullsucc@s.test>"),
                   rcpt_opts=["NOTIFY=SUCCESS"])
    w.dest.wait_for(3, timeout=20)
    for q in (q_f, q_n):
        gw.wait_activity(q, "forwarded")

    # A host that offers DSN gets NOTIFY=SUCCESS and we send no notice.
    dns_server.zone("dsn.test", mx=[(10, "mx.dsn.test")], a={"mx.dsn.test": "127.0.0.95"})
    seen = []
    peer = RawServer("127.0.0.95", w.dest.port, dsn_peer_talk(seen))
    try:
        gw.forward("d@gw.test", "carl@dsn.test")
        q_d = send_dsn(gw, "alice@sender.test", "d@gw.test",
                       make_message("alice@sender.test", "d@gw.test", msgid="<dsnp@s.test>"),
                       rcpt_opts=["NOTIFY=SUCCESS"])
        gw.wait_activity(q_d, "forwarded")
        assert any("NOTIFY=SUCCESS" in s for s in seen), seen
        time.sleep(2)
        # Still the one notice from the first message.
        assert len(w.sender_mx.messages) == 1, w.sender_mx.messages
        assert not re.search(q_d + r": sender success notification", gw.log_text())
        assert not re.search(q_f + r": sender success notification", gw.log_text())
        assert not re.search(q_n + r": sender success notification", gw.log_text())
    finally:
        peer.stop()
