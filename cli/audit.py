"""``audit``: reading and verifying the tamper-evident operation log."""

# test-case-name: tests.cli.test_audit

import json
import sys

import click

from cardmgmt import audit
from cardmgmt.context import Permission
from cli import EXIT_DISCREPANCY, App, cli, emit, json_option, pass_app


@cli.group("audit")
def audit_group() -> None:
    """The tamper-evident operation log."""


@audit_group.command("verify")
@pass_app
def audit_verify(app: App) -> None:
    """Check the whole operation log; exits 3 and lists problems if it was tampered with.

    Example: cli.py -u carol audit verify
    """
    with app.unit(Permission.VERIFY_LOG) as ctx:
        result = audit.verify_installation(ctx.session, ctx.keys, app.settings.audit_anchor_file)
    if result.ok:
        click.echo(f"operation log intact: {result.entries} entries, head {result.head_seq}:{result.head_hash[:16]}")
        return
    for problem in result.problems:
        click.echo(f"TAMPERED: {problem}")
    sys.exit(EXIT_DISCREPANCY)


@audit_group.command("log")
@click.option("--limit", default=30, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--action", help="Only this action, e.g. card.void.")
@json_option
@pass_app
def audit_log(app: App, limit: int, action: str | None, as_json: bool) -> None:
    """Show the newest operation-log entries.

    Example: cli.py -u carol audit log --limit 20 --json
    """
    with app.unit(Permission.VIEW) as ctx:
        rows = [
            {"seq": e.seq, "at": e.at[:19], "operator": e.operator, "action": e.action, "object": e.object,
             "before": json.loads(e.before), "after": json.loads(e.after)}
            for e in audit.entries(ctx.session, limit, action)
        ]
    if not as_json:
        for r in rows:
            r["before"], r["after"] = json.dumps(r["before"], ensure_ascii=False)[:60], json.dumps(r["after"], ensure_ascii=False)[:80]
    emit(rows, as_json)
