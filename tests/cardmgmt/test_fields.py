"""The field formats are the ones the domain's columns, serials, PINs and factory files use."""

import re

from cardmgmt import factory_sim, fields, pins, recharge, serials
from cardmgmt.models import Batch, Card, PinFailure, Quote, Recharge


def test_the_columns_are_as_wide_as_the_fields() -> None:
    for table in (Quote.__table__, Recharge.__table__, PinFailure.__table__):
        assert table.c.account_no.type.length == fields.ACCOUNT_DIGITS
        assert table.c.caller.type.length == fields.CALLER_MAX
    for column in (Card.__table__.c.serial, Batch.__table__.c.first_serial, Recharge.__table__.c.card_serial):
        assert column.type.length == fields.SERIAL_DIGITS
    for table in (Quote.__table__, Recharge.__table__):
        assert table.c.call_id.type.length == fields.CALL_ID_MAX


def test_the_longest_recharge_key_fits_its_columns() -> None:
    key = recharge.recharge_key("x" * fields.CALL_ID_MAX, fields.MAX_SEQ)
    assert len(key) == fields.RECHARGE_KEY_MAX
    for column in (Quote.__table__.c.key, Recharge.__table__.c.key, Card.__table__.c.hold_key):
        assert column.type.length >= fields.RECHARGE_KEY_MAX


def test_serials_pins_and_factory_rows_have_the_field_lengths() -> None:
    assert len(serials.make_serial(1)) == fields.SERIAL_DIGITS
    assert all(len(pin) == fields.PIN_DIGITS for pin in pins.generate(100))
    assert pins.is_well_formed("0" * fields.PIN_DIGITS) and not pins.is_well_formed("0" * (fields.PIN_DIGITS + 1))
    row = f"{serials.make_serial(1)},1,{'5' * fields.PIN_DIGITS}\n".encode()
    assert factory_sim._NEW_CARD_ROW.fullmatch(row)


def test_the_recharge_core_checks_the_field_formats() -> None:
    assert recharge.ACCOUNT.pattern == f"^{fields.ACCOUNT_PATTERN}$"
    assert recharge.check_account_no("1" * fields.ACCOUNT_DIGITS)
    assert re.fullmatch(fields.PIN_PATTERN, pins.generate(1)[0])
