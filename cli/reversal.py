"""``reversal``: reversals (冲正) of recharges, filed by an administrator and decided by finance."""

# test-case-name: tests.cli.test_reversal

from collections.abc import Callable

import click

from cardmgmt import reversals
from cardmgmt.context import Permission
from cardmgmt.money import format_fen
from cardmgmt.states import ReversalStatus
from cli import App, cli, emit, emit_json, json_option, pass_app


@cli.group()
def reversal() -> None:
    """Reversals (冲正): take a recharge back from the account it went to, with finance's approval.

    A reversal posts the recharge's amount negated to the same account; the card stays spent.
    """


@reversal.command("file")
@click.argument("ref")
@click.option("--reason", required=True, help="Why the recharge is to be taken back.")
@pass_app
def reversal_file(app: App, ref: str, reason: str) -> None:
    """File a reversal of the recharge with reference REF (administrators).

    Example: cli.py -u alice reversal file 26112200000042 --reason "customer keyed a wrong account"
    """
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        rev = reversals.file(ctx, ref, reason)
    click.echo(f"reversal {rev.id} ({rev.ref}) of recharge {rev.original_ref} filed: "
               f"{format_fen(rev.amount)} yuan from account {rev.account_no}; waiting for finance approval")


def _decide(approve: bool) -> Callable[..., None]:
    @click.argument("reversal_id", type=int)
    @click.option("--comment", required=True)
    @pass_app
    def command(app: App, reversal_id: int, comment: str) -> None:
        with app.unit(Permission.DECIDE_REQUESTS) as ctx:
            rev = reversals.decide(ctx, reversal_id, approve=approve, comment=comment)
        tail = "; its counter-entry goes to the marketing system with the next drain" if approve else ""
        click.echo(f"reversal {rev.id} {rev.status}{tail}")

    return command


reversal.command(
    "approve",
    help="Approve a reversal (finance; not the one who filed it).\n\n"
         "Example: cli.py -u bob reversal approve 1 --comment 'call recording checked'",
)(_decide(True))
reversal.command(
    "reject",
    help="Reject a reversal (finance; not the one who filed it).\n\n"
         "Example: cli.py -u bob reversal reject 1 --comment 'the account was right'",
)(_decide(False))


@reversal.command("list")
@click.option("--status", type=click.Choice([s.value for s in ReversalStatus]))
@json_option
@pass_app
def reversal_list(app: App, status: str | None, as_json: bool) -> None:
    """List reversals, oldest first; amounts in yuan (--json: fen).

    Example: cli.py -u carol reversal list --status pending --json
    """
    with app.unit(Permission.VIEW) as ctx:
        rows = [reversals.describe(r) for r in reversals.listing(ctx.session, status)]
    emit(rows, as_json, None if as_json else
         ["id", "ref", "original_ref", "account_no", "amount", "status", "filed_by", "decided_by", "post_status"])


@reversal.command("show")
@click.argument("reversal_id", type=int)
@json_option
@pass_app
def reversal_show(app: App, reversal_id: int, as_json: bool) -> None:
    """One reversal in full: filing, decision and posting; amount in yuan (--json: fen).

    Example: cli.py -u carol reversal show 1 --json
    """
    with app.unit(Permission.VIEW) as ctx:
        row = reversals.describe(reversals.get(ctx.session, reversal_id))
    if as_json:
        emit_json(row)
        return
    for key, value in row.items():
        click.echo(f"{key}: {format_fen(value) if key == 'amount' else ('-' if value is None else value)}")
