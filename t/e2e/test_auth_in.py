"""Issue 7, checks on incoming mail: SPF (libspf2), DKIM verification
(libopendkim, RSA and Ed25519), DMARC (RFC 9989 tree walk, alignment), the
"SPF or DKIM must pass" rule, one Authentication-Results header with our
authserv-id (forged ones removed), and the results in the activity log.

Every record is served by the test's nsd; every signature is made by dkimpy
(an independent implementation); the header the sink receives is parsed with
python3-authres."""
import base64
import json
import smtplib
import subprocess

import authres
import dkim
import nacl.signing
import pytest

from conftest import GW_HOST, QID_RE, make_message, make_world

# The client's address as smtpd sees it. Not a loopback address: libspf2
# gives 127.0.0.0/8 and ::1 a "pass" without looking at any record, so the
# tests put a documentation address on lo (run.sh's network namespace).
CLIENT_IP = "192.0.2.77"


@pytest.fixture(autouse=True)
def client_address():
    out = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                         text=True, check=True).stdout
    if f"{CLIENT_IP}/" not in out:
        subprocess.run(["ip", "addr", "add", f"{CLIENT_IP}/32", "dev", "lo"], check=True)


def rsa_key(tmp_path):
    key = tmp_path / "rsa.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return key.read_bytes(), base64.b64encode(der).decode()


def txt_split(text, n=200):
    """A TXT value longer than 255 octets as several character-strings (the
    zone writer puts the whole value in one pair of quotes)."""
    return '" "'.join(text[i:i + n] for i in range(0, len(text), n))


class Keys:
    pass


@pytest.fixture
def auth_world(dns_server, sinks, gateway, tmp_path):
    k = Keys()
    k.rsa_priv, rsa_pub = rsa_key(tmp_path)
    sk = nacl.signing.SigningKey.generate()
    k.ed_priv = base64.b64encode(bytes(sk))
    ed_pub = base64.b64encode(bytes(sk.verify_key)).decode()
    rsa_txt = txt_split(f"v=DKIM1; k=rsa; p={rsa_pub}")
    ed_txt = f"v=DKIM1; k=ed25519; p={ed_pub}"
    z = dns_server.zone
    # The DMARC tree walk asks up to the top-level domain: _dmarc.test must
    # be answered (NXDOMAIN), not refused as a zone nsd does not serve.
    z("test")
    z("spfpass.test", txt={"spfpass.test": f"v=spf1 ip4:{CLIENT_IP} -all"})
    z("spffail.test", txt={"spffail.test": "v=spf1 -all"})
    z("spfsoft.test", txt={"spfsoft.test": "v=spf1 ~all"})
    z("spfnone.test", a={"spfnone.test": "192.0.2.1"})
    z("spfperm.test", txt={"spfperm.test": "v=spf1 foo:bar -all"})
    z("signed.test", txt={"s1._domainkey.signed.test": rsa_txt,
                          "e1._domainkey.signed.test": ed_txt})
    # DMARC: reject and quarantine policies, none of them with SPF for the
    # client; org.test for relaxed alignment (sub.org.test has no record of
    # its own: the tree walk finds org.test's); strict.test asks adkim=s.
    z("rejecting.test", txt={"_dmarc.rejecting.test": "v=DMARC1; p=reject",
                             "s1._domainkey.rejecting.test": rsa_txt})
    z("quar.test", txt={"_dmarc.quar.test": "v=DMARC1; p=quarantine"})
    z("org.test", txt={"_dmarc.org.test": "v=DMARC1; p=reject",
                       "s1._domainkey.org.test": rsa_txt})
    z("strict.test", txt={"_dmarc.strict.test": "v=DMARC1; p=reject; adkim=s",
                          "s1._domainkey.strict.test": rsa_txt})
    w = make_world(dns_server, sinks, gateway, {"auth": {"require_spf_or_dkim": "yes"}})
    w.gw.forward("info@gw.test", "bob@dest.test")
    w.keys = k
    return w


