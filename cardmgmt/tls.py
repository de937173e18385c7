"""The installation's own certificate authority and the recharge servers' TLS certificate.

Every channel client (the hotline's AGI hosts, a POS terminal, a partner)
reaches the recharge servers over TLS, and the two servers reach each other
the same way.  Nobody outside the installation needs to trust these
certificates, so the installation is its own authority: ``create_authority``
makes a private CA, ``issue_server_certificate`` signs the servers'
certificate with it, naming 127.0.0.1, ::1 and localhost and any further
host names or addresses the servers are reached by.  A client trusts only
``tls-ca.pem`` and checks the name it connected to against the certificate.

The files live in the key directory::

    tls-ca.pem       the CA certificate: installed on every client host (not secret)
    tls-ca.key       the CA's private key (owner-only); needed only to issue certificates
    tls-server.pem   the servers' certificate
    tls-server.key   its private key (owner-only)

Keys are ECDSA P-256: a handshake costs a fraction of what RSA-3072 would,
and every call pays for one.  The ``cryptography`` package does the X.509
work (pyOpenSSL, which Twisted's TLS needs, is built on it, so it adds no
new dependency to the servers).
"""

# test-case-name: tests.cardmgmt.test_tls

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cardmgmt.errors import InvalidInput, KeyFileError
from cardmgmt.secret_files import check_key_dir, read_secret_file, write_private

CA_CERT = "tls-ca.pem"
CA_KEY = "tls-ca.key"
SERVER_CERT = "tls-server.pem"
SERVER_KEY = "tls-server.key"

# Names every server certificate carries: the servers and their clients on one host (tests, the demo).
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")
CA_DAYS = 3650
SERVER_DAYS = 825  # what browsers accept as a maximum; re-issue with `cli.py keys tls`

_DNS_NAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")

MISSING = "this installation has no TLS certificate yet; run `cli.py keys tls --host NAME` (once per installation)"


@dataclass(frozen=True)
class ServerFiles:
    """Where the servers' certificate, its key and the CA certificate are."""

    certificate: Path
    private_key: Path
    ca: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_authority(key_dir: Path, installation: str) -> x509.Certificate:
    """Make the installation's CA in ``key_dir``; refuses to replace an existing one."""
    for name in (CA_CERT, CA_KEY):
        if (key_dir / name).exists():
            raise KeyFileError(f"{key_dir / name} already exists; refusing to replace the certificate authority")
    key = _new_key()
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "recharge-card installation"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"recharge-card CA {installation}"),
    ])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        # pathlen 0: this CA signs server certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_dir / CA_KEY, _pem_key(key))
    (key_dir / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def check_host_names(hosts: Sequence[str]) -> list[str]:
    """The names to put in a server certificate: the loopback names and ``hosts``, each an IP address or a DNS name."""
    out: list[str] = list(LOOPBACK_NAMES)
    for host in hosts:
        name = host.strip().strip("[]")
        if not _is_ip(name) and not _DNS_NAME.match(name):
            raise InvalidInput(f"{host[:80]!r} is neither an IP address nor a host name")
        if name.lower() not in (n.lower() for n in out):
            out.append(name)
    return out


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _load_authority(key_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not (key_dir / CA_CERT).exists():
        raise KeyFileError(MISSING)
    try:
        cert = x509.load_pem_x509_certificate((key_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key(read_secret_file(key_dir / CA_KEY), password=None)
    except ValueError:
        raise KeyFileError(f"{key_dir / CA_CERT} or {CA_KEY} is not a certificate authority of this installation") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{key_dir / CA_KEY} is not an ECDSA key")
    return cert, key


def issue_server_certificate(key_dir: Path, hosts: Sequence[str] = ()) -> x509.Certificate:
    """Sign a new server certificate for the loopback names and ``hosts``, replacing the one there was."""
    names = check_host_names(hosts)
    ca_cert, ca_key = _load_authority(key_dir)
    key = _new_key()
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n) for n in names
    ]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recharge server")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Server authentication only: the heartbeat between the servers is a client of the other's server side.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    # Write the new key beside the old one, then move both into place: a server started
    # meanwhile reads either the old pair or the new one, never a mixed pair.
    for name in (SERVER_KEY + ".new", SERVER_CERT + ".new"):
        (key_dir / name).unlink(missing_ok=True)
    write_private(key_dir / (SERVER_KEY + ".new"), _pem_key(key))
    (key_dir / (SERVER_CERT + ".new")).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (key_dir / (SERVER_KEY + ".new")).replace(key_dir / SERVER_KEY)
    (key_dir / (SERVER_CERT + ".new")).replace(key_dir / SERVER_CERT)
    return cert


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The host names and addresses a server certificate is good for."""
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in san]


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate, 16 hex digits: names it in the operation log."""
    return cert.fingerprint(hashes.SHA256()).hex()[:16]


def server_files(key_dir: Path) -> ServerFiles:
    """The servers' TLS files, or one line saying what to run when the installation has none yet."""
    check_key_dir(key_dir)
    files = ServerFiles(key_dir / SERVER_CERT, key_dir / SERVER_KEY, key_dir / CA_CERT)
    if not all(p.exists() for p in (files.certificate, files.private_key, files.ca)):
        raise KeyFileError(MISSING)
    read_secret_file(files.private_key)  # refused when open to other users
    return files


def ca_exists(key_dir: Path) -> bool:
    """Whether this installation has its certificate authority yet."""
    return (key_dir / CA_CERT).exists()


def ca_file(key_dir: Path) -> Path:
    """The CA certificate a client of this installation trusts."""
    if not ca_exists(key_dir):
        raise KeyFileError(MISSING)
    return key_dir / CA_CERT
