"""Sign-ins to the web console: sessions that expire, end on sign-out, and vouch for an operator.

An operator signs in once with the same name, password, scrypt hash and
lockout as the command line (``CardSystem.unit_for``); the console then
holds a random token in a cookie and each request opens its unit of work
with ``CardSystem.unit_by(authenticate)`` instead of a password.  The
database keeps only the token's SHA-256 (``ConsoleSession``), so sessions
are shared by every console process on the installation and survive a
restart, and reading the table gives nobody a session.

A session is refused once it was ended (sign-out, from any tab: the row is
marked, so a copy of the cookie is worthless afterwards), after ``idle``
without a request, after ``lifetime`` whatever happens, or when its operator
was disabled meanwhile.  The role is read from the operator's row on every
request, so a changed role takes effect at once.  Every refusal is the same
one line.

The form token against cross-site request forgery is derived from the
session's token (HMAC), so it is per session, needs no storage and is
worthless to anyone who does not already hold the session.

An operator who must choose a new password (a temporary one from an
administrator) chooses it at sign-in: the sign-in carries the new password
and ``operators.change_password`` runs in the same unit, logged as the
command line logs it.
"""

# test-case-name: tests.cardmgmt.test_console_sessions

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cardmgmt import operators
from cardmgmt.context import Actor, Permission, Role
from cardmgmt.days import as_utc
from cardmgmt.errors import AuthenticationFailed, InvalidInput
from cardmgmt.models import ConsoleSession, Operator, utcnow
from cardmgmt.system import CardSystem, Context

TOKEN_BYTES = 32
# A token as the cookie carries it: token_urlsafe(32) is 43 characters; anything longer is not ours.
TOKEN_MAX = 64

KEEP_ENDED = dt.timedelta(days=7)

REFUSED = "the console session has ended or expired, or the cookie is not valid; sign in again"


@dataclass(frozen=True)
class Policy:
    """How long a console session lasts: ``idle`` without a request, ``lifetime`` at most."""

    idle: dt.timedelta = dt.timedelta(minutes=15)
    lifetime: dt.timedelta = dt.timedelta(hours=8)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def csrf_token(token: str) -> str:
    """The form token of the session whose token is ``token``."""
    return hmac.new(token.encode("utf-8", "replace"), b"console form token", hashlib.sha256).hexdigest()


def csrf_ok(token: str, presented: str | None) -> bool:
    """Whether ``presented`` is the form token of this session (compared in constant time)."""
    return bool(presented) and hmac.compare_digest(csrf_token(token), presented or "")


def sign_in(
    system: CardSystem, name: str, password: str, *, new_password: str | None = None,
    policy: Policy = Policy(), now: dt.datetime | None = None,
) -> tuple[Actor, str]:
    """Check the name and password as the command line does and open a session; the actor and the session's token.

    Refused with the command line's one line for an unknown name, a wrong
    password or a lockout (and counted towards the lockout).  An operator who
    must choose a new password is refused unless ``new_password`` is given,
    which is then set (``operators.change_password``, logged).
    """
    if not name.strip():
        raise AuthenticationFailed("enter an operator name")
    now = now or utcnow()
    with system.unit_for(name.strip(), password, Permission.OWN_PASSWORD) as ctx:
        op = operators.get(ctx.session, ctx.actor.name)
        if op.must_change_password:
            if not new_password:
                raise InvalidInput(f"operator {op.name!r} must choose a new password before signing in")
            operators.change_password(ctx, new_password)
        token = start(ctx, policy, now)
    return ctx.actor, token


def start(ctx: Context, policy: Policy, now: dt.datetime) -> str:
    """Open a session for the unit's operator (who has just signed in with a password); its token, logged."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    expires = now + policy.lifetime
    # Sessions long over are of no use to anyone (the log keeps each sign-in and sign-out): the table stays small.
    ctx.session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now - KEEP_ENDED),
                        execution_options={"synchronize_session": False})
    ctx.session.add(ConsoleSession(token_hash=token_hash(token), operator=ctx.actor.name, created_at=now,
                                   last_seen=now, expires_at=expires))
    ctx.session.flush()
    ctx.log("console.sign_in", f"operator {ctx.actor.name}",
            after={"expires_at": expires.isoformat(timespec="seconds")})
    return token


def authenticate(session: Session, token: str | None, policy: Policy, now: dt.datetime | None = None) -> Actor:
    """The operator a session token vouches for now, or ``AuthenticationFailed``; the session's idle timer restarts.

    For ``CardSystem.unit_by``.  The idle timer is moved by a conditional
    ``UPDATE`` that also requires the session not ended, so a request racing
    a sign-out either comes before it or is refused.
    """
    now = now or utcnow()
    if not token or len(token) > TOKEN_MAX:
        raise AuthenticationFailed(REFUSED)
    digest = token_hash(token)
    row = session.execute(select(ConsoleSession).where(ConsoleSession.token_hash == digest)).scalar_one_or_none()
    if row is None or row.ended_at is not None:
        raise AuthenticationFailed(REFUSED)
    if now >= as_utc(row.expires_at) or now - as_utc(row.last_seen) >= policy.idle:
        raise AuthenticationFailed(REFUSED)
    op = session.execute(select(Operator).where(Operator.name == row.operator)).scalar_one_or_none()
    if op is None or op.pending or not op.active or op.must_change_password:
        raise AuthenticationFailed(REFUSED)
    moved = session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.id == row.id, ConsoleSession.ended_at.is_(None))
        .values(last_seen=now),
        execution_options={"synchronize_session": False},
    ).rowcount
    if moved != 1:
        raise AuthenticationFailed(REFUSED)
    return Actor(op.name, Role(op.role))


def end(ctx: Context, token: str, now: dt.datetime | None = None) -> None:
    """Sign out: end the session of ``token`` (the unit's own), logged; every copy of its cookie is refused from now."""
    ended = ctx.session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.token_hash == token_hash(token), ConsoleSession.operator == ctx.actor.name,
               ConsoleSession.ended_at.is_(None))
        .values(ended_at=now or utcnow()),
        execution_options={"synchronize_session": False},
    ).rowcount
    if ended != 1:
        raise AuthenticationFailed(REFUSED)
    ctx.log("console.sign_out", f"operator {ctx.actor.name}")
