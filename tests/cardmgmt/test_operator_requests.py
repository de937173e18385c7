"""Dual control over operators, password changes and resets, and the sign-in lockout (real databases).

The racing tests run threads against the same database: on PostgreSQL the
row locks decide and exactly one approval wins, and parallel wrong passwords
never count past the limit; SQLite serialises its writers, so there only the
"at most" half is asserted.
"""

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import select, update

from cardmgmt import audit, operator_requests, operators
from cardmgmt.context import Permission, Role
from cardmgmt.errors import (
    AlreadyExists,
    AuthenticationFailed,
    CardError,
    ConflictError,
    IllegalTransition,
    InvalidInput,
    PermissionDenied,
)
from cardmgmt.models import Operator
from cardmgmt.operators import MAX_FAILURES
from cardmgmt.system import CardSystem, Context

PW = "first-password-1"


def as_(system: CardSystem, name: str, password: str) -> CardSystem:
    """The installation as ``name`` signs in with ``password``."""
    return CardSystem(dataclasses.replace(system.settings, operator=name, password=password))


def act(system: CardSystem, name: str, password: str, f: Callable[[Context], object],
        permission: Permission = Permission.MANAGE_OPERATORS) -> object:
    s = as_(system, name, password)
    try:
        with s.unit(permission) as ctx:
            return f(ctx)
    finally:
        s.close()


def seed(system: CardSystem, name: str, role: Role, created_by: str | None = None) -> None:
    """An operator as a finished approval would leave them, without going through one."""
    with system.db.transaction() as s:
        operators.create(s, name, role, f"{name}-secret-1").created_by = created_by


def actions(system: CardSystem) -> list[tuple[str, str, str]]:
    with system.db.transaction() as s:
        return [(e.operator, e.action, e.object) for e in reversed(audit.entries(s, 1000, None))]


def row(system: CardSystem, name: str) -> Operator:
    with system.db.transaction() as s:
        return operators.get(s, name)


@pytest.fixture
def admins(system: CardSystem) -> CardSystem:
    """alice (from init) and dave, the installation's two first administrators; bob is finance."""
    seed(system, "dave", Role.ADMIN)
    seed(system, "bob", Role.FINANCE)
    return system


def test_an_administrator_cannot_create_a_finance_operator_and_approve_with_it(admins):
    system = admins
    with system.unit(Permission.MANAGE_OPERATORS) as ctx:
        rid = operator_requests.file_add(ctx, "mallory", Role.FINANCE, "new finance officer").id
    assert row(system, "mallory").pending
    with pytest.raises(AuthenticationFailed, match="unknown name, wrong password or locked"):
        act(system, "mallory", "", lambda ctx: None, Permission.VIEW)

    # Her own approval, and that of anyone she asked for (directly or down the chain), are refused.
    seed(system, "erin", Role.ADMIN, created_by="alice")
    seed(system, "frank", Role.ADMIN, created_by="erin")
    with system.unit(Permission.MANAGE_OPERATORS) as ctx, pytest.raises(PermissionDenied, match="filed operator request"):
        operator_requests.approve(ctx, rid, "fine", PW)
    for creature in ("erin", "frank"):
        with pytest.raises(PermissionDenied, match="at 'alice''s request"):
            act(system, creature, f"{creature}-secret-1", lambda ctx: operator_requests.approve(ctx, rid, "fine", PW))
    # Finance cannot decide operator requests at all.
    with pytest.raises(PermissionDenied, match="may not manage operators"):
        act(system, "bob", "bob-secret-1", lambda ctx: operator_requests.approve(ctx, rid, "fine", PW))
    assert row(system, "mallory").pending

    # dave, whom alice did not ask for, approves and types mallory's first password.
    req = act(system, "dave", "dave-secret-1", lambda ctx: operator_requests.approve(ctx, rid, "met her", PW))
    assert (req.status, req.decided_by) == ("approved", "dave")
    m = row(system, "mallory")
    assert (m.pending, m.active, m.must_change_password, m.created_by) == (False, True, True, "alice")
    with pytest.raises(AuthenticationFailed, match="must choose a new password first"):
        act(system, "mallory", PW, lambda ctx: None, Permission.VIEW)
    act(system, "mallory", PW, lambda ctx: operators.change_password(ctx, "mallory-own-pw-1"), Permission.OWN_PASSWORD)
    assert act(system, "mallory", "mallory-own-pw-1", lambda ctx: ctx.actor.role, Permission.VIEW) == Role.FINANCE
    assert [a for a in actions(system) if "mallory" in a[2] or "request" in a[2]] == [
        ("alice", "operator.request.add", f"operator request {rid}"),
        ("dave", "operator.add", "operator mallory"),
        ("mallory", "operator.password", "operator mallory"),
    ]
    # A decided request cannot be decided again.
    with pytest.raises(IllegalTransition, match="approved, not pending"):
        act(system, "dave", "dave-secret-1", lambda ctx: operator_requests.reject(ctx, rid, "no"))


