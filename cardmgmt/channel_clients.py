"""Channel clients: who may send recharge requests, each with its own revocable key.

A channel client is one front end that talks to the recharge servers: the
hotline's AGI hosts, a POS terminal, a partner's system.  An administrator
registers it by name and channel (``add``), installs the key that ``add``
returns on the client's host, and can revoke it (``revoke``, with a reason)
when the device is lost or the partner leaves; every change is in the
operation log.

A client's signing key is derived from the master key and the client's
name (``KeyRing.channel_client_key``): the table holds no secret, the
servers derive the key of whichever client a request names, and a stolen
database copy signs nothing.  The name travels in the request's
``X-Client`` header and is covered by the signature, so one client cannot
pass for another.

The servers read the table through a ``ClientRegistry``: a snapshot of every
client, refreshed every ``REFRESH_SECONDS`` by each server, which refuses
requests (as unavailable, so the caller fails over) once its snapshot is
older than ``MAX_AGE_SECONDS``.  A revocation therefore takes effect on both
servers within ``MAX_AGE_SECONDS`` (5 s), whatever happens to either of them.
The channel and the client's name are recorded on every quote and recharge.

A POS terminal is a client of channel ``pos`` bound to one hall (``add``
with ``hall``): it sells that hall's cards, and no other's, through the
sales-point API (``cardmgmt.terminals``).
"""

# test-case-name: tests.cardmgmt.test_channel_clients

import datetime as dt
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cardmgmt import halls, tls
from cardmgmt.context import Context, Permission
from cardmgmt.errors import AlreadyExists, CardError, InvalidInput, KeyFileError, NotFound
from cardmgmt.models import ChannelClient, Hall, utcnow
from cardmgmt.secret_files import write_private

CHANNELS = ("hotline", "pos", "web", "partner")
HOTLINE = "hotline"  # the client `cli.py init` registers, whose key goes to keys/api.key
POS = "pos"  # a sales-point terminal at a hall
# Lower case so that a name means one client whatever the case it is typed in; fits an HTTP header.
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_REASON = 200

REFRESH_SECONDS = 2.0  # each server reloads the table this often
MAX_AGE_SECONDS = 5.0  # ... and answers nobody with a snapshot older than this: the revocation bound


class ClientRevoked(CardError):
    """A request from a revoked channel client."""

    code = "client_revoked"
    http_status = 403
    exit_code = 1


class UnknownClient(CardError):
    """A request naming a channel client that is not registered."""

    code = "unknown_client"
    http_status = 401
    exit_code = 1


class RegistryStale(CardError):
    """The server could not reload the client table lately, so it cannot tell who is revoked."""

    code = "client_registry_stale"
    # Not this client's fault: this server cannot tell now, the other one may.
    http_status = 503
    exit_code = 1


