"""apid, the REST API (issue 12): every endpoint through Python's urllib
against a real gateway, status codes and the Cloudflare envelope checked."""
import json
import os
import re
import sqlite3
import urllib.error
import urllib.request

import pytest

from conftest import free_ports, make_message, wait_until

GW = "gw.test"


class Api:
    def __init__(self, gw, port):
        self.gw = gw
        self.base = f"http://127.0.0.1:{port}"
        self.token = None

    def raw(self, method, path, body=None, token="default", headers=None, data=None):
        """(status, headers, bytes)."""
        if token == "default":
            token = self.token
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        if data is None and body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def call(self, method, path, body=None, token="default", data=None, status=200):
        """/client/v4 + path; checks status and the envelope; returns the JSON."""
        st, hdrs, raw = self.raw(method, "/client/v4" + path, body, token, data=data)
        assert st == status, f"{method} {path}: {st} {raw[:500]!r}"
        assert hdrs["Content-Type"].startswith("application/json")
        j = json.loads(raw)
        assert set(j) >= {"success", "errors", "messages", "result"}, j
        if 200 <= st < 300:
            assert j["success"] is True and j["errors"] == [], j
        else:
            assert j["success"] is False and j["result"] is None, j
            assert isinstance(j["errors"][0]["code"], int) and j["errors"][0]["message"], j
        return j

    def get(self, path, **kw):
        return self.call("GET", path, **kw)


def api_gateway(gateway, dns_server, extra_api=None, extra=None):
    port = free_ports(1)[0]
    api = {"listen": f"127.0.0.1:{port}"}
    api.update(extra_api or {})
    extra = dict(extra or {})
    dns_server.zone("dest.test", mx=[(10, "mx1.dest.test")], a={"mx1.dest.test": "127.0.0.2"})
    dns_server.zone("sender.test", mx=[(10, "mx.sender.test")],
                    a={"mx.sender.test": "127.0.0.3"})
    dns_server.start()
    g = gateway({**extra, "api": api})
    a = Api(g, port)
    wait_until(lambda: a.raw("GET", "/client/v4/user/tokens/verify", token=None)[0] == 401, 15,
               what="apid to answer")
    a.token = g.ctl_json("token", "add", "ci")["token"]
    return g, a


# jailed: apid as mxferry-api with the router's group (when the suite runs
# as root); unjailed: every daemon as the invoking user, so LeakSanitizer
# checks apid too.
@pytest.fixture(params=["jailed", "unjailed"])
def api_world(request, gateway, dns_server, sinks, workdir):
    www = os.path.join(workdir, "www")
    os.makedirs(os.path.join(www, "js"), exist_ok=True)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("<!doctype html><title>mxferry</title>")
    with open(os.path.join(www, "js", "app.js"), "w") as f:
        f.write("console.log(1);")
    with open(os.path.join(www, ".hidden"), "w") as f:
        f.write("secret")
    sink = sinks("127.0.0.2")
    extra = {"main": {"run_as_invoking_user": "yes"}} if request.param == "unjailed" else {}
    g, a = api_gateway(gateway, dns_server, {"www_dir": www}, extra)
    return g, a, sink


def rules_count(g):
    db = sqlite3.connect(f"file:{os.path.join(g.data, 'rules.db')}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM rules").fetchone()[0]
    finally:
        db.close()


def test_auth_tokens_readonly(api_world):
    g, a, _ = api_world
    # No token, a wrong one, another scheme: 401 with code 10000.
    for tok in (None, "mxf_" + "0" * 64, ""):
        j = a.call("GET", "/zones", token=tok, status=401)
        assert j["errors"][0]["code"] == 10000
    st, _, _ = a.raw("GET", "/client/v4/zones", token=None, headers={"Authorization": "Basic x"})
    assert st == 401
    v = a.get("/user/tokens/verify")["result"]
    assert v["name"] == "ci" and v["status"] == "active" and v["read_only"] is False
    assert re.fullmatch(r"[0-9a-f]{32}", v["id"])
    # The secret is stored hashed only.
    db = sqlite3.connect(os.path.join(g.data, "rules.db"))
    row = db.execute("SELECT hash FROM api_tokens WHERE name = 'ci'").fetchone()
    db.close()
    assert len(row[0]) == 32 and a.token.encode() not in row[0]
    # A read-only token reads but may not write; nothing is written.
    ro = g.ctl_json("token", "add", "viewer", "--read-only")["token"]
    assert a.get("/user/tokens/verify", token=ro)["result"]["read_only"] is True
    assert a.get("/zones", token=ro)["result"] == []
    j = a.call("POST", "/zones", {"name": GW}, token=ro, status=403)
    assert j["errors"][0]["code"] == 10001
    assert a.get("/zones")["result"] == []
    # token list / remove: a removed token stops working at once.
    names = [t["name"] for t in g.ctl_json("token", "list")]
    assert names == ["ci", "viewer"]
    g.ctl_ok("token", "remove", "viewer")
    a.call("GET", "/zones", token=ro, status=401)
    rc, _, err = g.ctl("token", "add", "ci")
    assert rc == 1 and "exists" in err