def test_filing_checks_and_a_rejection_frees_the_name(admins):
    system = admins
    with system.unit(Permission.MANAGE_OPERATORS) as ctx:
        with pytest.raises(AlreadyExists):
            operator_requests.file_add(ctx, "bob", Role.ADMIN, "x")
        with pytest.raises(InvalidInput, match="needs a reason"):
            operator_requests.file_add(ctx, "erin", Role.ADMIN, " ")
        with pytest.raises(InvalidInput, match="operator name"):
            operator_requests.file_add(ctx, "bad name!", Role.ADMIN, "x")
        with pytest.raises(InvalidInput, match="their own account"):
            operator_requests.file_role(ctx, "alice", Role.FINANCE, "x")
        with pytest.raises(InvalidInput, match="finance already"):
            operator_requests.file_role(ctx, "bob", Role.FINANCE, "x")
        with pytest.raises(InvalidInput, match="not disabled"):
            operator_requests.file_enable(ctx, "bob", "x")
        rid = operator_requests.file_add(ctx, "erin", Role.ADMIN, "x").id
    with pytest.raises(InvalidInput, match="first password"):
        act(system, "dave", "dave-secret-1", lambda ctx: operator_requests.approve(ctx, rid, "ok", None))
    with pytest.raises(InvalidInput, match="at least 8"):
        act(system, "dave", "dave-secret-1", lambda ctx: operator_requests.approve(ctx, rid, "ok", "short"))
    with pytest.raises(InvalidInput, match="needs a comment"):
        act(system, "dave", "dave-secret-1", lambda ctx: operator_requests.reject(ctx, rid, ""))
    act(system, "dave", "dave-secret-1", lambda ctx: operator_requests.reject(ctx, rid, "not known to us"))
    with system.db.transaction() as s:
        assert s.execute(select(Operator).where(Operator.name == "erin")).first() is None
    with system.unit(Permission.MANAGE_OPERATORS) as ctx:
        operator_requests.file_add(ctx, "erin", Role.ADMIN, "second try")


