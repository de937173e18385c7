"""Tests for cardmgmt.channel_clients: registering, revoking, derived keys, and the servers' snapshot."""

from pathlib import Path

import pytest

from cardmgmt import channel_clients as cc
from cardmgmt.context import Permission
from cardmgmt.errors import AlreadyExists, InvalidInput, KeyFileError, NotFound, PermissionDenied
from cardmgmt.keys import load_api_key
from cardmgmt.models import LogEntry
from cardmgmt.system import CardSystem


def test_init_registers_the_hotline_and_writes_its_derived_key(system: CardSystem) -> None:
    with system.unit(Permission.VIEW) as ctx:
        rows = cc.listing(ctx.session)
        assert [(r["name"], r["channel"], r["created_by"], r["revoked_at"]) for r in rows] == [("hotline", "hotline", "alice", None)]
        assert load_api_key(system.settings.key_dir) == ctx.keys.channel_client_key("hotline")


def test_each_client_has_its_own_key_and_none_is_stored(system: CardSystem) -> None:
    with system.unit(Permission.MANAGE_CLIENTS) as ctx:
        k1 = cc.add(ctx, "pos-hall-1", "pos")
        k2 = cc.add(ctx, "pos-hall-2", "pos")
    assert len({k1, k2, load_api_key(system.settings.key_dir)}) == 3
    with system.db.engine.connect() as conn:
        dump = "\n".join(str(row) for table in ("channel_clients", "operation_log") for row in conn.exec_driver_sql(f"SELECT * FROM {table}"))
    for key in (k1, k2):
        assert key.hex() not in dump and key.hex()[:16] not in dump


def test_add_refuses_bad_names_channels_and_duplicates(system: CardSystem) -> None:
    with system.unit(Permission.MANAGE_CLIENTS) as ctx:
        for name, channel, error in [("POS 1", "pos", InvalidInput), ("pos-1", "fax", InvalidInput), ("hotline", "hotline", AlreadyExists)]:
            with pytest.raises(error):
                cc.add(ctx, name, channel)


def test_revoke_is_logged_and_seen_in_the_snapshot(system: CardSystem) -> None:
    with system.unit(Permission.MANAGE_CLIENTS) as ctx:
        cc.add(ctx, "partner-x", "partner")
    with system.unit(Permission.MANAGE_CLIENTS) as ctx:
        cc.revoke(ctx, "partner-x", "contract ended")
    with system.unit(Permission.MANAGE_CLIENTS) as ctx:
        with pytest.raises(InvalidInput, match="already revoked"):
            cc.revoke(ctx, "partner-x", "again")
        with pytest.raises(InvalidInput, match="reason"):
            cc.revoke(ctx, "hotline", "  ")
        with pytest.raises(NotFound):
            cc.revoke(ctx, "nobody", "x")
        snap = cc.snapshot(ctx.session)
        actions = [e.action for e in ctx.session.query(LogEntry).order_by(LogEntry.seq)]
    assert snap["partner-x"] == cc.ClientEntry("partner-x", "partner", True)
    assert snap["hotline"].revoked is False
    assert actions.count("client.add") == 1 and actions.count("client.revoke") == 1  # init logs the hotline itself


def test_only_an_administrator_manages_clients(bench) -> None:  # type: ignore[no-untyped-def]
    bob = bench.as_("bob")
    with pytest.raises(PermissionDenied):
        with bob.unit(Permission.MANAGE_CLIENTS):
            pass
    with bob.unit(Permission.VIEW) as ctx, pytest.raises(PermissionDenied):
        cc.add(ctx, "pos-9", "pos")


def test_a_key_file_is_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "pos.key"
    cc.write_key_file(path, b"\x01" * 32)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == "01" * 32 + "\n"
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        cc.write_key_file(path, b"\x02" * 32)


def test_the_registry_refuses_revoked_unknown_and_stale() -> None:
    now = [100.0]
    table = {"hotline": cc.ClientEntry("hotline", "hotline", False), "pos-1": cc.ClientEntry("pos-1", "pos", True)}
    reg = cc.ClientRegistry(lambda: table, lambda: now[0], max_age=5.0)
    with pytest.raises(cc.RegistryStale):
        reg.lookup("hotline")
    reg.refresh()
    assert reg.lookup("hotline").channel == "hotline"
    with pytest.raises(cc.ClientRevoked):
        reg.lookup("pos-1")
    with pytest.raises(cc.UnknownClient):
        reg.lookup("pos-2")
    now[0] += 5.1
    with pytest.raises(cc.RegistryStale):
        reg.lookup("hotline")


def test_migration_0007_keeps_an_existing_installation_its_hotline(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import text

    from cardmgmt.db import alembic_config, make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'cards.db'}")
    try:
        upgrade(engine, "0006")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO operators (name, role, password_hash, active, created_at) VALUES ('alice', 'admin', 'x', 1, '2026-11-30')"))
        upgrade(engine)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT name, channel, revoked_at FROM channel_clients")).all()
            columns = {r[1] for r in conn.execute(text("PRAGMA table_info(recharges)"))}
        assert rows == [("hotline", "hotline", None)]
        assert "client" in columns
        command.downgrade(alembic_config(engine), "0006")  # and back down
        with engine.connect() as conn:
            assert "client" not in {r[1] for r in conn.execute(text("PRAGMA table_info(recharges)"))}
    finally:
        engine.dispose()
