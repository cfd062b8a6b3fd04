"""mxferryctl: status, rules, exit codes."""
from conftest import DAEMONS, GW_HOST


def test_status_lists_daemons(world):
    out = world.gw.ctl_ok("status")
    for d in DAEMONS:
        assert d in out, f"{d} missing in status output:\n{out}"


def test_rule_list_shows_rules(world):
    gw = world.gw
    gw.forward("info@gw.test", "bob@dest.test", "carol@dest.test")
    gw.ctl_ok("rule", "add", "gw.test", "--to", "spam@gw.test", "--drop")
    out = gw.ctl_ok("rule", "list")
    for s in ("info@gw.test", "bob@dest.test", "carol@dest.test", "spam@gw.test"):
        assert s in out, f"{s} missing in rule list:\n{out}"


def test_exit_codes(world):
    gw = world.gw
    rc, out, err = gw.ctl("frobnicate")
    assert rc == 2, (rc, out, err)
    rc, out, err = gw.ctl("rule", "add")
    assert rc == 2, (rc, out, err)
    gw.ctl_ok("domain", "add", "gw.test")
    # A destination nobody verified is refused, with one line on stderr.
    rc, out, err = gw.ctl("rule", "add", "gw.test", "--to", "info@gw.test",
                          "--forward", "mallory@dest.test")
    assert rc == 1, (rc, out, err)
    assert len(err.strip().splitlines()) == 1, err
    # Refused means not stored: the address stays unknown at RCPT.
    out = gw.ctl_ok("rule", "list")
    assert "mallory@dest.test" not in out
    s = gw.smtp()
    try:
        s.mail("alice@sender.test")
        code, msg = s.rcpt("info@gw.test")
        assert code == 550 and msg.startswith(b"5.1.1"), (code, msg)
    finally:
        s.quit()


def test_config_prints_effective_values(world):
    out = world.gw.ctl_ok("config")
    assert GW_HOST in out
    assert world.gw.spool in out
    assert "retry_min" in out
