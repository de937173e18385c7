"""Reversals (冲正) waiting for finance, with approve/reject and a comment, and the ones decided last.

Each pending reversal says whether the signed-in operator may decide it
(``reversals.why_not``, the rule ``reversals.decide`` itself applies): finance
sees the buttons, the administrator who filed it sees it marked as their
own, other roles see why they cannot.  Deciding is ``reversals.decide``, the
same call as ``cli.py reversal approve|reject``; an unknown id or a second
decision is one line on the page and nothing changed.
"""

# test-case-name: tests.console.test_money_pages

from cardmgmt import reversals
from cardmgmt.context import Context, Permission
from cardmgmt.errors import InvalidInput
from cardmgmt.states import ReversalStatus
from console.pages import Action, Done, Env, Form, Page, View, whole_number
from console.tables import Column, Table

RECENT = 50
PENDING = [Column("id", "col.id"), Column("original_ref", "col.recharge_ref"), Column("account_no", "col.account"),
           Column("channel", "col.channel"), Column("amount", "col.amount", money=True), Column("reason", "col.reason"),
           Column("filed_by", "col.filed_by"), Column("filed_at", "col.filed_at")]
DECIDED = [Column("id", "col.id"), Column("original_ref", "col.recharge_ref"), Column("account_no", "col.account"),
           Column("amount", "col.amount", money=True), Column("status", "col.status"),
           Column("decided_by", "col.decided_by"), Column("decided_at", "col.decided_at"),
           Column("comment", "col.comment"), Column("post_status", "col.post_status")]


def view(ctx: Context, _query: Form, env: Env) -> View:
    pending = [reversals.describe(r) for r in reversals.listing(ctx.session, ReversalStatus.PENDING)]
    why = [reversals.why_not(ctx.actor, r) for r in pending]
    decided = [{**d, "status": env.t(f"reversal.{d['status']}")}
               for d in map(reversals.describe, reversals.recent(ctx.session, RECENT))]
    return View(tables=[Table("reversals_pending", PENDING, pending, extra=[w.value if w else None for w in why]),
                        Table("reversals_decided", DECIDED, decided)])


def decide(ctx: Context, form: Form) -> Done:
    reversal_id = whole_number(form, "id", what="the reversal id")
    if reversal_id is None:
        raise InvalidInput("no reversal id was given")
    choice = form.get("decision", "")
    if choice not in ("approve", "reject"):
        raise InvalidInput("the decision must be approve or reject")
    reversals.decide(ctx, reversal_id, approve=choice == "approve", comment=form.get("comment", ""))
    return Done(f"reversal_{choice}d", str(reversal_id))


PAGE = Page("reversals", "page.reversals", "reversals.html", view,
            actions={"decide": Action(Permission.DECIDE_REQUESTS, decide)})
