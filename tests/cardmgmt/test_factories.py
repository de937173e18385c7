"""Registering card factories: their keys must be real, large enough and not the system's own."""

from pathlib import Path

import pytest
from sqlalchemy import func, select

from cardmgmt import factories
from cardmgmt.context import Permission
from cardmgmt.errors import AlreadyExists, InvalidInput
from cardmgmt.models import Factory
from cardmgmt.system import CardSystem


def _factories(system: CardSystem) -> int:
    with system.db.transaction() as s:
        return s.execute(select(func.count()).select_from(Factory)).scalar_one()


def test_register_and_refuse_a_second_of_the_same_name(system: CardSystem, factory_key_files: tuple[Path, Path]) -> None:
    with system.unit(Permission.MANAGE_CARDS) as ctx:
        f = factories.register(ctx, "F1", factory_key_files[1])
    assert len(f.fingerprint) == 16
    with pytest.raises(AlreadyExists), system.unit(Permission.MANAGE_CARDS) as ctx:
        factories.register(ctx, "F1", factory_key_files[1])
    assert _factories(system) == 1


def test_the_systems_own_public_key_is_refused(system: CardSystem) -> None:
    own = system.settings.key_dir / "system.pub.pem"
    with pytest.raises(InvalidInput, match="system's own public key"), system.unit(Permission.MANAGE_CARDS) as ctx:
        factories.register(ctx, "F1", own)
    assert _factories(system) == 0
