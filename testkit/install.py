"""A test installation: its operators and their passwords, its settings, and a whole one on PostgreSQL with the server pair.

``PASSWORDS`` are the test operators' passwords (alice the first
administrator, bob, carol, dave), and ``settings_for`` the ``Settings`` an
operator works with on a given database and key directory.

``Installation`` is a real installation on PostgreSQL for the integration
tests of the hot-standby pair, the end-to-end hotline and the recharge
benchmark: it creates a card database and a stand-in marketing database of
its own on the tests' PostgreSQL server (or takes the card database it is
given, such as the failover topology's ``testkit.dbcluster``), migrates the
one and fills the other with the sample accounts, and starts ``cli.py serve A`` and
``cli.py serve B`` (``testkit.pair``) against them.  Its key directory is
``workdir/keys``, made by ``CardSystem.initialise`` on first use.
"""

# test-case-name: tests.integration.test_server_pair, tests.e2e.test_hotline

from __future__ import annotations

import dataclasses
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cardmgmt.config import Settings
from cardmgmt.keys import load_api_key
from ivr.client import RechargeClient, tls_context
from marketing_iface.standin import create_standin
from testkit import databases
from testkit.pair import ROOT, Server, start_pair

PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-1", "carol": "carol-secret-1", "dave": "dave-secret-1"}


def settings_for(database_url: str, key_dir: Path, operator: str | None) -> Settings:
    """The settings ``operator`` (one of ``PASSWORDS``, or nobody) works with on this database and key directory."""
    return Settings(database_url=database_url, key_dir=key_dir, operator=operator, password=PASSWORDS.get(operator or ""))


@dataclass
class Installation:
    """A card database and a marketing database on PostgreSQL, and the server pair once started; see the module."""

    workdir: Path
    card_db: str = ""
    marketing_db: str = ""
    servers: list[Server] = field(default_factory=list)
    given_card_url: str = ""  # a card database made elsewhere (kept at teardown), instead of a new one

    @property
    def card_url(self) -> str:
        return self.given_card_url or databases.pg_url(self.card_db)

    @property
    def marketing_url(self) -> str:
        return databases.pg_url(self.marketing_db)

    def setup(self) -> None:
        if not self.given_card_url:
            self.card_db = databases.create_database("cards_it")
        self.marketing_db = databases.create_database("marketing_it")
        databases.migrate(self.card_url)
        create_standin(self.marketing_url)

    def env(self) -> dict[str, str]:
        """The servers' environment: this installation's ``CARDS_*`` settings and none inherited."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARDS_")}
        env.update(CARDS_DATABASE_URL=self.card_url, CARDS_MARKETING_URL=self.marketing_url,
                   CARDS_KEY_DIR=str(self.workdir / "keys"), PYTHONPATH=str(ROOT))
        return env

    def start_pair(self) -> list[Server]:
        self.servers = start_pair(self.env(), self.workdir)
        return self.servers

    def client(self, timeout: float = 0.5, total_timeout: float = 1.0) -> RechargeClient:
        """The real failover client, primary first, as the hotline: its key, over TLS trusting the installation's CA."""
        return RechargeClient([("127.0.0.1", s.port) for s in self.servers], load_api_key(self.workdir / "keys"),
                              timeout=timeout, total_timeout=total_timeout, tls=self.tls())

    def tls(self) -> ssl.SSLContext:
        """A client context trusting this installation's CA (the servers speak TLS only)."""
        return tls_context(str(self.workdir / "keys" / "tls-ca.pem"))

    def settings(self, operator: str = "alice") -> Settings:
        return dataclasses.replace(settings_for(self.card_url, self.workdir / "keys", operator),
                                   marketing_url=self.marketing_url)

    def teardown(self) -> None:
        for s in self.servers:
            s.stop()
        for name in (self.card_db, self.marketing_db):
            if name:
                databases.drop_database(name)
