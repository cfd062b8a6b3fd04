"""The webhook action (issue 13): a rule POSTs each message as signed JSON to a
URL; deliverd builds the JSON and POSTs with libcurl (the host resolved through
our resolver, the test's nsd); 2xx is delivered, anything else is retried."""
import base64
import hashlib
import hmac
import http.server
import json
import os
import smtplib
import threading
import time

import pytest

from conftest import make_message, make_world, wait_until

HOOK_ADDR = "127.0.0.9"
HOOK_HOST = "hook.hooks.test"


class Hook:
    """An HTTP server in a thread: records every POST; answers with the
    status in self.status, or sleeps self.delay seconds first."""

    def __init__(self):
        self.posts = []
        self.status = 200
        self.delay = 0
        hook = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                hook.posts.append((dict(self.headers), body, self.path))
                if hook.delay:
                    time.sleep(hook.delay)
                try:
                    self.send_response(hook.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer((HOOK_ADDR, 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def hooked(dns_server, sinks, gateway):
    dns_server.zone("hooks.test", a={HOOK_HOST: HOOK_ADDR})
    w = make_world(dns_server, sinks, gateway, {"deliverd": {"webhook_timeout": "2"}})
    w.hook = Hook()
    gw = w.gw
    gw.ctl_ok("domain", "add", "gw.test")
    wait_until(lambda: "connected to router" in "".join(
        ln for ln in gw.log_text().splitlines() if "/smtpd[" in ln), 15,
        what="smtpd to connect to the router")
    yield w
    w.hook.stop()


def url(w, path="/in"):
    return f"http://{HOOK_HOST}:{w.hook.port}{path}"


def secret(gw):
    with open(os.path.join(gw.data, "webhook.secret"), "rb") as f:
        return f.read().split(b"\n")[0]


def verify(gw, headers, body):
    sig = headers["X-Mxferry-Signature"]
    parts = dict(p.split("=", 1) for p in sig.split(","))
    t = parts["t"]
    assert abs(int(t) - time.time()) < 120
    inner = hashlib.sha256(t.encode() + b"." + body).digest()
    want = hmac.new(secret(gw), inner, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, parts["v1"])


MIME = (
    "From: Alice <alice@sender.test>\r\n"
    "To: <hook@gw.test>\r\n"
    "Subject: =?utf-8?q?caf=C3=A9?= report\r\n"
    "Message-ID: <wh1@sender.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"B1\"\r\n"
    "\r\n"
    "--B1\r\n"
    "Content-Type: multipart/alternative; boundary=\"B2\"\r\n"
    "\r\n"
    "--B2\r\n"
    "Content-Type: text/plain; charset=iso-8859-1\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Caf=E9 au lait.\r\n"
    "--B2\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "\r\n"
    "<p>Caf\u00e9</p>\r\n"
    "--B2--\r\n"
    "--B1\r\n"
    "Content-Type: application/pdf\r\n"
    "Content-Disposition: attachment; filename=\"r.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    + base64.encodebytes(b"%PDF-" + bytes(range(256)) * 4).decode().replace("\n", "\r\n") +
    "--B1--\r\n").encode("utf-8")


def test_webhook_json_and_signature(hooked):
    w = hooked
    gw = w.gw
    gw.ctl_ok("rule", "add", "gw.test", "--to", "hook@gw.test", "--webhook", url(w))
    r = [x for x in gw.ctl_json("rule", "list")["rules"] if x.get("to") == "hook@gw.test"][0]
    shown = gw.ctl_json("rule", "show", r["tag"])["rules"][0]
    assert shown["action"] == "webhook" and shown["argument"] == url(w), shown
    assert f"url:          {url(w)}" in gw.ctl_ok("rule", "show", r["tag"])

    qid = gw.send_retrying("alice@sender.test", "hook@gw.test", MIME)
    wait_until(lambda: w.hook.posts, 20, what="a POST at the webhook")
    headers, body, path = w.hook.posts[0]
    assert path == "/in"
    assert headers["Content-Type"] == "application/json"
    assert verify(gw, headers, body), "signature does not verify"
    # A byte changed: the signature no longer verifies.
    assert not verify(gw, headers, body[:-2] + b" }")
    j = json.loads(body)
    assert j["queue_id"] == qid
    assert j["envelope"] == {"from": "alice@sender.test", "to": "hook@gw.test"}
    hdr = {h["name"].lower(): h["value"] for h in j["headers"]}
    assert hdr["subject"] == "caf\u00e9 report"
    assert hdr["message-id"] == "<wh1@sender.test>"
    assert "received" in hdr  # the router's trace header is part of the message
    assert j["text"].strip() == "Caf\u00e9 au lait."
    assert j["html"].strip() == "<p>Caf\u00e9</p>"
    assert not j["text_truncated"] and not j["html_truncated"]
    assert j["attachments"] == [{"filename": "r.pdf", "content_type": "application/pdf",
                                 "size": 5 + 1024}]
    raw = base64.b64decode(j["raw"])
    assert not j["raw_truncated"] and j["raw_size"] == len(raw)
    assert raw.endswith(MIME) and raw.startswith(b"Received: ")
    # Our own checks (smtpd's Authentication-Results), not the sender's claims.
    assert j["auth"]["spf"] in ("none", "neutral", "fail", "softfail", "pass", "temperror",
                                "permerror"), j["auth"]
    assert j["auth"]["dkim"] == "none" and j["auth"]["authentication_results"], j["auth"]
    assert j["auth"]["dmarc"] in ("none", "fail", "temperror", "permerror"), j["auth"]

    rows = gw.wait_activity(qid, "forwarded")
    assert rows[0]["dest"] == url(w), rows
    assert "HTTP/1.0 200" in rows[0]["reply"] or "HTTP/1.1 200" in rows[0]["reply"], rows
    assert len(w.hook.posts) == 1


def test_webhook_500_retried_then_delivered(hooked):
    w = hooked
    gw = w.gw
    w.hook.status = 500
    gw.ctl_ok("catchall", "set", "gw.test", "--webhook", url(w, "/any?x=1"))
    qid = gw.send_retrying("bob@sender.test", "whoever@gw.test",
                           make_message("bob@sender.test", "whoever@gw.test"))
    rows = gw.wait_activity(qid, "deferred")
    assert "500" in rows[0]["reply"] and rows[0]["dest"] == url(w, "/any?x=1"), rows
    w.hook.status = 200
    rows = gw.wait_activity(qid, "forwarded", timeout=30)
    assert len(w.hook.posts) >= 2
    assert all(p[2] == "/any?x=1" for p in w.hook.posts)
    # Every attempt carried a valid signature over what it sent.
    assert all(verify(gw, h, b) for h, b, _ in w.hook.posts)
    assert json.loads(w.hook.posts[-1][1])["envelope"]["to"] == "whoever@gw.test"


def test_webhook_timeout_tempfails(hooked):
    w = hooked
    gw = w.gw
    w.hook.delay = 5  # over webhook_timeout = 2
    gw.ctl_ok("rule", "add", "gw.test", "--to", "slow@gw.test", "--webhook", url(w))
    qid = gw.send_retrying("alice@sender.test", "slow@gw.test",
                           make_message("alice@sender.test", "slow@gw.test"))
    rows = gw.wait_activity(qid, "deferred")
    assert "timed out" in rows[0]["reply"] and rows[0]["reply"].startswith("451"), rows
    assert not [r for r in gw.activity(qid) if r["status"] == "forwarded"]


def test_webhook_unreachable_and_unknown_host_tempfail(hooked):
    w = hooked
    gw = w.gw
    gw.ctl_ok("rule", "add", "gw.test", "--to", "closed@gw.test", "--webhook",
              f"http://{HOOK_ADDR}:1/x")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "nohost@gw.test", "--webhook",
              "https://missing.hooks.test/x")
    q1 = gw.send_retrying("alice@sender.test", "closed@gw.test",
                          make_message("alice@sender.test", "closed@gw.test"))
    q2 = gw.send_retrying("alice@sender.test", "nohost@gw.test",
                          make_message("alice@sender.test", "nohost@gw.test"))
    r1 = gw.wait_activity(q1, "deferred")
    r2 = gw.wait_activity(q2, "deferred")
    assert r1[0]["reply"].startswith("451 4.4.1"), r1
    assert r2[0]["reply"].startswith("451 4.4.3"), r2


@pytest.mark.parametrize("bad", [
    "ftp://hook.hooks.test/x", "http://", "http:///path", "hook.hooks.test/x",
    "http://hook.hooks.test/a b", "http://hook.hooks.test/\x01", "http://h/" + "a" * 1000,
    "file:///etc/passwd", ""])
def test_webhook_bad_url_refused(hooked, bad):
    gw = hooked.gw
    rc, out, err = gw.ctl("rule", "add", "gw.test", "--to", "bad@gw.test", "--webhook", bad)
    assert rc != 0 and "webhook" in (out + err), (rc, out, err)
    rc, out, err = gw.ctl("catchall", "set", "gw.test", "--webhook", bad)
    assert rc != 0, (rc, out, err)
    code = 0
    s = gw.smtp()
    try:
        s.mail("alice@sender.test")
        code, _ = s.rcpt("bad@gw.test")
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            s.close()
    assert code == 550


def test_webhook_rule_edit(hooked):
    w = hooked
    gw = w.gw
    tag = gw.ctl_ok("rule", "add", "gw.test", "--to", "e@gw.test", "--drop").strip()
    gw.ctl_ok("rule", "edit", tag, "--webhook", url(w, "/edited"))
    assert gw.ctl_json("rule", "show", tag)["rules"][0]["action"] == "webhook"
    qid = gw.send_retrying("alice@sender.test", "e@gw.test",
                           make_message("alice@sender.test", "e@gw.test"))
    gw.wait_activity(qid, "forwarded")
    assert w.hook.posts[-1][2] == "/edited"
