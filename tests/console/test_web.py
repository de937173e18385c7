"""The console over real HTTPS, without a browser: sign-in, sessions, form tokens, headers, pages, actions, CSV.

Each test runs on SQLite and on PostgreSQL, against a console started on a
live reactor with the installation's own certificate, and a clock the test
moves for expiry.  Every refusal is checked to have changed nothing: the
requests and the operation log are compared before and after.
"""

import datetime as dt

from sqlalchemy import select, update

from cardmgmt import audit, issuing, operators
from cardmgmt.context import Permission
from cardmgmt.models import ConsoleSession, LogEntry
from console.i18n import text as i18n_text
from testkit.console import file_request
from testkit.install import PASSWORDS


def snapshot(bench):
    """The requests and the whole operation log: what a refused request must leave as it was."""
    with bench.system.db.transaction() as s:
        requests = [(r.id, r.status, r.decided_by) for r in issuing.listing(s)]
        log = [(e.seq, e.action, e.operator) for e in audit.entries(s, 10_000)]
    return requests, log


def newest_entry(bench) -> LogEntry:
    with bench.system.db.transaction() as s:
        e = audit.entries(s, 1)[0]
        s.expunge(e)
        return e


def signed_in(client_for, name):
    c = client_for()
    r = c.sign_in(name)
    assert r.status == 303, r.text
    assert r.header("location") == "/requests"
    return c


def assert_refused(r, status, *phrases):
    assert r.status == status, r.text
    assert 'id="error"' in r.text
    for phrase in phrases:
        assert phrase in r.text
    assert "Traceback" not in r.text


def test_every_answer_carries_the_security_headers(client_for):
    r = client_for().get("/signin")
    assert r.status == 200
    csp = r.header("content-security-policy")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert r.header("x-frame-options") == "DENY"
    assert r.header("x-content-type-options") == "nosniff"
    assert r.header("cache-control") == "no-store"
    assert "<script" not in r.text


def test_sign_in_sets_a_secure_session_cookie_and_shows_the_pages(client_for, console_bench):
    c = client_for()
    r = c.sign_in("bob")
    cookie = next(h for h in r.headers["set-cookie"] if h.startswith("__Host-console="))
    for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert flag.lower() in cookie.lower()
    token = c.cookies["__Host-console"]
    with console_bench.system.db.transaction() as s:
        stored = s.execute(select(ConsoleSession.token_hash, ConsoleSession.operator)).all()
    assert [op for _, op in stored] == ["bob"] and token not in stored[0][0]  # only the token's hash is kept
    page = c.get("/requests")
    assert page.status == 200 and "bob" in page.text and "领卡申请" in page.text
    entry = newest_entry(console_bench)
    assert (entry.operator, entry.action) == ("bob", "console.sign_in")
    assert PASSWORDS["bob"] not in entry.after


def test_english_is_chosen_by_query_and_remembered_by_cookie(client_for):
    c = signed_in(client_for, "carol")
    r = c.get("/stock?lang=en")
    assert "Stock by hall and state" in r.text and c.cookies["console-lang"] == "en"
    assert "Issue requests" in c.get("/requests").text
    assert "领卡申请" in c.get("/requests?lang=zh").text


def test_every_page_renders_for_every_role(client_for):
    for name in ("alice", "bob", "carol"):
        c = signed_in(client_for, name)
        for path in ("/requests", "/stock", "/halls", "/audit", "/health", "/requests?lang=en", "/halls?from=2026-01-01"):
            r = c.get(path)
            assert r.status == 200, (name, path, r.text)
            assert 'id="error"' not in r.text


def test_wrong_passwords_lock_the_operator_as_on_the_command_line(client_for, console_bench):
    c = client_for()
    for _ in range(operators.MAX_FAILURES):
        assert_refused(c.sign_in("bob", "wrong-password"), 401, "unknown name, wrong password or locked")
    r = c.sign_in("bob")  # the right password, but locked now
    assert_refused(r, 401, "unknown name, wrong password or locked")
    assert "__Host-console" not in c.cookies
    with console_bench.system.db.transaction() as s:
        entries = audit.entries(s, 50)
        assert [e.operator for e in entries if e.action == "operator.lock"] == ["bob"]
        assert "wrong-password" not in str([(e.object, e.before, e.after) for e in entries])


