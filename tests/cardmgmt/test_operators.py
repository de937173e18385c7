"""Operators, passwords and the role table (real databases)."""

import pytest

from cardmgmt import audit, operators
from cardmgmt.context import PERMISSIONS, Actor, Permission, Role, require
from cardmgmt.errors import AlreadyExists, AuthenticationFailed, InvalidInput, PermissionDenied
from cardmgmt.operators import hash_password, verify_password


def test_password_hash_is_salted_scrypt():
    a, b = hash_password("correct horse"), hash_password("correct horse")
    assert a != b and a.startswith("scrypt$") and "correct" not in a
    assert verify_password("correct horse", a) and not verify_password("wrong", a)
    assert not verify_password("x", "garbage")


def test_role_table():
    assert PERMISSIONS[Role.FINANCE] == {Permission.DECIDE_REQUESTS, Permission.RECORD_PAYMENTS, Permission.VIEW,
                                         Permission.OWN_PASSWORD}
    assert [r for r in Role if Permission.RECORD_PAYMENTS in PERMISSIONS[r]] == [Role.FINANCE]
    require(Actor("a", Role.ADMIN), Permission.MANAGE_CARDS)
    for role, perm in [(Role.FINANCE, Permission.MANAGE_CARDS), (Role.AUDITOR, Permission.MANAGE_CARDS),
                       (Role.ADMIN, Permission.DECIDE_REQUESTS), (Role.AUDITOR, Permission.DECIDE_REQUESTS),
                       (Role.ADMIN, Permission.RECORD_PAYMENTS), (Role.AUDITOR, Permission.RECORD_PAYMENTS)]:
        with pytest.raises(PermissionDenied, match=role.value):
            require(Actor("x", role), perm)


def test_authenticate(system):
    with system.db.transaction() as s:
        assert operators.authenticate(s, "alice", "alice-secret-1") == Actor("alice", Role.ADMIN)
        for name, pw in [("alice", "wrong"), ("nobody", "alice-secret-1"), (None, "x")]:
            with pytest.raises(AuthenticationFailed):
                operators.authenticate(s, name, pw)


def test_disabled_operator_cannot_log_in(system):
    with system.db.transaction() as s:
        operators.create(s, "bob", Role.FINANCE, "bob-secret-1")
        operators.get(s, "bob").active = False
    with system.db.transaction() as s, pytest.raises(AuthenticationFailed, match="disabled"):
        operators.authenticate(s, "bob", "bob-secret-1")


def test_create_validation(system):
    with system.db.transaction() as s:
        with pytest.raises(AlreadyExists):
            operators.create(s, "alice", Role.ADMIN, "long enough")
        with pytest.raises(InvalidInput, match="at least 8"):
            operators.create(s, "bob", Role.ADMIN, "short")
        with pytest.raises(InvalidInput, match="operator name"):
            operators.create(s, "bad name!", Role.ADMIN, "long enough")


def test_initialise_only_once(system):
    with pytest.raises(PermissionDenied, match="already has operators"):
        system.initialise("mallory", "mallory-pw-1")


def test_disable_is_logged_and_needs_an_administrator(system):
    with system.db.transaction() as s:
        operators.create(s, "bob", Role.FINANCE, "bob-secret-1")
        operators.create(s, "carol", Role.ADMIN, "carol-secret-1")
    with system.unit(Permission.MANAGE_OPERATORS) as ctx:
        with pytest.raises(InvalidInput, match="cannot disable their own account"):
            operators.disable(ctx, "alice")
        assert operators.disable(ctx, "carol").active is False
    with system.db.transaction() as s:
        entries = [(e.action, e.object) for e in audit.entries(s, 10, None)]
    assert ("operator.disable", "operator carol") in entries
    with system.unit(Permission.VIEW) as ctx:
        ctx.actor = Actor("bob", Role.FINANCE)  # as finance would be, once signed in
        with pytest.raises(PermissionDenied):
            operators.disable(ctx, "alice")
