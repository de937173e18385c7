"""How the marketing database is laid out: its tables, columns and account numbers, read from a TOML file.

The card system is given read access to the marketing system's accounts and
the right to insert into two interface tables (recharges, and messages for
the SMS platform).  Their names, and how the marketing system writes an
account number, differ from one utility to the next; a mapping file says
them once, and ``SqlMarketing`` builds its statements from it.  The
stand-in's own layout is ``standin-mapping.toml`` beside this module, the
default.  The format (every key below is required unless marked optional;
any other key is refused)::

    [accounts]                  # read only
    table = "accounts"
    account_no = "account_no"
    holder_name = "holder_name"
    balance = "balance"         # fen; negative is arrears
    phone = "phone"             # optional: without it no SMS notice is ever sent

    [account_no]                # how the card system's 10-digit 户号 is stored there
    kind = "text"               # "text", or "integer" (stored as a number)
    prefix = ""                 # text only: put before the number, e.g. "00"
    width = 10                  # text only: total width, zero-padded on the left after the prefix

    [interface]                 # recharges and reversals are inserted here
    table = "recharge_interface"
    recharge_ref = "recharge_ref"   # unique
    account_no = "account_no"
    amount = "amount"           # fen; negative for a reversal
    card_serial = "card_serial"
    channel = "channel"
    recharged_at = "recharged_at"
    reverses = "reverses"       # the reversed posting's ref; unique (NULL for recharges)

    [sms]                       # optional: the SMS platform's interface table
    table = "sms_outbox"
    message_ref = "message_ref" # unique
    phone = "phone"
    text = "text"
    queued_at = "queued_at"

A malformed file, an unknown or missing key, or a value of the wrong type is
a ``MappingError`` with one line naming the file and the key, raised when the
mapping is read; whether the named tables and columns exist is probed against
the database by ``SqlMarketing.check`` (see there).
"""

# test-case-name: tests.marketing_iface.test_mapping

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardmgmt.fields import ACCOUNT_DIGITS
from cardmgmt.marketing import MappingError

STANDIN_MAPPING = Path(__file__).with_name("standin-mapping.toml")

ACCOUNT_COLUMNS = ("account_no", "holder_name", "balance")
INTERFACE_COLUMNS = ("recharge_ref", "account_no", "amount", "card_serial", "channel", "recharged_at", "reverses")
SMS_COLUMNS = ("message_ref", "phone", "text", "queued_at")


@dataclass(frozen=True)
class TableMap:
    """One table: its name there, and for each of our names the column's name there."""

    table: str
    columns: dict[str, str]


@dataclass(frozen=True)
class AccountFormat:
    """How a 10-digit account number is written in the marketing database, and read back."""

    kind: str = "text"  # "text" or "integer"
    prefix: str = ""
    width: int = ACCOUNT_DIGITS

    def to_marketing(self, account_no: str) -> str | int | None:
        """The marketing system's key for ``account_no``; ``None`` if it is not a 10-digit number (no such account)."""
        if not (isinstance(account_no, str) and len(account_no) == ACCOUNT_DIGITS and account_no.isascii()
                and account_no.isdigit()):
            return None
        if self.kind == "integer":
            return int(account_no)
        return self.prefix + account_no.rjust(self.width - len(self.prefix), "0")

    def from_marketing(self, value: object) -> str:
        """The card system's 10-digit account number for a key read from the marketing database."""
        if self.kind == "integer":
            return str(int(value)).rjust(ACCOUNT_DIGITS, "0")  # type: ignore[call-overload]
        text = str(value).strip()
        if self.prefix and text.startswith(self.prefix):
            text = text[len(self.prefix):]
        return text[-ACCOUNT_DIGITS:].rjust(ACCOUNT_DIGITS, "0")


@dataclass(frozen=True)
class Mapping:
    """The marketing database's layout as the card system uses it; ``load_mapping`` reads one."""

    source: str  # the file it came from, for messages
    accounts: TableMap
    account_format: AccountFormat
    interface: TableMap
    sms: TableMap | None
    phone_column: str | None  # the accounts table's phone column, if there is one


