"""The sealed file format exchanged with the card factory, in both directions.

A batch's PINs leave the system in a *new-card file* and come back in a
*post-production file*; both are sealed the same way.  The rows are encrypted
with AES-256-GCM under a fresh file key, the file key is wrapped with RSA-OAEP
for the recipient, and the whole file is signed with RSA-PSS by the sender, so
only the recipient can read the PINs and the recipient can tell who wrote the
file and that no byte of it changed.  Batches run to a million rows, so both
writing and reading stream in chunks; nothing here ever holds a whole batch.

Layout (all integers big-endian)::

    MAGIC                       8 bytes, b"RCSEAL1\\n"
    header length               4 bytes
    header                      JSON, UTF-8, sorted keys, compact
    ciphertext                  AES-256-GCM of the rows; AAD = length + header
    tag                         16 bytes, the GCM tag
    signature                   RSA-PSS/SHA-256 over SHA-256 of all bytes above
    signature length            2 bytes
"""

# test-case-name: tests.cardmgmt.test_sealed_files

from __future__ import annotations

import base64
import io
import json
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from Crypto.Cipher import AES, PKCS1_OAEP
from Crypto.Hash import SHA256
from Crypto.PublicKey.RSA import RsaKey
from Crypto.Signature import pss

from cardmgmt.errors import FileRejected
from cardmgmt.keys import public_key_fingerprint

MAGIC = b"RCSEAL1\n"
FORMAT = 1

FILE_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM nonce size that needs no extra GHASH pass
TAG_BYTES = 16

_HLEN = struct.Struct(">I")
_SIGLEN = struct.Struct(">H")
_HEAD_FIXED = len(MAGIC) + _HLEN.size
# The smallest file that can be well formed: no header bytes, no rows, no signature.
_MIN_SIZE = _HEAD_FIXED + TAG_BYTES + _SIGLEN.size
# A real header is a few hundred bytes; refusing anything huge keeps a hostile
# length field from making us buffer the whole file as "header".
MAX_HEADER_BYTES = 1 << 20

# Rows are joined into chunks of about this size before encryption: one
# cipher call per chunk instead of per row is what makes a million rows cheap.
WRITE_CHUNK = 64 * 1024
READ_CHUNK = 256 * 1024

# The fields the format itself puts into the header; callers may not use them.
FORMAT_FIELDS = frozenset({"kind", "wrapped_key", "nonce", "recipient", "signer", "format"})


def _hash_new() -> SHA256.SHA256Hash:
    # SHA-256 as pycryptodome wants it for PSS; ``copy()`` lets one pass give
    # both the signed hash and the whole-file digest.
    return SHA256.new()


def _kind_words(kind: str) -> str:
    """``"new-card"`` → ``"new card"``, for messages an operator reads."""
    return kind.replace("-", " ")


