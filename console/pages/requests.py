"""Issue requests (领卡申请): the pending ones with approve/reject and a comment, and the whole history.

Each pending request says whether the signed-in operator may decide it
(``cardmgmt.approvals``): finance sees the buttons, the filer sees their own
request marked as not theirs to decide, administrators and auditors see the
reason they cannot.  Deciding goes through ``issuing.decide``, the same call
as ``cli.py request approve|reject``, which checks it all again.
"""

# test-case-name: tests.console.test_web

from cardmgmt import approvals, issuing, reports
from cardmgmt.context import Context, Permission
from cardmgmt.errors import InvalidInput
from cardmgmt.states import RequestStatus
from console.pages import Action, Done, Env, Form, Page, View, whole_number
from console.tables import Column, Table

COLUMNS = [
    Column("id", "col.id"), Column("face_value", "col.face_value", money=True), Column("quantity", "col.quantity"),
    Column("hall", "col.hall"), Column("requested_by", "col.requested_by"), Column("requested_at", "col.requested_at"),
]
PENDING = [*COLUMNS, Column("reason", "col.reason")]
HISTORY = [*COLUMNS, Column("status", "col.status"), Column("decided_by", "col.decided_by"),
           Column("comment", "col.comment"), Column("collected_by", "col.collected_by")]


def view(ctx: Context, _query: Form, _env: Env) -> View:
    rows = reports.issue_history(ctx.session)
    reasons = {r.id: r.reason for r in issuing.listing(ctx.session, RequestStatus.PENDING.value)}
    pending = [{**r, "reason": reasons.get(r["id"], "")} for r in rows if r["status"] == RequestStatus.PENDING]
    why = [approvals.why_not(ctx.actor, r) for r in pending]
    return View(tables=[
        Table("pending", PENDING, pending, extra=[w.value if w else None for w in why]),
        Table("history", HISTORY, list(reversed(rows))),
    ])


def decide(ctx: Context, form: Form) -> Done:
    request_id = whole_number(form, "id", what="the request id")
    if request_id is None:
        raise InvalidInput("no request id was given")
    choice = form.get("decision", "")
    if choice not in ("approve", "reject"):
        raise InvalidInput("the decision must be approve or reject")
    issuing.decide(ctx, request_id, approve=choice == "approve", comment=form.get("comment", ""))
    return Done("approved" if choice == "approve" else "rejected", str(request_id))


PAGE = Page("requests", "page.requests", "requests.html", view,
            actions={"decide": Action(Permission.DECIDE_REQUESTS, decide)})
