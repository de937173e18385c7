"""``replay``: refusing bad input before any call, and never showing a PIN.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from testkit import replay as replay_tool
from testkit.commandline import (
    Refusals,
    assert_one_line_error,
    invoke,
)
from testkit.replay import free_udp_port

CALLS = Path(__file__).resolve().parents[1] / "calls"



SECRET_PIN = "918273645546372819"



def test_replay_refuses_bad_input_in_one_line_before_any_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    silent = free_udp_port()  # nothing listens there
    bad = tmp_path / "bad.call"
    bad.write_text("# a typo on line 2\nexpect prompt=welcome\nsend 1x\nexpect bye\n", encoding="utf-8")
    good = CALLS / "silence.call"
    one_card = [CALLS / "recharge-one-card.call", "--var", "CALLER=13800000001", "--var", "ACCOUNT=3100000001",
                "--var", "AMOUNT=5000"]

    def replay(*args: Any, input: str | None = None) -> Result:
        return invoke("replay", *args, "--port", silent, "--workdir", work, input=input)

    r = Refusals()
    r.check("missing script", replay(tmp_path / "nowhere.call"), "nowhere.call: cannot read the script")
    r.check("a folder", replay(tmp_path), "cannot read the script")
    r.check("malformed script", replay(good, bad, "--var", "CALLER=1"), "bad.call:3: 'x' is not a phone key")
    r.check("variable without a value", replay(good), "${CALLER} has no value (give it with --var CALLER=...)")
    r.check("bad value", replay(*one_card, "--var", "ACCOUNT=31000000O1", "--var", "PIN=1"),
            "${ACCOUNT} is sent as keys")
    r.check("missing injection file", replay(good, "--inject", tmp_path / "rows.csv"), "cannot read the injection file")
    r.check("missing audio", replay(good, "--var", "CALLER=1", "--audio", tmp_path / "x.pcap"), "no such audio file")
    r.check("nothing listening", replay(good, "--var", "CALLER=13800000001"),
            f"nothing listens for SIP on udp 127.0.0.1:{silent}")
    r.check("unknown host", invoke("replay", good, "--var", "CALLER=1", "--host", "no-such-host.invalid"),
            "cannot reach no-such-host.invalid")
    r.check("no PIN on standard input", replay(*one_card, "--secret", "PIN", input=""),
            "standard input ended before the value of PIN")
    r.check("empty PIN", replay(*one_card, "--secret", "PIN", input="\n"), "the value of PIN is empty")
    r.check("PIN given twice", replay(*one_card, "--var", "PIN=1", "--secret", "PIN", input=f"{SECRET_PIN}\n"),
            "PIN is given twice")
    monkeypatch.setattr(replay_tool, "SIPP", "no-such-sipp")
    r.check("no SIPp", replay(good, "--var", "CALLER=1"), "no-such-sipp is not installed")
    monkeypatch.undo()
    r.check("no script", invoke("replay"), "Missing argument", code=2)
    r.check("--var without =", replay(good, "--var", "CALLER"), "expected NAME=VALUE", code=2)
    r.check("port 0", invoke("replay", good, "--port", 0), "--port", code=2)
    r.check("no calls", replay(good, "--concurrent", 0), "--concurrent", code=2)
    r.assert_all_clean()
    assert not work.exists(), "nothing was phoned, so SIPp wrote nothing"



def test_replay_never_shows_a_pin_read_from_standard_input(tmp_path: Path) -> None:
    silent = free_udp_port()
    result = invoke("replay", CALLS / "recharge-one-card.call", "--var", "CALLER=13800000001", "--var",
                    "ACCOUNT=3100000001", "--var", "AMOUNT=5000", "--secret", "PIN", "--port", silent,
                    input=f"{SECRET_PIN}\n")
    assert_one_line_error(result, "nothing listens for SIP")
    assert SECRET_PIN not in result.output