def test_finance_approves_and_rejects_and_the_log_names_them_as_the_cli_does(client_for, console_bench):
    first, second = file_request(console_bench), file_request(console_bench)
    c = signed_in(client_for, "bob")
    page = c.get("/requests")
    assert f'id="approve-{first}"' in page.text
    r = c.post("/requests/decide", {"csrf": page.csrf(), "id": str(first), "decision": "approve", "comment": "checked"})
    assert r.status == 303 and r.header("location") == f"/requests?done=approved&ref={first}"
    assert "已批准申请 " + str(first) in c.get(r.header("location")).text
    entry = newest_entry(console_bench)
    assert (entry.operator, entry.action, entry.object) == ("bob", "request.approve", f"issue request {first}")
    r = c.post("/requests/decide", {"csrf": page.csrf(), "id": str(second), "decision": "reject", "comment": "not now"})
    assert r.status == 303
    with console_bench.system.db.transaction() as s:
        assert [(r.status, r.decided_by, r.decision_comment) for r in issuing.listing(s)] == [
            ("approved", "bob", "checked"), ("rejected", "bob", "not now")]


def test_an_approval_twice_an_unknown_id_and_bad_fields_change_nothing(client_for, console_bench):
    rid = file_request(console_bench)
    c = signed_in(client_for, "bob")
    csrf = c.get("/requests").csrf()
    assert c.post("/requests/decide", {"csrf": csrf, "id": str(rid), "decision": "approve", "comment": "ok"}).status == 303
    before = snapshot(console_bench)
    cases = [
        ({"id": str(rid), "decision": "approve", "comment": "again"}, 409, "is approved, not pending"),
        ({"id": "999", "decision": "approve", "comment": "x"}, 404, "issue request 999 does not exist"),
        ({"id": "1; DROP TABLE", "decision": "approve", "comment": "x"}, 400, "must be a whole number"),
        ({"id": "", "decision": "approve", "comment": "x"}, 400, "no request id"),
        ({"id": str(rid), "decision": "delete", "comment": "x"}, 400, "approve or reject"),
    ]
    for fields, status, line in cases:
        assert_refused(c.post("/requests/decide", {"csrf": csrf, **fields}), status, line)
    assert snapshot(console_bench) == before


def test_a_form_without_or_with_a_forged_token_changes_nothing(client_for, console_bench):
    rid = file_request(console_bench)
    bob, other = signed_in(client_for, "bob"), signed_in(client_for, "bob")
    before = snapshot(console_bench)
    fields = {"id": str(rid), "decision": "approve", "comment": "forged"}
    assert_refused(bob.post("/requests/decide", fields), 403, "表单已过期")
    assert_refused(bob.post("/requests/decide", {**fields, "csrf": other.get("/requests").csrf()}), 403)
    assert_refused(bob.post("/requests/decide", {**fields, "csrf": "0" * 64}), 403)
    assert_refused(bob.post("/signout", {}), 403)
    assert snapshot(console_bench) == before
    # The sign-in form has its own token, bound to its own cookie.
    assert_refused(client_for().post("/signin", {"name": "bob", "password": PASSWORDS["bob"]}), 403)


def test_a_second_tab_after_sign_out_is_refused(client_for, console_bench):
    rid = file_request(console_bench)
    tab1 = signed_in(client_for, "bob")
    tab2 = tab1.clone()
    csrf = tab2.get("/requests").csrf()
    stolen = {"__Host-console": tab2.cookies["__Host-console"]}  # a copy of the cookie, kept past the sign-out
    r = tab1.post("/signout", {"csrf": tab1.get("/requests").csrf()})
    assert r.status == 303 and r.header("location") == "/signin?done=signed_out"
    assert "__Host-console" not in tab1.cookies
    assert newest_entry(console_bench).action == "console.sign_out"
    before = snapshot(console_bench)
    assert_refused(tab2.get("/requests"), 401, "has ended or expired")
    r = tab2.request("POST", "/requests/decide", {"csrf": csrf, "id": str(rid), "decision": "approve",
                                                  "comment": "after sign-out"}, cookies=stolen)
    assert_refused(r, 401, "has ended or expired")
    assert_refused(tab2.request("POST", "/signout", {"csrf": csrf}, cookies=stolen), 401)
    assert snapshot(console_bench) == before