def test_zones_settings_accounts(api_world):
    g, a, _ = api_world
    z = a.call("POST", "/zones", {"name": GW})["result"]
    assert z["name"] == GW and re.fullmatch(r"[0-9a-f]{32}", z["id"]) and z["status"] == "active"
    a.call("POST", "/zones", {"name": GW}, status=409)
    a.call("POST", "/zones", {"name": "bad..name"}, status=400)
    a.call("POST", "/zones", {"name": "other.test"})
    j = a.get("/zones")
    assert [x["name"] for x in j["result"]] == [GW, "other.test"]
    assert j["result_info"] == {"page": 1, "per_page": 20, "count": 2, "total_count": 2,
                                "total_pages": 1}
    assert [x["id"] for x in a.get(f"/zones?name={GW}")["result"]] == [z["id"]]
    # By id or by name, the same zone.
    assert a.get(f"/zones/{z['id']}")["result"] == a.get(f"/zones/{GW}")["result"]
    a.get("/zones/" + "0" * 32, status=404)
    # Settings.
    s = a.get(f"/zones/{z['id']}/email/routing")["result"]
    assert s["id"] == z["id"] and s["name"] == GW and s["enabled"] is True
    assert s["status"] == "ready" and s["support_subaddress"] is False
    assert s["skip_wizard"] is True
    s = a.call("PATCH", f"/zones/{GW}/email/routing", {"support_subaddress": True})["result"]
    assert s["support_subaddress"] is True
    s = a.call("PUT", f"/zones/{GW}/email/routing",
               {"enabled": False, "skip_wizard": True})["result"]
    assert s["enabled"] is False and s["status"] == "unconfigured"
    # dns POST enables, DELETE disables, PATCH (unlock) changes nothing.
    assert a.call("POST", f"/zones/{GW}/email/routing/dns", {"name": GW})["result"]["enabled"]
    assert a.call("PATCH", f"/zones/{GW}/email/routing/dns")["result"]["enabled"] is True
    assert a.call("DELETE", f"/zones/{GW}/email/routing/dns")["result"]["enabled"] is False
    a.call("POST", f"/zones/{GW}/email/routing/enable")
    # Accounts.
    acc = a.get("/accounts")["result"]
    assert len(acc) == 1 and acc[0]["name"] == "mxferry" and re.fullmatch(r"[0-9a-f]{32}",
                                                                          acc[0]["id"])
    a.get("/accounts/" + "f" * 32 + "/email/routing/addresses", status=404)
    # Delete.
    oid = [x for x in a.get("/zones")["result"] if x["name"] == "other.test"][0]["id"]
    assert a.call("DELETE", f"/zones/{oid}")["result"] == {"id": oid}
    a.get(f"/zones/{oid}", status=404)
    # Unknown path, method.
    a.get("/nope", status=404)
    a.call("PUT", "/zones", {}, status=405)
    a.call("POST", f"/zones/{GW}/email/routing/rules/catch_all", {}, status=405)