def sign(data, domain, keys, selector="s1", algo="rsa"):
    if algo == "rsa":
        sig = dkim.sign(data, selector.encode(), domain.encode(), keys.rsa_priv,
                        include_headers=[b"from", b"to", b"subject", b"message-id"])
    else:
        sig = dkim.sign(data, selector.encode(), domain.encode(), keys.ed_priv,
                        signature_algorithm=b"ed25519-sha256",
                        include_headers=[b"from", b"to", b"subject", b"message-id"])
    return sig + data


def try_send(gw, mail_from, data):
    """(code, text) of the end of DATA (or of the first refusal)."""
    s = smtplib.SMTP("127.0.0.1", gw.smtp_port, local_hostname="client.sender.test",
                     timeout=30, source_address=(CLIENT_IP, 0))
    try:
        s.ehlo()
        code, resp = s.mail(mail_from)
        if code != 250:
            return code, resp
        code, resp = s.rcpt("info@gw.test")
        if code != 250:
            return code, resp
        try:
            code, resp = s.data(data)
        except smtplib.SMTPDataError as e:
            code, resp = e.smtp_code, e.smtp_error
        return code, resp
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            s.close()


def delivered(w, mail_from, data):
    code, resp = try_send(w.gw, mail_from, data)
    assert code == 250, (code, resp)
    qid = QID_RE.search(resp).group(1).decode()
    msgid = [ln for ln in data.split(b"\r\n") if ln.lower().startswith(b"message-id:")][0]
    msgid = msgid.split(b":", 1)[1].strip().decode()
    for m in w.dest.wait_for(1, timeout=20):
        pass
    got = [m for m in w.dest.messages if m.msg.get("Message-ID") == msgid]
    assert got, "message not delivered"
    return qid, got[0]


def our_ar(m):
    """The A-R headers with our authserv-id, parsed by python3-authres."""
    ours = []
    for v in m.msg.get_all("Authentication-Results", []):
        v = " ".join(str(v).split())
        if v.split(";", 1)[0].strip().lower() == GW_HOST:
            ours.append(authres.AuthenticationResultsHeader.parse(
                "Authentication-Results: " + v))
    return ours


def results(ar):
    return {(r.method, r.result) for r in ar.results}


def props(ar, method):
    for r in ar.results:
        if r.method == method:
            return {f"{p.type}.{p.name}": p.value for p in r.properties}
    return {}


@pytest.mark.parametrize("domain,expect", [
    ("spfpass.test", "pass"), ("spffail.test", "fail"), ("spfsoft.test", "softfail"),
    ("spfnone.test", "none"), ("spfperm.test", "permerror")])
def test_spf_results(auth_world, domain, expect):
    w = auth_world
    sender = f"alice@{domain}"
    data = make_message(sender, "info@gw.test", subject="spf " + expect)
    if expect != "pass":
        # The "SPF or DKIM" rule would refuse it: a DKIM pass lets it through.
        data = sign(data, "signed.test", w.keys)
    qid, m = delivered(w, sender, data)
    [ar] = our_ar(m)
    assert ("spf", expect) in results(ar), ar
    assert props(ar, "spf")["smtp.mailfrom"] == sender
    row = w.gw.wait_activity(qid, "forwarded")[0]
    assert row["spf"] == expect
    assert row["auth"].startswith(GW_HOST + ";")


def test_dkim_rsa_ed25519_two_signatures_and_tampering(auth_world):
    w = auth_world
    data = make_message("alice@spfnone.test", "info@gw.test", subject="two sigs")
    signed = sign(sign(data, "signed.test", w.keys, "e1", "ed25519"), "signed.test", w.keys)
    qid, m = delivered(w, "alice@spfnone.test", signed)
    [ar] = our_ar(m)
    dk = [r for r in ar.results if r.method == "dkim"]
    assert sorted((r.result, {p.name: p.value for p in r.properties}["s"]) for r in dk) == \
        [("pass", "e1"), ("pass", "s1")], ar
    row = w.gw.wait_activity(qid, "forwarded")[0]
    assert row["dkim"] == "pass,pass"

    # The body changed after signing: both fail; SPF is none, so the
    # "SPF or DKIM" rule refuses the message.
    tampered = signed.replace(b"Hello.", b"Hello!")
    code, resp = try_send(w.gw, "alice@spfnone.test", tampered)
    assert code == 550 and resp.startswith(b"5.7.26"), (code, resp)


