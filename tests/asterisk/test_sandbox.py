"""The Asterisk sandbox works: real calls from SIPp reach a real Asterisk 22 and a pyst2 AGI script in it.

Needs the real Asterisk sandbox (built on first use, about a minute; root)
and SIPp (``sip-tester``, installed by the sandbox when missing); never
skips.  The proof script stands in for the dialog: it sends a prompt id as
text, reads digits the caller sends as SIP INFO, and sends back what it read,
which the SIPp caller checks step by step.  The first tests need no Asterisk:
they pin the sandbox's own helpers.  The command line's ``start`` is tested
on this root too, with the session's Asterisk stopped meanwhile (one root
runs one Asterisk).
"""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit import sandbox as sandbox_module
from testkit.sandbox import (
    CHROOT_PY_DIR,
    CHROOT_SOUNDS_DIR,
    CONF_DIR,
    PROJECT_DIR,
    RTP_PORTS,
    Sandbox,
    SandboxBusy,
    SandboxError,
    build_prompts,
    e2e_root,
    free_sip_port,
    parse_server,
    render_agi_config,
    render_config,
    resolve_inside,
    resolve_root,
    start_hotline,
)
from testkit.sipp import Digits, ExpectBye, ExpectText, call_scenario, run_sipp
from voice_prompts.build import sounds
from voice_prompts.catalogue import LANGS

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

# A short prompt of the catalogue, played in each language; the text tells how far Asterisk got into the file
# (STREAM FILE's end position in samples), or that there was no file to play.
PLAYED_PROMPT = "currency-yuan"
PLAYBACK_AGI = f'''#!/usr/bin/env python3
"""The prompts' proof: play {PLAYED_PROMPT} in each language and say played=LANG:SAMPLES or missing=LANG."""
import sys

sys.path.insert(0, {CHROOT_PY_DIR!r})
from asterisk.agi import AGI, AGIAppError

agi = AGI()
agi.answer()
for lang in {LANGS!r}:
    agi.set_variable("CHANNEL(language)", lang)
    try:
        done = agi.execute("STREAM FILE", {PLAYED_PROMPT!r}, '""')
        agi.send_text("played=%s:%s" % (lang, done.get("endpos", ("?", ""))[0]))
    except AGIAppError:
        agi.send_text("missing=" + lang)
agi.wait_for_digit(5000)  # the caller's key: it has read both texts
agi.hangup()
'''
PLAYBACK_CALL = [*(ExpectText(f"^played={lang}:[1-9][0-9]*$") for lang in LANGS), Digits("1"), ExpectBye()]


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


def test_every_placeholder_in_the_configuration_has_a_value(tmp_path: Path) -> None:
    values = Sandbox(tmp_path, 5999, fastagi_port=4573, agent_port=5998).config_values()
    assert values["RTP_START"] == 40000 and values["RTP_END"] == 40399
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


