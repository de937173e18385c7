"""Tests for ivr.agi_main: configuration, key file, call ids, one call's life, and what a call imports.

The entry is run the way Asterisk runs it (``python -m ivr.agi_main``, the
AGI session on its stdin and stdout) against a scripted stand-in for
Asterisk; the dialog itself is tested in ``test_dialog``.
"""

import json
import logging
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asterisk.agi import AGIHangup

from ivr import agi_main
from ivr.agi_main import ConfigError, load_config, read_api_key
from testkit.live_api import tls_test_certificates

ROOT = Path(__file__).resolve().parents[2]
KEY_HEX = "ab" * 32
CA = str(tls_test_certificates() / "tls-ca.pem")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api.key"
    path.write_text(KEY_HEX + "\n")
    path.chmod(0o600)
    return path


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agi.conf"
    path.write_text(text, encoding="utf-8")
    return path


# --- configuration and key ---------------------------------------------------------------


def test_the_agi_section_is_read(tmp_path: Path, key_file: Path) -> None:
    path = write_config(tmp_path, f"""[agi]
servers = 10.0.0.11:8480, [::1]:8481   ; primary first
api_key_file = {key_file}
ca_file = {CA}
client = pos-7
timeout = 0.4
total_timeout = 0.9
digit_timeout_ms = 5000
prompt_prefix = recharge/
send_text = no
""")
    config = load_config(path)
    assert config.servers == (("10.0.0.11", 8480), ("::1", 8481))
    assert config.api_key_file == str(key_file)
    assert (config.ca_file, config.client) == (CA, "pos-7")
    assert (config.timeout, config.total_timeout, config.digit_timeout_ms) == (0.4, 0.9, 5000)
    assert (config.prompt_prefix, config.send_text) == ("recharge/", False)


def test_the_sandbox_layout_is_read_with_the_defaults(tmp_path: Path, key_file: Path) -> None:
    path = write_config(tmp_path, f"[servers]\nprimary = 127.0.0.1:8701\nstandby = 127.0.0.1:8702\n\n[client]\napi_key_file = {key_file}\nca_file = {CA}\nclient = hotline\n")
    config = load_config(path)
    assert config.servers == (("127.0.0.1", 8701), ("127.0.0.1", 8702))
    assert (config.timeout, config.total_timeout, config.digit_timeout_ms) == (0.5, 1.0, 6000)
    assert (config.prompt_prefix, config.send_text) == ("", True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[other]\nx = 1\n", "has no [agi] section"),
        ("[agi]\napi_key_file = /k\n", "at least one host:port"),
        ("[agi]\nservers = a:b\napi_key_file = /k\n", "is not host:port"),
        ("[agi]\nservers = a:1\n", "api_key_file is missing"),
        ("[agi]\nservers = a:1\napi_key_file = /k\nclient = hotline\n", "ca_file is missing"),
        ("[agi]\nservers = a:1\napi_key_file = /k\nca_file = /c\n", "client must be"),
        ("[agi]\nservers = a:1\napi_key_file = /k\nca_file = /c\nclient = POS 7\n", "client must be"),
        ("[agi]\nservers = a:1\napi_key_file = /k\nca_file = /c\nclient = hotline\ntimeout = soon\n", "timeout must be a number"),
        ("[agi]\nservers = a:1\napi_key_file = /k\nca_file = /c\nclient = hotline\ntimeout = 60\n", "a few seconds at most"),
        ("[agi]\nservers = a:1\napi_key_file = /k\nca_file = /c\nclient = hotline\ndigit_timeout_ms = 10\n", "from 1000 to 30000"),
        ("[agi]\nservers = a:1\napi_key_file = /k\nca_file = /c\nclient = hotline\nsend_text = maybe\n", "send_text must be yes or no"),
        ("not ini at all\n", "is not valid INI"),
    ],
)
def test_a_bad_configuration_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, text))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nowhere.conf")


def test_the_key_is_read_from_an_owner_only_file(key_file: Path) -> None:
    assert read_api_key(key_file) == bytes.fromhex(KEY_HEX)
    assert read_api_key(str(key_file)) == bytes.fromhex(KEY_HEX)


def test_a_key_file_others_can_read_is_refused(key_file: Path) -> None:
    key_file.chmod(0o640)
    with pytest.raises(ConfigError, match="open to other users") as caught:
        read_api_key(key_file)
    assert KEY_HEX not in str(caught.value)


@pytest.mark.parametrize("content", ["", "ab" * 31, "zz" * 32, "ab" * 33])
def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "api.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="is not a key file"):
        read_api_key(path)


def test_a_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        read_api_key(tmp_path / "none.key")


# --- call id, caller, arguments ----------------------------------------------------------------