def test_sessions_expire_when_idle_and_after_their_lifetime(client_for, clock):
    c = signed_in(client_for, "carol")
    for _ in range(3):  # activity keeps it alive
        clock.advance(dt.timedelta(minutes=10))
        assert c.get("/stock").status == 200
    clock.advance(dt.timedelta(minutes=16))
    assert_refused(c.get("/stock"), 401, "sign in again")
    c = signed_in(client_for, "carol")
    for _ in range(60):
        clock.advance(dt.timedelta(minutes=10))
        if c.get("/stock").status != 200:
            break
    assert clock.offset <= dt.timedelta(hours=8, minutes=50)
    assert_refused(c.get("/stock"), 401)


def test_a_tampered_cookie_is_refused(client_for):
    c = signed_in(client_for, "carol")
    token = c.cookies["__Host-console"]
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), "", "x" * 5000, "../../etc/passwd", "%00"):
        c.cookies["__Host-console"] = bad
        assert_refused(c.get("/stock"), 401, "sign in again")


def test_an_auditor_sees_but_cannot_act(client_for, console_bench):
    rid = file_request(console_bench)
    carol = signed_in(client_for, "carol")
    page = carol.get("/requests")
    assert f'id="approve-{rid}"' not in page.text and 'data-why="role"' in page.text
    before = snapshot(console_bench)
    r = carol.post("/requests/decide", {"csrf": page.csrf(), "id": str(rid), "decision": "approve", "comment": "x"})
    assert_refused(r, 403, "may not approve or reject issue requests")
    assert snapshot(console_bench) == before


def test_the_filer_sees_their_own_request_but_cannot_approve_it(client_for, console_bench):
    rid = file_request(console_bench, who="alice")
    alice = signed_in(client_for, "alice")
    page = alice.get("/requests")
    assert 'data-why="own"' in page.text and f'id="approve-{rid}"' not in page.text
    before = snapshot(console_bench)
    r = alice.post("/requests/decide", {"csrf": page.csrf(), "id": str(rid), "decision": "approve", "comment": "mine"})
    assert_refused(r, 403)
    assert snapshot(console_bench) == before
    dave = signed_in(client_for, "dave")  # another administrator: the role, not the person, is what is missing
    assert 'data-why="role"' in dave.get("/requests").text


def test_a_temporary_password_is_replaced_at_sign_in(client_for, console_bench):
    with console_bench.unit(Permission.MANAGE_OPERATORS) as ctx:
        operators.reset_password(ctx, "bob", "temporary-1")
    c = client_for()
    assert_refused(c.sign_in("bob", "temporary-1"), 400, "must choose a new password")
    assert_refused(c.sign_in("bob", "temporary-1", new_password="short"), 400, "at least 8")
    r = c.sign_in("bob", "temporary-1", new_password="bob-new-secret-2")
    assert r.status == 303
    with console_bench.system.db.transaction() as s:
        actions = [e.action for e in audit.entries(s, 2)]
    assert actions == ["console.sign_in", "operator.password"]


def test_a_disabled_operator_loses_their_session(client_for, console_bench):
    c = signed_in(client_for, "bob")
    with console_bench.unit(Permission.MANAGE_OPERATORS) as ctx:
        operators.disable(ctx, "bob")
    assert_refused(c.get("/requests"), 401)


