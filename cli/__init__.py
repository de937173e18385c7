"""The card administrators' and finance staff's command line.

Thin on purpose: each command parses its options, calls one service in
``cardmgmt`` or ``marketing_iface`` inside an authenticated unit of work, and
prints the result as a table or, with ``--json``, as JSON (money in integer
fen; tables show yuan).  Every ``CardError`` becomes one line on stderr and
the exit code its kind has in ``cardmgmt.errors``; no traceback reaches an
operator.

This package holds the root group, the per-invocation ``App``, the error
handling and the options and printing the groups share; each command group
is a module of its own (``cli/batch.py``, ``cli/stock.py``, ...), registered
on import at the end of this file.  ``cli.py`` beside the package is the
entry point the README names.

Exit codes: 0 done; 1 refused (bad input, wrong role, illegal change, rejected
file, ...); 2 usage error; 3 done, but discrepancies were found (file check,
stock count, operation-log verification, a reconciliation mismatch, a failed
call-script step in ``replay``).
"""

# test-case-name: tests.cli

import dataclasses
import datetime as dt
import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from cardmgmt import csvfile
from cardmgmt.config import Settings
from cardmgmt.context import Permission
from cardmgmt.errors import CardError, InvalidInput
from cardmgmt.marketing import MarketingError
from cardmgmt.money import format_fen, parse_yuan
from cardmgmt.stock import Selection  # not `stock`: that name is the cli.stock module
from cardmgmt.system import CardSystem, Context

EXIT_DISCREPANCY = 3


class CardCLI(click.Group):
    """A click group that turns every domain or database error into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CardError as e:
            refused = click.ClickException(e.message)
            refused.exit_code = e.exit_code  # the kind's code, from the one table in cardmgmt.errors
            raise refused from None
        except MarketingError as e:  # the marketing system's mapping, an outage, a refusal: one line
            raise click.ClickException(str(e)) from None
        except SQLAlchemyError as e:
            first = str(getattr(e, "orig", e) or e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise click.ClickException(f"database error: {first}") from None
        except OSError as e:
            raise click.ClickException(f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")) from None
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as e:
            # A bug, not an operator mistake: still one line, never a traceback
            # (which could carry data from the failing frame).
            raise click.ClickException(f"internal error ({type(e).__name__}); nothing was committed") from None


class App:
    """Per-invocation state: settings, and the card system opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._system: CardSystem | None = None

    @property
    def system(self) -> CardSystem:
        if self._system is None:
            s = self.settings
            if s.operator and s.password is None:
                s = dataclasses.replace(s, password=prompt_secret(f"password for {s.operator}", "CARDS_PASSWORD"))
            self._system = CardSystem(s)
        return self._system

    @contextmanager
    def unit(self, permission: Permission) -> Iterator[Context]:
        with self.system.unit(permission) as ctx:
            yield ctx


pass_app = click.make_pass_decorator(App)


def prompt_secret(label: str, env_name: str) -> str:
    """Ask for a password at the terminal, hidden; without a terminal, read one line of standard input.

    At no terminal ``getpass`` would warn, say the input may be echoed, show
    the prompt and then "Aborted!" on an empty input: four lines where an
    operator is promised one.  A script pipes the password in (or sets
    ``env_name``); nothing at all is one clear line.
    """
    if sys.stdin.isatty():
        return str(click.prompt(label, hide_input=True, err=True))
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise click.ClickException(f"no {label} on standard input and no terminal to ask at; set {env_name} for scripts")
    return line


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


def csv_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--csv", "as_csv", is_flag=True,
                        help="Print CSV for a spreadsheet instead of a table (money in yuan, two decimals).")(f)


def one_format(as_json: bool, as_csv: bool) -> None:
    """Refuse ``--json`` together with ``--csv`` (a usage error, before any work)."""
    if as_json and as_csv:
        raise click.UsageError("choose --json or --csv, not both")


# Columns holding fen: tables and CSV print them in yuan, --json keeps fen.
MONEY_KEYS = {"face_value", "amount", "unsold_value", "sold_value", "opening", "owed", "paid", "balance", "value",
              "file_amount", "backend_amount"}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    return format_fen(value) if key in MONEY_KEYS and isinstance(value, int) else str(value)


def write_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], out: Any) -> None:
    """Rows as CSV (through ``cardmgmt.csvfile``): a header line, then each row; money as yuan text (``50.00``).

    Yuan rather than fen because CSV is for spreadsheets, where people read
    and sum yuan; text with exactly two decimals, so nothing passes through a
    float on the way.  ``--json`` is the exact, machine-facing form (fen).
    """
    csvfile.write(out, columns, ([_cell(c, r.get(c)) for c in columns] for r in rows))