def test_a_call_id_is_asterisks_uniqueid_and_a_random_suffix() -> None:
    first = agi_main.call_id_of({"agi_uniqueid": "1700000000.42"})
    second = agi_main.call_id_of({"agi_uniqueid": "1700000000.42"})
    assert first.startswith("1700000000.42-") and len(first) == len("1700000000.42-") + 16
    assert first != second
    assert agi_main.call_id_of({}).startswith("call-")
    assert agi_main.call_id_of({"agi_uniqueid": "a b/c\"d" + "9" * 80}).startswith("abcd999")


@pytest.mark.parametrize(
    ("raw", "number"),
    [("13800000000", "13800000000"), ("+86 138-0000", "+861380000"), ("anonymous", ""), ("Unknown", ""), ("", "")],
)
def test_the_callers_number(raw: str, number: str) -> None:
    assert agi_main.caller_number(raw) == number


@pytest.mark.parametrize(
    ("args", "path"),
    [([], agi_main.DEFAULT_CONFIG), (["--config", "/x.conf"], "/x.conf"), (["--config=/y.conf"], "/y.conf"), (["/z.conf"], "/z.conf")],
)
def test_the_configuration_argument(args: list[str], path: str) -> None:
    assert agi_main.config_argument(args) == path


# --- one call -----------------------------------------------------------------------------------


class FakeAGI:
    """pyst2's ``AGI`` as ``AGIChannel`` uses it; ``get_data`` answers from a script, then the caller hangs up."""

    def __init__(self, entries: list[str]) -> None:
        self.env = {"agi_uniqueid": "1700000000.5", "agi_callerid": "13800000000", "agi_language": "zh"}
        self.entries = list(entries)
        self.texts: list[str] = []

    def get_data(self, *args: Any) -> str:
        if not self.entries:
            raise AGIHangup("the caller hung up")
        return self.entries.pop(0)

    def send_text(self, text: str) -> None:
        self.texts.append(text)

    def stream_file(self, *args: Any) -> str:
        return ""

    say_digits = say_number = stream_file

    def wait_for_digit(self, *args: Any) -> str:
        return ""

    def set_variable(self, *args: Any) -> None:
        pass

    def hangup(self) -> None:
        self.texts.append("(hangup)")


class FakeClient:
    """``RechargeClient`` as the dialog and the entry use it; records what was asked and whether it was closed."""

    made: list["FakeClient"] = []

    def __init__(self, servers: Any, key: bytes, **kw: Any) -> None:
        self.servers, self.key, self.kw = servers, key, kw
        self.asked: list[str] = []
        self.closed = False
        FakeClient.made.append(self)

    def account(self, *, call_id: str, account_no: str) -> dict[str, Any]:
        self.asked.append("account")
        return {"outcome": "ok", "account_no": account_no, "holder": "张*明", "balance": 12850}

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "FakeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeClient]]:
    FakeClient.made = []
    monkeypatch.setattr(agi_main, "RechargeClient", FakeClient)
    yield FakeClient


def test_a_call_runs_and_its_connections_are_closed_when_it_ends(
    tmp_path: Path, key_file: Path, fake_client: type[FakeClient]
) -> None:
    config = write_config(tmp_path, f"[agi]\nservers = 127.0.0.1:8701, 127.0.0.1:8702\napi_key_file = {key_file}\nca_file = {CA}\nclient = hotline\ntimeout = 0.3\n")
    agi = FakeAGI(["3100000001", "1"])  # account, confirmed; then the caller hangs up at the PIN
    assert agi_main.serve(agi, str(config)) == 0
    [client] = fake_client.made
    assert client.servers == (("127.0.0.1", 8701), ("127.0.0.1", 8702))
    assert client.key == bytes.fromhex(KEY_HEX)
    assert {k: v for k, v in client.kw.items() if k != "tls"} == {"timeout": 0.3, "total_timeout": 1.0, "client": "hotline"}
    assert client.kw["tls"].verify_mode == ssl.CERT_REQUIRED and client.kw["tls"].check_hostname
    assert client.asked == ["account"] and client.closed
    assert "result=account-ok" in agi.texts


def test_a_failing_dialog_still_closes_the_connections_and_apologises(
    tmp_path: Path, key_file: Path, fake_client: type[FakeClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, f"[agi]\nservers = 127.0.0.1:8701\napi_key_file = {key_file}\nca_file = {CA}\nclient = hotline\n")

    def broken(*args: Any, **kw: Any) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(agi_main, "run_call", broken)
    agi = FakeAGI([])
    assert agi_main.serve(agi, str(config)) == 1
    assert fake_client.made[0].closed
    assert agi.texts[-3:] == ["prompt=goodbye", "result=goodbye", "(hangup)"]


def test_a_bad_configuration_apologises_without_a_client(tmp_path: Path, fake_client: type[FakeClient]) -> None:
    agi = FakeAGI([])
    assert agi_main.serve(agi, str(tmp_path / "missing.conf")) == 1
    assert not fake_client.made
    assert agi.texts[0] == "prompt=system-error" and agi.texts[-1] == "(hangup)"


# --- syslog ---------------------------------------------------------------------------------------


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_log_lines_go_to_syslog_when_the_host_has_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_logger: logging.Logger
) -> None:
    address = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(address)
        syslog.settimeout(5)
        monkeypatch.setattr(agi_main, "SYSLOG_SOCKET", address)
        agi_main.setup_logging()
        agi_main.log.info("call %s: start", "1700000000.6")
        line = syslog.recv(4096)
    assert line == f"<14>recharge-agi[{os.getpid()}]: INFO ivr.agi: call 1700000000.6: start\x00".encode()