def _table(path: str, section: str, raw: Any, required: tuple[str, ...], optional: tuple[str, ...] = (),
           ) -> TableMap:
    if not isinstance(raw, dict):
        raise MappingError(f"{path}: [{section}] must be a table of names")
    known = {"table", *required, *optional}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MappingError(f"{path}: [{section}] has unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    for key in ("table", *required):
        if key not in raw:
            raise MappingError(f"{path}: [{section}] lacks {key!r}")
    for key, value in raw.items():
        if not isinstance(value, str) or not value.strip() or len(value) > 63:
            raise MappingError(f"{path}: [{section}] {key} must be a name of 1 to 63 characters")
    columns = {k: v for k, v in raw.items() if k != "table"}
    seen: dict[str, str] = {}
    for key, name in columns.items():
        if name in seen:
            raise MappingError(f"{path}: [{section}] names column {name!r} for both {seen[name]} and {key}")
        seen[name] = key
    return TableMap(raw["table"], columns)


def _account_format(path: str, raw: Any) -> AccountFormat:
    if not isinstance(raw, dict):
        raise MappingError(f"{path}: [account_no] must be a table")
    unknown = sorted(set(raw) - {"kind", "prefix", "width"})
    if unknown:
        raise MappingError(f"{path}: [account_no] has unknown key {unknown[0]!r} (known: kind, prefix, width)")
    kind = raw.get("kind", "text")
    if kind not in ("text", "integer"):
        raise MappingError(f"{path}: [account_no] kind must be \"text\" or \"integer\", not {kind!r}")
    prefix = raw.get("prefix", "")
    width = raw.get("width", ACCOUNT_DIGITS + len(prefix) if isinstance(prefix, str) else ACCOUNT_DIGITS)
    if kind == "integer" and ("prefix" in raw or "width" in raw):
        raise MappingError(f"{path}: [account_no] prefix and width are for kind = \"text\" only")
    if not isinstance(prefix, str) or not (prefix.isascii() and prefix.isdigit() or prefix == ""):
        raise MappingError(f"{path}: [account_no] prefix must be digits")
    if isinstance(width, bool) or not isinstance(width, int) or not ACCOUNT_DIGITS + len(prefix) <= width <= 32:
        raise MappingError(
            f"{path}: [account_no] width must be a whole number from {ACCOUNT_DIGITS + len(prefix)} to 32")
    return AccountFormat(kind, prefix, width)


def parse_mapping(data: dict[str, Any], source: str) -> Mapping:
    """A ``Mapping`` from the parsed TOML ``data``; ``MappingError`` naming ``source`` when it is not one."""
    unknown = sorted(set(data) - {"accounts", "account_no", "interface", "sms"})
    if unknown:
        raise MappingError(f"{source}: unknown section [{unknown[0]}] (known: accounts, account_no, interface, sms)")
    for section in ("accounts", "interface"):
        if section not in data:
            raise MappingError(f"{source}: lacks the [{section}] section")
    accounts = _table(source, "accounts", data["accounts"], ACCOUNT_COLUMNS, ("phone",))
    interface = _table(source, "interface", data["interface"], INTERFACE_COLUMNS)
    sms = _table(source, "sms", data["sms"], SMS_COLUMNS) if "sms" in data else None
    return Mapping(
        source=source,
        accounts=accounts,
        account_format=_account_format(source, data.get("account_no", {})),
        interface=interface,
        sms=sms,
        phone_column=accounts.columns.get("phone"),
    )


def load_mapping(path: str | Path | None = None) -> Mapping:
    """The mapping in the TOML file at ``path`` (the stand-in's when ``None``); ``MappingError`` in one line if bad."""
    file = Path(path) if path is not None else STANDIN_MAPPING
    try:
        with file.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise MappingError(f"{file}: cannot read the marketing mapping file ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise MappingError(f"{file}: not a valid TOML file ({e})") from None
    return parse_mapping(data, str(file))
