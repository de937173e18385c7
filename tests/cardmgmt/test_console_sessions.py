"""Console sessions: sign-in with the CLI's passwords and lockout, expiry, sign-out from every copy, the form token."""

import datetime as dt

import pytest

from cardmgmt import audit, console_sessions, context, operators
from cardmgmt.context import Permission, Role
from cardmgmt.errors import AuthenticationFailed, InvalidInput, PermissionDenied
from cardmgmt.models import utcnow
from testkit.install import PASSWORDS

POLICY = console_sessions.Policy(idle=dt.timedelta(minutes=15), lifetime=dt.timedelta(hours=8))


def authenticate(system, token, now=None):
    with system.db.transaction() as s:
        return console_sessions.authenticate(s, token, POLICY, now)


def test_sign_in_opens_a_session_that_vouches_for_the_operator(bench):
    actor, token = console_sessions.sign_in(bench.system, "bob", PASSWORDS["bob"], policy=POLICY)
    assert actor == context.Actor("bob", Role.FINANCE)
    assert authenticate(bench.system, token) == actor
    with bench.system.unit_by(lambda s: console_sessions.authenticate(s, token, POLICY), Permission.DECIDE_REQUESTS) as ctx:
        assert ctx.actor.name == "bob"
    with pytest.raises(PermissionDenied), bench.system.unit_by(
        lambda s: console_sessions.authenticate(s, token, POLICY), Permission.MANAGE_CARDS
    ):
        pass


def test_a_wrong_password_is_refused_and_counted(bench):
    for _ in range(operators.MAX_FAILURES):
        with pytest.raises(AuthenticationFailed, match="unknown name, wrong password or locked"):
            console_sessions.sign_in(bench.system, "bob", "not-bobs-password", policy=POLICY)
    with pytest.raises(AuthenticationFailed):
        console_sessions.sign_in(bench.system, "bob", PASSWORDS["bob"], policy=POLICY)
    with bench.system.db.transaction() as s:
        assert operators.status(operators.get(s, "bob")) == "locked"
    with pytest.raises(AuthenticationFailed, match="enter an operator name"):
        console_sessions.sign_in(bench.system, " ", "x", policy=POLICY)


def test_idle_and_lifetime_expiry(bench):
    start = utcnow()
    _, token = console_sessions.sign_in(bench.system, "bob", PASSWORDS["bob"], policy=POLICY, now=start)
    at = start
    for _ in range(4):
        at += dt.timedelta(minutes=14)
        authenticate(bench.system, token, at)
    with pytest.raises(AuthenticationFailed, match="sign in again"):
        authenticate(bench.system, token, at + dt.timedelta(minutes=15))
    _, token = console_sessions.sign_in(bench.system, "bob", PASSWORDS["bob"], policy=POLICY, now=start)
    at = start
    while at + dt.timedelta(minutes=10) < start + POLICY.lifetime:
        at += dt.timedelta(minutes=10)
        authenticate(bench.system, token, at)
    with pytest.raises(AuthenticationFailed):
        authenticate(bench.system, token, start + POLICY.lifetime)


def test_sign_out_ends_every_copy_of_the_session_and_is_logged(bench):
    _, token = console_sessions.sign_in(bench.system, "bob", PASSWORDS["bob"], policy=POLICY)
    with bench.system.unit_by(lambda s: console_sessions.authenticate(s, token, POLICY), Permission.VIEW) as ctx:
        console_sessions.end(ctx, token)
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            authenticate(bench.system, token)
    with bench.system.db.transaction() as s:
        assert [(e.operator, e.action) for e in audit.entries(s, 2)] == [("bob", "console.sign_out"), ("bob", "console.sign_in")]


@pytest.mark.parametrize("token", [None, "", "x" * 65, "not-a-token"])
def test_unknown_or_malformed_tokens_are_refused(bench, token):
    with pytest.raises(AuthenticationFailed, match="sign in again"):
        authenticate(bench.system, token)


def test_a_disabled_operator_and_a_changed_role_take_effect_at_once(bench):
    _, token = console_sessions.sign_in(bench.system, "bob", PASSWORDS["bob"], policy=POLICY)
    with bench.system.db.transaction() as s:
        operators.get(s, "bob").role = Role.AUDITOR.value
    assert authenticate(bench.system, token).role is Role.AUDITOR
    with bench.unit(Permission.MANAGE_OPERATORS) as ctx:
        operators.disable(ctx, "bob")
    with pytest.raises(AuthenticationFailed):
        authenticate(bench.system, token)


def test_a_temporary_password_must_be_replaced_at_sign_in(bench):
    with bench.unit(Permission.MANAGE_OPERATORS) as ctx:
        operators.reset_password(ctx, "bob", "temporary-1")
    with pytest.raises(InvalidInput, match="must choose a new password"):
        console_sessions.sign_in(bench.system, "bob", "temporary-1", policy=POLICY)
    actor, token = console_sessions.sign_in(bench.system, "bob", "temporary-1", new_password="chosen-by-bob", policy=POLICY)
    assert authenticate(bench.system, token) == actor
    console_sessions.sign_in(bench.system, "bob", "chosen-by-bob", policy=POLICY)


def test_the_form_token_belongs_to_its_session():
    a, b = "a" * 43, "b" * 43
    assert console_sessions.csrf_ok(a, console_sessions.csrf_token(a))
    assert not console_sessions.csrf_ok(a, console_sessions.csrf_token(b))
    assert not console_sessions.csrf_ok(a, None) and not console_sessions.csrf_ok(a, "")


def test_sessions_long_over_are_pruned_at_the_next_sign_in(bench):
    from sqlalchemy import func, select

    from cardmgmt.models import ConsoleSession

    old = utcnow() - console_sessions.KEEP_ENDED - POLICY.lifetime - dt.timedelta(minutes=1)
    console_sessions.sign_in(bench.system, "bob", PASSWORDS["bob"], policy=POLICY, now=old)
    console_sessions.sign_in(bench.system, "bob", PASSWORDS["bob"], policy=POLICY, now=old + dt.timedelta(days=1))
    console_sessions.sign_in(bench.system, "bob", PASSWORDS["bob"], policy=POLICY)
    with bench.system.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(ConsoleSession)).scalar_one() == 2
