"""Outgoing DKIM and ARC signatures (issue 7) and `mxferryctl domain dns`
(issue 8), checked by verifiers mxferry did not write: dkimpy (python3-dkim)
on the message exactly as the sink received it, with the public keys served
by the test's nsd (looked up with dnspython), and opendkim-testmsg."""
import base64
import json
import os
import socket
import subprocess
import threading

import dkim
import dns.message
import dns.query
import dns.rdatatype
import pytest

from conftest import GW_HOST, SRS_DOMAIN, make_message, make_world, wait_until
from test_delivery import ExtSink

SENDER = "alice@sender.test"


def dnsfunc(port):
    """dkimpy's TXT lookup, answered by the test's nsd."""
    def get_txt(name, timeout=5):
        q = dns.message.make_query(name.decode() if isinstance(name, bytes) else name, "TXT")
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rd in rrset:
                    return b"".join(rd.strings)
        return None
    return get_txt


def publish(w, domain, extra_txt=None):
    """Serves domain's records as `mxferryctl domain dns --json` prints them."""
    doc = json.loads(w.gw.ctl_ok("--json", "domain", "dns", domain))
    txt = dict(extra_txt or {})
    for rec in doc["records"]:
        if rec["type"] == "TXT" and "_domainkey" in rec["name"]:
            # Each 255-byte string quoted apart, as in a zone file.
            txt[rec["name"]] = '" "'.join(rec["strings"])
    w.dns.zone(domain, txt=txt)
    return doc


def keygen(w, domain, selector, alg):
    out = json.loads(w.gw.ctl_ok("--json", "dkim", "keygen", domain, "--selector", selector,
                                 "--algorithm", alg))
    assert out["selector"] == selector and out["algorithm"] == alg
    return out


def wait_keys(w, n):
    wait_until(lambda: f"dkim: {n} signing key(s) loaded" in w.gw.log_text(), 10,
               what=f"the router to load {n} key(s)")


def dkim_sigs(data):
    return [ln for ln in data.split(b"\r\n") if ln.lower().startswith(b"dkim-signature:")]


def verify_all(data, port):
    """Every DKIM-Signature verifies; returns [(d=, a=)]."""
    d = dkim.DKIM(data)
    n = len(dkim_sigs(data))
    assert n > 0, data[:2000]
    got = []
    for i in range(n):
        assert d.verify(idx=i, dnsfunc=dnsfunc(port)), (i, data[:3000])
        sig = d.signature_fields
        got.append((sig[b"d"].decode(), sig[b"a"].decode()))
    return got


def world(dns_server, sinks, gateway, keys, extra=None):
    w = make_world(dns_server, sinks, gateway, extra)
    for alg, sel in keys:
        keygen(w, SRS_DOMAIN, sel, alg)
    publish(w, SRS_DOMAIN)
    wait_keys(w, len(keys))
    w.gw.forward("info@gw.test", "bob@dest.test")
    return w


def test_rsa_signature_verifies(dns_server, sinks, gateway):
    w = world(dns_server, sinks, gateway, [("rsa", "r1")])
    w.gw.send_retrying(SENDER, "info@gw.test",
                       make_message(SENDER, "info@gw.test", subject="signed",
                                    body="Line one.  \n\nTrailing blanks\n\n\n"))
    [m] = w.dest.wait_for(1)
    assert len(dkim_sigs(m.data)) == 1
    assert verify_all(m.data, dns_server.port) == [(SRS_DOMAIN, "rsa-sha256")]
    sig = dkim.DKIM(m.data)
    sig.verify(dnsfunc=dnsfunc(dns_server.port))
    h = [x.strip() for x in sig.signature_fields[b"h"].lower().split(b":")]
    # Oversigned From; the headers present signed; c=relaxed/relaxed.
    assert h.count(b"from") == 2
    for name in (b"to", b"subject", b"date", b"message-id", b"mime-version",
                 b"content-type", b"content-transfer-encoding"):
        assert name in h, h
    assert sig.signature_fields[b"c"] == b"relaxed/relaxed"
    # A changed signed header no longer verifies (the verifier can fail).
    bad = m.data.replace(b"Subject: signed", b"Subject: signeD", 1)
    assert not dkim.verify(bad, dnsfunc=dnsfunc(dns_server.port))


