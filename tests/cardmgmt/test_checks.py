"""Checking post-production files: every finding, and every bad file (real databases, real files)."""

import json
import os
import tracemalloc

import pytest
from Crypto.PublicKey import RSA
from sqlalchemy import func, select

from cardmgmt import checks, factory_sim
from cardmgmt.errors import FileRejected, InvalidInput, NotFound
from cardmgmt.keys import load_public_key
from cardmgmt.models import CheckFinding, FactoryFile, LogEntry
from cardmgmt.serials import make_serial
from testkit import factory


@pytest.fixture
def ordered(bench):
    bench.register_factory()
    bench.create_batch("B1", 30)
    return bench


def test_clean_file(ordered):
    report = ordered.check("B1", ordered.produce("B1"))
    assert report.clean and report.counts["matched"] == 30 and report.produced == 30
    assert ordered.states("B1") == {"produced": 30}


def test_every_kind_of_finding(ordered):
    faults = factory_sim.Faults(missing=2, extra=1, duplicate=1, altered=2, damaged=1, seed=3)
    path = ordered.workdir / "faulty.produced"
    sim = factory.produce(ordered.workdir / "B1.newcard", path, ordered.factory_keys,
                          ordered.system.settings.key_dir / "system.pub.pem", faults=faults)
    report = ordered.check("B1", path)
    assert report.counts == {"matched": 24, "missing": 2, "extra": 1, "duplicate": 1, "altered": 2, "damaged": 1}
    found = {(s, k) for s, k, _ in report.findings}
    for kind in ("missing", "extra", "duplicate", "altered", "damaged"):
        assert {(s, kind) for s in sim.faults[kind]} <= found, kind
    assert ordered.states("B1") == {"produced": 24, "voided": 1, "ordered": 5}
    with ordered.system.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(CheckFinding)).scalar_one() == 7
    assert not report.clean


def test_altered_face_value_and_box_are_named(ordered):
    """A factory that prints the wrong box or value: the finding says which field."""
    new_card = ordered.workdir / "B1.newcard"
    out = ordered.workdir / "tampered.produced"
    from cardmgmt import sealed_files
    from cardmgmt.keys import load_private_key

    factory_key = load_private_key(ordered.factory_keys[0])
    system_pub = load_public_key(ordered.system.settings.key_dir / "system.pub.pem")
    with sealed_files.open_sealed(new_card, kind="new-card", sender=system_pub, recipient=factory_key) as f:
        rows = [r.decode().rstrip("\n").split(",") for r in f.rows()]

    def produced():
        for i, (serial, box, pin) in enumerate(rows):
            face = 3000 if i == 0 else 5000
            box = "9" if i == 1 else box
            yield f"{serial},{box},{face},{pin},ok\n".encode()

    sealed_files.write_sealed(out, kind="post-production", header={"batch_no": "B1", "face_value": 5000, "quantity": 30,
                              "factory": "F1", "produced_at": "x", "source_digest": f.digest},
                              rows=produced(), recipient=system_pub, signer=factory_key)
    details = {s: d for s, k, d in ordered.check("B1", out).findings}
    assert details == {make_serial(1): "face value 3000 fen instead of 5000", make_serial(2): "box 9 instead of 1"}


def test_impossible_face_value_and_box_are_named_without_their_digits(ordered):
    """Values too large to keep per card are still findings, named as impossible."""
    from cardmgmt import sealed_files
    from cardmgmt.keys import load_private_key

    factory_key = load_private_key(ordered.factory_keys[0])
    system_pub = load_public_key(ordered.system.settings.key_dir / "system.pub.pem")
    with sealed_files.open_sealed(ordered.workdir / "B1.newcard", kind="new-card", sender=system_pub,
                                  recipient=factory_key) as f:
        rows = [r.decode().rstrip("\n").split(",") for r in f.rows()]
    huge = "9" * 30

    def produced():
        for i, (serial, box, pin) in enumerate(rows):
            yield f"{serial},{huge if i == 1 else box},{huge if i == 0 else 5000},{pin},ok\n".encode()

    out = ordered.workdir / "huge.produced"
    sealed_files.write_sealed(out, kind="post-production", header={"batch_no": "B1", "face_value": 5000, "quantity": 30},
                              rows=produced(), recipient=system_pub, signer=factory_key)
    details = {s: d for s, k, d in ordered.check("B1", out).findings}
    assert details == {make_serial(1): "an impossible face value instead of 5000",
                       make_serial(2): "an impossible box number instead of 1"}


def _assert_nothing_changed(bench):
    assert bench.states("B1") == {"ordered": 30}
    with bench.system.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(FactoryFile)).scalar_one() == 0


def test_same_file_twice(ordered):
    path = ordered.produce("B1")
    ordered.check("B1", path)
    with pytest.raises(FileRejected, match="already imported"):
        ordered.check("B1", path)


def test_file_for_another_batch(ordered):
    ordered.create_batch("B2", 5)
    with pytest.raises(FileRejected, match="is for batch 'B2', not B1"):
        ordered.check("B1", ordered.produce("B2"))
    _assert_nothing_changed(ordered)


