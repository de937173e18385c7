"""``batch``: ordering a batch (the encrypted new-card file), listing batches, checking the factory's file."""

# test-case-name: tests.cli.test_batch

import csv
import datetime as dt
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import click

from cardmgmt import batches, checks, reports
from cardmgmt.context import Permission
from cardmgmt.money import format_fen
from cli import EXIT_DISCREPANCY, App, cli, emit, json_option, parse_date, parse_money, pass_app, progress

BATCH_COLUMNS = ["batch_no", "face_value", "quantity", "expiry", "ordered", "produced", "in_stock", "issued", "redeemed", "voided", "frozen"]


@cli.group()
def batch() -> None:
    """Card batches: order, new-card file, file check."""


@batch.command("create")
@click.argument("batch_no")
@click.option("--face-value", required=True, callback=parse_money, help="Face value in yuan, e.g. 50 or 50.00.")
@click.option("--quantity", required=True, type=click.IntRange(1), help="Number of cards.")
@click.option("--expiry", required=True, callback=parse_date, help="Last day the cards can be redeemed (YYYY-MM-DD).")
@click.option("--box-size", default=100, show_default=True, type=click.IntRange(1), help="Cards per box.")
@click.option("--factory", "factory_name", required=True, help="Registered factory that will print the cards.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Where to write the encrypted new-card file (never overwritten).")
@pass_app
def batch_create(app: App, batch_no: str, face_value: int, quantity: int, expiry: dt.date, box_size: int, factory_name: str, out: Path) -> None:
    """Order a batch: generate serials and PINs and write the encrypted new-card file.

    The PINs exist only inside the file, which only the factory can open.

    Example: cli.py -u alice batch create B001 --face-value 50 --quantity 10000
    --expiry 2028-12-31 --factory F1 --out B001.newcard
    """
    with app.unit(Permission.MANAGE_CARDS) as ctx, progress(quantity, f"generating {batch_no}") as update:
        b = batches.create(
            ctx, batch_no=batch_no, face_value=face_value, quantity=quantity, box_size=box_size,
            expiry=expiry, factory_name=factory_name, out=out, progress=update,
        )
    click.echo(f"batch {b.batch_no}: {b.quantity} cards of {format_fen(b.face_value)} yuan, serials {b.first_serial}-{b.last_serial}")
    click.echo(f"new-card file {out} (sha256 {b.new_card_digest})")


@batch.command("list")
@json_option
@pass_app
def batch_list(app: App, as_json: bool) -> None:
    """List batches with how their cards stand (the columns of `report batches` that matter at the desk).

    Example: cli.py -u alice batch list --json
    """
    with app.unit(Permission.VIEW) as ctx:
        rows = reports.batch_summary(ctx.session)
    emit(rows, as_json, None if as_json else BATCH_COLUMNS)


@batch.command("check")
@click.argument("batch_no")
@click.argument("produced_file", type=click.Path(path_type=Path))
@click.option("--report-json", type=click.Path(path_type=Path), help="Also write every finding as JSON here.")
@click.option("--report-csv", type=click.Path(path_type=Path), help="Also write every finding as CSV here.")
@click.option("--recheck-reason", metavar="TEXT",
              help="Why a batch that already has a checked file gets another (recorded with the check).")
@json_option
@pass_app
def batch_check(app: App, batch_no: str, produced_file: Path, report_json: Path | None, report_csv: Path | None,
                recheck_reason: str | None, as_json: bool) -> None:
    """Verify the factory's post-production file and reconcile it card by card.

    Matched cards become 'produced' (ready for intake); damaged ones are voided.
    Exits 3 when anything did not match.  A batch's second file is refused
    unless --recheck-reason says why; the same file is never imported twice.

    Example: cli.py -u alice batch check B001 B001.produced --report-csv B001-check.csv

    Example: cli.py -u alice batch check B001 B001-resent.produced --recheck-reason "factory resent after damage"
    """
    with app.unit(Permission.MANAGE_CARDS) as ctx:
        report = checks.check_file(ctx, batch_no, produced_file, recheck_reason=recheck_reason)
        # Written before the check commits: a report that cannot be written
        # undoes the check, so it can be run again rather than being lost.
        # Findings are streamed from the database: a file can hold millions.
        if report_json:
            with report_json.open("w") as f:
                _write_report_json(f, report, checks.iter_findings(ctx.session, report.file_id))
        if report_csv:
            with report_csv.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["serial", "finding", "detail"])
                w.writerows(checks.iter_findings(ctx.session, report.file_id))
    if as_json:
        # Printed only once committed, read back in a read-only transaction.
        with app.system.db.transaction() as session:
            _write_report_json(sys.stdout, report, checks.iter_findings(session, report.file_id))
    else:
        findings = report.finding_rows()
        click.echo(f"batch {report.batch_no}: file verified (sha256 {report.file_digest[:16]}...)")
        if report.recheck_reason:
            click.echo(f"checked again: {report.recheck_reason}")
        emit([{"finding": k, "cards": n} for k, n in report.counts.items()], False)
        if findings:
            click.echo("")
            emit(findings[:50], False)
            if report.findings_total > 50:
                click.echo(f"... {report.findings_total - 50} more (use --report-csv or --json)")
        click.echo(f"{report.produced} cards ready for intake; {report.voided} damaged cards voided")
    if report.has_discrepancies:
        sys.exit(EXIT_DISCREPANCY)


def _write_report_json(out: TextIO, report: checks.CheckReport, findings: Iterable[tuple[str, str, str]]) -> None:
    """The report as one JSON document with every finding, written row by row rather than built whole."""
    head = json.dumps({k: v for k, v in report.to_dict().items() if k != "findings"}, ensure_ascii=False, indent=2)
    out.write(head[: -len("\n}")] + ',\n  "findings": [')
    sep = "\n    "
    for serial, kind, detail in findings:
        out.write(sep + json.dumps({"serial": serial, "finding": kind, "detail": detail}, ensure_ascii=False))
        sep = ",\n    "
    out.write("\n  ]\n}\n" if sep != "\n    " else "]\n}\n")