def write_sealed(
    path: Path,
    *,
    kind: str,
    header: dict[str, Any],
    rows: Iterable[bytes],
    recipient: RsaKey,
    signer: RsaKey,
) -> str:
    """Seal ``rows`` into ``path`` for ``recipient``, signed by ``signer``; return the file's SHA-256 hex.

    ``rows`` is consumed once and never held whole: each item must be one
    line of bytes ending with ``b"\\n"`` (and containing no other newline).
    ``header`` holds the caller's own fields; they must not reuse the format's
    field names.  ``recipient`` needs only its public half, ``signer`` must be
    a private key.  The file appears at ``path`` only when complete (written
    to a temporary file beside it, then renamed), readable by its owner only.

    Raises ``ValueError`` or ``TypeError`` for a programming error (clashing
    header field, a row that is not one line, a public signing key).
    """
    path = Path(path)
    if not isinstance(kind, str) or not kind:
        raise ValueError("kind must be a non-empty string")
    clash = FORMAT_FIELDS.intersection(header)
    if clash:
        raise ValueError(f"header fields {sorted(clash)} are reserved by the sealed file format")
    if not signer.has_private():
        raise ValueError("signer must be a private key")

    file_key = os.urandom(FILE_KEY_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    wrapped = PKCS1_OAEP.new(recipient.public_key(), hashAlgo=SHA256).encrypt(file_key)
    full_header = dict(header)
    full_header.update(
        kind=kind,
        wrapped_key=base64.b64encode(wrapped).decode("ascii"),
        nonce=base64.b64encode(nonce).decode("ascii"),
        recipient=public_key_fingerprint(recipient),
        signer=public_key_fingerprint(signer),
        format=FORMAT,
    )
    header_json = json.dumps(full_header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(header_json) > MAX_HEADER_BYTES:
        raise ValueError(f"header is {len(header_json)} bytes; the limit is {MAX_HEADER_BYTES}")
    head = _HLEN.pack(len(header_json)) + header_json

    cipher = AES.new(file_key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    cipher.update(head)
    signed_hash = _hash_new()

    # mkstemp creates the file 0o600 and in the target directory, so the final
    # os.replace is an atomic rename on the same file system.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:

            def emit(data: bytes) -> None:
                out.write(data)
                signed_hash.update(data)

            def seal(batch: list[bytes]) -> None:
                chunk = b"".join(batch)
                # Every row ends with a newline (checked one by one); the
                # newline count being the row count means none had a second
                # one, which would otherwise split it into two rows on reading.
                if chunk.count(b"\n") != len(batch):
                    raise ValueError("a row contains more than one line")
                emit(cipher.encrypt(chunk))

            emit(MAGIC)
            emit(head)
            batch: list[bytes] = []
            size = 0
            for row in rows:
                if not row.endswith(b"\n"):
                    raise ValueError("every row must be bytes ending with a newline")
                batch.append(row)
                size += len(row)
                if size >= WRITE_CHUNK:
                    seal(batch)
                    batch = []
                    size = 0
            if batch:
                seal(batch)
            emit(cipher.digest())

            signature = pss.new(signer).sign(signed_hash)
            whole = signed_hash.copy()
            trailer = signature + _SIGLEN.pack(len(signature))
            whole.update(trailer)
            out.write(trailer)
            out.flush()
            # The file goes to the factory or into the stock: make sure the
            # bytes are on disk before the name says the file is complete.
            os.fsync(out.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return whole.hexdigest()


@dataclass(eq=False)
class SealedFile:
    """A sealed file that passed every check; its rows are read on demand.

    The file stays open from ``open_sealed`` on, and every pass reads through
    that same handle: replacing or renaming the file at its path afterwards
    cannot swap in other contents.  Close it with ``close()`` or use it as a
    context manager.
    """

    header: dict[str, Any]
    digest: str
    _name: str = field(repr=False)
    _file: BinaryIO = field(repr=False)
    _key: bytes = field(repr=False)
    _nonce: bytes = field(repr=False)
    _aad: bytes = field(repr=False)
    _body_start: int = field(repr=False)
    _body_end: int = field(repr=False)
    _tag: bytes = field(repr=False)

    def rows(self, max_row_bytes: int | None = None) -> Iterator[bytes]:
        """The decrypted rows, each ending with ``b"\\n"``, streamed from the open file.

        The GCM tag is checked again when the last row has been read, so if
        the file was changed in place after ``open_sealed`` the iteration ends
        with ``FileRejected`` instead of finishing: treat the rows as final
        only once the loop completes (e.g. inside one database transaction).
        Several iterations, even interleaved ones, are independent.  With
        ``max_row_bytes``, a row that runs on past that many bytes without
        its newline ends the iteration with ``FileRejected``: a signed file
        is not therefore a sensible one, and without a limit a "row" of
        gigabytes would be buffered whole.  (A long row that ends within one
        read chunk is yielded; it is bounded by the chunk.)
        """
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=self._nonce, mac_len=TAG_BYTES)
        cipher.update(self._aad)
        pending = b""
        for chunk in _read_range(self._file, self._body_start, self._body_end, self._name):
            data = pending + cipher.decrypt(chunk)
            cut = data.rfind(b"\n") + 1
            pending = data[cut:]
            if max_row_bytes is not None and len(pending) > max_row_bytes:
                raise FileRejected(f"{self._name} has a row longer than {max_row_bytes} bytes; the file was rejected whole")
            if cut:
                # BytesIO splits on b"\n" only (not \r), in C, keeping the newline.
                yield from io.BytesIO(data[:cut])
        try:
            cipher.verify(self._tag)
        except ValueError:
            raise FileRejected(f"{self._name} changed while it was being read") from None
        if pending:
            # open_sealed checked the last byte; only a changed file gets here.
            raise FileRejected(f"{self._name} changed while it was being read")

    def close(self) -> None:
        """Close the underlying file; ``rows()`` cannot be used afterwards."""
        self._file.close()

    def __enter__(self) -> SealedFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_range(f: BinaryIO, start: int, end: int, name: str) -> Iterator[bytes]:
    """Bytes ``start``..``end`` of ``f`` in chunks, seeking before each read.

    Seeking every time (rather than trusting the file position) is what keeps
    two interleaved ``rows()`` iterations over one handle apart.
    """
    pos = start
    while pos < end:
        f.seek(pos)
        chunk = f.read(min(READ_CHUNK, end - pos))
        if not chunk:
            raise FileRejected(f"{name} is truncated")
        pos += len(chunk)
        yield chunk


def _read_exact(f: BinaryIO, n: int, name: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise FileRejected(f"{name} is truncated")
    return data


def _bad_signature(name: str, head: bytes, sender: RsaKey) -> str:
    """The message for a signature that does not verify.

    A file cut short by an interrupted transfer fails here too, and telling
    the operator "not signed by the factory" would send them after the wrong
    problem.  So the (unverified) header is peeked at, for the wording only:
    if it names the expected signer, the file was damaged after signing.
    Nothing from the peek is ever used for anything but this message.
    """
    expected = public_key_fingerprint(sender)
    try:
        claimed = json.loads(head[_HEAD_FIXED:].decode("utf-8")).get("signer")
    except (UnicodeDecodeError, ValueError, RecursionError, AttributeError):
        claimed = None
    if claimed == expected:
        return f"{name} is damaged or truncated: its signature by {expected} does not verify"
    return f"{name} is not signed by {expected}"


def open_sealed(path: Path, *, kind: str, sender: RsaKey, recipient: RsaKey) -> SealedFile:
    """Verify a sealed file completely and return it ready for ``rows()``.

    ``sender`` is the public key that must have signed the file, ``recipient``
    our private key.  Nothing is trusted before it is verified: first the
    signature over the whole file, then the header (kind, format, keys), then
    the GCM tag over the whole body (decrypted once, output discarded).  Any
    failure raises ``FileRejected`` with a one-line message naming the file.
    """
    path = Path(path)
    name = path.name
    if not recipient.has_private():
        raise ValueError("recipient must be our private key")
    try:
        # Buffered, so a read returns all it was asked for unless at the end.
        f = open(path, "rb")  # noqa: SIM115 - the returned SealedFile owns it
    except FileNotFoundError:
        raise FileRejected(f"{name} does not exist") from None
    except IsADirectoryError:
        raise FileRejected(f"{name} is a directory, not a sealed card file") from None
    except OSError as e:
        raise FileRejected(f"{name} cannot be read: {e.strerror}") from None
    try:
        sealed = _verify(f, name, kind=kind, sender=sender, recipient=recipient)
    except BaseException:
        f.close()
        raise
    return sealed


def _verify(f: BinaryIO, name: str, *, kind: str, sender: RsaKey, recipient: RsaKey) -> SealedFile:
    try:
        size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise FileRejected(f"{name} cannot be read: {e.strerror}") from None
    if size == 0:
        raise FileRejected(f"{name} is empty")

    # --- Framing only: find the signature without interpreting any content.
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        if len(magic) < len(MAGIC) and MAGIC.startswith(magic):
            raise FileRejected(f"{name} is truncated")
        raise FileRejected(f"{name} is not a sealed card file")
    if size < _MIN_SIZE:
        raise FileRejected(f"{name} is truncated")
    (header_len,) = _HLEN.unpack(_read_exact(f, _HLEN.size, name))
    if header_len > MAX_HEADER_BYTES:
        raise FileRejected(f"{name} is not a sealed card file")
    f.seek(size - _SIGLEN.size)
    (sig_len,) = _SIGLEN.unpack(_read_exact(f, _SIGLEN.size, name))
    sig_start = size - _SIGLEN.size - sig_len
    body_start = _HEAD_FIXED + header_len
    body_end = sig_start - TAG_BYTES
    if body_end < body_start:
        raise FileRejected(f"{name} is truncated")

    # --- (1) The signature, over one streaming pass of the file.  The header,
    # tag and signature are kept from this pass so what is parsed later is
    # exactly what was verified, not a second read of a file that may change.
    f.seek(0)
    head = _read_exact(f, body_start, name)
    # PSS signatures are exactly as long as the signer's modulus.
    if sig_len != sender.size_in_bytes():
        raise FileRejected(_bad_signature(name, head, sender))
    signed_hash = _hash_new()
    signed_hash.update(head)
    pos = body_start
    while pos < body_end:
        chunk = f.read(min(READ_CHUNK, body_end - pos))
        if not chunk:
            raise FileRejected(f"{name} is truncated")
        signed_hash.update(chunk)
        pos += len(chunk)
    tag = _read_exact(f, TAG_BYTES, name)
    signed_hash.update(tag)
    signature = _read_exact(f, sig_len, name)
    try:
        pss.new(sender.public_key()).verify(signed_hash, signature)
    except (ValueError, TypeError):
        raise FileRejected(_bad_signature(name, head, sender)) from None
    whole = signed_hash.copy()
    whole.update(signature + _SIGLEN.pack(sig_len))
    digest = whole.hexdigest()

    # --- (2) The header: signed, so only a faulty sender gets past here with
    # a bad one; it is still checked field by field rather than trusted.
    try:
        header = json.loads(head[_HEAD_FIXED:].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FileRejected(f"{name} is not a sealed card file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise FileRejected(f"{name} is not a sealed card file (its header is not a JSON object)")
    file_format = header.get("format")
    if file_format != FORMAT or isinstance(file_format, bool):
        shown = repr(file_format)[:20]
        raise FileRejected(f"{name} is in sealed file format {shown}; this system reads format {FORMAT}")
    for key in ("kind", "wrapped_key", "nonce", "recipient", "signer"):
        if not isinstance(header.get(key), str):
            raise FileRejected(f"{name} has a malformed header (field {key!r})")
    if header["kind"] != kind:
        raise FileRejected(f"{name} is a {_kind_words(header['kind'])} file, expected a {_kind_words(kind)} file")
    expected_signer = public_key_fingerprint(sender)
    if header["signer"] != expected_signer:
        raise FileRejected(f"{name} names signer {header['signer']}, but is signed by {expected_signer}")
    ours = public_key_fingerprint(recipient)
    if header["recipient"] != ours:
        raise FileRejected(f"{name} was sealed for key {header['recipient']}, not for this system's key {ours}")
    try:
        wrapped = base64.b64decode(header["wrapped_key"], validate=True)
        nonce = base64.b64decode(header["nonce"], validate=True)
    except ValueError:
        raise FileRejected(f"{name} has a malformed header (bad base64)") from None
    if len(nonce) != NONCE_BYTES:
        raise FileRejected(f"{name} has a malformed header (field 'nonce')")
    try:
        file_key = PKCS1_OAEP.new(recipient, hashAlgo=SHA256).decrypt(wrapped)
    except (ValueError, TypeError):
        raise FileRejected(f"{name}'s file key cannot be unwrapped with this system's key") from None
    if len(file_key) != FILE_KEY_BYTES:
        raise FileRejected(f"{name}'s file key cannot be unwrapped with this system's key")

    # --- (3) The GCM tag over the whole body, before any row is handed out.
    cipher = AES.new(file_key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
    aad = head[len(MAGIC) :]
    cipher.update(aad)
    last = b""
    for chunk in _read_range(f, body_start, body_end, name):
        plain = cipher.decrypt(chunk)
        last = plain[-1:]
    try:
        cipher.verify(tag)
    except ValueError:
        raise FileRejected(f"{name}'s contents fail authentication") from None
    if last not in (b"", b"\n"):
        raise FileRejected(f"{name}'s last row is incomplete")

    return SealedFile(
        header=header,
        digest=digest,
        _name=name,
        _file=f,
        _key=file_key,
        _nonce=nonce,
        _aad=aad,
        _body_start=body_start,
        _body_end=body_end,
        _tag=tag,
    )
