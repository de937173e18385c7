"""The one typed configuration object, and the one place that reads the environment.

Every front end builds a ``Settings`` with ``Settings.load(...)``: explicit
options win over environment variables, which win over the defaults.  No other
module reads ``os.environ``.

Environment variables:

``CARDS_DATABASE_URL``  any SQLAlchemy URL; default ``sqlite:///<home>/cards.db``
``CARDS_HOME``          data directory; default ``./var``
``CARDS_KEY_DIR``       key directory; default ``<home>/keys``
``CARDS_OPERATOR``      operator name for commands that need one
``CARDS_PASSWORD``      that operator's password (for scripts; otherwise prompted)
"""

# test-case-name: tests.cardmgmt.test_config

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Where the data and keys live, and who is operating."""

    database_url: str
    key_dir: Path
    operator: str | None = None
    password: str | None = None

    @classmethod
    def load(
        cls,
        *,
        database_url: str | None = None,
        key_dir: str | Path | None = None,
        operator: str | None = None,
        password: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> "Settings":
        env = os.environ if environ is None else environ
        home = Path(env.get("CARDS_HOME") or "var")
        url = database_url or env.get("CARDS_DATABASE_URL") or f"sqlite:///{home / 'cards.db'}"
        keys = Path(key_dir or env.get("CARDS_KEY_DIR") or home / "keys")
        return cls(
            database_url=url,
            key_dir=keys,
            operator=operator or env.get("CARDS_OPERATOR") or None,
            password=password if password is not None else env.get("CARDS_PASSWORD"),
        )
