"""SQLite database files are owner-only: created so, and refused when opened up."""

import os

import pytest

from cardmgmt.db import make_engine
from cardmgmt.errors import FileTooOpen


def test_a_new_database_file_and_its_folder_are_owner_only(tmp_path):
    path = tmp_path / "var" / "cards.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    engine.dispose()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_database_file_open_to_others_is_refused(tmp_path, mode):
    path = tmp_path / "cards.db"
    make_engine(f"sqlite:///{path}").dispose()
    os.chmod(path, mode)
    with pytest.raises(FileTooOpen, match="chmod 600"):
        make_engine(f"sqlite:///{path}")
    assert path.stat().st_mode & 0o777 == mode, "refused, not silently changed"


def test_an_owner_only_database_file_opens(tmp_path):
    path = tmp_path / "cards.db"
    make_engine(f"sqlite:///{path}").dispose()
    make_engine(f"sqlite:///{path}").dispose()
