"""``marketing``: the stand-in marketing database, its mapping, the outbox (recharges and reversals to post, rejected ones to retry or resolve), SMS notices, and daily reconciliation."""

# test-case-name: tests.cli.test_root, tests.cli.test_reversal

import datetime as dt
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from cardmgmt import rejected_postings
from cardmgmt.context import Permission
from cardmgmt.marketing import MarketingError, MarketingUnavailable
from cardmgmt.models import Reversal
from cardmgmt.money import format_fen
from cli import EXIT_DISCREPANCY, App, cli, emit, emit_json, json_option, parse_date, pass_app
from marketing_iface import outbox, reconcile, sms
from marketing_iface.sql import SqlMarketing
from marketing_iface.standin import create_standin


@cli.group()
def marketing() -> None:
    """The marketing system: stand-in database, outbox, daily reconciliation (对账)."""


@contextmanager
def open_marketing(app: App) -> Iterator[SqlMarketing]:
    """The marketing system as the settings name it (URL and mapping file); closed after the block."""
    mkt = SqlMarketing(app.settings.marketing_url, mapping=app.settings.marketing_mapping)
    try:
        yield mkt
    finally:
        mkt.close()


@marketing.command("check-mapping")
@json_option
@pass_app
def marketing_check_mapping(app: App, as_json: bool) -> None:
    """Check that the marketing database has every table and column the mapping file names.

    The mapping file is CARDS_MARKETING_MAPPING (default: the stand-in's,
    marketing_iface/standin-mapping.toml); the database is
    CARDS_MARKETING_URL.  Exits 1 with one line naming the first thing
    missing; the recharge servers make the same check when they start.

    Example: CARDS_MARKETING_MAPPING=/etc/cards/sg186.toml cli.py marketing check-mapping --json
    """
    with open_marketing(app) as mkt:
        try:
            problems = mkt.problems()
        except MarketingUnavailable as e:
            raise click.ClickException(str(e)) from None
        source = mkt.mapping.source
        tables = {"accounts": mkt.mapping.accounts.table, "interface": mkt.mapping.interface.table,
                  "sms": mkt.mapping.sms.table if mkt.mapping.sms else None}
    if as_json:
        emit_json({"mapping": source, "ok": not problems, "tables": tables, "problems": problems})
        if problems:
            sys.exit(1)
        return
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise click.ClickException(f"{source}: {problems[0]}{more}")
    named = ", ".join(f"{k} {v}" for k, v in tables.items() if v)
    click.echo(f"{source} fits the marketing database ({named})")


@marketing.command("standin")
@click.option("--recreate", is_flag=True, help="Drop the stand-in's tables first (one made by an earlier version).")
@pass_app
def marketing_standin(app: App, recreate: bool) -> None:
    """Create the stand-in marketing database (sample accounts) at CARDS_MARKETING_URL, for demos and tests.

    Example: cli.py marketing standin --recreate
    """
    try:
        create_standin(app.settings.marketing_url, recreate=recreate)
    except MarketingError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"stand-in marketing database ready at {app.settings.marketing_url}")


@marketing.command("outbox")
@click.option("--status", type=click.Choice([outbox.PENDING, outbox.REJECTED, outbox.RESOLVED]), default=outbox.PENDING,
              show_default=True)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_app
def marketing_outbox(app: App, status: str, limit: int, as_json: bool) -> None:
    """Recharges and reversals not yet posted to the marketing system (or refused by it); amounts in yuan (--json: fen).

    A reversal's amount is negative; one that waits for its original to be posted says so.

    Example: cli.py -u carol marketing outbox --status rejected
    """
    with app.unit(Permission.VIEW) as ctx:
        summary = outbox.backlog(ctx.session)
        rows = [e._asdict() for e in outbox.entries(ctx.session, status, limit)]
    emit(rows, as_json, None if as_json else ["kind", "ref", "account_no", "amount", "attempts", "next_attempt_at",
                                              "last_error"])
    if not as_json:
        click.echo(f"{summary['pending']} pending, {summary['rejected']} rejected; "
                   f"oldest pending {summary['oldest_pending'] or '-'}; reversals: "
                   f"{summary['reversals_pending']} pending, {summary['reversals_rejected']} rejected")


def _settle(action: str) -> Callable[..., None]:
    @click.argument("ref")
    @click.option("--reason", required=True)
    @pass_app
    def command(app: App, ref: str, reason: str) -> None:
        with app.unit(Permission.MANAGE_CARDS) as ctx:
            row = getattr(rejected_postings, action)(ctx, ref, reason)
        what = "reversal" if isinstance(row, Reversal) else "recharge"
        tail = "; it goes with the next drain" if action == "retry" else ""
        click.echo(f"posting of {what} {row.ref} is {row.post_status}{tail}")

    return command


