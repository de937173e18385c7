"""The per-call package's copy of the field formats is the domain's, and needs only the standard library."""

import ast
import re
from pathlib import Path

from cardmgmt import fields as domain
from ivr import fields


def _constants(module: object) -> dict[str, object]:
    return {name: value for name, value in vars(module).items() if name.isupper()}


def test_the_copy_equals_the_domain() -> None:
    assert _constants(fields) == _constants(domain)


def test_the_copy_imports_nothing() -> None:
    tree = ast.parse(Path(fields.__file__).read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_the_patterns_take_what_the_lengths_say() -> None:
    assert re.fullmatch(fields.ACCOUNT_PATTERN, "3" * fields.ACCOUNT_DIGITS)
    assert not re.fullmatch(fields.ACCOUNT_PATTERN, "3" * (fields.ACCOUNT_DIGITS + 1))
    assert re.fullmatch(fields.PIN_PATTERN, "7" * fields.PIN_DIGITS)
    assert not re.fullmatch(fields.PIN_PATTERN, "7" * (fields.PIN_DIGITS - 1))
    assert re.fullmatch(fields.PIN_ENTRY_PATTERN, "7" * fields.PIN_ENTRY_MAX)
    assert re.fullmatch(fields.CALL_ID_PATTERN, "1700000000.12-ab:c_d")
    assert not re.fullmatch(fields.CALL_ID_PATTERN, "x" * (fields.CALL_ID_MAX + 1))
    assert re.fullmatch(fields.CALLER_PATTERN, "") and re.fullmatch(fields.CALLER_PATTERN, "+8613800000000")
    assert not re.fullmatch(fields.CALLER_PATTERN, "1" * (fields.CALLER_MAX + 1))
