"""A business day's settlement by hall (``reports.settlement``, as ``cli.py report settlement``) and its payments.

Finance records what a hall paid in for the day (``settlement.record_payment``:
the amount as yuan text through ``money.parse_yuan``, the bank slip's
reference) and voids a mistaken payment with a reason
(``settlement.void_payment``), the same calls as ``cli.py settle pay|void``.
Administrators and auditors see the same figures without the forms; a form
they send anyway is refused by the service's own permission check.  A bad
amount, a slip already recorded, a second void: one line on the page,
nothing changed.
"""

# test-case-name: tests.console.test_money_pages

from cardmgmt import approvals, halls, reports, settlement
from cardmgmt.context import Context, Permission
from cardmgmt.days import business_day
from cardmgmt.errors import InvalidInput
from cardmgmt.models import HallLevel, PaymentKind
from console.pages import Action, Done, Env, Form, Page, View, date_field, whole_number
from console.tables import Column, Table

SETTLEMENT = [Column("hall", "col.hall"), Column("opening", "col.opening", money=True),
              Column("cards", "col.cards"), Column("owed", "col.owed", money=True),
              Column("paid", "col.paid", money=True), Column("balance", "col.balance", money=True)]
PAYMENTS = [Column("payment", "col.id"), Column("hall", "col.hall"), Column("kind", "col.kind"),
            Column("amount", "col.amount", money=True), Column("reference", "col.reference"),
            Column("voids", "col.voids"), Column("note", "col.note"), Column("recorded_by", "col.recorded_by"),
            Column("recorded_at", "col.at")]


def _day(form: Form, env: Env):  # type: ignore[no-untyped-def]
    return date_field(form, "day") or business_day(env.now)


def view(ctx: Context, query: Form, env: Env) -> View:
    day = _day(query, env)
    report = reports.settlement(ctx.session, reports.Period(day, day), "hall")
    paid = settlement.payments(ctx.session, day_from=day, day_to=day)
    voided = {r["voids"] for r in paid if r["kind"] == PaymentKind.VOID.value}
    may_pay = approvals.may(ctx.actor, Permission.RECORD_PAYMENTS)
    shown = [{**r, "kind": env.t(f"payment.{r['kind']}")} for r in paid]
    # A payment that stands (not a void, not voided) can be voided by those who record payments.
    voidable = [may_pay and r["kind"] == PaymentKind.PAYMENT.value and r["payment"] not in voided for r in paid]
    hall_codes = [h.code for h in halls.listing(ctx.session) if h.level is HallLevel.HALL]
    return View(
        tables=[Table("settlement", SETTLEMENT, report.rows), Table("payments", PAYMENTS, shown, extra=voidable)],
        facts={"day": day.isoformat(), "may_pay": may_pay, "halls": hall_codes, "total": report.total},
    )


def pay(ctx: Context, form: Form) -> Done:
    day = date_field(form, "day")
    if day is None:
        raise InvalidInput("no business day was given")
    payment = settlement.record_payment(ctx, form.get("hall", ""), day, form.get("amount", ""),
                                        form.get("reference", ""), note=form.get("note") or None)
    return Done("paid", str(payment.id), {"day": day.isoformat()})


def void(ctx: Context, form: Form) -> Done:
    payment_id = whole_number(form, "id", what="the payment id")
    if payment_id is None:
        raise InvalidInput("no payment id was given")
    voided = settlement.void_payment(ctx, payment_id, form.get("reason", ""))
    return Done("voided", str(payment_id), {"day": voided.day.isoformat()})


PAGE = Page("settlement", "page.settlement", "settlement.html", view,
            actions={"pay": Action(Permission.RECORD_PAYMENTS, pay), "void": Action(Permission.RECORD_PAYMENTS, void)})
