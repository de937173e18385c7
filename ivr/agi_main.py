"""The AGI entry point: read the configuration, build the failover client, run the dialog for one call.

Asterisk runs this once per call (process AGI): ``python3 -m ivr.agi_main
[--config] [CONFIG]``; the FastAGI service (``ivr.fastagi``) runs ``serve``
for each of its calls with what ``prepare`` read once.  The configuration file (default
``/etc/recharge/agi.conf``) is INI::

    [agi]
    servers = 10.0.0.11:8480, 10.0.0.12:8480   ; primary first; names or addresses in the servers' certificate
    client = hotline                           ; this host's channel-client name (cli.py client add)
    api_key_file = /etc/recharge/api.key       ; that client's key: 64 hex digits, owner-only
    ca_file = /etc/recharge/tls-ca.pem         ; the installation's CA certificate (keys/tls-ca.pem)
    timeout = 0.5                              ; seconds per server
    total_timeout = 1.0                        ; seconds for one request, failover included
    digit_timeout_ms = 6000                    ; before the first key and between keys
    prompt_prefix =                            ; e.g. "recharge/" if the prompts sit in a subdirectory
    send_text = yes                            ; prompt=/result= lines as SIP MESSAGEs (call scripts read them)
    agents = yes                               ; key 0 and repeated failures transfer to an agent (the dialplan's AGENT_DIAL)

The layout that ``testkit/sandbox.py`` writes is read as well: a
``[servers]`` section with one ``host:port`` per key in order of preference
(``primary``, ``standby``, ...) and the other keys under ``[client]``.

Logging goes to syslog (when ``/dev/log`` exists) and to stderr, each line
naming the call id.  The PIN is never logged: pyst2 echoes every AGI command
and answer (the digits a caller keys included) to its stderr, so it is given
a sink instead, and a failure is logged by its type and stack, never its message.

Whatever goes wrong - a bad configuration, a missing key, a bug - the caller
hears an apology and a goodbye and the call is hung up; never a traceback.

At import time: standard library (``ssl`` included, for the TLS to the
servers), pyst2, ``ivr.dialog``, ``ivr.agi_channel`` and ``ivr.client`` only (this runs under the Asterisk host's Python, 3.11 to 3.14).
Every call pays for its imports before its first prompt, so what only some
calls or hosts need is imported when first needed (the request signing, at
the first request; the syslog handler, where the host has a syslog), and
``tests.ivr.test_agi_main`` keeps heavy modules out.
"""

# test-case-name: tests.ivr.test_agi_main (the dialog: tests.ivr.test_dialog; the whole path: the SIPp call scripts)

import configparser
import logging
import os
import re
import ssl
import stat
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from asterisk.agi import AGI

from ivr.agi_channel import AGIChannel
from ivr.client import RechargeClient, tls_context
from ivr.dialog import Channel, DialogSettings, apologise, run_call
from ivr.fields import CALL_ID_CHARS, CALL_ID_MAX

DEFAULT_CONFIG = "/etc/recharge/agi.conf"
SECTION = "agi"
SERVERS_SECTION = "servers"  # the sandbox's layout: one host:port per key, in order
KEY_SECTIONS = (SECTION, "client", "dialog")  # where the other keys are looked up, in order
SYSLOG_SOCKET = "/dev/log"

log = logging.getLogger("ivr.agi")

N = TypeVar("N", int, float)

_CALL_ID_UNSAFE = re.compile(f"[^{CALL_ID_CHARS}]")
_CALL_ID_SUFFIX = 1 + 16  # "-" and 8 random bytes in hex
_CALLER_UNSAFE = re.compile(r"[^0-9+*#]")
_CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # ivr.protocol.CLIENT_NAME, without importing it at start


class ConfigError(Exception):
    """The AGI configuration or the key file is unusable; the message is one line and names no secret."""


@dataclass(frozen=True)
class AgiConfig:
    """The AGI script's settings, from one INI file."""

    servers: tuple[tuple[str, int], ...]
    api_key_file: str
    ca_file: str
    client: str
    timeout: float = 0.5
    total_timeout: float = 1.0
    digit_timeout_ms: int = 6000
    prompt_prefix: str = ""
    send_text: bool = True
    agents: bool = True


def parse_servers(text: str) -> tuple[tuple[str, int], ...]:
    """``"a:8480, b:8480"`` (or ``[::1]:8480``) → ``(("a", 8480), ("b", 8480))``, in order of preference."""
    servers = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"servers: {item!r} is not host:port")
        servers.append((host, int(port)))
    if not servers:
        raise ConfigError("servers: at least one host:port is needed")
    return tuple(servers)


