"""Batch creation and the new-card file (real databases, real files)."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from cardmgmt import batches, pins, sealed_files
from cardmgmt.errors import AlreadyExists, InvalidInput, NotFound, PermissionDenied
from cardmgmt.keys import load_private_key, load_public_key
from cardmgmt.models import Batch, Card
from cardmgmt.serials import make_serial, parse_serial


def _read_new_card_file(bench, path):
    with sealed_files.open_sealed(
        path, kind="new-card", sender=load_public_key(bench.system.settings.key_dir / "system.pub.pem"),
        recipient=load_private_key(bench.factory_keys[0]),
    ) as f:
        return f.header, [line.decode().rstrip("\n").split(",") for line in f.rows()]


def test_create_stores_only_hashes_and_the_file_holds_the_pins(bench):
    bench.register_factory()
    path = bench.create_batch("B1", 25, box_size=10)
    header, rows = _read_new_card_file(bench, path)
    assert header["batch_no"] == "B1" and header["quantity"] == 25 and header["face_value"] == 5000
    assert [r[0] for r in rows] == [make_serial(i) for i in range(1, 26)]
    assert [int(r[1]) for r in rows] == [1] * 10 + [2] * 10 + [3] * 5
    with bench.system.db.transaction() as s:
        stored = dict(s.execute(select(Card.serial, Card.pin_hash)).all())
        states = set(s.execute(select(Card.state)).scalars())
    key = bench.system.keys().pin_key
    assert {serial: pins.pin_hash(key, pin) for serial, _, pin in rows} == stored
    assert states == {"ordered"}
    assert path.stat().st_mode & 0o777 == 0o600


def test_serials_are_unique_across_batches(bench):
    bench.register_factory()
    bench.create_batch("B1", 10)
    bench.create_batch("B2", 10)
    with bench.system.db.transaction() as s:
        b1, b2 = batches.get(s, "B1"), batches.get(s, "B2")
        assert parse_serial(b2.first_serial) == parse_serial(b1.last_serial) + 1
        assert s.execute(select(func.count(func.distinct(Card.serial)))).scalar_one() == 20


def test_bad_orders_change_nothing(bench):
    bench.register_factory()
    bench.create_batch("B1", 5)
    cases = [
        (dict(batch_no="B1"), AlreadyExists),
        (dict(factory="nope"), NotFound),
        (dict(expiry=dt.date.today()), InvalidInput),
        (dict(quantity=0), InvalidInput),
        (dict(box_size=0), InvalidInput),
        (dict(batch_no="bad batch!"), InvalidInput),
        (dict(out="missing-dir/x.newcard"), InvalidInput),
    ]
    for change, error in cases:
        kw = dict(batch_no="B2", quantity=5, face_value=5000, box_size=10, expiry=dt.date.today() + dt.timedelta(days=9), factory="F1") | change
        out = bench.workdir / kw.get("out", "x.newcard")
        with pytest.raises(error), bench.unit() as ctx:
            batches.create(ctx, batch_no=kw["batch_no"], face_value=kw["face_value"], quantity=kw["quantity"],
                           box_size=kw["box_size"], expiry=kw["expiry"], factory_name=kw["factory"], out=out)
        assert not out.exists()
    with bench.system.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Batch)).scalar_one() == 1
        assert s.execute(select(func.count()).select_from(Card)).scalar_one() == 5


def test_finance_cannot_create_batches(bench):
    bench.register_factory()
    with pytest.raises(PermissionDenied), bench.unit(who="bob") as ctx:
        batches.create(ctx, batch_no="B9", face_value=100, quantity=1, box_size=1,
                       expiry=dt.date.today() + dt.timedelta(days=1), factory_name="F1", out=bench.workdir / "b9")


def test_an_existing_new_card_file_is_never_overwritten(bench):
    bench.register_factory()
    earlier = bench.workdir / "B1.newcard"
    earlier.write_bytes(b"another batch's PINs")
    with pytest.raises(InvalidInput, match="refusing to overwrite a new-card file"), bench.unit() as ctx:
        batches.create(ctx, batch_no="B1", face_value=100, quantity=30, box_size=10,
                       expiry=dt.date.today() + dt.timedelta(days=1), factory_name="F1", out=earlier)
    assert earlier.read_bytes() == b"another batch's PINs"
    with bench.system.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Batch)).scalar_one() == 0


def test_a_failed_file_write_rolls_the_batch_back(bench):
    bench.register_factory()
    in_the_way = bench.workdir / "B1.newcard"
    in_the_way.mkdir()  # the file cannot take the place of a directory: the write fails at the very end
    with pytest.raises(OSError), bench.unit() as ctx:
        batches.create(ctx, batch_no="B1", face_value=100, quantity=30, box_size=10,
                       expiry=dt.date.today() + dt.timedelta(days=1), factory_name="F1", out=in_the_way)
    with bench.system.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Card)).scalar_one() == 0