def test_the_cards_by_state_are_report_stock_by_state(client_for, console_bench):
    from cardmgmt import reports

    rid = console_bench.approved_request(5)
    with console_bench.unit() as ctx:
        issuing.collect(ctx, rid)  # 5 cards issued to H01, 35 left in stock: two halls' rows, "(none)" and H01
    with console_bench.unit() as ctx:
        expected = {r["state"]: r["cards"] for r in reports.stock(ctx.session, "state")}
    rows = signed_in(client_for, "carol").get("/stock.csv?table=by_state&lang=en").body.decode("utf-8-sig").splitlines()[1:]
    shown = {state: int(n) for state, n in (line.split(",") for line in rows)}
    assert shown == {i18n_text("en", f"state.{s}"): n for s, n in expected.items()}


def test_every_table_downloads_as_csv(client_for, console_bench):
    rid = file_request(console_bench)
    c = signed_in(client_for, "carol")
    r = c.get("/requests.csv?table=pending")
    assert r.status == 200 and r.header("content-type").startswith("text/csv")
    assert r.header("content-disposition") == 'attachment; filename="requests-pending.csv"'
    lines = r.body.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("编号,面值（元）,数量,营业厅")
    assert lines[1].startswith(f"{rid},50.00,1,H01,alice,")
    for path in ("/requests.csv?table=history", "/stock.csv?table=by_hall", "/stock.csv?table=by_state",
                 "/halls.csv?table=halls", "/audit.csv?table=log", "/health.csv?table=servers",
                 "/health.csv?table=outbox", "/health.csv?table=lockouts", "/halls.csv"):
        assert c.get(path).status == 200, path
    assert_refused(c.get("/stock.csv?table=nothing"), 404)
    assert_refused(client_for().get("/stock.csv?table=by_hall"), 401)


def test_the_operation_log_is_paged_with_the_verdict_for_those_who_may_verify(client_for, console_bench):
    with console_bench.unit() as ctx:
        for i in range(60):
            ctx.log("test.entry", f"entry {i}")
    carol = signed_in(client_for, "carol")
    first = carol.get("/audit")
    assert 'id="verify"' in first.text and 'data-ok' not in first.text and first.text.count('data-col="seq"') == 50
    assert 'data-ok="yes"' in carol.get("/audit?verify=1").text
    older = first.text.split('id="older" href="', 1)[0]
    assert 'id="older"' in first.text
    seq = int(first.text.split('href="/audit?before=', 1)[1].split('"', 1)[0])
    second = carol.get(f"/audit?before={seq}")
    assert second.status == 200 and f'data-col="seq">{seq - 1}<' in second.text and older
    finance = signed_in(client_for, "bob").get("/audit?verify=1").text  # finance may read the log, not verify it
    assert 'data-ok="unknown"' in finance and 'id="verify"' not in finance
    assert_refused(carol.get("/audit?before=abc"), 400, "whole number")
    with console_bench.system.db.transaction() as s:
        s.execute(update(LogEntry).where(LogEntry.action == "test.entry", LogEntry.object == "entry 3").values(object="edited"))
    assert 'data-ok="no"' in carol.get("/audit?verify=1").text


def test_unknown_pages_methods_and_oversized_forms_get_one_line(client_for):
    c = signed_in(client_for, "bob")
    assert_refused(c.get("/nothing-here"), 404)
    assert_refused(c.get("/requests/decide"), 405)
    assert_refused(c.post("/requests/erase", {"csrf": "x"}), 405)
    assert_refused(c.post("/requests/decide", {"csrf": "x", "comment": "y" * 70_000}), 413)
    assert c.get("/").status == 303


def test_the_access_log_names_no_form_value_cookie_or_query(client_for):
    from twisted.logger import formatEvent, globalLogPublisher

    seen: list[str] = []

    def observe(event):
        seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        c = client_for()
        c.sign_in("bob", "my-wrong-password-XYZ")
        c.sign_in("bob")
        c.get("/halls?from=QUERYVALUE")
    finally:
        globalLogPublisher.removeObserver(observe)
    text = "\n".join(seen)
    assert "POST /signin 401" in text and "GET /halls 400" in text
    for secret in ("my-wrong-password-XYZ", PASSWORDS["bob"], "QUERYVALUE", c.cookies["__Host-console"]):
        assert secret not in text
