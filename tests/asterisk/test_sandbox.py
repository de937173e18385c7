"""The Asterisk sandbox works: real calls from SIPp reach a real Asterisk 22 and a pyst2 AGI script in it.

Needs the real Asterisk sandbox (built on first use, about a minute; root)
and SIPp (``sip-tester``, installed by the sandbox when missing); never
skips.  The proof script stands in for the dialog: it sends a prompt id as
text, reads digits the caller sends as SIP INFO, and sends back what it read,
which the SIPp caller checks step by step.  The first tests need no Asterisk:
they pin the sandbox's own helpers.
"""

import re
import subprocess
import time
from pathlib import Path

import pytest

from asterisk_conf import sandbox as sandbox_module
from asterisk_conf.sandbox import (
    CHROOT_PY_DIR,
    CONF_DIR,
    Sandbox,
    SandboxError,
    render_agi_config,
    render_config,
    resolve_inside,
    resolve_root,
)
from tests.asterisk.sipp import Digits, ExpectBye, ExpectText, call_scenario, run_sipp

pytestmark = pytest.mark.slow

PROOF_AGI = f'''#!/usr/bin/env python3
"""The sandbox's proof: prompt, read digits, report them, hang up."""
import sys

sys.path.insert(0, {CHROOT_PY_DIR!r})
from asterisk.agi import AGI

agi = AGI()
call = agi.env.get("agi_uniqueid", "?")
agi.verbose("sandbox-proof: call %s started" % call)
agi.answer()
agi.send_text("prompt=hello")
digits = agi.get_data("beep", 3000, 4)
agi.send_text("result=" + digits)
agi.verbose("sandbox-proof: call %s digits=%s" % (call, digits))
agi.hangup()
'''

PROOF_CALL = [ExpectText("^prompt=hello$"), Digits("12#"), ExpectText("^result=12$"), ExpectBye()]