def test_addresses_rules_route_mail(api_world):
    """An address added through the API gets the verification mail (through
    the router); its code verifies it; a rule created through the API routes
    mail at once; the audit log names the token."""
    g, a, sink = api_world
    zid = a.call("POST", "/zones", {"name": GW})["result"]["id"]
    acct = a.get("/accounts")["result"][0]["id"]
    base = f"/accounts/{acct}/email/routing/addresses"
    j = a.call("POST", base, {"email": "bob@dest.test"})
    ad = j["result"]
    assert j["messages"][0]["message"].startswith("verification mail queued as "), j
    assert ad["email"] == "bob@dest.test" and ad["verified"] is None
    assert re.fullmatch(r"[0-9a-f]{32}", ad["id"]) and ad["tag"] == ad["id"]
    a.call("POST", base, {"email": "bob@dest.test"}, status=409)
    a.call("POST", base, {"email": "not an address"}, status=400)

    def mail():
        ms = [m for m in sink.messages if m.rcpt_tos == ["bob@dest.test"]]
        return ms[0] if ms else None
    m = wait_until(mail, 30, what="the verification mail")
    assert m.msg["Subject"] == "Verify forwarding to bob@dest.test"
    code = re.search(r"address verify \S+ ([a-z0-9]{20})\r?\n",
                     m.msg.get_payload(decode=True).decode()).group(1)
    # Not verified: a rule forwarding there is refused, nothing written.
    rule = {"actions": [{"type": "forward", "value": ["bob@dest.test"]}], "enabled": True,
            "matchers": [{"field": "to", "type": "literal", "value": f"info@{GW}"}],
            "name": "info", "priority": 0}
    j = a.call("POST", f"/zones/{zid}/email/routing/rules", rule, status=400)
    assert "not verified" in j["errors"][0]["message"]
    a.call("PATCH", f"{base}/{ad['id']}", {"verification_code": "a" * 20}, status=400)
    v = a.call("PATCH", f"{base}/{ad['id']}", {"verification_code": code})["result"]
    assert v["verified"] is not None
    assert a.get(f"{base}?verified=true")["result"][0]["email"] == "bob@dest.test"
    assert a.get(f"{base}/{ad['id']}")["result"]["email"] == "bob@dest.test"

    r = a.call("POST", f"/zones/{zid}/email/routing/rules", rule)["result"]
    assert re.fullmatch(r"[0-9a-f]{32}", r["id"]) and r["tag"] == r["id"]
    assert r["matchers"] == rule["matchers"] and r["actions"] == rule["actions"]
    assert r["enabled"] is True and r["name"] == "info" and r["priority"] == 0
    # Mail routes at once.
    sink.messages.clear()
    data = make_message("alice@sender.test", f"info@{GW}", subject="via api \u2713",
                        msgid="<via-api@sender.test>")
    g.send("alice@sender.test", f"info@{GW}", data)
    [got] = sink.wait_for(1, timeout=30)
    assert got.rcpt_tos == ["bob@dest.test"]

    # get / put / delete, the catch-all, the account's rules.
    assert a.get(f"/zones/{GW}/email/routing/rules/{r['id']}")["result"] == r
    put = {"actions": [{"type": "drop"}], "matchers": [
        {"type": "wildcard", "field": "to", "value": f"sales-*@{GW}"},
        {"type": "literal", "field": "from", "value": "boss@sender.test"}],
        "name": "sales", "enabled": False, "priority": 5}
    p = a.call("PUT", f"/zones/{zid}/email/routing/rules/{r['id']}", put)["result"]
    assert p["id"] == r["id"] and p["enabled"] is False and p["priority"] == 5
    assert p["matchers"] == put["matchers"]
    assert p["actions"] == [{"type": "drop", "value": []}]
    a.call("PUT", f"/zones/{zid}/email/routing/rules/" + "0" * 32, put, status=404)
    ca = a.get(f"/zones/{zid}/email/routing/rules/catch_all")["result"]
    assert ca["enabled"] is False and ca["matchers"] == [{"type": "all"}]
    ca = a.call("PUT", f"/zones/{zid}/email/routing/rules/catch_all", {
        "actions": [{"type": "reject", "value": ["no such user"], "code": 550}],
        "matchers": [{"type": "all"}], "enabled": True, "name": "rest"})["result"]
    assert ca["actions"] == [{"type": "reject", "value": ["no such user"], "code": 550}]
    assert a.get(f"/zones/{zid}/email/routing/rules/catch_all")["result"] == ca
    acc_rules = a.get(f"/accounts/{acct}/email/routing/rules")["result"]
    assert {x["id"] for x in acc_rules} == {r["id"], ca["id"]}
    assert all(x["zone"] == {"name": GW, "tag": zid} for x in acc_rules)
    assert a.call("DELETE", f"/zones/{zid}/email/routing/rules/{r['id']}")["result"]["id"] == \
        r["id"]
    a.get(f"/zones/{zid}/email/routing/rules/{r['id']}", status=404)
    # The address: still used by nothing now; delete it.
    assert a.call("DELETE", f"{base}/{ad['id']}")["result"]["email"] == "bob@dest.test"
    a.get(f"{base}/{ad['id']}", status=404)

    # The audit log names the token; newest first.
    logs = a.get(f"/accounts/{acct}/audit_logs?per_page=50")["result"]
    assert logs[0]["action"]["type"] == "address.remove"
    assert all(x["actor"] == {"type": "token", "name": "ci"} for x in logs
               if x["action"]["type"] != "token.add")
    created = [x for x in logs if x["action"]["type"] == "rule.add"]
    assert created and created[0]["resource"] == {"type": "rule", "id": r["id"]}
    assert created[0]["newValue"]["to"] == f"info@{GW}" and created[0]["oldValue"] is None
    tok = [x for x in logs if x["action"]["type"] == "token.add"]
    assert tok and tok[0]["actor"]["type"] == "cli"
    # And mxferryctl audit shows the same.
    assert "token:ci" in g.ctl_ok("audit")

    # Activity and analytics see the message.
    act = wait_until(lambda: [x for x in a.get(f"/zones/{GW}/email/routing/activity")["result"]
                              if x["status"] == "forwarded"], 20, what="activity")
    assert act[0]["to"] == f"info@{GW}" and act[0]["from"] == "alice@sender.test"
    assert act[0]["client_ip"] == "127.0.0.1" and act[0]["queue_id"]
    assert act[0]["subject"] == "via api \u2713"
    assert act[0]["message_id"] == "<via-api@sender.test>"
    assert a.get(f"/zones/{GW}/email/routing/activity?status=rejected")["result"] == []
    assert a.get(f"/zones/{GW}/email/routing/activity?from=ALICE")["result"]
    an = a.get(f"/zones/{GW}/email/routing/analytics?step=600")["result"]
    assert an["step"] == 600 and len(an["series"]) == 144
    assert an["totals"]["forwarded"] == 1 and an["totals"]["received"] == 1, an["totals"]
    assert set(an["series"][0]) == {"ts", "received", "forwarded", "dropped", "rejected",
                                    "delivery_failed", "bounced"}
    a.get(f"/zones/{GW}/email/routing/analytics?since=2026-01-02&until=2026-01-01", status=400)
    a.get(f"/zones/{GW}/email/routing/activity?since=yesterday", status=400)


