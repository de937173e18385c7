"""What a page shows as a table, and the one CSV writer every table downloads through.

A ``Table`` holds the service's rows as they are (money in integer fen, the
same dicts the command line prints or emits as ``--json``) and the columns
to show, each with its catalogue text.  The page shows money in yuan
(``money.format_fen``) and so does the CSV: it is read by people in a
spreadsheet, and yuan text is exact, so no float ever carries an amount.

CSV goes through ``cardmgmt.csvfile``, the writer the command line's
``--csv`` uses too (it keeps a cell from being read as a formula).
"""

# test-case-name: tests.console.test_tables

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cardmgmt import csvfile
from cardmgmt.money import format_fen

Row = dict[str, Any]


@dataclass(frozen=True)
class Column:
    """One column: the row's key, its heading (a catalogue key) and whether it holds fen."""

    key: str
    heading: str
    money: bool = False


@dataclass
class Table:
    """Rows from a service and the columns to show; ``name`` picks it for ``/<page>.csv?table=<name>``."""

    name: str
    columns: Sequence[Column]
    rows: Sequence[Row]
    # What each row may carry besides its cells (a request's buttons), by the row's position.
    extra: list[Any] = field(default_factory=list)

    def cell(self, row: Row, column: Column) -> str:
        """A cell as shown and as written to CSV: fen as yuan, None as empty, booleans as yes/no words left to the page."""
        value = row.get(column.key)
        if value is None:
            return ""
        if column.money:
            return format_fen(int(value))
        return str(value)


def to_csv(table: Table, heading: Callable[[str], str]) -> bytes:
    """The table as CSV in UTF-8 with a byte-order mark (so spreadsheets read the Chinese), headings translated."""
    out = io.StringIO()
    csvfile.write(out, [heading(c.heading) for c in table.columns],
                  ([table.cell(row, c) for c in table.columns] for row in table.rows), lineterminator="\r\n")
    return ("\ufeff" + out.getvalue()).encode("utf-8")
