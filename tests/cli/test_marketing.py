"""``cli.py marketing``: the mapping check, the stand-in, and the SMS notices (SQLite; the marketing side is its own file)."""

import json

from marketing_iface.mapping import STANDIN_MAPPING
from testkit.commandline import assert_ok, assert_one_line_error, invoke
from testkit.marketing import billing_mapping_file, create_billing


def test_check_mapping_of_the_standin(tmp_path):
    url = f"sqlite:///{tmp_path / 'marketing.db'}"
    env = {"CARDS_MARKETING_URL": url}
    assert "stand-in marketing database ready" in assert_ok(invoke("marketing", "standin", env=env))
    out = assert_ok(invoke("marketing", "check-mapping", env=env))
    assert out == f"{STANDIN_MAPPING} fits the marketing database (accounts accounts, interface recharge_interface, sms sms_outbox)\n"
    doc = json.loads(assert_ok(invoke("marketing", "check-mapping", "--json", env=env)))
    assert doc["ok"] is True and doc["problems"] == [] and doc["tables"]["interface"] == "recharge_interface"


def test_check_mapping_of_another_layout(tmp_path):
    url = f"sqlite:///{tmp_path / 'billing.db'}"
    create_billing(url)
    mapping = billing_mapping_file(tmp_path)
    env = {"CARDS_MARKETING_URL": url, "CARDS_MARKETING_MAPPING": str(mapping)}
    assert "fits the marketing database (accounts kh_yhda, interface jk_dfcz, sms dx_dfs)" in assert_ok(
        invoke("marketing", "check-mapping", env=env))
    # The stand-in's mapping does not fit it: one line, exit 1.
    assert_one_line_error(invoke("marketing", "check-mapping", env={"CARDS_MARKETING_URL": url}),
                          "standin-mapping.toml", "'accounts' is not in the marketing database (and 2 more)")
    doc = json.loads(invoke("marketing", "check-mapping", "--json", env={"CARDS_MARKETING_URL": url}).stdout)
    assert doc["ok"] is False and len(doc["problems"]) == 3


def test_a_bad_mapping_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[accounts\n")
    env = {"CARDS_MARKETING_URL": f"sqlite:///{tmp_path / 'm.db'}", "CARDS_MARKETING_MAPPING": str(bad)}
    assert_one_line_error(invoke("marketing", "check-mapping", env=env), "bad.toml: not a valid TOML file")
    assert_one_line_error(invoke("marketing", "check-mapping", env={**env, "CARDS_MARKETING_MAPPING": str(tmp_path / "no")}),
                          "cannot read the marketing mapping file")


def test_an_unreachable_marketing_database_is_one_line(tmp_path):
    env = {"CARDS_MARKETING_URL": "postgresql://postgres@127.0.0.1:1/marketing"}
    assert_one_line_error(invoke("marketing", "check-mapping", env=env), "marketing system unavailable")


def test_an_outdated_standin_says_to_recreate_it(tmp_path):
    import sqlite3

    path = tmp_path / "marketing.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts (account_no VARCHAR(10) PRIMARY KEY, holder_name VARCHAR(64), "
                     "address VARCHAR(200), balance BIGINT)")
    path.chmod(0o600)  # a database holding customers' names is owner-only, or refused
    env = {"CARDS_MARKETING_URL": f"sqlite:///{path}"}
    assert_one_line_error(invoke("marketing", "standin", env=env), "accounts has no phone", "--recreate")
    assert_ok(invoke("marketing", "standin", "--recreate", env=env))
    assert_ok(invoke("marketing", "check-mapping", env=env))


def test_drain_then_list_the_sms_notices(inst, tmp_path):
    import datetime as dt

    from cardmgmt.db import Database
    from testkit.marketing import Ledger

    url = f"sqlite:///{tmp_path / 'marketing.db'}"
    env = {"CARDS_MARKETING_URL": url}
    assert_ok(invoke("marketing", "standin", env=env))
    db = Database(inst.db)
    try:
        ledger = Ledger(db)
        at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        ledger.add("3100000001", 5000, at)
        ledger.add("3100000006", 5000, at)  # no phone
    finally:
        db.dispose()
    out = inst.ok("marketing", "drain", env=env)
    assert out == "posted 2, already there 0, failed 0, rejected 0\nSMS notices: sent 1, already there 0, failed 0, rejected 0\n"
    doc = json.loads(inst.ok("marketing", "sms", "--json", user="carol", env=env))
    assert doc["counts"] == {"pending": 0, "sent": 1, "skipped": 1, "rejected": 0}
    by_status = {n["status"]: n for n in doc["notices"]}
    assert by_status["sent"]["phone"] == "13803150001" and "张*明" in by_status["sent"]["text"]
    assert "张三明" not in json.dumps(doc, ensure_ascii=False)
    assert by_status["skipped"]["last_error"].startswith("no phone number")
    table = inst.ok("marketing", "sms", "--status", "skipped", user="carol", env=env)
    assert "3100000006" in table and "3100000001" not in table and "0 pending, 1 sent, 1 skipped, 0 rejected" in table
    assert "Example: cli.py -u carol marketing sms" in assert_ok(invoke("marketing", "sms", "--help"))