def test_the_prompts_are_installed_in_every_language(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    for lang in LANGS:
        (prompts / lang / "digits").mkdir(parents=True)
        (prompts / lang / "welcome.wav").write_bytes(b"RIFF" + lang.encode())
        (prompts / lang / "digits/1.wav").write_bytes(b"RIFF")
    sb = Sandbox(tmp_path / "root", 5999)
    written = sb.install_prompts(prompts)
    assert sorted(p.relative_to(sb.path(CHROOT_SOUNDS_DIR)).as_posix() for p in written) == sorted(
        f"{lang}/{name}" for lang in LANGS for name in ("welcome.wav", "digits/1.wav"))
    for lang in LANGS:
        assert sb.path(f"{CHROOT_SOUNDS_DIR}/{lang}/welcome.wav").read_bytes() == b"RIFF" + lang.encode()


def test_prompts_are_rendered_once_and_again_when_one_is_missing(tmp_path: Path) -> None:
    out = build_prompts(tmp_path / "prompts")
    expected = sorted(f"{lang}/{name}.wav" for lang in LANGS for name in sounds(lang))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == expected
    welcome = out / "zh/welcome.wav"
    rendered_at = welcome.stat().st_mtime_ns
    build_prompts(out)
    assert welcome.stat().st_mtime_ns == rendered_at  # all there: nothing rendered
    (out / "en/goodbye.wav").unlink()
    build_prompts(out)
    assert (out / "en/goodbye.wav").is_file()


def test_sip_ports_and_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = iter([RTP_PORTS[0], RTP_PORTS[1], 5999])
    monkeypatch.setattr(sandbox_module, "free_udp_port", lambda: next(ports))
    assert free_sip_port() == 5999  # never one of Asterisk's RTP ports
    assert parse_server("127.0.0.1:8441") == ("127.0.0.1", 8441)
    for bad in ("8441", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:0", "127.0.0.1:70000"):
        with pytest.raises(SandboxError, match="expected HOST:PORT"):
            parse_server(bad)
    assert e2e_root({"ASTERISK_SANDBOX_DIR": "/srv/asterisk"}) == Path("/srv/asterisk-e2e")


def test_the_agi_configuration_lists_servers_in_order_of_preference() -> None:
    import configparser

    text = render_agi_config([("127.0.0.1", 8701), ("127.0.0.1", 8702)], "/etc/recharge/api.key", {"client": {"timeout": "0.5"}})
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    assert dict(parser["servers"]) == {"primary": "127.0.0.1:8701", "standby": "127.0.0.1:8702"}
    assert dict(parser["client"]) == {"api_key_file": "/etc/recharge/api.key", "timeout": "0.5"}


def test_the_agi_configuration_and_key_are_written_into_the_root_for_root_only(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "root", 5999)
    conf = sb.write_agi_config([("127.0.0.1", 8701)], b"k" * 32, ca_cert=b"-----BEGIN CERTIFICATE-----\n", client="hotline")
    assert conf == tmp_path / "root/etc/recharge/agi.conf"
    assert "primary = 127.0.0.1:8701" in conf.read_text()
    assert "api_key_file = /etc/recharge/api.key" in conf.read_text()
    assert "ca_file = /etc/recharge/tls-ca.pem" in conf.read_text() and "client = hotline" in conf.read_text()
    assert (tmp_path / "root/etc/recharge/tls-ca.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
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
                 "AGI(${FASTAGI})", "AGI(recharge.agi)", "Goto(hotline-lost,s,1)"):
        assert step in hotline
    # Asterisk starts clean: every file it reads is one of ours, every module it loads is wanted.
    start_up = sandbox.messages_log().split("Asterisk Ready.")[0]
    assert not re.findall(r".*\b(?:WARNING|ERROR)\b.*", start_up)


def test_one_root_runs_one_asterisk_at_a_time(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError, match="another process is building or running"):
        Sandbox(sandbox.root, sandbox.sip_port + 1).start()
    assert sandbox.rx("core show version").startswith("Asterisk")


def test_a_hotline_start_on_a_busy_root_waits_then_gives_up(sandbox: Sandbox, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    started = time.monotonic()
    with pytest.raises(SandboxBusy):
        start_hotline(Sandbox(sandbox.root, free_sip_port()), prompts, wait=2.0)
    assert time.monotonic() - started >= 2.0
    assert sandbox.rx("core show version").startswith("Asterisk")


def test_the_command_line_names_the_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sandbox_module.main(["--root", str(tmp_path / "r"), "path"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'r'}\n"
    assert sandbox_module.main(["--root", str(tmp_path / "r"), "status"]) == 0
    assert "not built" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "error"), [
    (["--server", "localhost"], "error: --server 'localhost': expected HOST:PORT\n"),
    (["--server", "127.0.0.1:8441", "--api-key-file", "{tmp}/no.key"], "error: {tmp}/no.key: No such file or directory\n"),
])
def test_the_command_line_refuses_a_bad_start_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         args: list[str], error: str) -> None:
    argv = ["--root", str(tmp_path / "r"), "start", *(a.format(tmp=tmp_path) for a in args)]
    assert sandbox_module.main(argv) == 1
    assert capsys.readouterr().err == error.format(tmp=tmp_path)
    assert not (tmp_path / "r").exists()  # refused before anything was built or started


def test_the_command_line_start_installs_the_prompts_that_calls_play(sandbox: Sandbox, tmp_path: Path) -> None:
    # Each through the root's own links (sounds/en leads to /etc/alternatives/... inside the root).
    prompt_files = {f"{lang}/{name}": sandbox.path(f"{CHROOT_SOUNDS_DIR}/{lang}/{name}.wav")
                    for lang in LANGS for name in sounds(lang)}
    for old in prompt_files.values():
        old.unlink(missing_ok=True)  # whatever an earlier start left: this one must bring them
    port = free_sip_port()
    command = [sys.executable, "-m", "testkit.sandbox", "--root", str(sandbox.root)]
    sandbox.stop()  # one root runs one Asterisk: the command line's for this test, the session's again after it
    try:
        done = subprocess.run([*command, "start", "--sip-port", str(port)], cwd=PROJECT_DIR, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"SIP on udp:127.0.0.1:{port}, prompts in {', '.join(LANGS)}" in done.stdout
        assert not [name for name, path in prompt_files.items() if not path.is_file()]
        sandbox.install_agi("sandbox-proof.agi", PLAYBACK_AGI)
        run = run_sipp(call_scenario(PLAYBACK_CALL, caller="proof", name="prompts"), port, tmp_path, timeout=30)
        assert run.ok, run.explain()
        texts = re.findall(r"text (\S+)", run.logs)
        assert [t.split(":")[0] for t in texts] == [f"played={lang}" for lang in LANGS], texts
        assert all(int(t.split(":")[1]) > 0 for t in texts), texts  # Asterisk got into each file: it played
    finally:
        subprocess.run([*command, "stop"], cwd=PROJECT_DIR, capture_output=True, timeout=60, check=False)
        sandbox.install_agi("sandbox-proof.agi", PROOF_AGI)
        sandbox.start()


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


def test_a_key_without_the_ca_certificate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="CA certificate"):
        Sandbox(tmp_path / "root", 5999).write_agi_config([("127.0.0.1", 8701)], b"k" * 32)