def test_dkim_fail_recorded_when_spf_passes(auth_world):
    w = auth_world
    data = make_message("alice@spfpass.test", "info@gw.test", subject="bad sig")
    signed = sign(data, "signed.test", w.keys).replace(b"bad sig", b"bad sig!")
    qid, m = delivered(w, "alice@spfpass.test", signed)
    [ar] = our_ar(m)
    assert {("spf", "pass"), ("dkim", "fail")} <= results(ar), ar
    assert props(ar, "dkim")["header.d"] == "signed.test"


def test_neither_spf_nor_dkim_refused(auth_world):
    w = auth_world
    data = make_message("alice@spfnone.test", "info@gw.test", subject="unauthenticated")
    code, resp = try_send(w.gw, "alice@spfnone.test", data)
    assert code == 550 and resp.startswith(b"5.7.26"), (code, resp)
    assert not w.dest.messages


def test_dmarc_reject_refused_nothing_kept(auth_world):
    w = auth_world
    # SPF passes for spfpass.test, but it is not aligned with the From domain,
    # and the DKIM signature is by another domain: DMARC fails, p=reject.
    data = make_message("boss@rejecting.test", "info@gw.test", subject="phish")
    data = sign(data, "signed.test", w.keys)
    code, resp = try_send(w.gw, "alice@spfpass.test", data)
    assert code == 550 and resp.startswith(b"5.7.1"), (code, resp)
    assert "DMARC" in resp.decode()
    files = w.gw.spool_files()
    assert not any(files.values()), files
    assert not w.dest.messages
    # The same with an aligned signature passes.
    data = make_message("boss@rejecting.test", "info@gw.test", subject="real")
    qid, m = delivered(w, "alice@spfpass.test", sign(data, "rejecting.test", w.keys))
    [ar] = our_ar(m)
    assert ("dmarc", "pass") in results(ar)
    assert props(ar, "dmarc")["header.from"] == "rejecting.test"


def test_dmarc_mode_per_domain(auth_world):
    """`domain set D dmarc monitor|enforce|default` (issue 7): a p=reject
    failure is refused only when every recipient's domain enforces; one
    answer after DATA covers them all, so a monitoring domain lets it in."""
    w = auth_world
    gw = w.gw
    gw.forward("info@enf.test", "carol@dest.test")
    gw.ctl_ok("domain", "set", "gw.test", "dmarc", "monitor")
    rc, _, err = gw.ctl("domain", "set", "gw.test", "dmarc", "sometimes")
    assert rc == 1 and "enforce, monitor or default" in err, err

    def phish(rcpts, subject):
        data = sign(make_message("boss@rejecting.test", rcpts[0], subject=subject),
                    "signed.test", w.keys)
        s = smtplib.SMTP("127.0.0.1", gw.smtp_port, local_hostname="client.sender.test",
                         timeout=30, source_address=(CLIENT_IP, 0))
        try:
            s.ehlo()
            assert s.mail("alice@spfpass.test")[0] == 250
            for r in rcpts:
                assert s.rcpt(r)[0] == 250
            try:
                return s.data(data)
            except smtplib.SMTPDataError as e:
                return e.smtp_code, e.smtp_error
        finally:
            s.close()

    # The enforcing domain alone: refused.
    code, resp = phish(["info@enf.test"], "to enf")
    assert code == 550 and b"DMARC" in resp, (code, resp)
    # The monitoring domain alone, and both together: accepted, recorded.
    for rcpts in (["info@gw.test"], ["info@gw.test", "info@enf.test"]):
        code, resp = phish(rcpts, "monitored " + str(len(rcpts)))
        assert code == 250, (code, resp)
        qid = QID_RE.search(resp).group(1).decode()
        rows = w.gw.wait_activity(qid, "forwarded")
        assert rows[0]["dmarc"] == "fail", rows
    # Back to the default ([auth] dmarc = enforce): refused again.
    gw.ctl_ok("domain", "set", "gw.test", "dmarc", "default")
    code, resp = phish(["info@gw.test"], "default again")
    assert code == 550, (code, resp)
    audit = gw.ctl_json("audit")["entries"]
    assert [e["after"]["dmarc"] for e in audit if e["action"] == "domain.set"] == ["monitor", ""]


