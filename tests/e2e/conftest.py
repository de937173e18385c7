"""Fixtures for the end-to-end phone tests: the prompts, the e2e sandbox root, and a hotline per test module.

The hotline itself (``testkit.hotline.Hotline``: an installation with cards,
the server pair, Asterisk with the prompts) is shared with
``bench/bench_hotline.py``; these fixtures give it pytest's lifetimes.

Asterisk runs in a root of its own beside the default one (``<root>-e2e``,
e.g. ``~/.cache/recharge-asterisk/root-e2e``), so that these tests and
``tests/asterisk`` never fight over one Asterisk (each root runs one
Asterisk at a time).  It is built on first use (about a minute) and started
once per test module.  When another process is running it, the fixture waits
for it (up to ``SANDBOX_WAIT`` seconds) instead of failing.

Needs root, PostgreSQL on 127.0.0.1:5432, SIPp, espeak-ng and sox; nothing
here skips.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testkit.hotline import Hotline
from testkit.sandbox import Sandbox, SandboxError, build_prompts, e2e_root
from voice_prompts.build import BuildError


@pytest.fixture(scope="session")
def prompt_sounds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prompt WAVs (zh and en), rendered once per run; fails (never skips) without espeak-ng or sox."""
    try:
        return build_prompts(tmp_path_factory.mktemp("prompts"))
    except BuildError as e:
        pytest.fail(f"the prompts could not be rendered: {e}", pytrace=False)


@pytest.fixture(scope="session")
def e2e_sandbox_root() -> Path:
    """The e2e sandbox's root, built once per machine; fails (never skips) without root."""
    if os.geteuid() != 0:
        pytest.fail("the Asterisk sandbox needs root (debootstrap, chroot, apt-get); run the tests as root", pytrace=False)
    root = e2e_root(os.environ)
    try:
        Sandbox(root).build()
    except SandboxError as e:
        pytest.fail(f"the Asterisk sandbox could not be built: {e}", pytrace=False)
    return root


@pytest.fixture(scope="module")
def hotline_factory(tmp_path_factory: pytest.TempPathFactory, factory_key_files: tuple[Path, Path],
                    e2e_sandbox_root: Path, prompt_sounds: Path) -> Iterator[Callable[..., Hotline]]:
    """Builds this module's hotline: installation, then ``prepare(hotline)`` (cards), then servers and Asterisk."""
    made: list[Hotline] = []

    def make(prepare: Callable[[Hotline], None], front_ends: bool = False) -> Hotline:
        hotline = Hotline(tmp_path_factory.mktemp("hotline"), factory_key_files)
        made.append(hotline)
        hotline.setup()
        prepare(hotline)
        hotline.start_servers()
        try:
            if front_ends:  # two Asterisks (the e2e root and a copy) behind the Kamailio dispatcher
                hotline.start_front_ends(e2e_sandbox_root, prompt_sounds)
            else:
                hotline.start_asterisk(e2e_sandbox_root, prompt_sounds)
        except SandboxError as e:
            pytest.fail(f"the Asterisk sandbox could not be started: {e}", pytrace=False)
        return hotline

    yield make
    for hotline in made:
        hotline.close()