def load_config(path: str | os.PathLike[str]) -> AgiConfig:
    """Read and check the ``[agi]`` section of the INI file at ``path``."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError(f"cannot read the AGI configuration {path}: {e.strerror}") from None
    except configparser.Error as e:
        raise ConfigError(f"the AGI configuration {path} is not valid INI: {type(e).__name__}") from None
    sections = [parser[name] for name in KEY_SECTIONS if parser.has_section(name)]
    if not sections and not parser.has_section(SERVERS_SECTION):
        raise ConfigError(f"the AGI configuration {path} has no [{SECTION}] section")

    def get(key: str) -> str | None:
        for sec in sections:
            if key in sec:
                return sec[key].strip()
        return None

    try:
        listed = get("servers")
        if listed is None and parser.has_section(SERVERS_SECTION):
            listed = ",".join(v for v in parser[SERVERS_SECTION].values() if v.strip())
        servers = parse_servers(listed or "")
        key_file = get("api_key_file")
        if not key_file:
            raise ConfigError("api_key_file is missing")
        ca_file = get("ca_file")
        if not ca_file:
            raise ConfigError("ca_file is missing (the installation's keys/tls-ca.pem: the servers speak TLS only)")
        client = get("client")
        if not client or not _CLIENT_NAME.match(client):
            raise ConfigError("client must be this host's registered channel-client name, e.g. hotline")
        config = AgiConfig(
            servers=servers,
            api_key_file=key_file,
            ca_file=ca_file,
            client=client,
            timeout=_number(get("timeout"), float, AgiConfig.timeout, "timeout"),
            total_timeout=_number(get("total_timeout"), float, AgiConfig.total_timeout, "total_timeout"),
            digit_timeout_ms=_number(get("digit_timeout_ms"), int, AgiConfig.digit_timeout_ms, "digit_timeout_ms"),
            prompt_prefix=get("prompt_prefix") or "",
            send_text=_flag(get("send_text"), AgiConfig.send_text, "send_text"),
            agents=_flag(get("agents"), AgiConfig.agents, "agents"),
        )
    except ConfigError as e:
        raise ConfigError(f"the AGI configuration {path}: {e}") from None
    if not (0 < config.timeout <= 10 and 0 < config.total_timeout <= 30):
        raise ConfigError("timeout and total_timeout must be a few seconds at most")
    if not 1000 <= config.digit_timeout_ms <= 30000:
        raise ConfigError("digit_timeout_ms must be from 1000 to 30000")
    return config


def _number(text: str | None, kind: type[N], default: N, name: str) -> N:
    if text is None or text == "":
        return default
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {text[:20]!r}") from None


def _flag(text: str | None, default: bool, name: str) -> bool:
    if text is None or text == "":
        return default
    value = configparser.ConfigParser.BOOLEAN_STATES.get(text.lower())
    if value is None:
        raise ConfigError(f"{name} must be yes or no, not {text[:20]!r}")
    return value


def read_api_key(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte request-signing key from an owner-only file of 64 hex digits."""
    try:
        st = os.stat(path)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"key file {path} is open to other users; chmod 600 it")
        with open(path, "rb") as f:
            text = f.read().strip()
    except OSError as e:
        raise ConfigError(f"key file {path} cannot be read: {e.strerror}") from None
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{path} is not a key file (64 hex digits)")
    return key


def _tls_context(ca_file: str) -> "ssl.SSLContext":
    try:
        return tls_context(ca_file)
    except OSError as e:  # ssl.SSLError is one: a file that is not a certificate
        raise ConfigError(f"ca_file {ca_file}: {e.strerror or type(e).__name__}") from None


def call_id_of(env: dict[str, str]) -> str:
    """The call's id for the recharge service: Asterisk's ``uniqueid`` plus a random suffix.

    The id is the idempotency key of every recharge in the call, so it must
    never repeat: ``uniqueid`` is only unique within one Asterisk host (and is
    missing when the script is run by hand), and several Asterisk hosts share
    the recharge servers.  It is drawn once per AGI process, so it stays the
    same for the whole call, across failovers.
    """
    base = _CALL_ID_UNSAFE.sub("", env.get("agi_uniqueid", ""))[: CALL_ID_MAX - _CALL_ID_SUFFIX]
    return f"{base or 'call'}-{os.urandom(8).hex()}"  # what secrets.token_hex(8) gives, without its import


