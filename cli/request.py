"""``request``: issue requests (领卡申请), from filing through finance's decision to collection."""

# test-case-name: tests.cli.test_request

from collections.abc import Callable

import click

from cardmgmt import issuing, reports
from cardmgmt.operators import Permission
from cli import App, cli, emit, json_option, parse_money, pass_app


@cli.group()
def request() -> None:
    """Issue requests (领卡申请): file, approve/reject (finance), collect."""


@request.command("file")
@click.option("--face-value", required=True, callback=parse_money, help="Face value in yuan.")
@click.option("--quantity", required=True, type=click.IntRange(1))
@click.option("--hall", "hall_code", required=True, help="Hall code.")
@click.option("--reason", required=True)
@pass_app
def request_file(app: App, face_value: int, quantity: int, hall_code: str, reason: str) -> None:
    """File a request for cards.  Example: cli.py -u alice request file --face-value 50 --quantity 200 --hall H01 --reason 'weekly'"""
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        req = issuing.file_request(ctx, face_value=face_value, quantity=quantity, hall_code=hall_code, reason=reason)
    click.echo(f"issue request {req.id} filed; waiting for finance approval")


def _decide(approve: bool) -> Callable[..., None]:
    @click.argument("request_id", type=int)
    @click.option("--comment", required=True)
    @pass_app
    def command(app: App, request_id: int, comment: str) -> None:
        with app.unit(Permission.DECIDE_REQUESTS) as ctx:
            req = issuing.decide(ctx, request_id, approve=approve, comment=comment)
        click.echo(f"issue request {req.id} {req.status}")

    return command


request.command("approve", help="Approve a request (finance; not the requester).\n\nExample: cli.py -u bob request approve 1 --comment ok")(_decide(True))
request.command("reject", help="Reject a request (finance; not the requester).")(_decide(False))


@request.command("cancel")
@click.argument("request_id", type=int)
@click.option("--reason", required=True)
@pass_app
def request_cancel(app: App, request_id: int, reason: str) -> None:
    """Withdraw a request that has not been collected."""
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        issuing.cancel(ctx, request_id, reason)
    click.echo(f"issue request {request_id} cancelled")


@request.command("collect")
@click.argument("request_id", type=int)
@json_option
@pass_app
def request_collect(app: App, request_id: int, as_json: bool) -> None:
    """Take an approved request's cards out of stock (earliest expiry first) and issue them to its hall."""
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        issued = issuing.collect(ctx, request_id)
    emit([{"first_serial": a, "last_serial": b, "cards": n} for a, b, n in issued], as_json)
    if not as_json:
        click.echo(f"{sum(n for _, _, n in issued)} cards issued for request {request_id}")


@request.command("list")
@click.option("--status", type=click.Choice([s.value for s in issuing.RequestStatus]))
@json_option
@pass_app
def request_list(app: App, status: str | None, as_json: bool) -> None:
    """List issue requests."""
    with app.unit(Permission.VIEW) as ctx:
        rows = [r for r in reports.issue_history(ctx.session) if status is None or r["status"] == status]
    emit(rows, as_json, None if as_json else ["id", "face_value", "quantity", "hall", "status", "requested_by", "decided_by", "comment"])
