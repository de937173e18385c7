import os

import pytest

from cardmgmt import tls
from cardmgmt.errors import KeyFileError
from cardmgmt.keys import create_keyring, load_api_key, load_keyring, load_private_key, load_public_key


def test_create_and_load(tmp_path):
    ring = create_keyring(tmp_path / "k")
    assert (tmp_path / "k" / "master.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k" / "system.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o700
    again = load_keyring(tmp_path / "k")
    assert again.fingerprint == ring.fingerprint and again.pin_key == ring.pin_key
    assert len({ring.pin_key, ring.audit_key, ring.master}) == 3, "derived keys are distinct"


def test_never_overwrites(key_dir):
    with pytest.raises(KeyFileError, match="already exists"):
        create_keyring(key_dir)


def test_open_permissions_refused(key_dir):
    os.chmod(key_dir / "master.key", 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_keyring(key_dir)


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o711, 0o777])
def test_key_directory_open_to_others_refused(key_dir, mode):
    os.chmod(key_dir, mode)
    for load in (load_keyring, load_api_key, tls.server_files):
        with pytest.raises(KeyFileError, match="chmod 700"):
            load(key_dir)
    os.chmod(key_dir, 0o700)
    load_keyring(key_dir)
    tls.server_files(key_dir)


def test_missing_and_garbage(tmp_path, key_dir):
    with pytest.raises(KeyFileError, match="does not exist"):
        load_keyring(tmp_path / "nowhere")
    (key_dir / "master.key").write_text("not hex")
    with pytest.raises(KeyFileError, match="not a key file"):
        load_keyring(key_dir)


def test_public_is_not_private(key_dir):
    pub = key_dir / "system.pub.pem"
    os.chmod(pub, 0o600)
    with pytest.raises(KeyFileError, match="public key, not a private key"):
        load_private_key(pub)
    garbage = key_dir / "g.pem"
    garbage.write_bytes(b"\x00garbage")
    with pytest.raises(KeyFileError, match="not an RSA public key"):
        load_public_key(garbage)
