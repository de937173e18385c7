"""The one typed configuration object, and the one place that reads the environment.

Every front end builds a ``Settings`` with ``Settings.load(...)``: explicit
options win over environment variables, which win over the defaults.  No other
module reads ``os.environ``.

Environment variables:

``CARDS_DATABASE_URL``  any SQLAlchemy URL; default ``sqlite:///<home>/cards.db``
``CARDS_HOME``          data directory; default ``./var``
``CARDS_KEY_DIR``       key directory; default ``<home>/keys``
``CARDS_AUDIT_ANCHOR``  this host's append-only file anchoring the operation log's head;
                        default ``operation-log.anchor`` beside the key directory
``CARDS_OPERATOR``      operator name for commands that need one
``CARDS_PASSWORD``      that operator's password (for scripts; otherwise prompted)
``CARDS_MARKETING_URL`` SQLAlchemy URL of the marketing system's database;
                        default ``sqlite:///<home>/marketing.db`` (the stand-in)
``CARDS_MARKETING_MAPPING`` the TOML file naming the marketing database's tables and
                        columns (``marketing_iface/mapping.py``); default: the stand-in's
``CARDS_HOLD_SECONDS``  how long a quote holds a card for its call (default 120)
``CARDS_MAX_PIN_FAILURES`` wrong PINs before a lockout (default 5)
``CARDS_LOCKOUT_HOURS`` the window those failures are counted in (default 24)
``CARDS_PIN_GUARD_FAILURES`` wrong PINs the whole service takes per guard window (default 100)
``CARDS_PIN_GUARD_MINUTES``  the guard window (default 10)
"""

# test-case-name: tests.cardmgmt.test_system

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cardmgmt.errors import InvalidInput


@dataclass(frozen=True)
class Settings:
    """Where the data and keys live, and who is operating."""

    database_url: str
    key_dir: Path
    operator: str | None = None
    password: str | None = None
    marketing_url: str = "sqlite:///var/marketing.db"
    hold_seconds: int = 120
    max_pin_failures: int = 5
    lockout_hours: int = 24
    pin_guard_failures: int = 100
    pin_guard_minutes: int = 10
    audit_anchor: Path | None = None
    marketing_mapping: Path | None = None  # None: the stand-in's layout

    @property
    def audit_anchor_file(self) -> Path:
        """Where this host anchors the operation log's head (see ``cardmgmt.audit``)."""
        return self.audit_anchor or self.key_dir.parent / "operation-log.anchor"

    @property
    def api_key_file(self) -> Path:
        """The hotline client's signing key, written by ``init`` for installing on the AGI hosts."""
        return self.key_dir / "api.key"

    @classmethod
    def load(
        cls,
        *,
        database_url: str | None = None,
        key_dir: str | Path | None = None,
        operator: str | None = None,
        password: str | None = None,
        marketing_url: str | None = None,
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
            marketing_url=marketing_url or env.get("CARDS_MARKETING_URL") or f"sqlite:///{home / 'marketing.db'}",
            hold_seconds=_positive_int(env, "CARDS_HOLD_SECONDS", 120),
            max_pin_failures=_positive_int(env, "CARDS_MAX_PIN_FAILURES", 5),
            lockout_hours=_positive_int(env, "CARDS_LOCKOUT_HOURS", 24),
            pin_guard_failures=_positive_int(env, "CARDS_PIN_GUARD_FAILURES", 100),
            pin_guard_minutes=_positive_int(env, "CARDS_PIN_GUARD_MINUTES", 10),
            audit_anchor=Path(env["CARDS_AUDIT_ANCHOR"]) if env.get("CARDS_AUDIT_ANCHOR") else None,
            marketing_mapping=Path(env["CARDS_MARKETING_MAPPING"]) if env.get("CARDS_MARKETING_MAPPING") else None,
        )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"{name}={text!r} must be a positive whole number")
    return int(text)
