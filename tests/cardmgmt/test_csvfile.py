"""The one CSV writer: every cell guarded against being read as a formula; numbers left alone."""

import csv
import io

import pytest

from cardmgmt import csvfile


@pytest.mark.parametrize(
    ("cell", "written"),
    [("=1+1", "'=1+1"), ("+86138", "'+86138"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("-1+1", "'-1+1"),
     ("-12.50", "-12.50"), ("50.00", "50.00"), ("张三", "张三"), ("", "")],
)
def test_a_cell_is_never_a_formula(cell: str, written: str) -> None:
    assert csvfile.safe(cell) == written


def test_rows_and_header_round_trip() -> None:
    out = io.StringIO()
    csvfile.write(out, ["hall", "amount"], [["H01, east", "50.00"], ["=cmd", "-0.01"]])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["hall", "amount"], ["H01, east", "50.00"], ["'=cmd", "-0.01"]]
