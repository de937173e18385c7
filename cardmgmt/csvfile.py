"""The one CSV writer: what the command line's ``--csv`` and the web console's downloads write through.

Cells arrive as text already (money as yuan with two decimals, from
``money.format_fen``; never a float).  A cell that a spreadsheet would take
for a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return) is written with a leading apostrophe, so a hall's name, a reason or a
log entry cannot run anything on the reader's machine; a negative amount
(``-12.50``) is a number, not a formula, and is left as it is.
"""

# test-case-name: tests.cardmgmt.test_csvfile

import csv
import re
from collections.abc import Iterable, Sequence
from typing import IO

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def safe(text: str) -> str:
    """``text`` as a spreadsheet will show it, never as a formula it would run."""
    return "'" + text if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text) else text


def write(out: IO[str], header: Sequence[str], rows: Iterable[Sequence[str]], *, lineterminator: str = "\n") -> None:
    """A header line, then one line per row, every cell guarded by ``safe``."""
    writer = csv.writer(out, lineterminator=lineterminator)
    writer.writerow([safe(h) for h in header])
    for row in rows:
        writer.writerow([safe(cell) for cell in row])