@dataclass(frozen=True)
class ClientEntry:
    """What a server needs to know about one client: its channel, whether it is revoked, a terminal's hall."""

    name: str
    channel: str
    revoked: bool
    hall: str | None = None  # the hall code a POS terminal sells for


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(
            f"client name {str(name)[:70]!r} must be 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise InvalidInput(f"channel {str(channel)[:20]!r} is not one of {', '.join(CHANNELS)}")
    return channel


def _get(session: Session, name: str) -> ChannelClient:
    row = session.execute(select(ChannelClient).where(ChannelClient.name == name)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"channel client {name!r} is not registered")
    return row


def add(
    ctx: Context, name: str, channel: str, now: dt.datetime | None = None, *, log: bool = True,
    hall: str | None = None,
) -> bytes:
    """Register client ``name`` on ``channel``; returns its signing key (to install on the client's host).

    ``ctx`` is the unit of work of an operator allowed to manage clients;
    ``log=False`` when the caller's own log entry names the client (``init``).
    ``hall`` binds a ``pos`` client to the one hall whose cards it sells
    (a ``pos`` client without one can recharge but not sell).
    """
    ctx.require(Permission.MANAGE_CLIENTS)
    check_name(name)
    check_channel(channel)
    session: Session = ctx.session
    hall_id = None
    if hall is not None:
        if channel != POS:
            raise InvalidInput(f"only a {POS} client (a sales-point terminal) is bound to a hall, not a {channel} client")
        hall_id = halls.selling_hall(session, hall).id
    if session.execute(select(ChannelClient.id).where(ChannelClient.name == name)).first():
        raise AlreadyExists(f"channel client {name!r} is already registered (a revoked name is not reused)")
    session.add(ChannelClient(name=name, channel=channel, created_by=ctx.actor.name, created_at=now or utcnow(),
                              hall_id=hall_id))
    try:
        session.flush()
    except IntegrityError:
        raise AlreadyExists(f"channel client {name!r} is already registered") from None
    if log:
        ctx.log("client.add", f"channel client {name}", after={"channel": channel, **({"hall": hall} if hall else {})})
    return bytes(ctx.keys.channel_client_key(name))


def key_of(ctx: Context, name: str) -> bytes:
    """The signing key of registered, unrevoked client ``name`` again (a host reinstalled); logged."""
    ctx.require(Permission.MANAGE_CLIENTS)
    row = _get(ctx.session, check_name(name))
    if row.revoked_at is not None:
        raise ClientRevoked(f"channel client {name!r} is revoked; register a new name")
    ctx.log("client.key", f"channel client {name}", after={"exported": True})
    return bytes(ctx.keys.channel_client_key(name))


def revoke(ctx: Context, name: str, reason: str, now: dt.datetime | None = None) -> None:
    """Revoke client ``name``: both servers refuse its requests within ``MAX_AGE_SECONDS``."""
    ctx.require(Permission.MANAGE_CLIENTS)
    check_name(name)
    reason = " ".join((reason or "").split())
    if not reason or len(reason) > MAX_REASON:
        raise InvalidInput(f"give a reason for the revocation (1-{MAX_REASON} characters)")
    session: Session = ctx.session
    _get(session, name)
    done = session.execute(
        update(ChannelClient)
        .where(ChannelClient.name == name, ChannelClient.revoked_at.is_(None))
        .values(revoked_at=now or utcnow(), revoked_by=ctx.actor.name, reason=reason),
        execution_options={"synchronize_session": False},
    ).rowcount
    if not done:
        raise InvalidInput(f"channel client {name!r} is already revoked")
    ctx.log("client.revoke", f"channel client {name}", before={"revoked": False}, after={"revoked": True, "reason": reason})


def listing(session: Session) -> list[dict[str, Any]]:
    """Every registered client, revoked ones included, by name; ``hall`` is a POS terminal's hall."""
    rows = session.execute(
        select(ChannelClient, Hall.code).outerjoin(Hall, Hall.id == ChannelClient.hall_id).order_by(ChannelClient.name)
    ).all()
    return [
        {
            "name": r.name, "channel": r.channel, "hall": hall, "created_by": r.created_by,
            "created_at": r.created_at.isoformat(timespec="seconds"),
            "revoked_at": r.revoked_at.isoformat(timespec="seconds") if r.revoked_at else None,
            "revoked_by": r.revoked_by, "reason": r.reason,
        }
        for r, hall in rows
    ]


def write_key_file(path: Path, key: bytes, *, replace: bool = False) -> None:
    """Write a client key as 64 hex digits to an owner-only file (the AGI's ``api_key_file``)."""
    data = key.hex().encode("ascii") + b"\n"
    if not replace:
        try:
            write_private(path, data)
        except FileExistsError:
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key file") from None
        return
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    write_private(tmp, data)
    os.replace(tmp, path)


# --- what the servers read -------------------------------------------------------------------


def snapshot(session: Session) -> dict[str, ClientEntry]:
    """Every registered client, as the servers check requests against them."""
    rows = session.execute(
        select(ChannelClient.name, ChannelClient.channel, ChannelClient.revoked_at, Hall.code)
        .outerjoin(Hall, Hall.id == ChannelClient.hall_id)
    ).all()
    return {name: ClientEntry(name, channel, revoked_at is not None, hall) for name, channel, revoked_at, hall in rows}


class ClientRegistry:
    """A server's snapshot of the client table, and how old it may grow before it is no longer trusted.

    ``load`` is blocking (run it in a thread pool); ``lookup`` is what a
    request asks, on the reactor, and never touches the database.  ``clock``
    is monotonic seconds, passed in so tests move it by hand.
    """

    def __init__(
        self, load: Callable[[], Mapping[str, ClientEntry]], clock: Callable[[], float],
        max_age: float = MAX_AGE_SECONDS,
    ) -> None:
        self._load = load
        self.clock = clock
        self.max_age = max_age
        self._clients: Mapping[str, ClientEntry] = {}
        self._loaded_at: float | None = None

    def refresh(self) -> None:
        """Reload the table (blocking); on failure the old snapshot stays until it is too old."""
        started = self.clock()
        clients = dict(self._load())
        self._clients, self._loaded_at = clients, started

    def lookup(self, name: str) -> ClientEntry:
        """The client's entry; ``UnknownClient``, ``ClientRevoked`` or ``RegistryStale`` otherwise."""
        if self._loaded_at is None or self.clock() - self._loaded_at > self.max_age:
            raise RegistryStale("the channel client table could not be read lately")
        entry = self._clients.get(name)
        if entry is None:
            raise UnknownClient(f"channel client {name!r} is not registered")
        if entry.revoked:
            raise ClientRevoked(f"channel client {name!r} is revoked")
        return entry

    @property
    def age(self) -> float | None:
        return None if self._loaded_at is None else self.clock() - self._loaded_at


def reissue_server_certificate(ctx: Context, key_dir: Path, hosts: Sequence[str]) -> tuple[list[str], str]:
    """Issue the servers' certificate (the CA first, if this installation has none), logged; its names and fingerprint."""
    ctx.require(Permission.MANAGE_CLIENTS)
    names = tls.check_host_names(hosts)
    if not tls.ca_exists(key_dir):
        tls.create_authority(key_dir, ctx.keys.fingerprint)
    cert = tls.issue_server_certificate(key_dir, hosts)
    ctx.log("keys.tls", "server certificate", after={"names": names, "certificate": tls.fingerprint(cert)})
    return names, tls.fingerprint(cert)