def test_paging_and_filter(api_world):
    g, a, _ = api_world
    a.call("POST", "/zones", {"name": GW})
    g.ctl_ok("address", "add", "d@dest.test", "--verified")
    for i in range(7):
        a.call("POST", f"/zones/{GW}/email/routing/rules", {
            "matchers": [{"type": "literal", "field": "to", "value": f"u{i}@{GW}"}],
            "actions": [{"type": "forward", "value": ["d@dest.test"]}],
            "enabled": i % 2 == 0, "priority": i})
    j = a.get(f"/zones/{GW}/email/routing/rules?per_page=3&page=3")
    assert len(j["result"]) == 1
    assert j["result_info"] == {"page": 3, "per_page": 3, "count": 1, "total_count": 7,
                                "total_pages": 3}
    assert [x["priority"] for x in a.get(
        f"/zones/{GW}/email/routing/rules?per_page=3&page=1")["result"]] == [0, 1, 2]
    en = a.get(f"/zones/{GW}/email/routing/rules?enabled=true")["result"]
    assert len(en) == 4 and all(x["enabled"] for x in en)
    assert len(a.get(f"/zones/{GW}/email/routing/rules?enabled=false")["result"]) == 3
    a.get(f"/zones/{GW}/email/routing/rules?enabled=maybe", status=400)
    a.get(f"/zones/{GW}/email/routing/rules?page=0", status=400)
    a.get(f"/zones/{GW}/email/routing/rules?per_page=abc", status=400)