def test_dmarc_quarantine_forwarded_with_fail(auth_world):
    w = auth_world
    data = make_message("news@quar.test", "info@gw.test", subject="quarantine me")
    qid, m = delivered(w, "alice@spfpass.test", data)
    [ar] = our_ar(m)
    assert ("dmarc", "fail") in results(ar), ar
    row = w.gw.wait_activity(qid, "forwarded")[0]
    assert row["dmarc"] == "fail"


def test_dmarc_alignment_relaxed_vs_strict(auth_world):
    w = auth_world
    # Relaxed: From sub.org.test, d=org.test; same Organizational Domain.
    data = make_message("a@sub.org.test", "info@gw.test", subject="relaxed")
    qid, m = delivered(w, "alice@spfnone.test", sign(data, "org.test", w.keys))
    [ar] = our_ar(m)
    assert ("dmarc", "pass") in results(ar), ar
    # Strict (adkim=s): From sub.strict.test, d=strict.test is not aligned.
    data = make_message("a@sub.strict.test", "info@gw.test", subject="strict")
    code, resp = try_send(w.gw, "alice@spfnone.test", sign(data, "strict.test", w.keys))
    assert code == 550 and resp.startswith(b"5.7.1"), (code, resp)


def test_forged_authentication_results_removed(auth_world):
    w = auth_world
    forged = [f"Authentication-Results: {GW_HOST}; spf=pass smtp.mailfrom=x@spfpass.test;",
              " dkim=pass header.d=paypal.example",
              f"Authentication-Results: (comment) {GW_HOST.upper()}; dmarc=pass",
              "Authentication-Results: other.example; spf=fail smtp.mailfrom=x@y.example"]
    data = make_message("alice@spfpass.test", "info@gw.test", subject="forged",
                        extra_headers=forged)
    qid, m = delivered(w, "alice@spfpass.test", data)
    ours = our_ar(m)
    assert len(ours) == 1, m.msg.get_all("Authentication-Results")
    assert ("spf", "pass") in results(ours[0]) and ("arc", "none") in results(ours[0])
    # dkim=pass header.d=paypal.example came from the forgery only.
    assert props(ours[0], "dkim") == {}
    foreign = [v for v in m.header_all("Authentication-Results")
               if v.startswith("other.example;")]
    assert foreign == ["other.example; spf=fail smtp.mailfrom=x@y.example"]
    # Only the forged fields are gone: the rest of the message is intact.
    rest = data.replace(("\r\n".join(forged[:3]) + "\r\n").encode(), b"", 1)
    assert rest != data and m.data.endswith(rest), m.data[-600:]


def test_ctl_log_json_has_results(auth_world):
    w = auth_world
    data = make_message("alice@spfpass.test", "info@gw.test", subject="log")
    qid, _ = delivered(w, "alice@spfpass.test", data)
    w.gw.wait_activity(qid, "forwarded")
    out = json.loads(w.gw.ctl_ok("log", "--id", qid, "--json"))
    [e] = out["entries"]
    assert e["spf"] == "pass" and e["dkim"] == "none" and e["arc"] == "none"
    assert e["dmarc"] == "none"
    assert "spf=pass" in e["auth"]


