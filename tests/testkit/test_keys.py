"""``testkit.keys``: a key directory is made once and every copy is the installation's own, owner-only."""

import stat
from pathlib import Path

from cardmgmt.keys import load_keyring
from testkit.keys import copy_key_dir, make_key_dir


def test_a_copy_holds_the_same_keys_and_is_owner_only(tmp_path: Path) -> None:
    master = make_key_dir(tmp_path / "master")
    copy = copy_key_dir(master, tmp_path / "installation" / "keys")
    assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    assert load_keyring(copy).fingerprint == load_keyring(master).fingerprint
