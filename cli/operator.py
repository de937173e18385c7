"""``operator``: the people who may use the system, the requests that add them or change their roles, and passwords.

Adding an operator, changing a role and re-enabling are requests that a
second administrator approves (``cardmgmt.operator_requests``); passwords
are typed at a prompt or read from the environment, never printed.
"""

# test-case-name: tests.cli.test_operator

import click

from cardmgmt import context, operator_requests, operators
from cardmgmt.context import Permission
from cardmgmt.models import OperatorRequest
from cli import App, cli, emit, json_option, pass_app

ROLES = click.Choice([r.value for r in context.OPERATOR_ROLES])


@cli.group()
def operator() -> None:
    """Operators, roles (admin, finance, auditor), requests to add or change them, and passwords."""


@operator.group("request")
def request() -> None:
    """Requests to add an operator, change a role or re-enable, each approved by a second administrator."""


def _filed(r: OperatorRequest) -> None:
    what = {"add": f"add {r.operator} as {r.role}", "role": f"make {r.operator} {r.role}", "enable": f"enable {r.operator}"}
    click.echo(f"operator request {r.id} filed: {what[r.kind]}; waiting for another administrator's approval")


@request.command("add")
@click.argument("name")
@click.option("--role", required=True, type=ROLES)
@click.option("--reason", required=True, help="Why this person needs an account.")
@pass_app
def request_add(app: App, name: str, role: str, reason: str) -> None:
    """Ask for a new operator; another administrator approves and sets the first password.

    Example: cli.py -u alice operator request add bob --role finance --reason "new finance officer"
    """
    with app.unit(Permission.MANAGE_OPERATORS) as ctx:
        req = operator_requests.file_add(ctx, name, context.Role(role), reason)
    _filed(req)


@request.command("role")
@click.argument("name")
@click.option("--role", required=True, type=ROLES)
@click.option("--reason", required=True, help="Why the role changes.")
@pass_app
def request_role(app: App, name: str, role: str, reason: str) -> None:
    """Ask for an operator's role to change.

    Example: cli.py -u alice operator request role carol --role admin --reason "covers for dave"
    """
    with app.unit(Permission.MANAGE_OPERATORS) as ctx:
        req = operator_requests.file_role(ctx, name, context.Role(role), reason)
    _filed(req)


@request.command("enable")
@click.argument("name")
@click.option("--reason", required=True, help="Why the account is needed again.")
@pass_app
def request_enable(app: App, name: str, reason: str) -> None:
    """Ask for a disabled operator to be enabled again.

    Example: cli.py -u alice operator request enable dave --reason "back from leave"
    """
    with app.unit(Permission.MANAGE_OPERATORS) as ctx:
        req = operator_requests.file_enable(ctx, name, reason)
    _filed(req)


@request.command("list")
@click.option("--status", type=click.Choice([s.value for s in operator_requests.Status]))
@json_option
@pass_app
def request_list(app: App, status: str | None, as_json: bool) -> None:
    """List operator requests.  Example: cli.py -u alice operator request list --status pending"""
    with app.unit(Permission.VIEW) as ctx:
        rows = [
            {"id": r.id, "kind": r.kind, "operator": r.operator, "role": r.role or "", "status": r.status,
             "requested_by": r.requested_by, "decided_by": r.decided_by or "", "reason": r.reason,
             "comment": r.decision_comment or ""}
            for r in operator_requests.listing(ctx.session, status)
        ]
    emit(rows, as_json)


@request.command("approve")
@click.argument("request_id", type=int)
@click.option("--comment", required=True)
@click.option("--new-password", envvar="CARDS_NEW_PASSWORD", help="First password of a new operator; prompted if needed [env CARDS_NEW_PASSWORD].")
@pass_app
def request_approve(app: App, request_id: int, comment: str, new_password: str | None) -> None:
    """Approve another administrator's request; for a new operator, type the first password you hand over.

    Example: cli.py -u dave operator request approve 3 --comment "checked with HR"
    """

    def ask() -> str:
        return new_password or click.prompt("first password for the new operator", hide_input=True,
                                            confirmation_prompt=True, err=True)

    with app.unit(Permission.MANAGE_OPERATORS) as ctx:
        req = operator_requests.approve(ctx, request_id, comment, ask)
    done = {"add": f"{req.operator} added as {req.role}; they must choose a new password at first sign-in",
            "role": f"{req.operator} is now {req.role}", "enable": f"{req.operator} enabled"}[req.kind]
    click.echo(f"operator request {req.id} approved: {done}")