def wait_for_log(sb: Sandbox, pattern: str, count: int = 1, since: int = 0, timeout: float = 10.0) -> list[str]:
    """The lines of messages.log (from character ``since`` on) matching ``pattern``, once there are ``count``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in sb.messages_log()[since:].splitlines() if re.search(pattern, line)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.fixture(scope="module")
def proof(sandbox: Sandbox) -> Sandbox:
    sandbox.install_agi("sandbox-proof.agi", PROOF_AGI)
    return sandbox


# --- the helpers, without Asterisk ------------------------------------------------------


def test_root_comes_from_the_option_then_the_environment_then_the_default(tmp_path: Path) -> None:
    assert resolve_root(str(tmp_path / "a"), {"ASTERISK_SANDBOX_DIR": "/elsewhere"}) == tmp_path / "a"
    assert resolve_root(None, {"ASTERISK_SANDBOX_DIR": str(tmp_path / "b")}) == tmp_path / "b"
    assert resolve_root(None, {}) == Path.home() / ".cache/recharge-asterisk/root"


def test_every_placeholder_in_the_configuration_has_a_value() -> None:
    values = {"SIP_BIND": "127.0.0.1", "SIP_PORT": 5999, "RTP_START": 40000, "RTP_END": 40399}
    for conf in CONF_DIR.glob("*.conf"):
        render_config(conf.read_text(), values)  # raises on a placeholder without a value
    assert "bind = 127.0.0.1:5999" in render_config((CONF_DIR / "pjsip.conf").read_text(), values)
    with pytest.raises(SandboxError, match="@NOPE@"):
        render_config("x = @NOPE@", values)


def test_paths_in_the_root_follow_its_absolute_links_inside_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/alternatives/prompts").mkdir(parents=True)
    (root / "usr/share").mkdir(parents=True)
    (root / "usr/share/sounds").symlink_to("/etc/alternatives/prompts")
    (root / "var").mkdir()
    (root / "var/run").symlink_to("/run")
    assert resolve_inside(root, "/usr/share/sounds/x.wav") == root / "etc/alternatives/prompts/x.wav"
    assert resolve_inside(root, "/var/run/asterisk/asterisk.pid") == root / "run/asterisk/asterisk.pid"
    assert resolve_inside(root, "/../../etc/passwd") == root / "etc/passwd"


def test_sounds_are_installed_inside_the_root_even_through_its_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/alternatives/asterisk-prompt-en").mkdir(parents=True)
    (root / "usr/share/asterisk/sounds").mkdir(parents=True)
    (root / "usr/share/asterisk/sounds/en").symlink_to("/etc/alternatives/asterisk-prompt-en")
    src = tmp_path / "prompts"
    (src / "digits").mkdir(parents=True)
    (src / "welcome.wav").write_bytes(b"RIFF")
    (src / "digits/1.wav").write_bytes(b"RIFF")
    sb = Sandbox(root, 5999)
    written = sb.install_sounds(src, "en") + sb.install_sounds(src, "zh")
    assert sorted(p.relative_to(root).as_posix() for p in written) == [
        "etc/alternatives/asterisk-prompt-en/digits/1.wav",
        "etc/alternatives/asterisk-prompt-en/welcome.wav",
        "usr/share/asterisk/sounds/zh/digits/1.wav",
        "usr/share/asterisk/sounds/zh/welcome.wav",
    ]
    with pytest.raises(SandboxError):
        sb.install_sounds(src, "../en")


def test_the_agi_configuration_lists_servers_in_order_of_preference() -> None:
    import configparser

    text = render_agi_config([("127.0.0.1", 8701), ("127.0.0.1", 8702)], "/etc/recharge/api.key", {"client": {"timeout": "0.5"}})
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    assert dict(parser["servers"]) == {"primary": "127.0.0.1:8701", "standby": "127.0.0.1:8702"}
    assert dict(parser["client"]) == {"api_key_file": "/etc/recharge/api.key", "timeout": "0.5"}


def test_the_agi_configuration_and_key_are_written_into_the_root_for_root_only(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "root", 5999)
    conf = sb.write_agi_config([("127.0.0.1", 8701)], b"k" * 32)
    assert conf == tmp_path / "root/etc/recharge/agi.conf"
    assert "primary = 127.0.0.1:8701" in conf.read_text()
    assert "api_key_file = /etc/recharge/api.key" in conf.read_text()
    key = tmp_path / "root/etc/recharge/api.key"
    assert key.read_bytes() == b"k" * 32
    assert key.stat().st_mode & 0o777 == 0o600
    assert conf.parent.stat().st_mode & 0o777 == 0o700


# --- the real Asterisk ------------------------------------------------------------------------


def test_asterisk_runs_the_hotline_configuration(sandbox: Sandbox) -> None:
    assert sandbox.rx("core show version").startswith("Asterisk 22.")
    endpoints = sandbox.rx("pjsip show endpoints")
    assert " tester " in endpoints and " proof " in endpoints
    assert f"127.0.0.1:{sandbox.sip_port}" in sandbox.rx("pjsip show transports")
    assert "Running" in sandbox.rx("module show like res_agi.so")
    hotline = sandbox.rx("dialplan show 95598@hotline")
    for step in ("Answer()", "Set(CHANNEL(language)=zh)", "Set(CHANNEL(hangup_handler_push)=hotline-hangup,s,1)",
                 "AGI(recharge.agi)", "Hangup()"):
        assert step in hotline
    # Asterisk starts clean: every file it reads is one of ours, every module it loads is wanted.
    start_up = sandbox.messages_log().split("Asterisk Ready.")[0]
    assert not re.findall(r".*\b(?:WARNING|ERROR)\b.*", start_up)


def test_one_root_runs_one_asterisk_at_a_time(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError, match="another process is building or running"):
        Sandbox(sandbox.root, sandbox.sip_port + 1).start()
    assert sandbox.rx("core show version").startswith("Asterisk")


def test_the_command_line_names_the_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sandbox_module.main(["--root", str(tmp_path / "r"), "path"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'r'}\n"
    assert sandbox_module.main(["--root", str(tmp_path / "r"), "status"]) == 0
    assert "not built" in capsys.readouterr().out


def test_the_entry_script_runs_the_project_code_under_the_sandbox_python(sandbox: Sandbox) -> None:
    entry = sandbox.path("/usr/share/asterisk/agi-bin/recharge.agi")
    assert entry.stat().st_mode & 0o111
    assert "python3 -m ivr.agi_main --config /etc/recharge/agi.conf" in entry.read_text()
    app = sandbox.path("/opt/recharge-app")
    assert (app / "ivr/__init__.py").is_file()
    # The AGI code must be valid for the sandbox's Python (3.13+), not only the host's 3.11.
    done = subprocess.run(
        ["chroot", str(sandbox.root), "/usr/bin/python3", "-m", "compileall", "-q", "/opt/recharge-app"],
        capture_output=True, text=True, env=sandbox_module.CHROOT_ENV, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_call_reaches_an_agi_script_that_prompts_reads_digits_and_answers(proof: Sandbox, tmp_path: Path) -> None:
    since = len(proof.messages_log())
    run = run_sipp(call_scenario(PROOF_CALL, caller="proof", name="proof"), proof.sip_port, tmp_path, timeout=20)

    assert run.ok, run.explain()
    assert re.findall(r"text (\S+)", run.logs) == ["prompt=hello", "result=12"]
    executed = wait_for_log(proof, r"Executing \[95598@sandbox-proof:\d+\] AGI\(\"PJSIP/proof-", since=since)
    assert executed, proof.messages_log()[since:]
    (done,) = wait_for_log(proof, r"sandbox-proof: call \S+ digits=12$", since=since)
    call_id = re.search(r"call (\S+) digits", done).group(1)  # type: ignore[union-attr]
    # The hangup handler ran after the script had hung up the call.
    assert wait_for_log(proof, rf"app_verbose\.c: hotline: call {re.escape(call_id)} ended: AGISTATUS=HANGUP", since=since)


def test_twenty_concurrent_calls_all_pass(proof: Sandbox, tmp_path: Path) -> None:
    since = len(proof.messages_log())
    run = run_sipp(call_scenario(PROOF_CALL, caller="proof", name="proof20"), proof.sip_port, tmp_path,
                   calls=20, concurrent=20, rate=20, timeout=40)

    assert run.ok, run.explain()
    assert len(re.findall(r"text result=12", run.logs)) == 20
    assert len(wait_for_log(proof, r"sandbox-proof: call \S+ digits=12$", count=20, since=since)) == 20
    assert len(wait_for_log(proof, r"app_verbose\.c: hotline: call \S+ ended", count=20, since=since)) == 20
