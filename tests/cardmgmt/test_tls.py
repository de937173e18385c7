"""Tests for cardmgmt.tls: the installation's CA and the servers' certificate, checked with the stdlib ssl module."""

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from cardmgmt import tls
from cardmgmt.errors import InvalidInput, KeyFileError


def _ready(tmp_path: Path, hosts: tuple[str, ...] = ()) -> Path:
    d = tmp_path / "k"
    d.mkdir(mode=0o700, parents=True)
    tls.create_authority(d, "test")
    tls.issue_server_certificate(d, hosts)
    return d


def test_the_files_and_their_permissions(tmp_path: Path) -> None:
    d = _ready(tmp_path, ("recharge-a.example", "10.0.0.11"))
    assert (d / tls.CA_KEY).stat().st_mode & 0o777 == 0o600
    assert (d / tls.SERVER_KEY).stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((d / tls.SERVER_CERT).read_bytes())
    assert set(tls.certificate_names(cert)) == {"127.0.0.1", "::1", "localhost", "recharge-a.example", "10.0.0.11"}
    assert tls.server_files(d).certificate == d / tls.SERVER_CERT


def test_no_certificate_gives_one_line_saying_what_to_run(tmp_path: Path) -> None:
    d = tmp_path / "k"
    d.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match=r"run `cli.py keys tls --host NAME`"):
        tls.server_files(d)
    with pytest.raises(KeyFileError, match="keys tls"):
        tls.issue_server_certificate(d)


def test_a_bad_host_name_is_refused_and_nothing_written(tmp_path: Path) -> None:
    d = _ready(tmp_path)
    before = (d / tls.SERVER_CERT).read_bytes()
    with pytest.raises(InvalidInput, match="neither an IP address nor a host name"):
        tls.issue_server_certificate(d, ["bad host!"])
    assert (d / tls.SERVER_CERT).read_bytes() == before


def test_the_ca_is_never_replaced(tmp_path: Path) -> None:
    d = _ready(tmp_path)
    with pytest.raises(KeyFileError, match="refusing to replace"):
        tls.create_authority(d, "again")


def _serve_once(d: Path) -> tuple[int, threading.Thread]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / tls.SERVER_CERT, d / tls.SERVER_KEY)
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except (ssl.SSLError, OSError):
                pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return listener.getsockname()[1], t


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
def test_a_client_trusting_the_installation_ca_accepts_the_server(tmp_path: Path, name: str) -> None:
    d = _ready(tmp_path)
    port, t = _serve_once(d)
    client = ssl.create_default_context(cafile=str(d / tls.CA_CERT))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, client.wrap_socket(raw, server_hostname=name) as s:
        s.sendall(b"x")
    t.join(5)


def test_a_name_not_in_the_certificate_is_refused(tmp_path: Path) -> None:
    d = _ready(tmp_path)
    port, t = _serve_once(d)
    client = ssl.create_default_context(cafile=str(d / tls.CA_CERT))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLCertVerificationError):
        client.wrap_socket(raw, server_hostname="10.9.9.9")
    t.join(5)


def test_another_installations_ca_is_refused(tmp_path: Path) -> None:
    d = _ready(tmp_path)
    other = _ready(tmp_path / "other")
    port, t = _serve_once(d)
    client = ssl.create_default_context(cafile=str(other / tls.CA_CERT))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLCertVerificationError):
        client.wrap_socket(raw, server_hostname="127.0.0.1")
    t.join(5)