@request.command("reject")
@click.argument("request_id", type=int)
@click.option("--comment", required=True)
@pass_app
def request_reject(app: App, request_id: int, comment: str) -> None:
    """Reject a request (the requester may so withdraw it).  Example: cli.py -u dave operator request reject 3 --comment "unknown person" """
    with app.unit(Permission.MANAGE_OPERATORS) as ctx:
        req = operator_requests.reject(ctx, request_id, comment)
    click.echo(f"operator request {req.id} rejected")


@operator.command("add")
@click.argument("name")
@click.option("--role", required=True, type=ROLES)
@click.option("--reason", required=True, help="Why this person needs an account.")
@pass_app
def operator_add(app: App, name: str, role: str, reason: str) -> None:
    """Ask for a new operator (the same as `operator request add`).

    Example: cli.py -u alice operator add bob --role finance --reason "new finance officer"
    """
    with app.unit(Permission.MANAGE_OPERATORS) as ctx:
        req = operator_requests.file_add(ctx, name, context.Role(role), reason)
    _filed(req)


@operator.command("disable")
@click.argument("name")
@pass_app
def operator_disable(app: App, name: str) -> None:
    """Disable an operator's account (it stays in the log).  Example: cli.py -u alice operator disable dave"""
    with app.unit(Permission.MANAGE_OPERATORS) as ctx:
        operators.disable(ctx, name)
    click.echo(f"operator {name} disabled")


@operator.command("password")
@click.password_option("--new-password", envvar="CARDS_NEW_PASSWORD", prompt="new password", help="[env CARDS_NEW_PASSWORD]")
@pass_app
def operator_password(app: App, new_password: str) -> None:
    """Change your own password; you sign in with the old one as always.

    Example: cli.py -u bob operator password
    """
    with app.unit(Permission.OWN_PASSWORD) as ctx:
        operators.change_password(ctx, new_password)
    click.echo(f"password of {ctx.actor.name} changed")


@operator.command("reset-password")
@click.argument("name")
@click.password_option("--new-password", envvar="CARDS_NEW_PASSWORD", prompt="temporary password", help="[env CARDS_NEW_PASSWORD]")
@pass_app
def operator_reset_password(app: App, name: str, new_password: str) -> None:
    """Give another operator a temporary password, to be changed at their next sign-in; lifts a lockout.

    Example: cli.py -u alice operator reset-password bob
    """
    with app.unit(Permission.MANAGE_OPERATORS) as ctx:
        operators.reset_password(ctx, name, new_password)
    click.echo(f"password of {name} reset; they must choose a new one at next sign-in")


@operator.command("unlock")
@click.argument("name")
@pass_app
def operator_unlock(app: App, name: str) -> None:
    """Lift a lockout after too many wrong passwords.  Example: cli.py -u alice operator unlock bob"""
    with app.unit(Permission.MANAGE_OPERATORS) as ctx:
        operators.unlock(ctx, name)
    click.echo(f"operator {name} unlocked")


@operator.command("list")
@json_option
@pass_app
def operator_list(app: App, as_json: bool) -> None:
    """List operators, their roles and status.  Example: cli.py -u carol operator list --json"""
    with app.unit(Permission.VIEW) as ctx:
        rows = [{"name": o.name, "role": o.role, "status": operators.status(o), "active": o.active,
                 "created_by": o.created_by or ""} for o in operators.listing(ctx.session)]
    emit(rows, as_json, columns=["name", "role", "status", "created_by"])
