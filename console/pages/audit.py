"""The operation log, newest first, a page at a time, with ``audit verify``'s verdict for the roles that may verify.

The verdict is ``audit.verify_installation``, the very check ``cli.py audit
verify`` runs (the whole chain, the head record and this host's anchors).
It walks the whole log (about 25 µs an entry, bench/RESULTS.md), so it is
run when asked for (``?verify=1``, the page's button), not on every page of
the log.
"""

# test-case-name: tests.console.test_web

import json

from cardmgmt import approvals, audit
from cardmgmt.context import Context, Permission
from console.pages import Env, Form, Page, View, whole_number
from console.tables import Column, Table

PAGE_SIZE = 50
COLUMNS = [Column("seq", "col.seq"), Column("at", "col.at"), Column("operator", "col.operator"),
           Column("action", "col.action"), Column("object", "col.object"), Column("before", "col.before"),
           Column("after", "col.after")]


def _compact(text: str) -> str:
    return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":")) if text else ""


def view(ctx: Context, query: Form, env: Env) -> View:
    before = whole_number(query, "before", what="the entry number")
    found = audit.entries(ctx.session, PAGE_SIZE + 1, before=before)
    rows = [{"seq": e.seq, "at": e.at[:19], "operator": e.operator, "action": e.action, "object": e.object,
             "before": _compact(e.before), "after": _compact(e.after)} for e in found[:PAGE_SIZE]]
    older = rows[-1]["seq"] if len(found) > PAGE_SIZE else None
    verdict = None
    may_verify = approvals.may(ctx.actor, Permission.VERIFY_LOG)
    if may_verify and query.get("verify") == "1":
        result = audit.verify_installation(ctx.session, ctx.keys, env.settings.audit_anchor_file)
        verdict = {"ok": result.ok, "entries": result.entries, "head_seq": result.head_seq,
                   "head_hash": result.head_hash[:16], "problems": result.problems[:20]}
    return View(tables=[Table("log", COLUMNS, rows)], facts={"older": older, "before": before, "verdict": verdict, "may_verify": may_verify})


PAGE = Page("audit", "page.audit", "audit.html", view)
