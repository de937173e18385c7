"""The channel-client and TLS commands of cli.py (``client add|key|list|revoke``, ``keys tls``) through CliRunner.

Built on the command line's installation fixture: each refusal is one
``Error:`` line that changes nothing, and no key is ever printed.
"""

from pathlib import Path

import pytest

from cardmgmt import tls
from cardmgmt.keys import load_api_key, load_keyring
from testkit.commandline import Installation, assert_one_line_error


def test_add_list_revoke(inst: Installation, tmp_path: Path) -> None:
    out = tmp_path / "pos-7.key"
    said = inst.ok("client", "add", "pos-7", "--channel", "pos", "--out", out)
    key = load_keyring(inst.key_dir).channel_client_key("pos-7")
    assert "pos-7 (pos) registered" in said and key.hex() not in said
    assert out.read_text().strip() == key.hex() and out.stat().st_mode & 0o777 == 0o600
    rows = inst.json("client", "list")
    assert [(r["name"], r["channel"], r["revoked_at"]) for r in rows] == [("hotline", "hotline", None), ("pos-7", "pos", None)]
    assert "revoked" in inst.ok("client", "revoke", "pos-7", "--reason", "terminal stolen")
    rows = {r["name"]: r for r in inst.json("client", "list")}
    assert rows["pos-7"]["revoked_by"] == "alice" and rows["pos-7"]["reason"] == "terminal stolen"
    log = inst.json("audit", "log", "--limit", "100")
    assert {"client.add", "client.revoke"} <= {e["action"] for e in log}
    assert key.hex() not in str(log)


def test_refusals_are_one_line_and_change_nothing(inst: Installation, tmp_path: Path) -> None:
    before = inst.json("client", "list"), inst.json("audit", "log", "--limit", "1000")
    existing = tmp_path / "there.key"
    existing.write_text("x")
    assert_one_line_error(inst.run("client", "add", "pos-8", "--channel", "pos", "--out", existing), "refusing to overwrite")
    assert_one_line_error(inst.run("client", "add", "POS 8", "--channel", "pos", "--out", tmp_path / "a.key"), "client name")
    assert_one_line_error(inst.run("client", "add", "hotline", "--channel", "hotline", "--out", tmp_path / "b.key"), "already registered")
    assert_one_line_error(inst.run("client", "add", "pos-8", "--channel", "pos", "--out", tmp_path / "c.key", user="bob"), "may not")
    assert_one_line_error(inst.run("client", "revoke", "nobody", "--reason", "x"), "not registered")
    assert_one_line_error(inst.run("client", "add", "pos-8", "--channel", "fax", "--out", tmp_path / "d.key"), code=2)
    assert not any((tmp_path / n).exists() for n in ("a.key", "b.key", "c.key", "d.key"))
    assert (inst.json("client", "list"), inst.json("audit", "log", "--limit", "1000")) == before


def test_client_key_writes_the_same_key_again(inst: Installation, tmp_path: Path) -> None:
    inst.ok("client", "key", "hotline", "--out", tmp_path / "hotline.key")
    assert bytes.fromhex((tmp_path / "hotline.key").read_text()) == load_api_key(inst.key_dir)


@pytest.mark.parametrize("command", [["client", "add", "--help"], ["client", "revoke", "--help"], ["client", "list", "--help"],
                                     ["client", "key", "--help"], ["keys", "tls", "--help"]])
def test_each_command_has_help_with_an_example(inst: Installation, command: list[str]) -> None:
    assert "Example: cli.py" in inst.ok(*command, user=None)


def test_keys_tls_issues_a_certificate_for_more_names(inst: Installation) -> None:
    said = inst.ok("keys", "tls", "--host", "recharge-a.example", "--host", "10.0.0.11")
    assert "recharge-a.example" in said and "10.0.0.11" in said
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((inst.key_dir / tls.SERVER_CERT).read_bytes())
    assert {"recharge-a.example", "10.0.0.11", "127.0.0.1", "localhost"} <= set(tls.certificate_names(cert))
    assert_one_line_error(inst.run("keys", "tls", "--host", "no good"), "neither an IP address")


def test_an_installation_without_certificates_is_told_what_to_run(inst: Installation) -> None:
    for name in (tls.SERVER_CERT, tls.SERVER_KEY, tls.CA_CERT, tls.CA_KEY):
        (inst.key_dir / name).unlink()
    assert_one_line_error(inst.run("call", "--server", "127.0.0.1:9", "--account", "3100000001", input="1\n"), "cli.py keys tls")
    inst.ok("keys", "tls")
    assert (inst.key_dir / tls.CA_CERT).exists()


def test_a_pos_terminal_is_bound_to_a_hall(inst: Installation, tmp_path: Path) -> None:
    inst.ok("hall", "add", "TS", "Tangshan office", "--level", "city")
    said = inst.ok("client", "add", "pos-h01-1", "--channel", "pos", "--hall", "H01", "--out", tmp_path / "t.key")
    assert "pos-h01-1 (pos at hall H01) registered" in said
    rows = {r["name"]: r for r in inst.json("client", "list")}
    assert rows["pos-h01-1"]["hall"] == "H01" and rows["hotline"]["hall"] is None
    assert "H01" in inst.ok("client", "list")
    before = inst.json("client", "list")
    for args, words in (
        (["hotline-2", "--channel", "hotline", "--hall", "H01"], "only a pos client"),
        (["pos-x", "--channel", "pos", "--hall", "H99"], "does not exist"),
        (["pos-y", "--channel", "pos", "--hall", "TS"], "city office"),
    ):
        assert_one_line_error(inst.run("client", "add", *args, "--out", tmp_path / f"{args[0]}.key"), words)
        assert not (tmp_path / f"{args[0]}.key").exists()
    assert inst.json("client", "list") == before