def caller_number(raw: str) -> str:
    """The caller's number as the service takes it: digits, ``+``, ``*``, ``#``; "" when withheld."""
    if raw.strip().lower() in ("", "unknown", "anonymous", "restricted"):
        return ""
    return _CALLER_UNSAFE.sub("", raw)[:32]


class _Sink:
    """Where pyst2's command echo goes: nowhere (it would carry the caller's PIN)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Syslog (if the host has one) and stderr, with the process id; the messages name the call."""
    root = logging.getLogger()
    root.setLevel(level)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("recharge-agi[%(process)d] %(levelname)s %(name)s: %(message)s"))
    root.addHandler(stream)
    if os.path.exists(SYSLOG_SOCKET):
        # Imported here, not with the module: it pulls in pickle, queue and more, and not every host has a syslog.
        from logging.handlers import SysLogHandler

        try:
            syslog = SysLogHandler(address=SYSLOG_SOCKET)
        except OSError:
            return
        syslog.setFormatter(logging.Formatter("recharge-agi[%(process)d]: %(levelname)s %(name)s: %(message)s"))
        root.addHandler(syslog)


def _log_failure(call_id: str, e: BaseException) -> None:
    # The type and the stack say where; an exception's message could in principle carry input.
    stack = "".join(traceback.format_tb(e.__traceback__)).rstrip()
    log.error("call %s: the dialog failed with %s\n%s", call_id, type(e).__name__, stack)


@dataclass(frozen=True)
class Prepared:
    """What every call needs from the configuration: the settings, the key, the TLS context (read once, shared)."""

    config: AgiConfig
    key: bytes
    tls: "ssl.SSLContext"


def prepare(config_path: str) -> Prepared:
    """Read and check the configuration, the key and the CA certificate; ``ConfigError`` (one line) if unusable."""
    config = load_config(config_path)
    return Prepared(config, read_api_key(config.api_key_file), _tls_context(config.ca_file))


def serve(agi: AGI, setup: "str | Prepared") -> int:
    """Run one call on a constructed ``AGI``; 0 when the dialog ran, 1 when it had to apologise.

    ``setup`` is the configuration's path (process AGI: read for this call)
    or what ``prepare`` read (the FastAGI service: read once at its start).
    """
    env = getattr(agi, "env", {}) or {}
    call_id = call_id_of(env)
    caller = caller_number(env.get("agi_callerid", ""))
    channel: Channel = AGIChannel(agi)
    try:
        prepared = setup if isinstance(setup, Prepared) else prepare(setup)
        config = prepared.config
        channel = AGIChannel(agi, prompt_prefix=config.prompt_prefix, send_text=config.send_text)
        # One kept-alive connection per server for the whole call, closed when the call ends.
        with RechargeClient(
            config.servers, prepared.key, timeout=config.timeout, total_timeout=config.total_timeout,
            tls=prepared.tls, client=config.client,
        ) as client:
            log.info("call %s: start (servers %s)", call_id, ", ".join(f"{h}:{p}" for h, p in config.servers))
            result = run_call(
                channel, client, call_id=call_id, caller=caller,
                settings=DialogSettings(digit_timeout_ms=config.digit_timeout_ms, agents=config.agents),
            )
    except ConfigError as e:
        log.error("call %s: %s", call_id, e)
        apologise(channel)
        return 1
    except Exception as e:
        _log_failure(call_id, e)
        apologise(channel)
        return 1
    log.info("call %s: end (%s)", call_id, result)
    return 0


def config_argument(args: list[str]) -> str:
    """The configuration path from ``[--config] PATH`` or ``--config=PATH``; the default without one."""
    if args and args[0].startswith("--config="):
        return args[0].split("=", 1)[1] or DEFAULT_CONFIG
    if args and args[0] == "--config":
        args = args[1:]
    return args[0] if args else DEFAULT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m ivr.agi_main [--config] [CONFIG]``: the process AGI script's body.

    No argparse: a usage error must not print to Asterisk and exit; a
    missing or wrong configuration is handled like any other (apology, goodbye).
    """
    config_path = config_argument(list(sys.argv[1:] if argv is None else argv))
    setup_logging()
    # Asterisk talks UTF-8 on the AGI pipe whatever the process locale is.
    for stream in (sys.stdin, sys.stdout):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(encoding="utf-8", errors="replace")
    try:
        agi = AGI(stderr=_Sink())
    except Exception as e:
        # Not started by Asterisk, or the pipe broke before the call began: nobody to apologise to.
        log.error("no AGI session: %s", type(e).__name__)
        return 1
    return serve(agi, config_path)


if __name__ == "__main__":
    sys.exit(main())