def test_file_signed_by_another_key(ordered, tmp_path):
    impostor = RSA.generate(2048)
    path = tmp_path / "forged.produced"
    factory.produce(ordered.workdir / "B1.newcard", path, ordered.factory_keys,
                    ordered.system.settings.key_dir / "system.pub.pem")
    # Re-sign the same content with another key: the signature check must refuse it.
    from cardmgmt import sealed_files
    from cardmgmt.keys import load_private_key

    with sealed_files.open_sealed(path, kind="post-production", sender=load_public_key(ordered.factory_keys[1]),
                                  recipient=load_private_key(ordered.system.settings.key_dir / "system.pem")) as f:
        header = {k: v for k, v in f.header.items() if k in ("batch_no", "face_value", "quantity", "factory", "produced_at", "source_digest")}
        rows = list(f.rows())
    sealed_files.write_sealed(path, kind="post-production", header=header, rows=rows,
                              recipient=load_public_key(ordered.system.settings.key_dir / "system.pub.pem"), signer=impostor)
    with pytest.raises(FileRejected, match="not signed by"):
        ordered.check("B1", path)
    _assert_nothing_changed(ordered)


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated", "flipped", "missing"])
def test_broken_files(ordered, damage):
    path = ordered.produce("B1")
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        path.write_bytes(data[:200] + bytes([data[200] ^ 1]) + data[201:])
    else:
        path.unlink()
    with pytest.raises(FileRejected) as e:
        ordered.check("B1", path)
    assert "\n" not in str(e.value)
    _assert_nothing_changed(ordered)


def test_new_card_file_is_not_a_post_production_file(ordered):
    with pytest.raises(FileRejected):
        ordered.check("B1", ordered.workdir / "B1.newcard")
    _assert_nothing_changed(ordered)


def test_unknown_batch(ordered):
    with pytest.raises(NotFound):
        ordered.check("B404", ordered.produce("B1"))


def test_extra_rows_beyond_the_batch_cost_no_memory_per_row(ordered):
    """A signed file may hold any number of rows outside the batch; memory follows the batch, not the file.

    The peak is Python's own allocations during the check (``tracemalloc``,
    not time): holding 20,000 findings as lists and ORM objects, as the
    check once did, peaked at about 50 MB here; streamed, it stays near 6 MB.
    """
    extra = 20_000
    path = ordered.produce("B1", factory_sim.Faults(extra=extra))
    tracemalloc.start()
    try:
        report = ordered.check("B1", path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.counts == {"matched": 30, "missing": 0, "extra": extra, "duplicate": 0, "altered": 0, "damaged": 0}
    assert report.findings_total == extra and len(report.findings) == checks.FINDINGS_KEPT
    assert peak < 12 * 2**20, f"the check peaked at {peak / 2**20:.1f} MB"
    # Every extra row is still recorded card by card, in file order.
    with ordered.system.db.transaction() as s:
        recorded = list(checks.iter_findings(s, report.file_id))
    assert len(recorded) == extra and recorded[: checks.FINDINGS_KEPT] == report.findings
    assert [serial for serial, _, _ in recorded] == [make_serial(30 + i) for i in range(1, extra + 1)]
    assert {(kind, detail) for _, kind, detail in recorded} == {("extra", "not part of this batch")}


def test_a_row_without_end_is_rejected_whole(ordered):
    """One endless "row" in a signed file is refused without being buffered whole."""
    from cardmgmt import sealed_files
    from cardmgmt.keys import load_private_key

    path = ordered.workdir / "endless.produced"
    sealed_files.write_sealed(
        path, kind="post-production", header={"batch_no": "B1", "face_value": 5000, "quantity": 1},
        rows=[b"1" * (3 * sealed_files.READ_CHUNK) + b"\n"],
        recipient=load_public_key(ordered.system.settings.key_dir / "system.pub.pem"),
        signer=load_private_key(ordered.factory_keys[0]),
    )
    with pytest.raises(FileRejected, match=f"endless.produced has a row longer than {checks.MAX_ROW_BYTES} bytes"):
        ordered.check("B1", path)
    _assert_nothing_changed(ordered)


def _check_again(bench, path, reason):
    with bench.unit() as ctx:
        return checks.check_file(ctx, "B1", path, recheck_reason=reason)


def test_a_second_file_for_a_checked_batch_needs_a_reason(ordered):
    """A differently sealed second file for a checked batch is refused unless the operator says why."""
    ordered.check("B1", ordered.produce("B1", factory_sim.Faults(damaged=2, seed=1)))
    resent = ordered.produce("B1")  # the same cards, sealed afresh: another digest
    states = ordered.states("B1")

    with pytest.raises(FileRejected, match="batch B1 was already checked with .* --recheck-reason; nothing changed"):
        ordered.check("B1", resent)
    with pytest.raises(InvalidInput, match="recheck reason is empty"):
        _check_again(ordered, resent, "  \n ")
    with pytest.raises(InvalidInput, match="must not contain a PIN") as e:
        _check_again(ordered, resent, "card 123456789012345678 was resent")
    assert "123456789012345678" not in str(e.value)
    assert ordered.states("B1") == states
    with ordered.system.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(FactoryFile)).scalar_one() == 1

    report = _check_again(ordered, resent, "factory resent after damage")
    assert report.recheck_reason == "factory resent after damage" and report.counts["matched"] == 30
    assert ordered.states("B1") == {"produced": 28, "voided": 2}  # voided cards stay voided
    with ordered.system.db.transaction() as s:
        first, second = s.execute(select(FactoryFile).order_by(FactoryFile.id)).scalars()
        assert (first.recheck_reason, second.recheck_reason) == (None, "factory resent after damage")
        entry = s.execute(select(LogEntry).where(LogEntry.action == "batch.check").order_by(LogEntry.seq.desc())).scalars().first()
        after = json.loads(entry.after)
        assert (after["recheck_reason"], after["recheck_of_file"], after["file_id"]) == ("factory resent after damage", first.id, second.id)

    # The same file stays refused by its digest, whatever the reason.
    with pytest.raises(FileRejected, match="already imported"):
        _check_again(ordered, resent, "once more")


def test_a_recheck_reason_for_a_first_file_is_refused(ordered):
    with pytest.raises(InvalidInput, match="batch B1 has no checked file yet"):
        _check_again(ordered, ordered.produce("B1"), "just in case")
    _assert_nothing_changed(ordered)
