"""The card system as a front end sees it: settings in, authenticated units of work out.

``CardSystem.unit(permission)`` is the one doorway every command goes
through: it checks the schema revision, loads the key directory and checks
it belongs to this database, opens a transaction, authenticates the operator
and checks the role's permission, and hands the services a ``Context``.  A
second front end (a web page, a POS terminal) reuses it as it is:
``unit_for`` takes the name and password from a sign-in form instead of the
settings, and ``unit_by`` lets a web console's session
(``console_sessions``) vouch for the operator on later requests.  A sign-in
refused for an unknown name, a wrong password or a lockout is counted in a
transaction of its own (the unit's is rolled back), and the lockout it may
cause is written to the operation log.
"""

# test-case-name: tests.cardmgmt.test_system

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from cardmgmt import audit, channel_clients, operators
from cardmgmt.config import Settings
from cardmgmt.context import Actor, Context, Permission, Role, require
from cardmgmt.db import Database
from cardmgmt.errors import InvalidInput, KeyFileError, PermissionDenied
from cardmgmt.keys import KeyRing, create_keyring, load_keyring
from cardmgmt.models import Setting

KEY_FINGERPRINT = "master_key_fingerprint"


def check_keyring(session: Session, keys: KeyRing) -> None:
    """Refuse a key directory that is not the one this database was initialised with."""
    row = session.get(Setting, KEY_FINGERPRINT)
    if row is None:
        raise KeyFileError("this database has no key recorded; run `cli.py init` first")
    if row.value != keys.fingerprint:
        raise KeyFileError(
            f"the key directory (key {keys.fingerprint}) does not belong to this database (key {row.value})"
        )


class CardSystem:
    """One installation: a card database and its key directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self._keys: KeyRing | None = None

    def keys(self) -> KeyRing:
        if self._keys is None:
            self._keys = load_keyring(self.settings.key_dir)
        return self._keys

    def initialise(
        self, admin_name: str, admin_password: str, second_admin: tuple[str, str] | None = None
    ) -> Actor:
        """Set up a new installation: keys (created if absent), key binding, the first administrators, the hotline client.

        The hotline's channel-client key is written to ``api.key`` in the key
        directory, for the AGI hosts.

        ``second_admin`` (name, password) is the second administrator, whom
        every operator request needs as approver; without one the installation
        can run, but no operator can be added.  Refused once any operator
        exists, so it cannot be used to add an administrator behind the
        others' backs.  The schema must already be current (``db upgrade``).
        """
        self.db.check_schema()
        if second_admin is not None and second_admin[0].strip() == admin_name.strip():
            raise InvalidInput("the two first administrators must be two different people")
        with self.db.transaction() as session:
            if operators.count(session):
                raise PermissionDenied("this installation already has operators; use `operator request add`")
        anchors = self.settings.audit_anchor_file
        if anchors.exists() and anchors.stat().st_size:
            # Starting over beside another log's anchors would make verify fail
            # forever; moving them away is a decision for a person to make.
            raise PermissionDenied(f"{anchors} anchors another installation's operation log; move it away first")
        # Only now, so a refused initialisation leaves no key directory behind.
        if (self.settings.key_dir / "master.key").exists():
            keys = self.keys()
        else:
            keys = self._keys = create_keyring(self.settings.key_dir)
        with self.db.transaction() as session:
            if operators.count(session):
                raise PermissionDenied("this installation already has operators; use `operator request add`")
            bound = session.get(Setting, KEY_FINGERPRINT)
            if bound is None:
                session.add(Setting(name=KEY_FINGERPRINT, value=keys.fingerprint))
                session.flush()
            check_keyring(session, keys)
            op = operators.create(session, admin_name, Role.ADMIN, admin_password)
            actor = Actor(op.name, Role.ADMIN)
            ctx = Context(session, keys, actor)
            # The hotline is every installation's first channel client; its key goes where the AGI hosts' installer looks.
            hotline_key = channel_clients.add(ctx, channel_clients.HOTLINE, "hotline", log=False)
            ctx.log("install.init", f"installation key {keys.fingerprint}",
                    after={"admin": op.name, "channel_client": channel_clients.HOTLINE})
            if second_admin is not None:
                second = operators.create(session, second_admin[0], Role.ADMIN, second_admin[1])
                ctx.log("install.second_admin", f"operator {second.name}", after={"role": Role.ADMIN.value})
        channel_clients.write_key_file(self.settings.api_key_file, hotline_key, replace=True)
        self._anchor(ctx)
        return actor

    @contextmanager
    def unit(self, permission: Permission) -> Iterator[Context]:
        """An authenticated, authorised unit of work; commits when the block ends without error.

        ``Permission.OWN_PASSWORD`` is the one unit an operator who must
        choose a new password may open.
        """
        with self.unit_for(self.settings.operator, self.settings.password, permission) as ctx:
            yield ctx

    @contextmanager
    def unit_for(self, name: str | None, password: str | None, permission: Permission) -> Iterator[Context]:
        """``unit`` for an operator named here rather than in the settings (a web console's sign-in form)."""
        self.db.check_schema()
        keys = self.keys()
        actor = None
        with self.db.transaction() as session:
            check_keyring(session, keys)
            actor = operators.sign_in(session, name, password,
                                      password_change=permission is Permission.OWN_PASSWORD)
            if actor is not None:
                require(actor, permission)
                ctx = Context(session, keys, actor)
                yield ctx
        if actor is None:
            self._count_failure(name or "", keys)
            raise operators.refused(name or "")
        self._anchor(ctx)

    @contextmanager
    def unit_by(self, authenticate: Callable[[Session], Actor], permission: Permission) -> Iterator[Context]:
        """A unit whose operator is vouched for by ``authenticate`` instead of a password.

        ``authenticate`` runs in the unit's own transaction and returns the
        actor or raises (``AuthenticationFailed``); the web console passes its
        session check (``console_sessions.authenticate``).  Permissions, the
        operation log and its anchor work exactly as in ``unit``.
        """
        self.db.check_schema()
        keys = self.keys()
        with self.db.transaction() as session:
            check_keyring(session, keys)
            actor = authenticate(session)
            require(actor, permission)
            ctx = Context(session, keys, actor)
            yield ctx
        self._anchor(ctx)

    def _count_failure(self, name: str, keys: KeyRing) -> None:
        """Count a refused sign-in against the operator's row; log and anchor the lockout it causes."""
        with self.db.transaction() as session:
            locked = operators.record_failure(session, name)
            if locked is None:
                return
            role, until = locked
            ctx = Context(session, keys, Actor(name, role))
            ctx.log("operator.lock", f"operator {name}",
                    after={"failures": operators.MAX_FAILURES, "locked_until": until.isoformat(timespec="seconds")})
        self._anchor(ctx)

    def _anchor(self, ctx: Context) -> None:
        """After a commit that logged something, anchor the log's new head outside the database."""
        if ctx.head is not None:
            audit.anchor(self.settings.audit_anchor_file, ctx.keys.system_private, ctx.keys.fingerprint, *ctx.head)

    def close(self) -> None:
        self.db.dispose()