def test_bad_input_writes_nothing(api_world):
    g, a, _ = api_world
    zid = a.call("POST", "/zones", {"name": GW})["result"]["id"]
    g.ctl_ok("address", "add", "d@dest.test", "--verified")
    path = f"/zones/{zid}/email/routing/rules"
    good = {"matchers": [{"type": "literal", "field": "to", "value": f"x@{GW}"}],
            "actions": [{"type": "forward", "value": ["d@dest.test"]}]}
    before = rules_count(g)
    bad = [
        (b"{not json", 1001),
        (b"[1,2]", 1001),
        (b"", 1001),
        (json.dumps({**good, "colour": "red"}).encode(), 1001),              # unknown field
        (json.dumps({**good, "enabled": "yes"}).encode(), 1001),             # wrong type
        (json.dumps({**good, "priority": "1"}).encode(), 1001),
        (json.dumps({**good, "matchers": {"type": "all"}}).encode(), 1001),
        (json.dumps({**good, "actions": [{"type": "forward", "value": "d@dest.test"}]}).encode(),
         1001),
        (json.dumps({**good, "actions": [{"type": "forward", "value": [1]}]}).encode(), 1001),
        (json.dumps({"matchers": good["matchers"]}).encode(), 1001),        # missing actions
        (b'{"matchers":[],"matchers":[]}', 1001),                            # duplicate key
        (json.dumps({**good, "matchers": [{"type": "literal", "field": "to",
                                          "value": "x@elsewhere.test"}]}).encode(), 1004),
        (json.dumps({**good, "actions": [{"type": "teleport"}]}).encode(), 1004),
        (json.dumps({**good, "priority": -1}).encode(), 1004),
    ]
    for data, code in bad:
        j = a.call("POST", path, data=data, status=400)
        assert j["errors"][0]["code"] == code, (data, j)
    # A whole rule with a bad part: nothing of it is written.
    assert rules_count(g) == before
    a.call("POST", path, good)
    a.call("POST", path, good, status=409)
    assert rules_count(g) == before + 1
    # Settings and addresses are as strict.
    a.call("PATCH", f"/zones/{GW}/email/routing", {"enabled": 1}, status=400)
    a.call("PATCH", f"/zones/{GW}/email/routing", {"paused": True}, status=400)
    acct = a.get("/accounts")["result"][0]["id"]
    a.call("POST", f"/accounts/{acct}/email/routing/addresses", {"email": 5}, status=400)
    a.call("POST", f"/accounts/{acct}/email/routing/addresses",
           {"email": "e@dest.test", "x": 1}, status=400)
    assert [x["email"] for x in a.get(f"/accounts/{acct}/email/routing/addresses")["result"]] \
        == ["d@dest.test"]


