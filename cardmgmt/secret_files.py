"""Files that hold secrets: written owner-only, read only while they stay so, and the folder that holds them.

Key files, the TLS private keys and the channel-client key files all go
through here, so "owner-only, or refused with the chmod that mends it" is one
rule, checked one way.
"""

# test-case-name: tests.cardmgmt.test_keys, tests.cardmgmt.test_channel_clients

import os
import stat
from pathlib import Path

from cardmgmt.errors import KeyFileError


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file that only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _owner_only(path: Path, what: str, mode: str) -> None:
    """Refuse ``path`` when it is missing or other users can reach it; ``mode`` is the chmod that mends it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist (run `cli.py keys init`)") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{what} {path} is open to other users; chmod {mode} it")


def read_secret_file(path: Path) -> bytes:
    """Read a key file, refusing one that is missing or readable by others."""
    _owner_only(path, "key file", "600")
    try:
        return path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"key file {path} cannot be read: {e.strerror}") from None


def check_key_dir(key_dir: Path) -> None:
    """Refuse a key directory that other users can list or enter.

    The files in it are owner-only too, but a directory open to others lets
    them see which keys exist and, if writable, swap a public key file.
    """
    _owner_only(key_dir, "key directory", "700")
