"""The mapping file: how it is read, what it refuses, and the check of a database against it (SQLite and PostgreSQL)."""

import datetime as dt
from pathlib import Path

import pytest

from cardmgmt.marketing import MappingError, MarketingUnavailable, Posting
from marketing_iface.mapping import STANDIN_MAPPING, AccountFormat, load_mapping
from marketing_iface.sql import SqlMarketing
from marketing_iface.standin import create_standin
from testkit.databases import pg_database
from testkit.marketing import BILLING_MAPPING, billing_mapping_file, create_billing

AT = dt.datetime(2024, 3, 1, 2, 30, tzinfo=dt.UTC)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_standin_mapping_is_the_default():
    m = load_mapping()
    assert m.source == str(STANDIN_MAPPING)
    assert (m.accounts.table, m.interface.table, m.sms and m.sms.table) == ("accounts", "recharge_interface", "sms_outbox")
    assert m.phone_column == "phone"
    assert m.account_format == AccountFormat("text", "", 10)


def test_the_billing_mapping_reads(tmp_path):
    m = load_mapping(billing_mapping_file(tmp_path))
    assert m.interface.columns["reverses"] == "cz_yls"
    assert m.account_format.kind == "integer"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[accounts\ntable = 1", "not a valid TOML file"),
        (BILLING_MAPPING + "\n[extra]\n", "unknown section [extra]"),
        (BILLING_MAPPING.replace('balance = "zhye"', 'balance = "zhye"\nbalnce = "x"'), "unknown key 'balnce'"),
        (BILLING_MAPPING.replace('holder_name = "yhmc"\n', ""), "[accounts] lacks 'holder_name'"),
        (BILLING_MAPPING.replace('amount = "je"', "amount = 5"), "[interface] amount must be a name"),
        (BILLING_MAPPING.replace('kind = "integer"', 'kind = "float"'), "kind must be"),
        (BILLING_MAPPING.replace('kind = "integer"', 'kind = "integer"\nprefix = "00"'), "for kind = \"text\" only"),
        (BILLING_MAPPING.replace('kind = "integer"', 'kind = "text"\nprefix = "A"'), "prefix must be digits"),
        (BILLING_MAPPING.replace('kind = "integer"', 'kind = "text"\nprefix = "00"\nwidth = 11'), "width must be"),
        ("[accounts]\ntable = 'a'\n", "lacks the [interface] section"),
        (BILLING_MAPPING.replace('card_serial = "kh"', 'card_serial = "je"'), "names column 'je' for both amount and"),
    ],
    ids=lambda v: v[:20] if isinstance(v, str) else None,
)
def test_a_bad_mapping_file_is_one_line_naming_the_file(tmp_path, text, why):
    path = write(tmp_path, text)
    with pytest.raises(MappingError) as e:
        load_mapping(path)
    assert why in str(e.value) and str(path) in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(MappingError):
        SqlMarketing("sqlite://", mapping=path)


def test_a_missing_mapping_file_is_one_line(tmp_path):
    with pytest.raises(MappingError, match="cannot read the marketing mapping file"):
        load_mapping(tmp_path / "nowhere.toml")


@pytest.mark.parametrize(
    ("fmt", "ours", "theirs"),
    [
        (AccountFormat("text", "", 10), "3100000001", "3100000001"),
        (AccountFormat("text", "00", 12), "3100000001", "003100000001"),
        (AccountFormat("text", "", 12), "0100000001", "000100000001"),
        (AccountFormat("integer"), "0100000001", 100000001),
    ],
)
def test_account_numbers_go_there_and_back(fmt, ours, theirs):
    assert fmt.to_marketing(ours) == theirs
    assert fmt.from_marketing(theirs) == ours


@pytest.mark.parametrize("bad", ["", "310000000", "31000000011", "31000000O1", "３１００００００01", None])
def test_what_is_not_an_account_number_has_no_key(bad):
    for fmt in (AccountFormat(), AccountFormat("integer"), AccountFormat("text", "00", 12)):
        assert fmt.to_marketing(bad) is None  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'marketing.db'}"
    else:
        with pg_database("mapping_test") as url:
            yield url


def test_check_passes_on_the_schemas_the_mappings_describe(empty_url, tmp_path):
    create_standin(empty_url)
    with SqlMarketing(empty_url) as m:
        m.check()
        assert m.problems() == []
    create_billing(empty_url)  # beside the stand-in, in the same database
    with SqlMarketing(empty_url, mapping=billing_mapping_file(tmp_path)) as m:
        m.check()


def test_check_names_what_is_missing(empty_url, tmp_path):
    create_standin(empty_url)
    wrong = write(tmp_path, STANDIN_MAPPING.read_text(encoding="utf-8").replace('holder_name = "holder_name"',
                                                                                'holder_name = "hm"'))
    with SqlMarketing(empty_url, mapping=wrong) as m:
        with pytest.raises(MappingError) as e:
            m.check()
        assert str(e.value) == f"{wrong}: accounts table 'accounts' has no column 'hm' (for holder_name)"
        # In use, the same misfit is an outage: retried, nothing written.
        with pytest.raises(MarketingUnavailable, match="does not fit .*no column 'hm'"):
            m.lookup_account("3100000001")


def test_check_of_an_empty_database_names_every_table(empty_url):
    with SqlMarketing(empty_url) as m:
        assert m.problems() == [
            "accounts table 'accounts' is not in the marketing database",
            "interface table 'recharge_interface' is not in the marketing database",
            "sms table 'sms_outbox' is not in the marketing database",
        ]
        with pytest.raises(MappingError, match=r"'accounts' is not in the marketing database \(and 2 more\)"):
            m.check()


def test_a_reference_column_that_is_not_unique_is_refused(empty_url, tmp_path):
    create_standin(empty_url)
    swapped = STANDIN_MAPPING.read_text(encoding="utf-8").replace('recharge_ref = "recharge_ref"', 'recharge_ref = "X"')
    swapped = swapped.replace('channel = "channel"', 'channel = "recharge_ref"').replace('"X"', '"channel"')
    wrong = write(tmp_path, swapped)
    with SqlMarketing(empty_url, mapping=wrong) as m, pytest.raises(MappingError, match="'channel' .* must be unique"):
        m.check()


def test_a_mapping_without_a_phone_column_reads_no_phone(tmp_path):
    url = f"sqlite:///{tmp_path / 'marketing.db'}"
    create_standin(url)
    without = write(tmp_path, STANDIN_MAPPING.read_text(encoding="utf-8").replace('phone = "phone"                 #', "#"))
    with SqlMarketing(url, mapping=without) as m:
        assert m.mapping.phone_column is None
        [receipt] = m.post_recharges([Posting("R1", "3100000001", 5000, "900000000001", "hotline", AT)], receipts=True)
        assert receipt.phone is None and receipt.balance == 12_850 + 5000  # type: ignore[union-attr]


def test_the_unreachable_database_is_unavailable_not_a_mapping_error():
    with SqlMarketing("postgresql://postgres@127.0.0.1:1/marketing") as m, pytest.raises(MarketingUnavailable):
        m.check()
