"""Tests for the sealed file format exchanged with the card factory."""

import base64
import hashlib
import json
import os
import random
import stat
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from Crypto.Cipher import AES, PKCS1_OAEP
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pss
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardmgmt.errors import FileRejected
from cardmgmt.keys import public_key_fingerprint
from cardmgmt.sealed_files import MAGIC, READ_CHUNK, WRITE_CHUNK, open_sealed, write_sealed
from cardmgmt.serials import make_serial


@pytest.fixture(scope="module")
def keys() -> SimpleNamespace:
    return SimpleNamespace(
        system=RSA.generate(2048),
        factory=RSA.generate(2048),
        other=RSA.generate(2048),
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Hypothesis runs many examples per test; a module-wide directory avoids
    # its complaint about function-scoped fixtures.
    return tmp_path_factory.mktemp("sealed")


def card_rows(n: int, seed: int = 1) -> Iterator[bytes]:
    """Rows shaped like post-production rows, with varying lengths."""
    rng = random.Random(seed)
    for i in range(n):
        pin = rng.randrange(10**18)
        status = "ok" if rng.random() < 0.9 else "damaged"
        yield f"{make_serial(1000 + i)},{i // 250 + 1},{rng.choice((1000, 5000, 10000))},{pin:018d},{status}\n".encode()


def seal(
    path: Path, keys: SimpleNamespace, rows: list[bytes] | Iterator[bytes], kind: str = "new-card", **header: object
) -> str:
    """A new-card file from the system to the factory."""
    return write_sealed(
        path,
        kind=kind,
        header=header or {"batch_no": "B0001"},
        rows=rows,
        recipient=keys.factory.public_key(),
        signer=keys.system,
    )


def open_as_factory(path: Path, keys: SimpleNamespace, kind: str = "new-card"):
    return open_sealed(path, kind=kind, sender=keys.system.public_key(), recipient=keys.factory)


def rejected(path: Path, keys: SimpleNamespace) -> str:
    """Open ``path`` as the factory and return the rejection message."""
    with pytest.raises(FileRejected) as info:
        open_as_factory(path, keys).close()
    return str(info.value)


def build_raw(
    keys: SimpleNamespace,
    plaintext: bytes,
    *,
    header: dict | None = None,
    header_bytes: bytes | None = None,
    file_key: bytes | None = None,
    wrapped_key: bytes | None = None,
    bad_tag: bool = False,
    signer: RSA.RsaKey | None = None,
) -> bytes:
    """Build a sealed file by hand from the written layout, independently of the module.

    Used to check the module reads what the format describes, and to make
    validly *signed* files whose insides are wrong in one way.
    """
    signer = signer or keys.system
    file_key = file_key or os.urandom(32)
    nonce = os.urandom(12)
    if wrapped_key is None:
        wrapped_key = PKCS1_OAEP.new(keys.factory.public_key(), hashAlgo=SHA256).encrypt(file_key)
    fields = {
        "batch_no": "B0001",
        "kind": "new-card",
        "wrapped_key": base64.b64encode(wrapped_key).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "recipient": public_key_fingerprint(keys.factory),
        "signer": public_key_fingerprint(signer),
        "format": 1,
    }
    fields.update(header or {})
    fields = {k: v for k, v in fields.items() if v is not None}
    if header_bytes is None:
        header_bytes = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    head = struct.pack(">I", len(header_bytes)) + header_bytes
    cipher = AES.new(file_key, AES.MODE_GCM, nonce=nonce)
    cipher.update(head)
    body = cipher.encrypt(plaintext)
    tag = cipher.digest()
    if bad_tag:
        tag = bytes([tag[0] ^ 1]) + tag[1:]
    signed = MAGIC + head + body + tag
    signature = pss.new(signer).sign(SHA256.new(signed))
    return signed + signature + struct.pack(">H", len(signature))


# --- Round trips ---------------------------------------------------------------------


def test_round_trip(tmp_path: Path, keys: SimpleNamespace) -> None:
    rows = list(card_rows(50))
    path = tmp_path / "batch-B0001.seal"
    digest = seal(path, keys, iter(rows), batch_no="B0001", quantity=50, factory="测试")

    data = path.read_bytes()
    assert digest == hashlib.sha256(data).hexdigest()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == [path.name], "no temporary file is left behind"
    with open_as_factory(path, keys) as sealed:
        assert sealed.digest == digest
        assert sealed.header == {
            "batch_no": "B0001",
            "quantity": 50,
            "factory": "测试",
            "kind": "new-card",
            "format": 1,
            "recipient": public_key_fingerprint(keys.factory),
            "signer": public_key_fingerprint(keys.system),
            "wrapped_key": sealed.header["wrapped_key"],
            "nonce": sealed.header["nonce"],
        }
        assert list(sealed.rows()) == rows
        assert list(sealed.rows()) == rows, "rows() can be read again"
        assert "_key=" not in repr(sealed), "the file key stays out of repr"


def test_layout_matches_the_written_format(tmp_path: Path, keys: SimpleNamespace) -> None:
    """Read a written file by hand, as the factory's own software would."""
    rows = list(card_rows(20))
    path = tmp_path / "batch.seal"
    seal(path, keys, rows, batch_no="B7")
    data = path.read_bytes()

    assert data.startswith(MAGIC)
    (hlen,) = struct.unpack(">I", data[8:12])
    header_bytes = data[12 : 12 + hlen]
    header = json.loads(header_bytes)
    assert header_bytes == json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    (siglen,) = struct.unpack(">H", data[-2:])
    assert siglen == 256
    signature = data[-2 - siglen : -2]
    signed = data[: -2 - siglen]
    pss.new(keys.system.public_key()).verify(SHA256.new(signed), signature)

    assert len(base64.b64decode(header["nonce"])) == 12
    file_key = PKCS1_OAEP.new(keys.factory, hashAlgo=SHA256).decrypt(base64.b64decode(header["wrapped_key"]))
    assert len(file_key) == 32
    cipher = AES.new(file_key, AES.MODE_GCM, nonce=base64.b64decode(header["nonce"]))
    cipher.update(data[8 : 12 + hlen])
    plaintext = cipher.decrypt_and_verify(signed[12 + hlen : -16], signed[-16:])
    assert plaintext == b"".join(rows)


def test_a_file_built_by_hand_from_the_format_opens(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "hand.seal"
    path.write_bytes(build_raw(keys, b"a,1\nb,2\n"))
    with open_as_factory(path, keys) as sealed:
        assert list(sealed.rows()) == [b"a,1\n", b"b,2\n"]
        assert sealed.digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_rows(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "empty-batch.seal"
    seal(path, keys, [])
    with open_as_factory(path, keys) as sealed:
        assert list(sealed.rows()) == []


def test_rows_stream_across_chunk_boundaries(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "big.seal"
    n = 200_000
    seal(path, keys, card_rows(n))
    assert path.stat().st_size > 8 * WRITE_CHUNK * 16
    with open_as_factory(path, keys) as sealed:
        count = 0
        for got, want in zip(sealed.rows(), card_rows(n), strict=True):
            assert got == want
            count += 1
    assert count == n


def test_long_rows_and_single_row_larger_than_a_chunk(tmp_path: Path, keys: SimpleNamespace) -> None:
    rows = [b"x" * 10 + b"\n", b"y" * (3 << 20) + b"\n", b"z\n", b"w" * (WRITE_CHUNK - 1) + b"\n"]
    path = tmp_path / "odd.seal"
    seal(path, keys, iter(rows))
    with open_as_factory(path, keys) as sealed:
        assert list(sealed.rows()) == rows


def test_interleaved_iterations_are_independent(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "twice.seal"
    seal(path, keys, card_rows(60_000))
    with open_as_factory(path, keys) as sealed:
        for a, b, want in zip(sealed.rows(), sealed.rows(), card_rows(60_000), strict=True):
            assert a == b == want


def test_write_and_read_stream_without_holding_the_batch(tmp_path: Path, keys: SimpleNamespace) -> None:
    n = 300_000

    def rows() -> Iterator[bytes]:
        # Cheap rows: tracemalloc makes every allocation slow.
        return (b"%012d,%d,5000,%018d,ok\n" % (i, i // 500 + 1, i * 7919) for i in range(n))

    total = sum(len(r) for r in rows())
    path = tmp_path / "stream.seal"
    tracemalloc.start()
    try:
        seal(path, keys, rows())
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with open_as_factory(path, keys) as sealed:
            for _ in sealed.rows():
                pass
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 12_000_000
    # Both stay at a few chunks' worth, a fraction of the batch.
    assert write_peak < 2_000_000, write_peak
    assert read_peak < 3_000_000, read_peak


# --- Writing: programming errors and atomicity -----------------------------------------


@pytest.mark.parametrize("reserved", ["kind", "wrapped_key", "nonce", "recipient", "signer", "format"])
def test_header_may_not_reuse_format_fields(tmp_path: Path, keys: SimpleNamespace, reserved: str) -> None:
    path = tmp_path / "clash.seal"
    with pytest.raises(ValueError, match=reserved):
        write_sealed(
            path,
            kind="new-card",
            header={"batch_no": "B1", reserved: "x"},
            rows=[b"a\n"],
            recipient=keys.factory,
            signer=keys.system,
        )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad_row", [b"no newline", b"two\nlines\n", b""])
def test_rows_must_be_single_lines(tmp_path: Path, keys: SimpleNamespace, bad_row: bytes) -> None:
    with pytest.raises(ValueError):
        seal(tmp_path / "bad.seal", keys, [b"good\n", bad_row, b"good\n"])
    assert os.listdir(tmp_path) == []


def test_signer_must_be_private(tmp_path: Path, keys: SimpleNamespace) -> None:
    with pytest.raises(ValueError):
        write_sealed(
            tmp_path / "x.seal",
            kind="new-card",
            header={},
            rows=[],
            recipient=keys.factory,
            signer=keys.system.public_key(),
        )


def test_a_failure_while_writing_leaves_the_old_file_untouched(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "batch.seal"
    seal(path, keys, [b"original\n"])
    before = path.read_bytes()

    def failing_rows() -> Iterator[bytes]:
        yield from card_rows(100_000)
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError, match="database went away"):
        seal(path, keys, failing_rows())
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


# --- Reading: every way a file can be wrong ---------------------------------------------


def test_missing_file(tmp_path: Path, keys: SimpleNamespace) -> None:
    assert rejected(tmp_path / "nowhere.seal", keys) == "nowhere.seal does not exist"


def test_directory(tmp_path: Path, keys: SimpleNamespace) -> None:
    (tmp_path / "adir").mkdir()
    assert "adir" in rejected(tmp_path / "adir", keys)


def test_empty_file(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "empty.seal"
    path.write_bytes(b"")
    assert rejected(path, keys) == "empty.seal is empty"


def test_garbage(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(b"serial,box,pin\n000000010006,1,123456789012345678\n")
    assert rejected(path, keys) == "garbage.csv is not a sealed card file"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000), with_magic=st.booleans())
def test_random_bytes_are_always_rejected(scratch: Path, keys: SimpleNamespace, data: bytes, with_magic: bool) -> None:
    path = scratch / "random.seal"
    path.write_bytes(MAGIC + data if with_magic else data)
    rejected(path, keys)


def test_messages_name_the_file_not_its_directory(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "garbage.seal"
    path.write_bytes(b"nonsense")
    message = rejected(path, keys)
    assert message.startswith("garbage.seal ")
    assert str(tmp_path) not in message


def test_signed_by_another_key(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "forged.seal"
    write_sealed(path, kind="new-card", header={}, rows=[b"a\n"], recipient=keys.factory, signer=keys.other)
    assert rejected(path, keys) == f"forged.seal is not signed by {public_key_fingerprint(keys.system)}"


def test_signed_by_a_key_of_another_size(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "forged.seal"
    small = RSA.generate(1024)
    write_sealed(path, kind="new-card", header={}, rows=[b"a\n"], recipient=keys.factory, signer=small)
    assert rejected(path, keys) == f"forged.seal is not signed by {public_key_fingerprint(keys.system)}"


def test_sealed_for_another_recipient(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "misdirected.seal"
    seal(path, keys, [b"a\n"])
    with pytest.raises(FileRejected) as info:
        open_sealed(path, kind="new-card", sender=keys.system, recipient=keys.other)
    assert str(info.value) == (
        f"misdirected.seal was sealed for key {public_key_fingerprint(keys.factory)}, "
        f"not for this system's key {public_key_fingerprint(keys.other)}"
    )


def test_kind_mismatch(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "batch.seal"
    seal(path, keys, [b"a\n"], kind="new-card")
    with pytest.raises(FileRejected) as info:
        open_as_factory(path, keys, kind="post-production")
    assert str(info.value) == "batch.seal is a new card file, expected a post production file"


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory, keys: SimpleNamespace) -> bytes:
    path = tmp_path_factory.mktemp("small") / "small.seal"
    seal(path, keys, list(card_rows(3)))
    return path.read_bytes()


def test_truncated_at_every_length(tmp_path: Path, keys: SimpleNamespace, small_file: bytes) -> None:
    path = tmp_path / "cut.seal"
    messages = set()
    for length in range(len(small_file)):
        path.write_bytes(small_file[:length])
        messages.add(rejected(path, keys).split(" ", 1)[1])
    assert "is truncated" in messages
    assert "is empty" in messages


def test_truncated_large_file(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "cut.seal"
    seal(path, keys, card_rows(50_000))
    data = path.read_bytes()
    for length in (13, len(data) // 3, len(data) - 300, len(data) - 259, len(data) - 258, len(data) - 1):
        path.write_bytes(data[:length])
        message = rejected(path, keys)
        # Never blamed on the wrong signer: the header names the right one.
        assert message.endswith(" is truncated") or " is damaged or truncated" in message, message


def test_one_flipped_bit_at_every_position(tmp_path: Path, keys: SimpleNamespace, small_file: bytes) -> None:
    path = tmp_path / "flipped.seal"
    (hlen,) = struct.unpack(">I", small_file[8:12])
    for position in range(len(small_file)):
        damaged = bytearray(small_file)
        damaged[position] ^= 0x01
        path.write_bytes(damaged)
        message = rejected(path, keys)
        if 12 + hlen <= position < len(small_file) - 2:
            # Body, tag or signature: the header still names the right signer.
            assert message == (
                f"flipped.seal is damaged or truncated: its signature by "
                f"{public_key_fingerprint(keys.system)} does not verify"
            )


@settings(max_examples=300, deadline=None)
@given(where=st.floats(min_value=0, max_value=1, exclude_max=True), mask=st.integers(1, 255))
def test_one_changed_byte_anywhere(
    scratch: Path, keys: SimpleNamespace, small_file: bytes, where: float, mask: int
) -> None:
    damaged = bytearray(small_file)
    damaged[int(where * len(damaged))] ^= mask
    path = scratch / "changed.seal"
    path.write_bytes(damaged)
    rejected(path, keys)


def test_header_length_past_the_end(tmp_path: Path, keys: SimpleNamespace, small_file: bytes) -> None:
    path = tmp_path / "long.seal"
    path.write_bytes(MAGIC + struct.pack(">I", len(small_file)) + small_file[12:])
    assert rejected(path, keys) == "long.seal is truncated"
    path.write_bytes(MAGIC + b"\xff\xff\xff\xff" + small_file[12:])
    assert rejected(path, keys) == "long.seal is not a sealed card file"


def test_appended_bytes(tmp_path: Path, keys: SimpleNamespace, small_file: bytes) -> None:
    path = tmp_path / "longer.seal"
    path.write_bytes(small_file + b"\n")
    rejected(path, keys)


# --- Validly signed files that are wrong inside (a faulty sender) -------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (dict(header_bytes=b"not json"), "header is not JSON"),
        (dict(header_bytes=b"\xff\xfe{}"), "header is not JSON"),
        (dict(header_bytes=b"[1, 2]"), "header is not a JSON object"),
        (dict(header_bytes=b"[" * 100_000), "header is not JSON"),
        (dict(header={"format": 2}), "is in sealed file format 2"),
        (dict(header={"format": True}), "is in sealed file format True"),
        (dict(header={"format": None}), "is in sealed file format None"),
        (dict(header={"kind": None}), "malformed header (field 'kind')"),
        (dict(header={"wrapped_key": 17}), "malformed header (field 'wrapped_key')"),
        (dict(header={"recipient": None}), "malformed header (field 'recipient')"),
        (dict(header={"nonce": "!!!"}), "malformed header (bad base64)"),
        (dict(header={"nonce": base64.b64encode(b"short").decode()}), "malformed header (field 'nonce')"),
        (dict(header={"signer": "0123456789abcdef"}), "names signer 0123456789abcdef"),
        (dict(wrapped_key=os.urandom(256)), "file key cannot be unwrapped"),
        (dict(wrapped_key=b"short"), "file key cannot be unwrapped"),
        (dict(bad_tag=True), "contents fail authentication"),
    ],
)
def test_signed_but_malformed(tmp_path: Path, keys: SimpleNamespace, raw: dict, expected: str) -> None:
    path = tmp_path / "faulty.seal"
    path.write_bytes(build_raw(keys, b"a,1\n", **raw))
    message = rejected(path, keys)
    assert message.startswith("faulty.seal")
    assert expected in message


def test_signed_but_file_key_is_not_aes_256(tmp_path: Path, keys: SimpleNamespace) -> None:
    short_key = os.urandom(16)
    wrapped = PKCS1_OAEP.new(keys.factory.public_key(), hashAlgo=SHA256).encrypt(short_key)
    path = tmp_path / "aes128.seal"
    path.write_bytes(build_raw(keys, b"a\n", file_key=short_key, wrapped_key=wrapped))
    assert "cannot be unwrapped" in rejected(path, keys)


def test_signed_but_last_row_unterminated(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "partial.seal"
    path.write_bytes(build_raw(keys, b"a,1\nb,2"))
    assert rejected(path, keys) == "partial.seal's last row is incomplete"


# --- The file cannot be swapped between verification and reading --------------------------


def test_replacing_the_file_after_opening_changes_nothing(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "batch.seal"
    rows = list(card_rows(1000, seed=1))
    seal(path, keys, rows)
    other = tmp_path / "other.seal"
    seal(other, keys, list(card_rows(1000, seed=2)))
    with open_as_factory(path, keys) as sealed:
        os.replace(other, path)
        assert list(sealed.rows()) == rows


def test_changing_the_file_in_place_after_opening_is_caught(tmp_path: Path, keys: SimpleNamespace) -> None:
    path = tmp_path / "batch.seal"
    seal(path, keys, card_rows(100_000))
    with open_as_factory(path, keys) as sealed:
        with open(path, "r+b") as f:
            f.seek(path.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x40]))
        with pytest.raises(FileRejected, match="batch.seal changed while it was being read"):
            for _ in sealed.rows():
                pass


def test_rows_refuses_a_row_longer_than_asked(keys, scratch):
    """``max_row_bytes`` ends the iteration at a row that runs on, instead of buffering it whole."""
    path = scratch / "long-row.sealed"
    row = b"7" * (3 * READ_CHUNK) + b"\n"
    write_sealed(path, kind="t", header={}, rows=[b"short\n", row], recipient=keys.system, signer=keys.factory)
    with open_sealed(path, kind="t", sender=keys.factory, recipient=keys.system) as f:
        assert list(f.rows()) == [b"short\n", row]  # no limit asked: the row is read as before
        with pytest.raises(FileRejected, match="long-row.sealed has a row longer than 100 bytes"):
            list(f.rows(max_row_bytes=100))
