"""``twistd recharge``: run one recharge server under twistd.

    twistd -n recharge --name A --port 8441 --peer https://127.0.0.1:8442

Settings come from ``cardmgmt.config.Settings.load`` (the ``CARDS_*``
environment variables), with ``--database-url``, ``--key-dir`` and
``--marketing-url`` taking precedence.  This directory has no
``__init__.py`` on purpose: it extends Twisted's own ``twisted.plugins``
package, which is how twistd finds plugins.  Everything heavy is imported only
when the service is made, so listing plugins stays cheap.
"""

# test-case-name: tests.recharge_server.test_service

from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    optParameters = [
        ["name", None, None, "This server's name, e.g. A (required)."],
        ["port", None, None, "TCP port to listen on, e.g. 8441 (required).", int],
        ["host", None, "127.0.0.1", "Address to listen on."],
        ["peer", None, None, "The other server's base URL, e.g. https://127.0.0.1:8442."],
        ["database-url", None, None, "Card database URL (default: CARDS_DATABASE_URL)."],
        ["key-dir", None, None, "Key directory (default: CARDS_KEY_DIR)."],
        ["marketing-url", None, None, "Marketing database URL (default: CARDS_MARKETING_URL)."],
        ["lease-ttl", None, 3.0, "Seconds a jobs lease lasts without renewal.", float],
        ["renew-every", None, 1.0, "Seconds between lease renewals and heartbeats.", float],
        ["threads", None, 16, "Database worker threads.", int],
    ]

    def postOptions(self) -> None:
        if not self["name"]:
            raise usage.UsageError("--name is required")
        if self["port"] is None:
            raise usage.UsageError("--port is required")


@implementer(IServiceMaker, IPlugin)
class RechargeServiceMaker:
    tapname = "recharge"
    description = "A recharge server (HTTP API, jobs lease, heartbeat) for the card hotline."
    options = Options

    def makeService(self, options: Options) -> Any:
        from twisted.internet import reactor

        from cardmgmt.config import Settings
        from recharge_server.service import ServerOptions, makeService

        settings = Settings.load(
            database_url=options["database-url"], key_dir=options["key-dir"], marketing_url=options["marketing-url"]
        )
        tunables = ServerOptions(lease_ttl=options["lease-ttl"], renew_every=options["renew-every"], threads=options["threads"])
        return makeService(
            settings, options["name"], options["host"], options["port"], options["peer"], reactor, options=tunables
        )


serviceMaker = RechargeServiceMaker()