def test_hosted_service_examples(api_world):
    """The request bodies of the hosted service's documented curl examples,
    sent unchanged (zone example.com, destination destinationaddress@example.net)."""
    g, a, _ = api_world
    a.call("POST", "/zones", {"name": "example.com"})
    g.ctl_ok("address", "add", "destinationaddress@example.net", "--verified")
    # Create routing rule (the API reference's body).
    body = ('{"actions":[{"type":"forward","value":["destinationaddress@example.net"]}],'
            '"enabled":true,"matchers":[{"field":"to","type":"literal",'
            '"value":"test@example.com"}],"name":"Send to user@example.net rule.",'
            '"priority":0}')
    r = a.call("POST", "/zones/example.com/email/routing/rules", data=body.encode())["result"]
    assert r["name"] == "Send to user@example.net rule."
    # Update (PUT) with the same body.
    a.call("PUT", f"/zones/example.com/email/routing/rules/{r['id']}", data=body.encode())
    # Update catch-all rule.
    ca = ('{"actions":[{"type":"forward","value":["destinationaddress@example.net"]}],'
          '"matchers":[{"type":"all"}],"enabled":true,"name":"Send to user@example.net rule."}')
    a.call("PUT", "/zones/example.com/email/routing/rules/catch_all", data=ca.encode())
    # Unset optional fields as null (Terraform and SDKs send them so).
    tf = {"actions": [{"type": "drop", "value": None}], "matchers": [
        {"type": "literal", "field": "to", "value": "tf@example.com"}],
        "enabled": None, "name": None, "priority": None, "source": None}
    t = a.call("POST", "/zones/example.com/email/routing/rules", tf)["result"]
    assert t["enabled"] is True and t["name"] == "" and t["priority"] == 0
    # Create a destination address.
    acct = a.get("/accounts")["result"][0]["id"]
    a.call("POST", f"/accounts/{acct}/email/routing/addresses",
           data=b'{"email":"user@example.com"}')
    # Enable (dns POST with the name), settings PATCH.
    a.call("POST", "/zones/example.com/email/routing/dns", data=b'{"name":"example.com"}')
    # The newest reference shows placeholder bodies (a forward without its
    # value, owner_worker_tag and source): every field is known, so it is
    # refused only for what is missing (1004), never as an unknown field.
    stub = ('{"actions":[{"type":"forward"}],"matchers":[{"type":"literal"}],"enabled":true,'
            '"name":"Send to user@example.net rule.",'
            '"owner_worker_tag":"a7e6fb77503c41d8a7f3113c6918f10c","source":"api"}')
    j = a.call("POST", "/zones/example.com/email/routing/rules", data=stub.encode(), status=400)
    assert j["errors"][0]["code"] == 1004
    stub_ca = ('{"actions":[{"type":"forward"}],"matchers":[{"type":"all"}],"enabled":true,'
               '"name":"Send to user@example.net rule.",'
               '"owner_worker_tag":"a7e6fb77503c41d8a7f3113c6918f10c","source":"api"}')
    j = a.call("PUT", "/zones/example.com/email/routing/rules/catch_all", data=stub_ca.encode(),
               status=400)
    assert j["errors"][0]["code"] == 1004


def test_static_files_metrics(api_world):
    g, a, _ = api_world
    st, h, body = a.raw("GET", "/", token=None)
    assert st == 200 and h["Content-Type"].startswith("text/html") and b"mxferry" in body
    assert h["Cache-Control"] == "no-cache"
    st, h, _ = a.raw("GET", "/js/app.js", token=None)
    assert st == 200 and h["Content-Type"].startswith("text/javascript")
    for p in ("/.hidden", "/js/../index.html", "/%2e%2e/mxferry.conf", "/missing.css", "/js"):
        assert a.raw("GET", p, token=None)[0] == 404, p
    assert a.raw("POST", "/index.html", token=None, data=b"x")[0] == 405
    # /metrics needs a token.
    assert a.raw("GET", "/metrics", token=None)[0] == 401
    st, h, body = a.raw("GET", "/metrics")
    assert st == 200 and h["Content-Type"].startswith("text/plain")
    assert re.search(rb"^mxferry_api_requests_total \d+$", body, re.M)


def test_body_and_rate_limits(gateway, dns_server):
    g, a = api_gateway(gateway, dns_server, {"max_body": "1024", "rate_limit": "8",
                                             "rate_window": "1h"})
    a.call("POST", "/zones", {"name": GW})
    before = rules_count(g)
    big = {"matchers": [{"type": "literal", "field": "to", "value": f"x@{GW}"}],
           "actions": [{"type": "drop"}], "name": "n" * 2000}
    j = a.call("POST", f"/zones/{GW}/email/routing/rules", big, status=413)
    assert j["errors"][0]["code"] == 10413
    assert rules_count(g) == before
    # Within the window: 8 requests (the readiness probe, the POST and the
    # 413 count too), then 429 with nothing written.
    seen = []
    for _ in range(8):
        st, _, raw = a.raw("POST", f"/client/v4/zones/{GW}/email/routing/rules",
                           {"matchers": big["matchers"], "actions": big["actions"]})
        seen.append(st)
    assert seen[-1] == 429, seen
    j = json.loads(raw)
    assert j["success"] is False and j["errors"][0]["code"] == 971
    assert rules_count(g) == before + seen.count(200)


