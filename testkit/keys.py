"""Key directories for throwaway installations: made once per run, copied for each installation.

RSA key generation takes a second or more, so a run (a test session, a
benchmark) makes one key directory with ``cardmgmt.keys.create_keyring`` and
gives every installation its own copy (``copy_key_dir``): each installation
can then change or lose its keys without touching the others'.
"""

# test-case-name: tests.testkit.test_keys

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cardmgmt.keys import create_keyring


def make_key_dir(directory: Path) -> Path:
    """A new key directory (master key, API key, the system's RSA pair) at ``directory``; the path."""
    create_keyring(directory)
    return directory


def copy_key_dir(master: Path, directory: Path) -> Path:
    """A copy of the key directory ``master`` at ``directory``, owner-only as a key directory must be; the path."""
    shutil.copytree(master, directory)
    os.chmod(directory, 0o700)
    return directory