def test_concurrent_rsa_signatures_match_their_messages(dns_server, sinks, gateway):
    """Issue 14: the router's RSA operations run on signing threads and come
    back in any order. Many messages signed at once by deliverd's worker
    threads (RSA and Ed25519 per message, each a separate request) each
    carry signatures that verify over their own content: no reply went to
    the wrong request or connection."""
    w = world(dns_server, sinks, gateway, [("rsa", "r1"), ("ed25519", "e1")])
    n = 24
    errors = []

    def send(i):
        try:
            w.gw.send_retrying(SENDER, "info@gw.test",
                               make_message(SENDER, "info@gw.test", subject=f"burst {i}",
                                            body=f"message number {i}\n" * (i + 1)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    msgs = w.dest.wait_for(n, timeout=60)
    seen = set()
    for m in msgs:
        got = verify_all(m.data, dns_server.port)
        assert sorted(got) == [(SRS_DOMAIN, "ed25519-sha256"), (SRS_DOMAIN, "rsa-sha256")], got
        seen.add(m.data.split(b"Subject: burst ", 1)[1].split(b"\r\n", 1)[0])
    assert len(seen) == n
    assert "signing thread" in w.gw.log_text()


def test_ed25519_and_rsa_side_by_side(dns_server, sinks, gateway):
    w = world(dns_server, sinks, gateway, [("rsa", "r1"), ("ed25519", "e1")])
    # A receiving-domain key as well: gw.test signs the mail it receives.
    keygen(w, "gw.test", "g1", "ed25519")
    publish(w, "gw.test")
    wait_keys(w, 3)
    w.gw.send_retrying(SENDER, "info@gw.test", make_message(SENDER, "info@gw.test"))
    [m] = w.dest.wait_for(1)
    got = sorted(verify_all(m.data, dns_server.port))
    assert got == sorted([(SRS_DOMAIN, "rsa-sha256"), (SRS_DOMAIN, "ed25519-sha256"),
                          ("gw.test", "ed25519-sha256")]), got


def test_seven_bit_converted_message_verifies(dns_server, sinks, gateway, sink_port):
    w = world(dns_server, sinks, gateway, [("rsa", "r1"), ("ed25519", "e1")])
    dns_server.zone("seven.test", mx=[(10, "mx.seven.test")], a={"mx.seven.test": "127.0.0.61"})
    seven = ExtSink("127.0.0.61", sink_port, drop=["8BITMIME"]).start()
    try:
        w.gw.forward("s@gw.test", "bob@seven.test")
        w.gw.send_retrying(SENDER, "s@gw.test",
                           make_message(SENDER, "s@gw.test", subject="Grüße",
                                        body="Grüße aus München.\nStraße\n"))
        [m] = seven.wait_for(1)
    finally:
        seven.stop()
    assert all(c < 0x80 for c in m.data), "not converted"
    assert not any(o.upper().startswith("BODY=8BITMIME") for o in m.mail_options)
    assert len(verify_all(m.data, dns_server.port)) == 2
    assert dkim.arc_verify(m.data, dnsfunc=dnsfunc(dns_server.port))[0] == dkim.CV_Pass


def test_dsn_from_bouncer_is_signed(dns_server, sinks, gateway):
    w = world(dns_server, sinks, gateway, [("rsa", "r1")])
    sender_mx = sinks("127.0.0.3")
    w.dest.set_mode("permfail")
    w.gw.send_retrying(SENDER, "info@gw.test", make_message(SENDER, "info@gw.test"))
    [b] = sender_mx.wait_for(1, timeout=30)
    assert b.mail_from == ""
    assert b"multipart/report" in b.data
    assert verify_all(b.data, dns_server.port) == [(SRS_DOMAIN, "rsa-sha256")]
    # Our own DSN is not forwarded mail: no ARC set on it.
    assert b"ARC-Seal:" not in b.data


def test_arc_one_hop(dns_server, sinks, gateway):
    w = world(dns_server, sinks, gateway, [("rsa", "r1")])
    w.gw.send_retrying(SENDER, "info@gw.test", make_message(SENDER, "info@gw.test"))
    [m] = w.dest.wait_for(1)
    cv, results, why = dkim.arc_verify(m.data, dnsfunc=dnsfunc(dns_server.port))
    assert cv == dkim.CV_Pass, (why, m.data[:3000])
    assert [r["instance"] for r in results] == [1]
    assert b"ARC-Seal: i=1; a=rsa-sha256;" in m.data and b"cv=none" in m.data
    assert b"ARC-Authentication-Results: i=1; " + GW_HOST.encode() in m.data


def openssl_rsa(tmp):
    key = os.path.join(tmp, "hop1.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", key], check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    with open(key, "rb") as f:
        return f.read(), base64.b64encode(der).decode()


def chunks(s, n=255):
    return '" "'.join(s[i:i + n] for i in range(0, len(s), n))


def header_values(data, name):
    """Every value of header field name in the message, unfolded (CRLF
    before WSP removed, runs of WSP as one space), stripped."""
    head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    out = []
    for line in head.split(b"\r\n"):
        n, sep, v = line.partition(b":")
        if sep and n.strip().lower() == name.lower():
            out.append(b" ".join(v.split()))
    return out


def arc_hop1(tmp, dns_server, arc_result=b"pass", tamper=False):
    """A message as an earlier forwarder (hop1.test) sealed it with dkimpy
    (its body changed afterwards when tamper), under an Authentication-Results
    claiming our authserv-id and arc=arc_result: a forgery smtpd removes, so
    only its own chain validation decides."""
    priv, pub = openssl_rsa(tmp)
    dns_server.zone("hop1.test", txt={"h1._domainkey.hop1.test": chunks(f"v=DKIM1; k=rsa; p={pub}")})
    msg = make_message(SENDER, "info@gw.test", subject="via hop1")
    msg = b"Authentication-Results: hop1.test; spf=pass smtp.mailfrom=sender.test\r\n" + msg
    arc = dkim.arc_sign(msg, b"h1", b"hop1.test", priv, b"hop1.test")
    assert arc, "dkimpy made no ARC set"
    sealed = b"".join(arc) + msg
    assert dkim.arc_verify(sealed, dnsfunc=dnsfunc(dns_server.port))[0] == dkim.CV_Pass
    if tamper:
        sealed = sealed.replace(b"Hello.", b"Hello!")
        assert dkim.arc_verify(sealed, dnsfunc=dnsfunc(dns_server.port))[0] == dkim.CV_Fail
    ar = (b"Authentication-Results: " + GW_HOST.encode() + b"; arc=" + arc_result +
          b" header.oldest-pass=0 smtp.remote-ip=127.0.0.1\r\n")
    return ar + sealed


def test_arc_multi_hop_chain_passes(dns_server, sinks, gateway, workdir):
    w = world(dns_server, sinks, gateway, [("rsa", "r1")])
    data = arc_hop1(workdir, dns_server)
    w.gw.send_retrying(SENDER, "info@gw.test", data)
    [m] = w.dest.wait_for(1)
    cv, results, why = dkim.arc_verify(m.data, dnsfunc=dnsfunc(dns_server.port))
    assert cv == dkim.CV_Pass, (why, m.data[:4000])
    assert sorted(r["instance"] for r in results) == [1, 2]
    assert b"ARC-Seal: i=2; a=rsa-sha256;" in m.data
    assert b"cv=pass" in m.data
    # Our set carries our own A-R (the forged one was removed): its arc=pass
    # is smtpd's verdict on hop1's chain.
    aar = [v for v in header_values(m.data, b"ARC-Authentication-Results")
           if v.startswith(b"i=2;")]
    assert len(aar) == 1 and aar[0].startswith(b"i=2; " + GW_HOST.encode() + b";"), aar
    assert b"; arc=pass (i=1)" in aar[0], aar


def test_arc_failed_incoming_chain_sealed_as_fail(dns_server, sinks, gateway, workdir):
    """hop1's chain is broken (body changed after sealing), a forged A-R
    claims arc=pass: smtpd says arc=fail, the set we add says cv=fail, and
    verifiers see the chain as failed (not pass)."""
    w = world(dns_server, sinks, gateway, [("rsa", "r1")])
    data = arc_hop1(workdir, dns_server, arc_result=b"pass", tamper=True)
    w.gw.send_retrying(SENDER, "info@gw.test", data)
    [m] = w.dest.wait_for(1)
    assert b"ARC-Seal: i=2; a=rsa-sha256;" in m.data and b"cv=fail" in m.data
    cv = dkim.arc_verify(m.data, dnsfunc=dnsfunc(dns_server.port))[0]
    assert cv != dkim.CV_Pass
    assert b"arc=fail (AMS body hash mismatch)" in m.data


def test_arc_off(dns_server, sinks, gateway):
    w = world(dns_server, sinks, gateway, [("rsa", "r1")], extra={"auth": {"arc": "no"}})
    w.gw.send_retrying(SENDER, "info@gw.test", make_message(SENDER, "info@gw.test"))
    [m] = w.dest.wait_for(1)
    assert b"ARC-Seal" not in m.data
    assert verify_all(m.data, dns_server.port) == [(SRS_DOMAIN, "rsa-sha256")]


class DnsRelay:
    """UDP on 127.0.0.1:53 relayed to nsd: opendkim-testmsg resolves through
    /etc/resolv.conf, which cannot name nsd's port."""

    def __init__(self, port):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        self.sock.settimeout(0.2)
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                up.settimeout(3)
                up.sendto(q, ("127.0.0.1", self.port))
                try:
                    self.sock.sendto(up.recvfrom(65535)[0], peer)
                except socket.timeout:
                    pass

    def close(self):
        self.stop = True
        self.t.join()
        self.sock.close()


def test_opendkim_testmsg_second_opinion(dns_server, sinks, gateway, workdir):
    """libopendkim (opendkim-testmsg, verify mode) agrees with dkimpy. It
    runs in a mount namespace of its own whose resolv.conf names 127.0.0.1,
    where a relay answers from nsd."""
    w = world(dns_server, sinks, gateway, [("rsa", "r1")])
    w.gw.send_retrying(SENDER, "info@gw.test", make_message(SENDER, "info@gw.test"))
    [m] = w.dest.wait_for(1)
    resolv = os.path.join(workdir, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.1\noptions attempts:1 timeout:3\n")
    relay = DnsRelay(dns_server.port)
    try:
        def run(data):
            return subprocess.run(
                ["unshare", "--mount", "sh", "-c",
                 'mount --bind "$0" /etc/resolv.conf && exec opendkim-testmsg', resolv],
                input=data.replace(b"\r\n", b"\n"), capture_output=True, timeout=30)
        r = run(m.data)
        assert r.returncode == 0, (r.stdout, r.stderr)
        # And it can say no: a signed header changed.
        r = run(m.data.replace(b"Subject: test", b"Subject: tesT", 1))
        assert r.returncode != 0, (r.stdout, r.stderr)
    finally:
        relay.close()


def pem_public(path, alg):
    der = subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return base64.b64encode(der if alg == "rsa" else der[-32:]).decode()


def test_domain_dns_and_keys(dns_server, sinks, gateway):
    w = make_world(dns_server, sinks, gateway)
    keygen(w, "gw.test", "r1", "rsa")
    keygen(w, "gw.test", "e1", "ed25519")
    doc = json.loads(w.gw.ctl_ok("--json", "domain", "dns", "gw.test"))
    recs = {(r["name"], r["type"]): r for r in doc["records"]}
    assert recs[("gw.test.", "MX")]["value"] == f"10 {GW_HOST}."
    spf = recs[("gw.test.", "TXT")]["value"]
    assert spf.startswith("v=spf1 ") and spf.endswith(" -all") and GW_HOST in spf
    assert recs[("_dmarc.gw.test.", "TXT")]["value"].startswith("v=DMARC1; p=none")
    for sel, alg in (("r1", "rsa"), ("e1", "ed25519")):
        r = recs[(f"{sel}._domainkey.gw.test.", "TXT")]
        assert all(len(s) <= 255 for s in r["strings"])
        assert "".join(r["strings"]) == r["value"]
        tags = dict(t.strip().split("=", 1) for t in r["value"].split(";"))
        assert tags["v"] == "DKIM1" and tags["k"] == alg
        # The private key file: the router's alone, and p= is its public half.
        path = os.path.join(w.gw.data, "dkim", f"gw.test.{sel}.{alg}.pem")
        st = os.stat(path)
        assert st.st_mode & 0o777 == 0o600
        assert tags["p"] == pem_public(path, alg)
    if w.gw.chrooted:
        import pwd
        assert pwd.getpwuid(os.stat(path).st_uid).pw_name == "mxferry-router"
    assert len(recs[("r1._domainkey.gw.test.", "TXT")]["strings"]) == 2  # 2048-bit: > 255
    text = w.gw.ctl_ok("domain", "dns", "gw.test")
    assert f'r1._domainkey.gw.test. 3600 IN TXT "v=DKIM1; k=rsa; p=' in text

    # Checked against the live DNS ([main] dns_resolver): the MX and SPF as
    # printed, e1 published right, r1 published with another key, DMARC and
    # MTA-STS missing, a TLS-RPT of the operator's own (any rua= is fine).
    def strings(v):
        return '" "'.join(v[i:i + 200] for i in range(0, len(v), 200))
    e1 = recs[("e1._domainkey.gw.test.", "TXT")]["value"]
    r1_wrong = "v=DKIM1; k=rsa; p=" + "A" * 300
    w.dns.zone("gw.test", mx=[(10, GW_HOST)], txt={
        "gw.test": spf, "e1._domainkey.gw.test": strings(e1),
        "r1._domainkey.gw.test": strings(r1_wrong),
        "_smtp._tls.gw.test": "v=TLSRPTv1; rua=mailto:ops@elsewhere.test"})
    live = json.loads(w.gw.ctl_ok("--json", "domain", "dns", "gw.test"))
    st = {(r["name"], r["type"]): r.get("status") for r in live["records"]}
    assert st[("gw.test.", "MX")] == "ok", st
    assert st[("gw.test.", "TXT")] == "ok", st
    assert st[("e1._domainkey.gw.test.", "TXT")] == "ok", st
    assert st[("r1._domainkey.gw.test.", "TXT")] == "wrong", st
    assert st[("_dmarc.gw.test.", "TXT")] == "missing", st
    assert st[("_mta-sts.gw.test.", "TXT")] == "missing", st
    assert st[("_smtp._tls.gw.test.", "TXT")] == "ok", st
    # The MX pointing elsewhere is wrong, and says where it points.
    w.dns.zone("gw.test", mx=[(5, "mx.other.test")], txt={"gw.test": "v=spf1 -all"})
    live = json.loads(w.gw.ctl_ok("--json", "domain", "dns", "gw.test"))
    mx = [r for r in live["records"] if r["type"] == "MX"][0]
    assert mx["status"] == "wrong" and mx["found"] == "5 mx.other.test.", mx
    assert [r["status"] for r in live["records"] if r["name"] == "gw.test."
            and r["type"] == "TXT"] == ["wrong"]
    assert "live DNS: wrong: 5 mx.other.test." in w.gw.ctl_ok("domain", "dns", "gw.test")
    # --offline: no lookups, no status.
    off = json.loads(w.gw.ctl_ok("--json", "domain", "dns", "gw.test", "--offline"))
    assert all("status" not in r for r in off["records"])
    # list, disable, remove; each change audited; a second key under the same
    # selector refused.
    rc, _, err = w.gw.ctl("dkim", "keygen", "gw.test", "--selector", "r1")
    assert rc == 1 and "exists" in err
    keys = json.loads(w.gw.ctl_ok("--json", "dkim", "list"))
    assert {(k["domain"], k["selector"], k["algorithm"], k["enabled"]) for k in keys} == {
        ("gw.test", "r1", "rsa", True), ("gw.test", "e1", "ed25519", True)}
    w.gw.ctl_ok("dkim", "disable", "gw.test", "e1")
    w.gw.ctl_ok("dkim", "remove", "gw.test", "r1")
    assert not os.path.exists(os.path.join(w.gw.data, "dkim", "gw.test.r1.rsa.pem"))
    keys = json.loads(w.gw.ctl_ok("--json", "dkim", "list", "gw.test"))
    assert [(k["selector"], k["enabled"]) for k in keys] == [("e1", False)]
    audit = json.loads(w.gw.ctl_ok("--json", "audit"))
    acts = [(a["action"], a["object"]) for a in (audit["entries"] if isinstance(audit, dict)
                                                 else audit)]
    for a in (("dkim.add", "gw.test r1"), ("dkim.add", "gw.test e1"),
              ("dkim.disable", "gw.test e1"), ("dkim.remove", "gw.test r1")):
        assert a in acts, acts
    # The private key never shows in the audit log or the listing.
    assert "PRIVATE" not in json.dumps(audit) and "PRIVATE" not in json.dumps(keys)


def test_signing_survives_router_restart_of_keys(dns_server, sinks, gateway):
    """A key added while the gateway runs is used for the next message
    (reload), and a removed one no longer is."""
    w = make_world(dns_server, sinks, gateway)
    w.gw.forward("info@gw.test", "bob@dest.test")
    w.gw.send_retrying(SENDER, "info@gw.test", make_message(SENDER, "info@gw.test"))
    [m0] = w.dest.wait_for(1)
    assert not dkim_sigs(m0.data)
    keygen(w, SRS_DOMAIN, "r1", "rsa")
    publish(w, SRS_DOMAIN)
    wait_keys(w, 1)
    w.gw.send_retrying(SENDER, "info@gw.test", make_message(SENDER, "info@gw.test"))
    m1 = w.dest.wait_for(2)[1]
    assert verify_all(m1.data, dns_server.port) == [(SRS_DOMAIN, "rsa-sha256")]


def test_signing_unjailed_leak_checked(dns_server, sinks, gateway):
    """The same signing paths with every daemon unjailed, so LeakSanitizer
    watches router (keys, oracle), deliverd (signer threads) and mxferryctl."""
    w = world(dns_server, sinks, gateway, [("rsa", "r1"), ("ed25519", "e1")],
              extra={"main": {"run_as_invoking_user": "yes"}})
    w.gw.send_retrying(SENDER, "info@gw.test", make_message(SENDER, "info@gw.test"))
    [m] = w.dest.wait_for(1)
    assert len(verify_all(m.data, dns_server.port)) == 2
    assert dkim.arc_verify(m.data, dnsfunc=dnsfunc(dns_server.port))[0] == dkim.CV_Pass
    w.gw.ctl_ok("dkim", "remove", SRS_DOMAIN, "e1")
    wait_keys(w, 1)