marketing.command(
    "retry",
    help="Send a posting the marketing system rejected again (administrators), e.g. once the account was fixed there.\n\n"
         "REF is a recharge's reference or a reversal's (ending in R).  Example: "
         "cli.py -u alice marketing retry 26112200000042 --reason 'account reopened by billing'",
)(_settle("retry"))
marketing.command(
    "resolve",
    help="Close a rejected posting that a person settled outside the system (administrators); final.\n\n"
         "Reconciliation then lists it as resolved instead of a mismatch.  Example: "
         "cli.py -u alice marketing resolve 26112200000042 --reason 'refunded in cash at hall H01'",
)(_settle("resolve"))


@marketing.command("drain")
@pass_app
def marketing_drain(app: App) -> None:
    """Post due recharges, then approved reversals, now; then hand their SMS notices over (the leading recharge server does this every second).

    Example: cli.py -u alice marketing drain
    """
    with open_marketing(app) as mkt, app.unit(Permission.MANAGE_CARDS) as ctx:
        result = outbox.drain_now(ctx, mkt)
    click.echo(f"posted {result.posted}, already there {result.repeated}, failed {result.failed}, rejected {result.rejected}")
    if result.sms is not None:
        n = result.sms
        click.echo(f"SMS notices: sent {n.sent}, already there {n.repeated}, failed {n.failed}, rejected {n.rejected}")


@marketing.command("sms")
@click.option("--status", type=click.Choice(sms.STATUSES), default=None, help="Only notices in this state (default: all).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_app
def marketing_sms(app: App, status: str | None, limit: int, as_json: bool) -> None:
    """SMS notices (短信告知) of acknowledged recharges, newest first: pending, sent, skipped (no phone) or rejected.

    Example: cli.py -u carol marketing sms --status pending --json
    """
    with app.unit(Permission.VIEW) as ctx:
        found, summary = sms.list_notices(ctx, status, limit)
        rows = [{"posting_ref": n.posting_ref, "account_no": n.account_no, "phone": n.phone or "", "status": n.status.value,
                 "attempts": n.attempts, "created_at": n.created_at, "sent_at": n.sent_at, "last_error": n.last_error or "",
                 "text": n.text} for n in found]
    if as_json:
        emit_json({"counts": summary, "notices": rows})
        return
    emit(rows, False, ["posting_ref", "account_no", "phone", "status", "attempts", "sent_at", "last_error"])
    click.echo(", ".join(f"{count} {name}" for name, count in summary.items()))


@marketing.command("reconcile")
@click.argument("day", callback=parse_date)
@json_option
@pass_app
def marketing_reconcile(app: App, day: dt.date, as_json: bool) -> None:
    """Reconcile one business day (UTC+8) with the marketing system; exits 3 on any mismatch.

    Example: cli.py -u bob marketing reconcile 2026-11-22
    """
    try:
        with open_marketing(app) as mkt, app.unit(Permission.VIEW) as ctx:
            rec = reconcile.reconcile_day(ctx, mkt, day, reconcile.card_reversals)
    except MarketingUnavailable as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        emit_json(rec.to_dict())
    else:
        click.echo(f"{day}: cards {rec.card_count} recharges {format_fen(rec.card_total)} yuan; "
                   f"marketing {rec.marketing_count} postings {format_fen(rec.marketing_total)} yuan")
        if rec.card_reversals or rec.marketing_reversals:
            click.echo(f"of which reversals (冲正): cards {rec.card_reversals}, marketing {rec.marketing_reversals}; "
                       "totals are net")
        findings = rec.findings
        if findings:
            emit([{"finding": kind, "recharge_ref": d.recharge_ref,
                   "cards": f"{d.cards.account_no} {format_fen(d.cards.amount)}" if d.cards else "-",
                   "marketing": f"{d.marketing.account_no} {format_fen(d.marketing.amount)}" if d.marketing else "-",
                   "post_status": d.post_status or "-"} for kind, d in findings], False)
        for d in rec.resolved:
            assert d.cards is not None
            click.echo(f"resolved outside the system (not a mismatch): {d.recharge_ref} {d.cards.account_no} "
                       f"{format_fen(d.cards.amount)}")
        click.echo("reconciled: both sides agree" if not rec.has_discrepancies else f"{len(findings)} mismatches")
    if rec.has_discrepancies:
        sys.exit(EXIT_DISCREPANCY)
