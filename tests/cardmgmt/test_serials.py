import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardmgmt.errors import InvalidInput
from cardmgmt.serials import MAX_SEQUENCE, make_serial, parse_serial, runs


@given(st.integers(1, MAX_SEQUENCE))
def test_round_trip(seq):
    s = make_serial(seq)
    assert len(s) == 12 and parse_serial(s) == seq


@given(st.integers(1, MAX_SEQUENCE), st.integers(0, 11), st.integers(1, 9))
def test_any_single_digit_typo_is_caught(seq, pos, delta):
    s = make_serial(seq)
    wrong = s[:pos] + str((int(s[pos]) + delta) % 10) + s[pos + 1 :]
    with pytest.raises(InvalidInput, match="check digit"):
        parse_serial(wrong)


@pytest.mark.parametrize("bad", ["", "12345", "abcdefghijkl", "0000000000189", " 00000000001x"])
def test_malformed(bad):
    with pytest.raises(InvalidInput):
        parse_serial(bad)


def test_out_of_range():
    with pytest.raises(InvalidInput):
        make_serial(0)


def test_runs():
    serials = [make_serial(i) for i in (5, 1, 2, 3, 7, 8)]
    assert runs(serials) == [(make_serial(1), make_serial(3), 3), (make_serial(5), make_serial(5), 1), (make_serial(7), make_serial(8), 2)]
