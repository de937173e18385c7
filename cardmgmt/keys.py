"""Key files kept outside the database, and the keys derived from them.

An installation has one key directory (owner-only) holding:

``master.key``
    32 random bytes (hex).  The PIN hash key and the operation-log chain key
    are derived from it with HMAC-SHA256 under fixed labels, so one file backs
    both and neither key is ever stored in the database.
``api.key``
    The hotline's channel-client key (hex), written by ``cli.py init`` for
    installing on the AGI hosts.  Every channel client's key is derived from
    the master key and the client's name (``KeyRing.channel_client_key``), so
    no client secret is kept in the database and the servers need no file
    per client; see ``cardmgmt.channel_clients``.
``tls-*.pem`` / ``tls-*.key``
    The installation's own certificate authority and the recharge servers'
    TLS certificate (``cardmgmt.tls``).
``system.pem`` / ``system.pub.pem``
    The system's RSA key pair.  The private half signs new-card files and
    opens post-production files that the factory encrypts for us; the public
    half is what the factory is given.

The database records only the master key's fingerprint, so a command started
with another installation's key directory is refused before it can hash a PIN
under the wrong key.
"""

# test-case-name: tests.cardmgmt.test_keys

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from Crypto.PublicKey import RSA
from Crypto.PublicKey.RSA import RsaKey

from cardmgmt import tls
from cardmgmt.errors import KeyFileError
from cardmgmt.secret_files import check_key_dir, read_secret_file, write_private

RSA_BITS = 3072
MASTER_FILE = "master.key"
PRIVATE_FILE = "system.pem"
PUBLIC_FILE = "system.pub.pem"
API_FILE = "api.key"
CHANNEL_CLIENT_LABEL = b"recharge-card/channel-client/v1:"


def public_key_fingerprint(key: RsaKey) -> str:
    """A short, stable name for an RSA public key: SHA-256 of its DER form, 16 hex digits."""
    der = key.public_key().export_key(format="DER")
    return hashlib.sha256(der).hexdigest()[:16]


@dataclass(frozen=True)
class KeyRing:
    """The secrets one installation works with, loaded from its key directory."""

    master: bytes
    system_private: RsaKey

    def _derive(self, label: bytes) -> bytes:
        return hmac.new(self.master, label, hashlib.sha256).digest()

    @property
    def pin_key(self) -> bytes:
        """The HMAC key under which card PINs are stored."""
        return self._derive(b"recharge-card/pin-hash/v1")

    @property
    def audit_key(self) -> bytes:
        """The HMAC key that chains the operation log."""
        return self._derive(b"recharge-card/operation-log/v1")

    def channel_client_key(self, name: str) -> bytes:
        """The key that signs channel client ``name``'s requests (see ``cardmgmt.channel_clients``)."""
        return self._derive(CHANNEL_CLIENT_LABEL + name.encode("utf-8"))

    @property
    def fingerprint(self) -> str:
        """Names the master key without revealing it; recorded in the database."""
        return self._derive(b"recharge-card/fingerprint/v1").hex()[:16]

    @property
    def system_public(self) -> RsaKey:
        return self.system_private.public_key()




def generate_rsa_pair(private_path: Path, public_path: Path) -> RsaKey:
    """Create an RSA key pair: the private half owner-only, the public half readable."""
    key = RSA.generate(RSA_BITS)
    write_private(private_path, key.export_key(format="PEM"))
    public_path.write_bytes(key.public_key().export_key(format="PEM"))
    return key


def create_keyring(key_dir: Path, hosts: Sequence[str] = ()) -> KeyRing:
    """Create a new key directory; refuses to overwrite an existing key.

    Besides the keys it makes the installation's certificate authority and
    the servers' TLS certificate, for the loopback names and ``hosts``.
    """
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(key_dir, 0o700)
    tls.check_host_names(hosts)  # a bad name is refused before anything is written
    for name in (MASTER_FILE, PRIVATE_FILE, tls.CA_KEY):
        if (key_dir / name).exists():
            raise KeyFileError(f"{key_dir / name} already exists; refusing to replace a key")
    master = os.urandom(32)
    write_private(key_dir / MASTER_FILE, master.hex().encode() + b"\n")
    private = generate_rsa_pair(key_dir / PRIVATE_FILE, key_dir / PUBLIC_FILE)
    ring = KeyRing(master=master, system_private=private)
    tls.create_authority(key_dir, ring.fingerprint)
    tls.issue_server_certificate(key_dir, hosts)
    return ring






def load_private_key(path: Path) -> RsaKey:
    """An RSA private key from an owner-only PEM file."""
    try:
        key = RSA.import_key(read_secret_file(path))
    except (ValueError, IndexError, TypeError):
        raise KeyFileError(f"{path} is not an RSA private key") from None
    if not key.has_private():
        raise KeyFileError(f"{path} holds a public key, not a private key")
    return key


def load_public_key(path: Path) -> RsaKey:
    """An RSA public key from a PEM file (a private key file is accepted and reduced)."""
    try:
        return RSA.import_key(path.read_bytes()).public_key()
    except FileNotFoundError:
        raise KeyFileError(f"public key file {path} does not exist") from None
    except (ValueError, IndexError, TypeError):
        raise KeyFileError(f"{path} is not an RSA public key") from None


def read_hex_key(path: Path) -> bytes:
    """A 32-byte key stored as hex in an owner-only file."""
    text = read_secret_file(path).strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise KeyFileError(f"{path} is not a key file")
    return key


def load_api_key(key_dir: Path) -> bytes:
    """The hotline client's request-signing key, as ``cli.py init`` wrote it for the AGI hosts."""
    check_key_dir(key_dir)
    if not (key_dir / API_FILE).exists():
        raise KeyFileError(f"{key_dir / API_FILE} does not exist; `cli.py init` writes it (or `cli.py client key hotline --out FILE`)")
    return read_hex_key(key_dir / API_FILE)




def load_keyring(key_dir: Path) -> KeyRing:
    """Load the key directory created by ``create_keyring``."""
    check_key_dir(key_dir)
    master = read_hex_key(key_dir / MASTER_FILE)
    return KeyRing(master=master, system_private=load_private_key(key_dir / PRIVATE_FILE))
