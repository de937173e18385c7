"""The real Asterisk for every test in this folder: one sandbox, built once per machine and started once per run.

The first run on a machine builds the sandbox (``testkit/sandbox.py``:
a Debian sid root with Asterisk, about a minute and 550 MB, under
``~/.cache/recharge-asterisk/root`` or ``ASTERISK_SANDBOX_DIR``) and installs
SIPp; later runs reuse it.  It needs root (debootstrap, chroot, apt-get).
Nothing here skips: without root, or when the build fails, the tests fail
and say why.
"""

import os
from collections.abc import Iterator

import pytest

from testkit.sandbox import Sandbox, SandboxError, free_sip_port, resolve_root


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """A started Asterisk on a free SIP port of 127.0.0.1; stopped at the end of the run."""
    if os.geteuid() != 0:
        pytest.fail("the Asterisk sandbox needs root (debootstrap, chroot, apt-get); run the tests as root", pytrace=False)
    sb = Sandbox(resolve_root(None, os.environ), free_sip_port())
    try:
        sb.build()
        sb.start()
    except SandboxError as e:
        pytest.fail(f"the Asterisk sandbox could not be started: {e}", pytrace=False)
    yield sb
    sb.stop()
