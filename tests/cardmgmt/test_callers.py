"""Caller numbers reduce to one form, so no spelling of a number is a fresh budget of wrong PINs."""

import pytest

from cardmgmt.callers import normalise
from cardmgmt.errors import InvalidInput


@pytest.mark.parametrize("presented", ["13900000001", "+8613900000001", "008613900000001", "8613900000001"])
def test_every_form_of_a_mobile_is_one_number(presented):
    assert normalise(presented) == "13900000001"


@pytest.mark.parametrize("presented", ["03151234567", "+863151234567", "00863151234567"])
def test_a_landline_with_or_without_trunk_zero_and_country_code(presented):
    assert normalise(presented) == "3151234567"


def test_foreign_numbers_keep_their_country_code():
    assert normalise("+85291234567") == "+85291234567"
    assert normalise("0085291234567") == "+85291234567"


def test_withheld_and_short_numbers():
    assert normalise("") == ""
    assert normalise("95598") == "95598"


@pytest.mark.parametrize("bad", ["abc", "1" * 33, "139 0000 0001", None, 13900000001])
def test_malformed_numbers_are_refused(bad):
    with pytest.raises(InvalidInput, match="caller must be"):
        normalise(bad)
