import pytest

from cardmgmt.errors import InvalidInput
from cardmgmt.money import format_fen, parse_yuan


@pytest.mark.parametrize(("text", "fen"), [("50", 5000), ("50.00", 5000), ("0.01", 1), ("100.5", 10050), (" 20 ", 2000)])
def test_parse(text, fen):
    assert parse_yuan(text) == fen and isinstance(parse_yuan(text), int)


@pytest.mark.parametrize("bad", ["", "abc", "12.345", "-5", "0", "nan", "inf", "1e400", "5e1", "1_000", "１２", "99999999999"])
def test_reject(bad):
    with pytest.raises(InvalidInput):
        parse_yuan(bad)


def test_format():
    assert format_fen(5000) == "50.00" and format_fen(1) == "0.01" and format_fen(-250) == "-2.50"
