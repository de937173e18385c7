"""``request``: issue requests (领卡申请), from filing through finance's decision (which reserves the cards) to collection."""

# test-case-name: tests.cli.test_request

from collections.abc import Callable

import click

from cardmgmt import issuing, reports
from cardmgmt.context import Permission
from cli import App, cli, emit, json_option, parse_money, pass_app, progress_to


@cli.group()
def request() -> None:
    """Issue requests (领卡申请): file, approve/reject (finance), collect.

    \b
    Finance's approval reserves the exact cards it approves (earliest expiry
    first); collection issues exactly those cards; cancelling an approved
    request releases them.  Example, a week's supply for hall H01:
      cli.py -u alice request file --face-value 50 --quantity 200 --hall H01 --reason weekly
      cli.py -u bob request approve 1 --comment "stock is sufficient"
      cli.py -u alice request collect 1
    """


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
        with app.unit(Permission.DECIDE_REQUESTS) as ctx, progress_to("reserving cards") as update:
            req = issuing.decide(ctx, request_id, approve=approve, comment=comment, progress=update)
        reserved = f"; {req.quantity} cards reserved" if approve else ""
        click.echo(f"issue request {req.id} {req.status}{reserved}")

    return command


request.command("approve", help=(
    "Approve a request (finance; not the requester) and reserve its cards: in-stock cards of the face value from "
    "unexpired batches, earliest expiry first.  Refused, with nothing changed, if free stock cannot cover it."
    "\n\nExample: cli.py -u bob request approve 1 --comment ok"))(_decide(True))
request.command("reject", help="Reject a request (finance; not the requester); nothing is reserved.\n\n"
                               "Example: cli.py -u bob request reject 2 --comment 'not this week'")(_decide(False))


@request.command("cancel")
@click.argument("request_id", type=int)
@click.option("--reason", required=True)
@pass_app
def request_cancel(app: App, request_id: int, reason: str) -> None:
    """Withdraw a request that has not been collected; an approved one's reserved cards are released.

    Example: cli.py -u alice request cancel 3 --reason 'hall closed'
    """
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        issuing.cancel(ctx, request_id, reason)
    click.echo(f"issue request {request_id} cancelled")


@request.command("collect")
@click.argument("request_id", type=int)
@json_option
@pass_app
def request_collect(app: App, request_id: int, as_json: bool) -> None:
    """Issue an approved request's reserved cards to its hall: exactly those cards, or none.

    Refused, with nothing issued, if any reserved card has since been frozen,
    voided or has expired: unfreeze it, or cancel the request and file anew.

    Example: cli.py -u alice request collect 1 --json
    """
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
    """List issue requests; ``reserved`` is how many of an approved request's cards are in stock for it.

    Example: cli.py -u bob request list --status approved
    """
    with app.unit(Permission.VIEW) as ctx:
        rows = [r for r in reports.issue_history(ctx.session) if status is None or r["status"] == status]
    emit(rows, as_json, None if as_json else ["id", "face_value", "quantity", "hall", "status", "reserved", "requested_by", "decided_by", "comment"])