def test_role_changes_and_re_enabling_need_a_second_administrator_and_are_logged(admins):
    system = admins
    with system.unit(Permission.MANAGE_OPERATORS) as ctx:
        operators.disable(ctx, "bob")
    with pytest.raises(AuthenticationFailed, match="disabled"):
        act(system, "bob", "bob-secret-1", lambda ctx: None, Permission.VIEW)
    with system.unit(Permission.MANAGE_OPERATORS) as ctx:
        enable = operator_requests.file_enable(ctx, "bob", "back from leave").id
        promote = operator_requests.file_role(ctx, "bob", Role.ADMIN, "covers for dave").id
    for rid in (enable, promote):
        with system.unit(Permission.MANAGE_OPERATORS) as ctx, pytest.raises(PermissionDenied, match="cannot approve"):
            operator_requests.approve(ctx, rid, "ok")
        act(system, "dave", "dave-secret-1", lambda ctx, rid=rid: operator_requests.approve(ctx, rid, "ok"))
    b = row(system, "bob")
    assert (b.active, b.role, b.enabled_by, b.role_granted_by) == (True, "admin", "alice", "alice")
    # bob, enabled and promoted at alice's request, can never approve for her.
    with system.unit(Permission.MANAGE_OPERATORS) as ctx:
        rid = operator_requests.file_add(ctx, "erin", Role.FINANCE, "x").id
    with pytest.raises(PermissionDenied, match="at 'alice''s request"):
        act(system, "bob", "bob-secret-1", lambda ctx: operator_requests.approve(ctx, rid, "ok", PW))
    logged = [(who, what) for who, what, obj in actions(system) if obj == "operator bob"]
    assert logged == [("alice", "operator.disable"), ("dave", "operator.enable"), ("dave", "operator.role")]


