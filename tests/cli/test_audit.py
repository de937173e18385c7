"""``audit``: the operation log and its verification.

Driven through click's CliRunner; the installation and the helpers are in ``tests/cli/conftest.py``.
"""

import re

from sqlalchemy import text

from cardmgmt.db import make_engine
from testkit.commandline import (
    Installation,
    assert_one_line_error,
)


def test_audit_log_and_verify(inst: Installation) -> None:
    inst.stocked_batch("B1", 20)
    entries = inst.json("audit", "log", "--limit", "10000")
    actions = [e["action"] for e in reversed(entries)]
    added = ["operator.request.add", "operator.add", "operator.password"]
    assert actions == ["install.init", "install.second_admin", *added, *added, "factory.register", "hall.add",
                       "batch.create", "batch.check", "card.intake"]
    assert [e["seq"] for e in entries] == list(range(len(entries), 0, -1))
    assert entries[-1]["operator"] == "alice"
    assert [e["action"] for e in inst.json("audit", "log", "--limit", 2)] == ["card.intake", "batch.check"]
    (check,) = inst.json("audit", "log", "--action", "batch.check")
    assert check["after"]["matched"] == 20
    table = inst.ok("audit", "log", user="bob").splitlines()
    assert table[0].split() == ["seq", "at", "operator", "action", "object", "before", "after"]
    assert len(table) == 1 + len(entries)

    stdout = inst.ok("audit", "verify", user="carol")
    assert re.fullmatch(rf"operation log intact: {len(entries)} entries, head {len(entries)}:[0-9a-f]{{16}}\n", stdout)
    assert inst.ok("audit", "verify", user="alice").startswith("operation log intact")
    assert_one_line_error(inst.run("audit", "verify", user="bob"), "may not verify the operation log")



def test_audit_verify_exits_3_when_the_log_was_tampered_with(inst: Installation) -> None:
    inst.stocked_batch("B1", 20)
    (intake,) = inst.json("audit", "log", "--action", "card.intake")
    engine = make_engine(inst.db)
    with engine.begin() as conn:
        conn.execute(text("UPDATE operation_log SET operator = 'mallory' WHERE seq = :seq"), {"seq": intake["seq"]})
    engine.dispose()
    stdout = inst.ok("audit", "verify", user="carol", code=3)
    assert stdout == f"TAMPERED: entry {intake['seq']} (card.intake) has been altered\n"