def test_without_a_syslog_only_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_logger: logging.Logger) -> None:
    before = len(root_logger.handlers)
    monkeypatch.setattr(agi_main, "SYSLOG_SOCKET", str(tmp_path / "no-log"))
    agi_main.setup_logging()
    assert len(root_logger.handlers) == before + 1
    assert isinstance(root_logger.handlers[-1], logging.StreamHandler)


# --- the entry as Asterisk runs it ------------------------------------------------------------------


def python_path() -> str:
    """The project and where pyst2 and six are installed: what the sandbox's PYTHONPATH holds."""
    import asterisk
    import six

    return os.pathsep.join([str(ROOT), str(Path(asterisk.__path__[0]).parent), str(Path(six.__file__).parent)])


def test_the_entry_runs_a_call_as_asterisk_starts_it(tmp_path: Path, key_file: Path) -> None:
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    port = refused.getsockname()[1]
    refused.close()
    config = write_config(tmp_path, f"[agi]\nservers = 127.0.0.1:{port}\napi_key_file = {key_file}\nca_file = {CA}\nclient = hotline\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": python_path(), "LANG": "C"}
    child = subprocess.Popen(
        [sys.executable, "-m", "ivr.agi_main", "--config", str(config)], cwd=tmp_path, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    child.stdin.write("agi_request: recharge.agi\nagi_uniqueid: 1700000000.7\nagi_callerid: 13800000000\nagi_language: zh\n\n")
    child.stdin.flush()
    entries = ["3100000001", "1"]
    commands = []
    while line := child.stdout.readline():
        commands.append(line.strip())
        if line.startswith("GET DATA"):
            child.stdin.write(f"200 result={entries.pop(0)}\n" if entries else "200 result=-1\n")
        else:
            child.stdin.write("200 result=0\n")
        child.stdin.flush()
    child.stdin.close()
    errors = child.stderr.read()
    child.stdout.close()
    child.stderr.close()
    assert child.wait(10) == 0, errors
    texts = [c for c in commands if c.startswith("SEND TEXT")]
    assert texts[:2] == ['SEND TEXT "prompt=welcome"', 'SEND TEXT "result=lang-zh"']
    # No server answers the look-up: the caller is told so and the call ends.
    assert 'SEND TEXT "prompt=service-unavailable"' in texts and commands[-1] == "HANGUP"
    assert "Traceback" not in errors and "call 1700000000.7-" in errors


# --- what a call imports before its first prompt -----------------------------------------------------

# What the AGI's imports may cost: the standard library modules the entry needs from the start
# (ssl: every request goes over TLS; bench/RESULTS.md has what its import costs).
ACCEPTED = "import configparser, json, logging, socket, ssl, typing, asterisk.agi"
# Heavy modules that a call must not load before its first request (or at all).
HEAVY = ("email", "http.client", "asyncio", "pathlib", "pickle", "random", "hmac", "logging.handlers", "ivr.protocol")


def modules_after(code: str) -> set[str]:
    # -I -S: no site, no environment, so the host's site-packages hooks do not count.
    probe = f"import sys; sys.path[:0] = {python_path().split(os.pathsep)!r}; {code}; import json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True, cwd="/")
    return set(json.loads(out.stdout))


def test_a_call_starts_with_the_standard_library_pyst2_and_the_thin_modules_only() -> None:
    accepted = modules_after(ACCEPTED)
    loaded = modules_after("import ivr.agi_main")
    assert loaded - accepted == {"ivr", "ivr.agi_main", "ivr.agi_channel", "ivr.dialog", "ivr.client", "ivr.fields"}
    assert not loaded & set(HEAVY), "too heavy for every call's start"


def test_a_missing_ca_certificate_is_one_line_and_an_apology(
    tmp_path: Path, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path, f"[agi]\nservers = 127.0.0.1:8701\napi_key_file = {key_file}\nca_file = {tmp_path / 'none.pem'}\nclient = hotline\n")
    agi = FakeAGI([])
    with caplog.at_level(logging.ERROR, logger="ivr.agi"):
        assert agi_main.serve(agi, str(config)) == 1
    assert agi.texts[-3:] == ["prompt=goodbye", "result=goodbye", "(hangup)"]
    [line] = [r.getMessage() for r in caplog.records]
    assert "ca_file" in line and "\n" not in line and KEY_HEX not in line