def test_queue(api_world):
    """The queue endpoints mirror `mxferryctl queue`, through the router."""
    g, a, sink = api_world
    a.call("POST", "/zones", {"name": GW})
    g.ctl_ok("address", "add", "q@dest.test", "--verified")
    a.call("POST", f"/zones/{GW}/email/routing/rules", {
        "matchers": [{"type": "literal", "field": "to", "value": f"q@{GW}"}],
        "actions": [{"type": "forward", "value": ["q@dest.test"]}]})
    acct = a.get("/accounts")["result"][0]["id"]
    base = f"/accounts/{acct}/email/routing/queue"
    assert a.get(base)["result"] == []
    sink.set_mode("tempfail")
    qid = g.send("alice@sender.test", f"q@{GW}", make_message("alice@sender.test", f"q@{GW}"))
    m = wait_until(lambda: [x for x in a.get(base + "?state=deferred")["result"]
                            if x["id"] == qid and x["recipients"][0]["attempts"] >= 1], 30,
                   what="the message deferred")[0]
    assert m["from"] == "alice@sender.test" and m["size"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["arrival"])
    rc = m["recipients"][0]
    assert rc["address"] == "q@dest.test" and rc["status"] == "deferred"
    assert rc["last_reply"].startswith("4")
    # The same as mxferryctl sees.
    assert [x["queue_id"] for x in g.ctl_json("queue", "list")["messages"]] == [qid]
    # Its activity row says it is still queued.
    act = f"/zones/{GW}/email/routing/activity"
    rows = wait_until(lambda: [x for x in a.get(act)["result"] if x["queue_id"] == qid], 10,
                      what="the deferred row")
    assert all(x["status"] == "deferred" and x["queued"] is True for x in rows), rows
    assert a.get(f"{base}/{qid}")["result"]["id"] == qid
    a.get(f"{base}/{'0' * 26}", status=404)
    a.get(base + "?state=frozen", status=400)
    assert a.call("POST", f"{base}/{qid}/hold")["result"] == {"id": qid, "operation": "hold"}
    wait_until(lambda: a.get(f"{base}?state=hold")["result"], 20, what="held")
    ro = g.ctl_json("token", "add", "viewer", "--read-only")["token"]
    a.call("POST", f"{base}/{qid}/release", token=ro, status=403)
    a.call("POST", f"{base}/{qid}/release")
    sink.set_mode("accept")
    a.call("POST", f"{base}/{qid}/retry")
    sink.wait_for(1, timeout=30)
    wait_until(lambda: a.get(base)["result"] == [], 20, what="the queue empty")
    # Delivered: its deferred rows no longer say queued.
    def delivered():
        rows = [x for x in a.get(act)["result"] if x["queue_id"] == qid]
        return rows if any(x["status"] == "forwarded" for x in rows) else None
    rows = wait_until(delivered, 20, what="the forwarded row")
    assert {x["status"] for x in rows} == {"deferred", "forwarded"}, rows
    assert all(x["queued"] is False for x in rows), rows
    a.call("DELETE", f"{base}/{qid}", status=404)
    a.call("POST", f"{base}/{qid}/explode", status=404)


def test_dns_records(api_world, dns_server):
    """GET .../dns: the records to publish and what the live DNS lacks, the
    same check as `mxferryctl domain dns` (common/dnsrecords.c)."""
    g, a, _ = api_world
    from conftest import GW_HOST
    dns_server.zone(GW, mx=[(10, GW_HOST)], txt={GW: f"v=spf1 a:{GW_HOST} -all"})
    a.call("POST", "/zones", {"name": GW})
    g.ctl_ok("dkim", "keygen", GW, "--selector", "s1")
    res = a.get(f"/zones/{GW}/email/routing/dns")["result"]
    recs = {(r["type"], r["name"]): r for r in res["record"]}
    mx = recs[("MX", GW)]
    assert mx["content"] == GW_HOST and mx["priority"] == 10 and mx["status"] == "ok"
    assert recs[("TXT", GW)]["content"].startswith("v=spf1") and \
        recs[("TXT", GW)]["status"] == "ok"
    assert recs[("TXT", f"_dmarc.{GW}")]["status"] == "missing"
    dkim = recs[("TXT", f"s1._domainkey.{GW}")]
    assert dkim["content"].startswith("v=DKIM1; k=rsa; p=") and dkim["status"] == "missing"
    codes = sorted(e["code"] for e in res["errors"])
    assert codes == ["dkim.missing", "dmarc.missing"], res["errors"]
    assert {e["missing"]["name"] for e in res["errors"]} == {f"_dmarc.{GW}", f"s1._domainkey.{GW}"}
    # The same verdicts as mxferryctl's.
    ctl = g.ctl_json("domain", "dns", GW)["records"]
    assert {(r["name"].rstrip("."), r["status"]) for r in ctl} == \
        {(r["name"], r["status"]) for r in res["record"]}
    # Without the live check.
    off = a.get(f"/zones/{GW}/email/routing/dns?check=false")["result"]
    assert off["errors"] == [] and all(r["status"] is None for r in off["record"])