def race(system: CardSystem, rid: int, approvers: tuple[str, ...]) -> list[object]:
    """Each approver approves request ``rid`` at the same moment; who won, or the error each got."""
    barrier = threading.Barrier(len(approvers))
    outcomes: list[object] = []

    def approve(who: str) -> None:
        s = as_(system, who, f"{who}-secret-1")
        try:
            with s.unit(Permission.MANAGE_OPERATORS) as ctx:
                barrier.wait()
                outcomes.append(operator_requests.approve(ctx, rid, f"by {who}", PW).decided_by)
        except Exception as e:  # ConflictError; SQLite may report its write lock as a database error
            outcomes.append(e)
        finally:
            s.close()

    threads = [threading.Thread(target=approve, args=(who,)) for who in approvers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_two_approvers_racing_on_one_request_exactly_one_wins(admins):
    system = admins
    seed(system, "erin", Role.ADMIN)
    postgres = system.db.engine.dialect.name == "postgresql"
    for attempt in range(3):
        with system.unit(Permission.MANAGE_OPERATORS) as ctx:
            rid = operator_requests.file_add(ctx, f"new{attempt}", Role.FINANCE, "x").id
        outcomes = race(system, rid, ("dave", "erin"))
        winners = [o for o in outcomes if o in ("dave", "erin")]
        assert len(winners) <= 1, outcomes
        if postgres:
            assert len(winners) == 1 and isinstance(next(o for o in outcomes if o not in winners), ConflictError), outcomes
        with system.db.transaction() as s:
            req = operator_requests.get(s, rid)
        assert req.decided_by == (winners[0] if winners else None)
        adds = [a for a in actions(system) if a[1] == "operator.add" and a[2] == f"operator new{attempt}"]
        assert len(adds) == len(winners)


def test_parallel_wrong_passwords_count_at_most_the_limit_and_lock(admins):
    system = admins
    guesser = as_(system, "bob", "not-bobs-password")
    guesser.keys()
    barrier = threading.Barrier(20)
    errors: list[str] = []

    def guess() -> None:
        barrier.wait()
        try:
            with guesser.unit(Permission.VIEW):
                pass
        except CardError as e:
            errors.append(str(e))
        except Exception as e:  # SQLite may report its write lock as a database error
            errors.append(type(e).__name__)

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    guesser.close()
    line = "operator 'bob': unknown name, wrong password or locked after too many wrong passwords"
    assert errors.count(line) == 20 or system.db.engine.dialect.name == "sqlite", errors
    b = row(system, "bob")
    assert b.failed_logins == MAX_FAILURES and b.locked_until is not None
    assert [a for a in actions(system) if a[1] == "operator.lock"] == [("bob", "operator.lock", "operator bob")]

    # Locked: the right password gets the same line as a wrong one and an unknown name.
    refusals = []
    for name, password in (("bob", "bob-secret-1"), ("bob", "wrong-wrong"), ("nobody", "whatever-1")):
        with pytest.raises(AuthenticationFailed) as e:
            act(system, name, password, lambda ctx: None, Permission.VIEW)
        refusals.append(str(e.value).replace(repr(name), "NAME"))
    assert len(set(refusals)) == 1
    assert row(system, "bob").failed_logins == MAX_FAILURES

    with system.unit(Permission.MANAGE_OPERATORS) as ctx:
        operators.unlock(ctx, "bob")
        with pytest.raises(InvalidInput, match="not locked"):
            operators.unlock(ctx, "dave")
    assert act(system, "bob", "bob-secret-1", lambda ctx: ctx.actor.name, Permission.VIEW) == "bob"
    assert ("alice", "operator.unlock", "operator bob") in actions(system)


def test_failures_outside_the_window_start_a_new_count_and_a_lock_lapses(admins):
    system = admins
    for _ in range(MAX_FAILURES - 1):
        with pytest.raises(AuthenticationFailed):
            act(system, "bob", "wrong-wrong", lambda ctx: None, Permission.VIEW)
    assert row(system, "bob").failed_logins == MAX_FAILURES - 1
    # A right password clears the count.
    act(system, "bob", "bob-secret-1", lambda ctx: None, Permission.VIEW)
    assert row(system, "bob").failed_logins == 0
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with system.db.transaction() as s:
        s.execute(update(Operator).where(Operator.name == "bob").values(failed_logins=MAX_FAILURES - 1, failed_since=long_ago))
    with pytest.raises(AuthenticationFailed):
        act(system, "bob", "wrong-wrong", lambda ctx: None, Permission.VIEW)
    assert row(system, "bob").failed_logins == 1  # the old failures no longer count
    with system.db.transaction() as s:
        s.execute(update(Operator).where(Operator.name == "bob").values(
            failed_logins=MAX_FAILURES, failed_since=long_ago, locked_until=long_ago + dt.timedelta(minutes=15)))
    assert act(system, "bob", "bob-secret-1", lambda ctx: ctx.actor.name, Permission.VIEW) == "bob"


def test_password_change_and_reset_are_logged(admins):
    system = admins
    with system.unit(Permission.MANAGE_OPERATORS) as ctx:
        with pytest.raises(InvalidInput, match="cannot reset their own password"):
            operators.reset_password(ctx, "alice", "alice-new-pw-1")
        operators.reset_password(ctx, "bob", "bob-temporary-1")
    with pytest.raises(AuthenticationFailed):
        act(system, "bob", "bob-secret-1", lambda ctx: None, Permission.VIEW)
    with pytest.raises(AuthenticationFailed, match="must choose a new password first"):
        act(system, "bob", "bob-temporary-1", lambda ctx: None, Permission.DECIDE_REQUESTS)
    with pytest.raises(InvalidInput, match="must differ"):
        act(system, "bob", "bob-temporary-1", lambda ctx: operators.change_password(ctx, "bob-temporary-1"),
            Permission.OWN_PASSWORD)
    with pytest.raises(InvalidInput, match="at least 8"):
        act(system, "bob", "bob-temporary-1", lambda ctx: operators.change_password(ctx, "short"), Permission.OWN_PASSWORD)
    act(system, "bob", "bob-temporary-1", lambda ctx: operators.change_password(ctx, "bob-own-pw-1"), Permission.OWN_PASSWORD)
    assert act(system, "bob", "bob-own-pw-1", lambda ctx: ctx.actor.name, Permission.DECIDE_REQUESTS) == "bob"
    with pytest.raises(AuthenticationFailed):
        act(system, "bob", "bob-temporary-1", lambda ctx: None, Permission.VIEW)
    log = [a for a in actions(system) if a[2] == "operator bob"]
    assert log == [("alice", "operator.reset_password", "operator bob"), ("bob", "operator.password", "operator bob")]
    with system.db.transaction() as s:
        text = " ".join(e.before + e.after for e in audit.entries(s, 1000, None))
    assert "bob-temporary-1" not in text and "bob-own-pw-1" not in text
