"""The doorway every command goes through: schema, keys, operator, role (real databases)."""

import pytest
from sqlalchemy import text

from cardmgmt.config import Settings
from cardmgmt.context import Permission
from cardmgmt.db import Database, head_revision, make_engine
from cardmgmt.errors import AuthenticationFailed, KeyFileError, PermissionDenied, SchemaError
from cardmgmt.keys import create_keyring
from cardmgmt.system import CardSystem
from testkit.install import settings_for


def test_unit_checks_operator_and_role(system, database_url, key_dir):
    with system.unit(Permission.MANAGE_CARDS) as ctx:
        assert ctx.actor.name == "alice"
    wrong = CardSystem(Settings(database_url, key_dir, "alice", "nope"))
    with pytest.raises(AuthenticationFailed), wrong.unit(Permission.VIEW):
        pass
    with pytest.raises(PermissionDenied), system.unit(Permission.DECIDE_REQUESTS):
        pass
    wrong.close()


def test_another_installations_keys_are_refused(system, database_url, tmp_path):
    create_keyring(tmp_path / "other")
    other = CardSystem(settings_for(database_url, tmp_path / "other", "alice"))
    with pytest.raises(KeyFileError, match="does not belong to this database"), other.unit(Permission.VIEW):
        pass
    other.close()


def test_schema_must_be_current(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SchemaError, match="db upgrade"):
        db.check_schema()
    with pytest.raises(SchemaError, match="not a database URL"):
        make_engine("not a url")


def test_schema_behind_is_refused(system, database_url):
    with system.db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'old'"))
    try:
        with pytest.raises(SchemaError, match="expected"):
            system.db.check_schema()
    finally:
        with system.db.engine.begin() as conn:
            conn.execute(text(f"UPDATE alembic_version SET version_num = '{head_revision()}'"))


def test_settings_precedence():
    env = {"CARDS_HOME": "/h", "CARDS_DATABASE_URL": "sqlite:///env.db", "CARDS_OPERATOR": "eve", "CARDS_PASSWORD": "pw"}
    s = Settings.load(environ=env)
    assert (s.database_url, str(s.key_dir), s.operator, s.password) == ("sqlite:///env.db", "/h/keys", "eve", "pw")
    s = Settings.load(database_url="sqlite:///opt.db", operator="al", environ=env)
    assert (s.database_url, s.operator) == ("sqlite:///opt.db", "al")
    assert Settings.load(environ={}).database_url == "sqlite:///var/cards.db"


def test_migrations_downgrade_and_upgrade(tmp_path):
    from alembic import command

    from cardmgmt.db import alembic_config, current_revision, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine)
    command.downgrade(alembic_config(engine), "base")
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