def test_tls(gateway, dns_server, workdir):
    """[api] tls: HTTPS with the configured certificate."""
    import ssl
    import subprocess
    cert, key = os.path.join(workdir, "api-cert.pem"), os.path.join(workdir, "api-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-keyout", key, "-out", cert], check=True,
                   capture_output=True)
    os.chmod(key, 0o600)  # read by apid before it drops privileges
    port = free_ports(1)[0]
    dns_server.start()
    g = gateway({"api": {"listen": f"127.0.0.1:{port}", "tls": "yes", "tls_cert": cert,
                         "tls_key": key}})
    tok = g.ctl_json("token", "add", "tls")["token"]
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False

    def get():
        req = urllib.request.Request(f"https://127.0.0.1:{port}/client/v4/user/tokens/verify",
                                     headers={"Authorization": f"Bearer {tok}"})
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return json.loads(r.read())
    j = wait_until(lambda: _try(get), 15, what="apid over TLS")
    assert j["result"]["name"] == "tls"


def _try(f):
    try:
        return f()
    except (OSError, urllib.error.URLError):
        return None


def test_metrics_include_router(gateway, dns_server):
    """/metrics: apid's counters and, with [main] metrics_listen, the router's."""
    mport = free_ports(1)[0]
    port = free_ports(1)[0]
    dns_server.start()
    g = gateway({"api": {"listen": f"127.0.0.1:{port}"},
                 "main": {"metrics_listen": f"127.0.0.1:{mport}"}})
    a = Api(g, port)
    a.token = g.ctl_json("token", "add", "prom")["token"]

    def scrape():
        st, h, body = a.raw("GET", "/metrics")
        return body.decode() if st == 200 and b"router_metrics_up 1" in body else None
    text = wait_until(scrape, 15, what="router metrics through apid")
    assert re.search(r"^mxferry_api_requests_total \d+$", text, re.M)
    assert re.search(r"^mxferry_build_info", text, re.M), text[:2000]


def test_master_restarts_apid(gateway, dns_server):
    """apid is supervised like the other daemons: killed, it comes back on the
    same (master-bound) port, and its token still works."""
    import signal
    g, a = api_gateway(gateway, dns_server)
    pid = g.status()["apid"]["pid"]
    g.expect_restart("apid")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: g.status()["apid"]["pid"] not in (0, pid), 15, what="a new apid")
    j = wait_until(lambda: _try(lambda: a.get("/user/tokens/verify")), 15, what="apid back")
    assert j["result"]["name"] == "ci"
    assert g.status()["apid"]["restarts"] == 1


def test_queue_listing_spans_router_answers(api_world):
    """More messages than one router answer (64 KiB) holds: apid asks again
    from where the router stopped, and lists them all."""
    g, a, sink = api_world
    a.call("POST", "/zones", {"name": GW})
    g.ctl_ok("address", "add", "q@dest.test", "--verified")
    a.call("POST", f"/zones/{GW}/email/routing/rules", {
        "matchers": [{"type": "literal", "field": "to", "value": f"q@{GW}"}],
        "actions": [{"type": "forward", "value": ["q@dest.test"]}]})
    sink.set_mode("tempfail")
    n = 320
    s = g.smtp()
    try:
        for i in range(n):
            data = make_message("alice@sender.test", f"q@{GW}", subject=f"m{i}")
            s.sendmail("alice@sender.test", [f"q@{GW}"], data)
    finally:
        s.quit()
    acct = a.get("/accounts")["result"][0]["id"]
    j = wait_until(lambda: (lambda r: r if r["result_info"]["total_count"] == n else None)(
        a.get(f"/accounts/{acct}/email/routing/queue?per_page=1000")), 60,
        what=f"{n} messages listed")
    assert len({m["id"] for m in j["result"]}) == n
    assert len(json.dumps(j["result"], separators=(",", ":"))) > 80000  # > one answer