def emit(rows: Sequence[dict[str, Any]], as_json: bool, columns: Sequence[str] | None = None, as_csv: bool = False) -> None:
    """Print rows as JSON (money in fen), CSV or an aligned table (money in yuan)."""
    one_format(as_json, as_csv)
    if as_json:
        click.echo(json.dumps(list(rows), ensure_ascii=False, indent=2, default=str))
        return
    if as_csv:
        out = io.StringIO()
        write_csv(rows, list(columns or (rows[0].keys() if rows else [])), out)
        click.echo(out.getvalue(), nl=False)
        return
    if not rows:
        click.echo("(none)")
        return
    cols = list(columns or rows[0].keys())
    text = [[_cell(c, r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for t in text:
        click.echo("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())


def emit_record(row: dict[str, Any]) -> None:
    """Print one record down the page, a field to a line (money in yuan), for ``show`` commands."""
    width = max(len(k) for k in row)
    for k, v in row.items():
        click.echo(f"{k.ljust(width)}  {format_fen(v) if k in MONEY_KEYS and v != '' else v}".rstrip())


def emit_json(doc: Any) -> None:
    """Print one JSON document (money in fen), as every ``--json`` does."""
    click.echo(json.dumps(doc, ensure_ascii=False, indent=2, default=str))


@contextmanager
def progress(length: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr that appears with the first progress, so a refused command prints only its error."""
    bar: Any = None

    def update(n: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=length, label=label, file=sys.stderr)
            bar.__enter__()
        bar.update(n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


@contextmanager
def progress_to(label: str) -> Iterator[Callable[[int, int], None]]:
    """``progress`` for a service that learns the total itself: it calls ``update(n, total)``."""
    with ExitStack() as stack:
        bar: Callable[[int], None] | None = None

        def update(n: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = stack.enter_context(progress(total, label))
            bar(n)

        yield update


def parse_date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2027-12-31") from None


def parse_money(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_yuan(value)
    except InvalidInput as e:
        raise click.BadParameter(e.message) from None


def selection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The ways to choose cards: --serial, --from/--to, or --batch [--box]."""
    for opt in reversed(
        [
            click.option("--serial", help="One card's serial."),
            click.option("--from", "first", help="First serial of a range."),
            click.option("--to", "last", help="Last serial of a range."),
            click.option("--batch", "batch_no", help="A whole batch (or one box of it with --box)."),
            click.option("--box", "box_no", type=int, help="Box number within --batch."),
            click.option("--skip-voided", is_flag=True, help="Leave voided cards in the selection out instead of refusing."),
        ]
    ):
        f = opt(f)
    return f


def make_selection(serial: str | None, first: str | None, last: str | None, batch_no: str | None, box_no: int | None, skip_voided: bool = False) -> Selection:
    if serial:
        if first or last or batch_no or box_no is not None:
            raise click.UsageError("--serial cannot be combined with --from/--to/--batch/--box")
        return Selection(first_serial=serial, last_serial=serial, skip_voided=skip_voided)
    if box_no is not None and not batch_no:
        raise click.UsageError("--box needs --batch")
    return Selection(batch_no=batch_no, box_no=box_no, first_serial=first, last_serial=last, skip_voided=skip_voided)


@click.group(cls=CardCLI, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "database_url", metavar="URL", help="SQLAlchemy URL of the card database [env CARDS_DATABASE_URL; default sqlite:///var/cards.db].")
@click.option("--key-dir", type=click.Path(path_type=Path), help="Key directory [env CARDS_KEY_DIR; default var/keys].")
@click.option("--marketing-db", "marketing_url", metavar="URL", help="SQLAlchemy URL of the marketing system's database [env CARDS_MARKETING_URL; default the stand-in sqlite:///var/marketing.db].")
@click.option("--operator", "-u", "operator_name", help="Operator name [env CARDS_OPERATOR]; the password is prompted (or CARDS_PASSWORD).")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, key_dir: Path | None, marketing_url: str | None, operator_name: str | None) -> None:
    """Recharge-card management: batches, factory files, stock, issuing, reports.

    \b
    A new installation:
      cli.py db upgrade
      cli.py init --admin alice --admin dave
    Then alice asks for a finance officer and dave approves:
      cli.py -u alice operator request add bob --role finance --reason "finance officer"
      cli.py -u dave operator request approve 1 --comment "identity checked"
      cli.py -u alice factory register F1 --public-key factory.pub.pem
      cli.py -u alice batch create B001 --face-value 50 --quantity 1000 \\
             --expiry 2028-12-31 --factory F1 --out B001.newcard

    Exit codes: 0 done, 1 refused, 2 usage error, 3 discrepancies found.
    """
    ctx.obj = App(Settings.load(database_url=database_url, key_dir=key_dir, marketing_url=marketing_url, operator=operator_name))
    ctx.call_on_close(lambda: ctx.obj._system and ctx.obj._system.close())


def main() -> None:
    """Run the command line as ``cli.py``."""
    cli(prog_name="cli.py")


# Each group registers its commands on ``cli`` when imported; they need the names above.
from cli import (  # noqa: E402, F401
    audit,
    batch,
    call,
    card,
    client,
    console,
    factory,
    ha,
    hall,
    install,
    lockout,
    marketing,
    operator,
    recharge,
    replay,
    report,
    request,
    reversal,
    sale,
    serve,
    settle,
    stock,
)
