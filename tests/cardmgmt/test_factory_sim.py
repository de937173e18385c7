"""Tests for the simulated card factory."""

import os
import re
import secrets
import tracemalloc
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from Crypto.PublicKey import RSA

from cardmgmt.errors import FileRejected, InvalidInput
from cardmgmt.factory_sim import FAULT_NAMES, Faults, produce
from cardmgmt.sealed_files import open_sealed, write_sealed
from cardmgmt.serials import make_serial, parse_serial

FIRST_SEQUENCE = 70_000
FACE_VALUE = 5000


@pytest.fixture(scope="module")
def keys() -> SimpleNamespace:
    return SimpleNamespace(
        system=RSA.generate(2048),
        factory=RSA.generate(2048),
        other=RSA.generate(2048),
    )


def new_card_file(
    path: Path,
    keys: SimpleNamespace,
    quantity: int,
    *,
    box_size: int = 100,
    header_quantity: int | None = None,
    signer: RSA.RsaKey | None = None,
) -> list[tuple[str, str, str]]:
    """Write a new-card file as the system would; return its (serial, box, pin) rows."""
    cards = [
        (make_serial(FIRST_SEQUENCE + i), str(i // box_size + 1), f"{secrets.randbelow(10**18):018d}")
        for i in range(quantity)
    ]
    write_sealed(
        path,
        kind="new-card",
        header={
            "batch_no": "B2024-0007",
            "face_value": FACE_VALUE,
            "quantity": quantity if header_quantity is None else header_quantity,
            "expiry": "2026-12-31",
            "box_size": box_size,
            "first_serial": make_serial(FIRST_SEQUENCE),
            "last_serial": make_serial(FIRST_SEQUENCE + quantity - 1),
        },
        rows=(f"{s},{b},{p}\n".encode() for s, b, p in cards),
        recipient=keys.factory.public_key(),
        signer=signer or keys.system,
    )
    return cards


def post_production(path: Path, keys: SimpleNamespace) -> tuple[dict, list[tuple[str, str, str, str, str]]]:
    """Open a post-production file as the system does; return its header and split rows."""
    with open_sealed(path, kind="post-production", sender=keys.factory.public_key(), recipient=keys.system) as f:
        return f.header, [tuple(row.decode("ascii").rstrip("\n").split(",")) for row in f.rows()]


def run(tmp_path: Path, keys: SimpleNamespace, quantity: int, faults: Faults | None = None, **kw: object):
    src = tmp_path / "new-cards.seal"
    out = tmp_path / "post-production.seal"
    cards = new_card_file(src, keys, quantity, **kw)
    report = produce(
        src,
        out,
        factory_name="Shenzhen Card Works",
        factory_key=keys.factory,
        system_key=keys.system.public_key(),
        faults=faults or Faults(),
    )
    header, rows = post_production(out, keys)
    return cards, report, header, rows


def test_no_faults_returns_every_card_unchanged(tmp_path: Path, keys: SimpleNamespace) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    cards, report, header, rows = run(tmp_path, keys, 250)

    assert rows == [(s, b, str(FACE_VALUE), p, "ok") for s, b, p in cards]
    assert report.batch_no == "B2024-0007"
    assert report.rows_read == report.rows_written == 250
    assert report.faults == {name: [] for name in FAULT_NAMES}
    assert header["batch_no"] == "B2024-0007"
    assert header["face_value"] == FACE_VALUE
    assert header["quantity"] == 250
    assert header["factory"] == "Shenzhen Card Works"
    produced = datetime.fromisoformat(header["produced_at"])
    assert produced.utcoffset() == timedelta(0)
    assert before <= produced <= datetime.now(UTC)
    with open_sealed(
        tmp_path / "new-cards.seal", kind="new-card", sender=keys.system, recipient=keys.factory
    ) as source:
        assert header["source_digest"] == source.digest


def test_empty_batch(tmp_path: Path, keys: SimpleNamespace) -> None:
    _, report, header, rows = run(tmp_path, keys, 0)
    assert rows == []
    assert header["quantity"] == report.rows_written == report.rows_read == 0


def _check_only(report, kind: str, count: int) -> list[str]:
    for name in FAULT_NAMES:
        assert len(report.faults[name]) == (count if name == kind else 0), name
    return report.faults[kind]


def test_missing(tmp_path: Path, keys: SimpleNamespace) -> None:
    cards, report, header, rows = run(tmp_path, keys, 200, Faults(missing=7, seed=1))
    missing = set(_check_only(report, "missing", 7))
    assert len(missing) == 7
    assert rows == [(s, b, str(FACE_VALUE), p, "ok") for s, b, p in cards if s not in missing]
    assert header["quantity"] == report.rows_written == len(rows) == 193
    assert report.rows_read == 200


def test_duplicate(tmp_path: Path, keys: SimpleNamespace) -> None:
    cards, report, header, rows = run(tmp_path, keys, 200, Faults(duplicate=7, seed=1))
    duplicated = set(_check_only(report, "duplicate", 7))
    assert len(duplicated) == 7
    counts = Counter(rows)
    assert {row[0] for row, n in counts.items() if n == 2} == duplicated
    assert set(counts.values()) == {1, 2}
    # Every row, copies included, is the card as it went in.
    assert set(rows) == {(s, b, str(FACE_VALUE), p, "ok") for s, b, p in cards}
    assert header["quantity"] == report.rows_written == len(rows) == 207


def test_altered(tmp_path: Path, keys: SimpleNamespace) -> None:
    cards, report, header, rows = run(tmp_path, keys, 200, Faults(altered=7, seed=1))
    altered = set(_check_only(report, "altered", 7))
    assert len(rows) == header["quantity"] == 200
    for (serial, box, pin), row in zip(cards, rows, strict=True):
        assert row[:3] == (serial, box, str(FACE_VALUE)) and row[4] == "ok"
        if serial in altered:
            assert row[3] != pin
            assert re.fullmatch(r"\d{18}", row[3])
        else:
            assert row[3] == pin


def test_damaged(tmp_path: Path, keys: SimpleNamespace) -> None:
    cards, report, header, rows = run(tmp_path, keys, 200, Faults(damaged=7, seed=1))
    damaged = set(_check_only(report, "damaged", 7))
    assert rows == [(s, b, str(FACE_VALUE), p, "damaged" if s in damaged else "ok") for s, b, p in cards]
    assert header["quantity"] == 200


def test_extra(tmp_path: Path, keys: SimpleNamespace) -> None:
    cards, report, header, rows = run(tmp_path, keys, 200, Faults(extra=7, seed=1), box_size=30)
    extra = _check_only(report, "extra", 7)
    assert extra == [make_serial(FIRST_SEQUENCE + 200 + i) for i in range(7)]
    assert rows[:200] == [(s, b, str(FACE_VALUE), p, "ok") for s, b, p in cards]
    batch_serials = {s for s, _, _ in cards}
    for i, (serial, box, face, pin, status) in enumerate(rows[200:]):
        assert serial == extra[i] and serial not in batch_serials
        assert parse_serial(serial) == FIRST_SEQUENCE + 200 + i  # a valid check digit
        assert box == str((200 + i) // 30 + 1)
        assert face == str(FACE_VALUE) and status == "ok"
        assert re.fullmatch(r"\d{18}", pin)
    assert header["quantity"] == report.rows_written == 207


def test_all_faults_together_hit_distinct_cards(tmp_path: Path, keys: SimpleNamespace) -> None:
    faults = Faults(missing=3, extra=4, duplicate=5, altered=6, damaged=7, seed=42)
    cards, report, header, rows = run(tmp_path, keys, 40, faults)
    card_faulted = [s for name in ("missing", "duplicate", "altered", "damaged") for s in report.faults[name]]
    assert len(card_faulted) == len(set(card_faulted)) == 21
    assert {name: len(v) for name, v in report.faults.items()} == {
        "missing": 3,
        "extra": 4,
        "duplicate": 5,
        "altered": 6,
        "damaged": 7,
    }
    assert len(rows) == header["quantity"] == report.rows_written == 40 - 3 + 5 + 4
    by_serial = {s: (b, p) for s, b, p in cards}
    for serial, box, _face, pin, status in rows:
        if serial in report.faults["extra"]:
            continue
        assert box == by_serial[serial][0]
        assert (pin != by_serial[serial][1]) == (serial in report.faults["altered"])
        assert (status == "damaged") == (serial in report.faults["damaged"])


def test_every_card_can_be_faulted(tmp_path: Path, keys: SimpleNamespace) -> None:
    _, report, header, rows = run(tmp_path, keys, 10, Faults(missing=4, duplicate=3, altered=2, damaged=1))
    assert report.rows_written == len(rows) == header["quantity"] == 6 + 3


def test_seed_repeats_the_choice_of_cards_but_not_the_pins(tmp_path: Path, keys: SimpleNamespace) -> None:
    src = tmp_path / "new-cards.seal"
    new_card_file(src, keys, 300)
    faults = Faults(missing=5, duplicate=5, altered=5, damaged=5, extra=2, seed=7)
    results = []
    for n in range(2):
        out = tmp_path / f"post-{n}.seal"
        report = produce(src, out, factory_name="F", factory_key=keys.factory, system_key=keys.system, faults=faults)
        results.append((report, dict((r[0], r[3]) for r in post_production(out, keys)[1])))
    (first, pins_1), (second, pins_2) = results
    assert first.faults == second.faults
    for serial in first.faults["altered"] + first.faults["extra"]:
        assert pins_1[serial] != pins_2[serial], "replacement PINs come from secrets"
    other = produce(
        src,
        tmp_path / "post-other.seal",
        factory_name="F",
        factory_key=keys.factory,
        system_key=keys.system,
        faults=Faults(missing=5, duplicate=5, altered=5, damaged=5, seed=8),
    )
    assert other.faults != first.faults


def test_too_many_faults(tmp_path: Path, keys: SimpleNamespace) -> None:
    src = tmp_path / "new-cards.seal"
    out = tmp_path / "post.seal"
    new_card_file(src, keys, 10)
    with pytest.raises(InvalidInput, match="11 distinct cards"):
        produce(
            src,
            out,
            factory_name="F",
            factory_key=keys.factory,
            system_key=keys.system,
            faults=Faults(missing=4, duplicate=3, altered=2, damaged=2),
        )
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["new-cards.seal"]


def test_extra_rows_do_not_take_cards_from_the_batch(tmp_path: Path, keys: SimpleNamespace) -> None:
    _, report, _, rows = run(tmp_path, keys, 3, Faults(missing=3, extra=5))
    assert [r[0] for r in rows] == report.faults["extra"]


@pytest.mark.parametrize("name", FAULT_NAMES)
@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_fault_counts_must_be_whole_numbers(name: str, value: object) -> None:
    with pytest.raises(InvalidInput):
        Faults(**{name: value})


def test_produced_file_is_for_the_system_only(tmp_path: Path, keys: SimpleNamespace) -> None:
    run(tmp_path, keys, 5)
    out = tmp_path / "post-production.seal"
    with pytest.raises(FileRejected, match="not signed by"):
        open_sealed(out, kind="post-production", sender=keys.system, recipient=keys.system)
    with pytest.raises(FileRejected, match="was sealed for key"):
        open_sealed(out, kind="post-production", sender=keys.factory, recipient=keys.other)
    with pytest.raises(FileRejected, match="is a post production file, expected a new card file"):
        open_sealed(out, kind="new-card", sender=keys.factory, recipient=keys.system)


def test_new_card_file_not_signed_by_the_system_is_refused(tmp_path: Path, keys: SimpleNamespace) -> None:
    src = tmp_path / "new-cards.seal"
    out = tmp_path / "post.seal"
    new_card_file(src, keys, 5, signer=keys.other)
    with pytest.raises(FileRejected, match="new-cards.seal is not signed by"):
        produce(src, out, factory_name="F", factory_key=keys.factory, system_key=keys.system)
    assert not out.exists()


def test_a_post_production_file_is_not_accepted_as_new_cards(tmp_path: Path, keys: SimpleNamespace) -> None:
    run(tmp_path, keys, 5)
    # Sealed for the system and signed by the factory: the factory cannot
    # read it, and it is not a new-card file anyway.
    with pytest.raises(FileRejected):
        produce(
            tmp_path / "post-production.seal",
            tmp_path / "again.seal",
            factory_name="F",
            factory_key=keys.factory,
            system_key=keys.system,
        )
    assert not (tmp_path / "again.seal").exists()


@pytest.mark.parametrize("header_quantity", [9, 11])
def test_row_count_must_match_the_header(tmp_path: Path, keys: SimpleNamespace, header_quantity: int) -> None:
    src = tmp_path / "new-cards.seal"
    out = tmp_path / "post.seal"
    new_card_file(src, keys, 10, header_quantity=header_quantity)
    with pytest.raises(FileRejected, match="rows"):
        produce(src, out, factory_name="F", factory_key=keys.factory, system_key=keys.system)
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["new-cards.seal"], "no temporary file is left"


def test_malformed_row_is_refused_without_showing_it(tmp_path: Path, keys: SimpleNamespace) -> None:
    src = tmp_path / "new-cards.seal"
    out = tmp_path / "post.seal"
    pin = "123456789012345678"
    write_sealed(
        src,
        kind="new-card",
        header={
            "batch_no": "B1",
            "face_value": FACE_VALUE,
            "quantity": 2,
            "expiry": "2026-12-31",
            "box_size": 10,
            "first_serial": make_serial(1),
            "last_serial": make_serial(2),
        },
        rows=[f"{make_serial(1)},1,{pin}\n".encode(), f"{make_serial(2)};1;{pin}\n".encode()],
        recipient=keys.factory,
        signer=keys.system,
    )
    with pytest.raises(FileRejected) as info:
        produce(src, out, factory_name="F", factory_key=keys.factory, system_key=keys.system)
    assert "row 2" in str(info.value)
    assert pin not in str(info.value)
    assert not out.exists()


def test_report_names_serials_never_pins(tmp_path: Path, keys: SimpleNamespace) -> None:
    cards, report, _, rows = run(tmp_path, keys, 100, Faults(missing=2, extra=2, duplicate=2, altered=2, damaged=2))
    text = repr(report)
    for pin in {p for _, _, p in cards} | {r[3] for r in rows}:
        assert pin not in text
    assert all(re.fullmatch(r"\d{12}", s) for v in report.faults.values() for s in v)


def test_produce_streams(tmp_path: Path, keys: SimpleNamespace) -> None:
    src = tmp_path / "new-cards.seal"
    n = 100_000
    write_sealed(
        src,
        kind="new-card",
        header={
            "batch_no": "B-big",
            "face_value": FACE_VALUE,
            "quantity": n,
            "expiry": "2026-12-31",
            "box_size": 500,
            "first_serial": make_serial(FIRST_SEQUENCE),
            "last_serial": make_serial(FIRST_SEQUENCE + n - 1),
        },
        rows=(b"%s,%d,%018d\n" % (make_serial(FIRST_SEQUENCE + i).encode(), i // 500 + 1, i * 7919) for i in range(n)),
        recipient=keys.factory,
        signer=keys.system,
    )
    tracemalloc.start()
    try:
        report = produce(
            src,
            tmp_path / "post.seal",
            factory_name="F",
            factory_key=keys.factory,
            system_key=keys.system,
            faults=Faults(missing=10, duplicate=10, altered=10, damaged=10, extra=10, seed=3),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.rows_written == n + 10
    # The batch is ~4 MB in and ~5 MB out; only a few chunks are ever held.
    assert peak < 3_000_000, peak
