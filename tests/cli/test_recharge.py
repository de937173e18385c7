"""``recharge find``, ``card show`` of a redeemed card and ``stock intakes``: customer service's look-ups.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
The recharges are made by the real recharge core against the stand-in marketing system.
"""

import datetime as dt

import pytest

from cardmgmt.keys import load_keyring
from marketing_iface.standin import create_standin
from testkit.commandline import Installation, Refusals, assert_one_line_error
from testkit.factory import read_pins
from testkit.recharges import recharge_cards

UTC = dt.UTC


@pytest.fixture
def recharged(inst: Installation):
    s = inst.stocked_batch("B1", 12)
    rid = inst.file_request(12)
    inst.ok("request", "approve", rid, "--comment", "ok", user="bob")
    inst.ok("request", "collect", rid)
    inst.ok("sale", "record", "--hall", "H01", "--from", s[0], "--to", s[5])
    pins = read_pins(inst.workdir / "B1.newcard", inst.factory_keys / "factory.pem", inst.key_dir / "system.pub.pem")
    marketing = f"sqlite:///{inst.workdir / 'marketing.db'}"
    create_standin(marketing)
    jobs = [
        (s[0], pins[s[0]], "3100000001", dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC), "hotline"),
        (s[1], pins[s[1]], "3100000002", dt.datetime(2026, 11, 23, 16, 30, tzinfo=UTC), "pos"),
        (s[2], pins[s[2]], "3100000001", dt.datetime(2026, 11, 24, 3, 0, tzinfo=UTC), "hotline"),
    ]
    made = recharge_cards(inst.db, marketing, load_keyring(inst.key_dir).pin_key, jobs)
    return inst, s, [m.ref for m in made]


def test_recharge_find(recharged) -> None:
    inst, s, refs = recharged
    rows = inst.json("recharge", "find")
    assert [r["ref"] for r in rows] == refs[::-1]
    assert rows[-1] == {"ref": refs[0], "at": "2026-11-23T10:00:00+08:00", "account": "31****0001", "amount": 5000,
                        "serial": s[0], "channel": "hotline", "post_status": "pending", "posted_at": ""}
    assert [r["ref"] for r in inst.json("recharge", "find", "--account", "3100000001")] == [refs[2], refs[0]]
    assert [r["ref"] for r in inst.json("recharge", "find", "--serial", s[1])] == [refs[1]]
    assert [r["ref"] for r in inst.json("recharge", "find", "--ref", refs[1])] == [refs[1]]
    assert [r["ref"] for r in inst.json("recharge", "find", "--day", "2026-11-24")] == [refs[2], refs[1]]
    assert [r["ref"] for r in inst.json("recharge", "find", "--day", "2026-11-24", "--channel", "hotline",
                                        "--account", "3100000001", "--limit", 5)] == [refs[2]]
    assert inst.json("recharge", "find", "--serial", s[7]) == []
    table = inst.ok("recharge", "find", "--account", "3100000001", user="carol").splitlines()
    assert table[0].split() == ["ref", "at", "account", "amount", "serial", "channel", "post_status"]
    assert table[1].split() == [refs[2], "2026-11-24T11:00:00+08:00", "31****0001", "50.00", s[2], "hotline", "pending"]
    assert "3100000001" not in "\n".join(table), "the account is only ever shown masked"
    assert inst.ok("recharge", "find", "--day", "2026-11-25", user="bob") == "(none)\n"


def test_bad_look_ups_are_one_line_and_change_nothing(recharged) -> None:
    inst, s, refs = recharged
    before = inst.snapshot()
    pin = "731904468215530927"
    r = Refusals()
    r.check("short serial", inst.run("recharge", "find", "--serial", "12345", user="carol"), "a serial is 12 digits")
    r.check("check digit", inst.run("recharge", "find", "--serial", s[0][:-1] + str((int(s[0][-1]) + 1) % 10),
                                    user="carol"), "wrong check digit")
    r.check("unknown serial", inst.run("card", "show", "999999999991", user="carol"), "does not exist")
    r.check("unknown serial find", inst.run("recharge", "find", "--serial", "999999999991", user="carol"),
            "card 999999999991 does not exist")
    r.check("bad ref", inst.run("recharge", "find", "--ref", "26112", user="carol"), "at least 14 digits")
    r.check("ref day", inst.run("recharge", "find", "--ref", "26133100000001", user="carol"), "does not start with a day")
    r.check("bad day", inst.run("recharge", "find", "--day", "2026-02-30", user="carol"), "not a day like")
    r.check("bad channel", inst.run("recharge", "find", "--channel", "fax", user="carol"), "not one of hotline")
    r.check("limit", inst.run("recharge", "find", "--limit", 0, user="carol"), "between 1 and 1000")
    for option in ("--account", "--serial", "--ref"):
        result = inst.run("recharge", "find", option, pin, user="carol")
        r.check(f"pin as {option}", result)
        assert pin not in result.output and pin[:10] not in result.output
    r.check("intake batch", inst.run("stock", "intakes", "--batch", "B9", user="carol"), "B9")
    r.check("intake day", inst.run("stock", "intakes", "--from", "tomorrow", user="carol"), "not a day")
    r.assert_all_clean()
    assert inst.snapshot() == before


def test_card_show_of_a_redeemed_card_has_its_recharge(recharged) -> None:
    inst, s, refs = recharged
    shown = inst.card(s[1])
    assert (shown["state"], shown["recharge_ref"], shown["recharged_at"], shown["account"], shown["channel"],
            shown["post_status"]) == ("redeemed", refs[1], "2026-11-24T00:30:00+08:00", "31****0002", "pos", "pending")
    lines = dict(line.split(None, 1) for line in inst.ok("card", "show", s[1], user="carol").splitlines()
                 if len(line.split(None, 1)) == 2)
    assert (lines["recharge_ref"], lines["account"], lines["face_value"]) == (refs[1], "31****0002", "50.00")


def test_stock_intakes(inst: Installation) -> None:
    s = inst.stocked_batch("B1", 25)
    inst.checked_batch("B2", 10)
    inst.ok("stock", "intake", "--batch", "B2", "--box", 1)
    rows = inst.json("stock", "intakes")
    assert [(r["batch_no"], r["box"], r["first_serial"], r["last_serial"], r["cards"], r["operator"]) for r in rows] == [
        ("B1", 1, s[0], s[9], 10, "alice"), ("B1", 2, s[10], s[19], 10, "alice"), ("B1", 3, s[20], s[24], 5, "alice"),
        ("B2", 1, inst.serials("B2")[0], inst.serials("B2")[9], 10, "alice")]
    assert [r["batch_no"] for r in inst.json("stock", "intakes", "--batch", "B2")] == ["B2"]
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    assert len(inst.json("stock", "intakes", "--from", today.isoformat(), "--to", today.isoformat())) == 4
    assert inst.json("stock", "intakes", "--to", (today - dt.timedelta(days=1)).isoformat()) == []
    table = inst.ok("stock", "intakes", "--batch", "B1", user="bob").splitlines()
    assert table[0].split() == ["id", "at", "batch_no", "face_value", "box", "first_serial", "last_serial", "cards",
                                "operator"]
    assert table[1].split()[2:] == ["B1", "50.00", "1", s[0], s[9], "10", "alice"]
    assert_one_line_error(inst.run("stock", "intakes", "--from", "2026-11-30", "--to", "2026-11-01"), "is after")