def test_null_sender_uses_helo(auth_world):
    w = auth_world
    # HELO client.sender.test has no SPF record; DKIM passes.
    data = sign(make_message("mailer-daemon@signed.test", "info@gw.test", subject="dsn"),
                "signed.test", w.keys)
    qid, m = delivered(w, "", data)
    [ar] = our_ar(m)
    assert props(ar, "spf").get("smtp.helo") == "client.sender.test", ar


# ---- ARC chain validation (RFC 8617 §5.2) of incoming mail

def arc_sealed(keys, subject, priv=None):
    """A message sealed by an earlier forwarder with dkimpy's arc_sign (key
    s1._domainkey.signed.test unless priv is another key)."""
    data = make_message("alice@spfpass.test", "info@gw.test", subject=subject)
    data = b"Authentication-Results: signed.test; spf=pass smtp.mailfrom=spfpass.test\r\n" + data
    arc = dkim.arc_sign(data, b"s1", b"signed.test", priv or keys.rsa_priv, b"signed.test",
                        timestamp=1767225600)
    assert len(arc) == 3, arc
    return arc, data


def arc_result(m):
    [ar] = our_ar(m)
    return [r for r in ar.results if r.method == "arc"]


def test_arc_chain_pass(auth_world):
    w = auth_world
    arc, data = arc_sealed(w.keys, "arc pass")
    qid, m = delivered(w, "alice@spfpass.test", b"".join(arc) + data)
    [r] = arc_result(m)
    assert r.result == "pass", r
    row = w.gw.wait_activity(qid, "forwarded")[0]
    assert row["arc"] == "pass"


def test_arc_body_changed_after_sealing_fails(auth_world):
    w = auth_world
    arc, data = arc_sealed(w.keys, "arc tampered")
    qid, m = delivered(w, "alice@spfpass.test",
                       b"".join(arc) + data.replace(b"Hello.", b"Hello, changed."))
    [r] = arc_result(m)
    assert r.result == "fail", r
    assert any("arc=fail (AMS body hash mismatch)" in v
               for v in m.header_all("Authentication-Results"))
    row = w.gw.wait_activity(qid, "forwarded")[0]
    assert row["arc"] == "fail"


def test_arc_forged_seal_fails(auth_world, dns_server, tmp_path):
    """The AMS verifies, the ARC-Seal was made with a key other than the one
    the zone publishes for its d= and s=: fail."""
    from test_dkim_sign import dnsfunc
    w = auth_world
    (tmp_path / "other").mkdir()
    other, _ = rsa_key(tmp_path / "other")
    good, data = arc_sealed(w.keys, "arc forged seal")
    forged, _ = arc_sealed(w.keys, "arc forged seal", priv=other)
    seal = [h for h in forged if h.startswith(b"ARC-Seal:")]
    rest = [h for h in good if not h.startswith(b"ARC-Seal:")]
    assert len(seal) == 1 and len(rest) == 2
    qid, m = delivered(w, "alice@spfpass.test", seal[0] + b"".join(rest) + data)
    [r] = arc_result(m)
    assert r.result == "fail", r
    assert any("seal signature does not verify" in v
               for v in m.header_all("Authentication-Results")), \
        m.header_all("Authentication-Results")
    # The premise, checked by dkimpy with the zone's keys: the genuine set
    # passes, the one with the forged seal does not.
    check = dnsfunc(dns_server.port)
    assert dkim.arc_verify(b"".join(good) + data, dnsfunc=check)[0] == dkim.CV_Pass
    assert dkim.arc_verify(seal[0] + b"".join(rest) + data, dnsfunc=check)[0] == dkim.CV_Fail


def test_arc_no_chain_none(auth_world):
    w = auth_world
    data = make_message("alice@spfpass.test", "info@gw.test", subject="no arc")
    qid, m = delivered(w, "alice@spfpass.test", data)
    [r] = arc_result(m)
    assert r.result == "none", r
    row = w.gw.wait_activity(qid, "forwarded")[0]
    assert row["arc"] == "none"
