"""``batch``: ordering batches, and checking the factory's post-production file.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

import csv
import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path

from click.testing import Result

from cardmgmt import sealed_files
from cardmgmt.keys import load_private_key, load_public_key
from cardmgmt.serials import parse_serial
from testkit.commandline import (
    FAR_EXPIRY,
    Installation,
    Refusals,
    assert_ok,
    assert_one_line_error,
    invoke,
)


def test_batch_create_writes_the_new_card_file_and_lists_the_batch(inst: Installation) -> None:
    out = inst.workdir / "B1.newcard"
    stdout = inst.ok("batch", "create", "B1", "--face-value", "50", "--quantity", 30, "--box-size", 10,
                     "--expiry", FAR_EXPIRY, "--factory", "F1", "--out", out)
    m = re.fullmatch(r"batch B1: 30 cards of 50\.00 yuan, serials (\d{12})-(\d{12})\n"
                     r"new-card file (.+) \(sha256 ([0-9a-f]{64})\)\n", stdout)
    assert m, stdout
    assert m.group(3) == str(out)
    assert parse_serial(m.group(2)) - parse_serial(m.group(1)) == 29
    assert out.stat().st_mode & 0o077 == 0  # the PINs are in there: owner only
    assert out.read_bytes().startswith(sealed_files.MAGIC)

    row = inst.batch_row("B1")
    assert row["serials"] == f"{m.group(1)}-{m.group(2)}"
    assert (row["face_value"], row["quantity"], row["box_size"], row["expiry"]) == (5000, 30, 10, FAR_EXPIRY)
    assert (row["factory"], row["created_by"], row["ordered"], row["produced"]) == ("F1", "alice", 30, 0)
    table = inst.ok("batch", "list", user="bob").splitlines()
    assert table[0].split() == ["batch_no", "face_value", "quantity", "expiry", "ordered", "produced", "in_stock",
                                "issued", "redeemed", "voided", "frozen"]
    assert table[1].split() == ["B1", "50.00", "30", FAR_EXPIRY, "30", "0", "0", "0", "0", "0", "0"]
    (entry,) = inst.json("audit", "log", "--action", "batch.create")
    assert entry["after"]["new_card_digest"] == m.group(4)

    # A second batch follows on in the serial sequence.
    inst.create_batch("B2", 20, face_value="100.00")
    assert parse_serial(inst.serials("B2")[0]) == parse_serial(m.group(2)) + 1
    assert inst.batch_row("B2")["face_value"] == 10000



def test_batch_create_refuses_bad_orders_and_changes_nothing(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    before = inst.snapshot()
    existing = inst.workdir / "B1.newcard"
    content = existing.read_bytes()
    fresh = inst.workdir / "fresh.newcard"

    def create(batch_no: str = "B2", out: Path = fresh, **changes: str) -> Result:
        opts = {"face-value": "50", "quantity": "20", "expiry": FAR_EXPIRY, "factory": "F1", "out": str(out), **changes}
        return inst.run("batch", "create", batch_no, *[x for k, v in opts.items() for x in (f"--{k}", v)])

    r = Refusals()
    r.check("bad date", create(expiry="2027-02-30"), "is not a date", code=2)
    r.check("no cards", create(quantity="0"), "--quantity", code=2)
    r.check("zero yuan", create(**{"face-value": "0"}), "positive", code=2)
    r.check("existing file", create(out=existing), "already exists")
    r.check("existing batch", create(batch_no="B1"), "batch B1 already exists")
    r.check("unknown factory", create(factory="F9"), "factory 'F9' is not registered")
    r.check("bad batch number", create(batch_no="B 2"), "batch number")
    r.check("expiry today", create(expiry=dt.date.today().isoformat()), "is not in the future")
    r.check("no such directory", create(out=inst.workdir / "no-such-dir" / "B2.newcard"), "no-such-dir")
    assert existing.read_bytes() == content
    assert not fresh.exists()
    assert inst.snapshot() == before
    r.assert_all_clean()



def test_batch_check_of_a_clean_file_writes_empty_reports(inst: Installation) -> None:
    inst.create_batch("B1", 30)
    produced = inst.produce("B1")
    rj, rc = inst.workdir / "check.json", inst.workdir / "check.csv"
    stdout = inst.ok("batch", "check", "B1", produced, "--report-json", rj, "--report-csv", rc)
    assert stdout.startswith("batch B1: file verified (sha256 ")
    assert ["matched", "30"] in [line.split() for line in stdout.splitlines()]
    assert stdout.endswith("30 cards ready for intake; 0 damaged cards voided\n")
    doc = json.loads(rj.read_text())
    assert doc["batch_no"] == "B1" and len(doc["file_digest"]) == 64
    assert doc["counts"] == {"matched": 30, "missing": 0, "extra": 0, "duplicate": 0, "altered": 0, "damaged": 0}
    assert (doc["produced"], doc["voided"], doc["findings"]) == (30, 0, [])
    assert rc.read_text().splitlines() == ["serial,finding,detail"]
    row = inst.batch_row("B1")
    assert (row["ordered"], row["produced"]) == (0, 30)



def test_a_check_whose_report_cannot_be_written_changes_nothing(inst: Installation) -> None:
    """Exit 1 means nothing changed: a check must not be committed when its report file cannot be written.

    Otherwise the file counts as imported, the report is lost and a second
    run is refused as "already imported".
    """
    inst.create_batch("B1", 20)
    produced = inst.produce("B1")
    before = inst.snapshot()
    result = inst.run("batch", "check", "B1", produced, "--report-json", inst.workdir / "no-such-dir" / "check.json")
    assert_one_line_error(result, "check.json")
    assert inst.snapshot() == before, "the refused check was committed"
    inst.ok("batch", "check", "B1", produced)



def test_batch_check_with_faults_exits_3_and_reports_every_card(inst: Installation) -> None:
    inst.create_batch("B1", 30)
    out = inst.workdir / "B1.produced"
    sim = assert_ok(invoke("factory-sim", "produce", inst.workdir / "B1.newcard", "--out", out,
                           "--factory-key", inst.factory_keys / "factory.pem",
                           "--system-key", inst.key_dir / "system.pub.pem",
                           "--missing", 1, "--extra", 1, "--duplicate", 1, "--altered", 1, "--damaged", 2, "--seed", 7))
    assert sim.startswith("batch B1: read 30 cards, wrote 31 rows to ")  # 30 - 1 missing + 1 duplicate + 1 extra
    faulted = {k: v.split(", ") for k, v in re.findall(r"^  (\w+): (.+)$", sim, re.M)}
    assert {k: len(v) for k, v in faulted.items()} == {"missing": 1, "extra": 1, "duplicate": 1, "altered": 1, "damaged": 2}

    rj, rc = inst.workdir / "check.json", inst.workdir / "check.csv"
    stdout = inst.ok("batch", "check", "B1", out, "--report-json", rj, "--report-csv", rc, code=3)
    assert stdout.endswith("25 cards ready for intake; 2 damaged cards voided\n")
    doc = json.loads(rj.read_text())
    assert doc["counts"] == {"matched": 25, "missing": 1, "extra": 1, "duplicate": 1, "altered": 1, "damaged": 2}
    assert (doc["produced"], doc["voided"]) == (25, 2)
    by_kind: dict[str, list[str]] = {}
    for f in doc["findings"]:
        by_kind.setdefault(f["finding"], []).append(f["serial"])
    assert {k: sorted(v) for k, v in by_kind.items()} == {k: sorted(v) for k, v in faulted.items()}
    with rc.open(newline="") as f:
        assert list(csv.DictReader(f)) == doc["findings"]
    for f in doc["findings"]:
        assert f["serial"] in stdout  # the table lists every finding too

    row = inst.batch_row("B1")
    assert (row["ordered"], row["produced"], row["voided"]) == (3, 25, 2)
    assert inst.card(faulted["damaged"][0])["state"] == "voided"
    for kind in ("missing", "duplicate", "altered"):  # stay ordered until an administrator resolves them
        assert inst.card(faulted[kind][0])["state"] == "ordered"
    assert_one_line_error(inst.run("card", "show", faulted["extra"][0]), "does not exist")



def test_unknown_batch_is_refused(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    produced = inst.produce("B1")
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "check", "B9", produced), "batch 'B9' does not exist")
    assert_one_line_error(inst.run("stock", "intake", "--batch", "B9"), "batch 'B9' does not exist")
    assert_one_line_error(inst.run("card", "freeze", "--batch", "B9", "--reason", "x"), "batch 'B9' does not exist")
    assert_one_line_error(inst.run("stock", "count", "--batch", "B9", "--counted", 1), "batch 'B9' does not exist")
    assert inst.snapshot() == before
    inst.ok("batch", "check", "B1", produced)  # the file is still good for its own batch



def test_a_post_production_file_for_another_batch_is_rejected(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    inst.create_batch("B2", 20)
    produced_b2 = inst.produce("B2")
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "check", "B1", produced_b2), "is for batch 'B2', not B1", "nothing changed")
    assert inst.snapshot() == before
    inst.ok("batch", "check", "B2", produced_b2)  # not recorded as imported by the refused check
    assert inst.batch_row("B1")["ordered"] == 20



def test_a_file_signed_by_another_key_is_rejected(inst: Installation, other_factory_keys: Path) -> None:
    new_card = inst.create_batch("B1", 20)
    system_pub = load_public_key(inst.key_dir / "system.pub.pem")
    with sealed_files.open_sealed(new_card, kind="new-card", sender=system_pub,
                                  recipient=load_private_key(inst.factory_keys / "factory.pem")) as sealed:
        cards = [line.rstrip(b"\n").split(b",") for line in sealed.rows()]
        digest = sealed.digest
    # Exactly what the factory would return, but signed with a key that is not F1's.
    forged = inst.workdir / "B1-forged.produced"
    sealed_files.write_sealed(
        forged, kind="post-production",
        header={"batch_no": "B1", "face_value": 5000, "quantity": 20, "factory": "F1", "source_digest": digest},
        rows=(b"%s,%s,5000,%s,ok\n" % (serial, box, pin) for serial, box, pin in cards),
        recipient=system_pub, signer=load_private_key(other_factory_keys / "factory.pem"),
    )
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "check", "B1", forged), "B1-forged.produced is not signed by")
    assert inst.snapshot() == before

    # A whole post-production run by a factory holding the other key cannot even open the new-card file.
    result = invoke("factory-sim", "produce", new_card, "--out", inst.workdir / "x.produced",
                    "--factory-key", other_factory_keys / "factory.pem", "--system-key", inst.key_dir / "system.pub.pem")
    assert_one_line_error(result, "B1.newcard")
    assert not (inst.workdir / "x.produced").exists()



def test_garbage_empty_truncated_and_altered_files_are_rejected(inst: Installation) -> None:
    inst.create_batch("B1", 30)
    real = inst.produce("B1")
    data = real.read_bytes()
    middle = len(data) // 2
    bad_files = {
        "garbage": (os.urandom(4096), "is not a sealed card file"),
        "empty": (b"", "is empty"),
        "truncated": (data[:middle], "truncated"),
        "cut-in-header": (data[:20], "is truncated"),
        "bit-flipped": (data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:], "is damaged or truncated"),
    }
    before = inst.snapshot()
    r = Refusals()
    for name, (content, message) in bad_files.items():
        bad = inst.workdir / f"B1-{name}.produced"
        bad.write_bytes(content)
        r.check(name, inst.run("batch", "check", "B1", bad), f"B1-{name}.produced", message)
    assert inst.snapshot() == before
    r.assert_all_clean()
    inst.ok("batch", "check", "B1", real)  # the real file is still accepted
    assert inst.batch_row("B1")["produced"] == 30



def test_a_missing_post_production_file_is_rejected(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "check", "B1", inst.workdir / "nowhere.produced"), "does not exist")
    assert_one_line_error(inst.run("batch", "check", "B1", inst.workdir), "is a directory")
    assert inst.snapshot() == before



def test_the_same_file_cannot_be_imported_twice(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    produced = inst.produce("B1")
    inst.ok("batch", "check", "B1", produced)
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "check", "B1", produced), "was already imported", "nothing changed")
    copy = inst.workdir / "renamed.produced"
    shutil.copy(produced, copy)
    assert_one_line_error(inst.run("batch", "check", "B1", copy), "was already imported")
    assert inst.snapshot() == before



def test_a_second_file_for_a_checked_batch_needs_a_recheck_reason(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    inst.ok("batch", "check", "B1", inst.produce("B1"))
    resent = inst.produce("B1", "--extra", 60, out=inst.workdir / "B1-resent.produced")
    before = inst.snapshot()
    assert_one_line_error(inst.run("batch", "check", "B1", resent), "batch B1 was already checked with B1.produced",
                          "--recheck-reason", "nothing changed")
    assert_one_line_error(inst.run("batch", "check", "B1", resent, "--recheck-reason", " "), "recheck reason is empty")
    assert inst.snapshot() == before

    rj = inst.workdir / "recheck.json"
    stdout = inst.ok("batch", "check", "B1", resent, "--recheck-reason", "factory resent after damage",
                     "--report-json", rj, code=3)
    assert "checked again: factory resent after damage" in stdout
    assert "... 10 more (use --report-csv or --json)" in stdout  # 60 extra rows, 50 listed
    assert [f["finding"] for f in json.loads(rj.read_text())["findings"]] == ["extra"] * 60
    (entry, _) = inst.json("audit", "log", "--action", "batch.check")
    assert "factory resent after damage" in json.dumps(entry)


def test_batch_check_json_lists_every_finding(inst: Installation) -> None:
    inst.create_batch("B1", 20)
    doc = inst.json("batch", "check", "B1", inst.produce("B1", "--extra", 60, "--missing", 1), user="alice", code=3)
    assert doc["counts"]["extra"] == 60 and doc["counts"]["matched"] == 19
    assert sorted(f["finding"] for f in doc["findings"]) == ["extra"] * 60 + ["missing"]



def test_a_malformed_money_amount_is_a_usage_error(inst: Installation) -> None:
    inst.stocked_batch("B1", 20)
    before = inst.snapshot()
    out = inst.workdir / "B2.newcard"
    for amount in ("12.345", "abc", "-5", "0.001", "NaN", "Infinity", "1e400"):
        line = assert_one_line_error(
            inst.run("batch", "create", "B2", "--face-value", amount, "--quantity", 10, "--expiry", FAR_EXPIRY,
                     "--factory", "F1", "--out", out), "--face-value", code=2)
        assert amount in line
        assert_one_line_error(inst.run("request", "file", "--face-value", amount, "--quantity", 1, "--hall", "H01",
                                       "--reason", "x"), "--face-value", code=2)
    assert not out.exists()
    assert inst.snapshot() == before



def test_an_expiry_in_the_past_is_refused(inst: Installation) -> None:
    before = inst.snapshot()
    out = inst.workdir / "B1.newcard"
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    assert_one_line_error(inst.run("batch", "create", "B1", "--face-value", "50", "--quantity", 20, "--expiry", yesterday,
                                   "--factory", "F1", "--out", out), f"expiry {yesterday} is not in the future")
    assert not out.exists()
    assert inst.snapshot() == before

