"""The whole hotline's Asterisk: the sandbox root, started on a free port with the prompts and the AGI set up.

Used by the end-to-end tests (``tests/e2e/conftest.py``), their benchmark
(``bench/bench_hotline.py``) and ``make demo`` (``demo/phone.py``), so that
each brings up the phone side the same way::

    root = e2e_root(os.environ)                 # ~/.cache/recharge-asterisk/root-e2e
    Sandbox(root).build()                       # once per machine: about a minute and 550 MB
    sandbox = start_hotline(root, build_prompts(workdir / "prompts"),
                            [("127.0.0.1", 8441), ("127.0.0.1", 8442)], api_key)
    ...                                         # SIPp or ``cli.py replay`` on sandbox.sip_port
    sandbox.stop()

The root is a sibling of the default one (``<root>-e2e``), so that these
runs and ``tests/asterisk`` never fight over one Asterisk: each root runs
one Asterisk at a time.  Whoever starts it while another process runs it
waits (up to ``SANDBOX_WAIT`` seconds) instead of failing, so a demo and a
test run take turns.  Needs root (``asterisk_conf.sandbox``), espeak-ng and
sox (``voice_prompts.build``).
"""

# test-case-name: tests.e2e.test_hotline

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from asterisk_conf.sandbox import RTP_PORTS, Sandbox, SandboxError, resolve_root
from ivr.replay import free_udp_port

SANDBOX_WAIT = 900.0  # seconds to wait for another process's run of the e2e sandbox
LANGUAGES = ("zh", "en")


def e2e_root(environ: Mapping[str, str]) -> Path:
    """The sandbox root the whole-hotline runs use: the default root's sibling ``<name>-e2e``."""
    base = resolve_root(None, environ)
    return base.with_name(base.name + "-e2e")


def start_sandbox(root: Path, *, wait: float = SANDBOX_WAIT) -> Sandbox:
    """Build (once) and start an Asterisk in ``root`` on a free port, waiting while another process runs it."""
    port = free_udp_port()
    while RTP_PORTS[0] <= port <= RTP_PORTS[1]:  # Asterisk's RTP would fight the SIP transport for it
        port = free_udp_port()
    sandbox = Sandbox(root, port)
    sandbox.build()
    deadline = time.monotonic() + wait
    while True:
        try:
            sandbox.start()
            return sandbox
        except SandboxError as e:
            if "another process is building or running" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def build_prompts(out: Path) -> Path:
    """The hotline's prompts and number sounds, rendered once into ``out/<lang>/``."""
    from voice_prompts.build import build

    if not (out / "zh" / "welcome.wav").is_file():
        build(out)
    return out


def start_hotline(root: Path, prompts: Path, servers: Sequence[tuple[str, int]], api_key: bytes, *,
                  wait: float = SANDBOX_WAIT) -> Sandbox:
    """Start the sandbox (``start_sandbox``), install the prompts in both languages, point the AGI at ``servers``."""
    sandbox = start_sandbox(root, wait=wait)
    try:
        for lang in LANGUAGES:
            sandbox.install_sounds(prompts / lang, lang)
        sandbox.write_agi_config(servers, api_key)
    except BaseException:
        sandbox.stop()
        raise
    return sandbox
