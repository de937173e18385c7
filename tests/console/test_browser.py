"""The console in a real browser: Debian's headless Chromium, driven by Selenium, one browser for the whole run.

The browser and the console (on a PostgreSQL installation of its own) are
started once (``browser_console`` in conftest); each test signs in as the
role it needs, files the requests it needs, and signs out.  A failed test
leaves a screenshot and the page's HTML under ``test-artifacts/console/``.
Forms the console would never send (no form token; an auditor's decision)
are built in the page with WebDriver's own script call, which the page's
content-security policy does not govern; the page itself runs no script.
"""

import datetime as dt
import json
import re

import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from cardmgmt import audit, issuing
from cardmgmt.days import day_bounds
from testkit.commandline import invoke
from testkit.console import file_request
from testkit.install import PASSWORDS
from testkit.marketing import Ledger


def go(bc, path):
    bc.driver.get(bc.url + path)


def _gone(old):
    """Whether the page ``old`` belonged to has been replaced.

    Chromium answers a question about a node of a page it has just left
    either as a stale element or, while the new page is being attached, with
    "Node with given id does not belong to the document"; both mean gone.
    """
    def check(_driver):
        try:
            old.is_enabled()
        except (StaleElementReferenceException, WebDriverException):
            return True
        return False
    return check


def submitting(bc, act):
    """Run ``act`` (a click that submits a form) and wait until the browser shows the answer's page."""
    old = bc.driver.find_element(By.TAG_NAME, "html")
    act()
    WebDriverWait(bc.driver, 10).until(_gone(old))


def click(bc, element_id):
    submitting(bc, bc.driver.find_element(By.ID, element_id).click)


def sign_in(bc, name):
    go(bc, "/signin")
    d = bc.driver
    d.find_element(By.ID, "name").send_keys(name)
    d.find_element(By.ID, "password").send_keys(PASSWORDS[name])
    click(bc, "signin")
    assert name in d.find_element(By.ID, "who").text


def sign_out(bc):
    click(bc, "signout")
    assert bc.driver.current_url.endswith("/signin?done=signed_out")


def message(bc):
    return bc.driver.find_element(By.ID, "error").text


def status_of(bc, rid):
    with bc.bench.system.db.transaction() as s:
        r = issuing.get(s, rid)
        return r.status, r.decided_by


def post_form(bc, action, fields):
    """Submit a form the page does not hold (as a forger would), from inside the page."""
    submitting(bc, lambda: bc.driver.execute_script(
        """const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
           for (const [k, v] of Object.entries(arguments[1])) {
             const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }
           document.body.appendChild(f); f.submit();""",
        action, fields))


@pytest.fixture(scope="module")
def ledger(browser_console):
    """Recharge records written straight into the browser's installation (one ledger: its serials are its own)."""
    return Ledger(browser_console.bench.system.db)


def chart_bars(bc, name):
    return {g.get_attribute("data-label"): int(g.get_attribute("data-value"))
            for g in bc.driver.find_elements(By.CSS_SELECTOR, f'svg[data-chart="{name}"] .bar')}


@pytest.fixture
def bc(browser_console):
    browser_console.driver.delete_all_cookies()
    yield browser_console
    browser_console.driver.delete_all_cookies()


def test_finance_approves_and_rejects_with_a_comment(bc):
    first, second = file_request(bc.bench), file_request(bc.bench)
    sign_in(bc, "bob")
    d = bc.driver
    d.find_element(By.ID, f"comment-{first}").send_keys("stock checked")
    click(bc, f"approve-{first}")
    assert f"已批准申请 {first}" in d.find_element(By.ID, "done").text
    d.find_element(By.ID, f"comment-{second}").send_keys("too many")
    click(bc, f"reject-{second}")
    assert f"已驳回申请 {second}" in d.find_element(By.ID, "done").text
    assert status_of(bc, first) == ("approved", "bob") and status_of(bc, second) == ("rejected", "bob")
    with bc.bench.system.db.transaction() as s:
        assert [(e.operator, e.action) for e in audit.entries(s, 2)] == [("bob", "request.reject"), ("bob", "request.approve")]
    sign_out(bc)


def test_every_page_in_both_languages_on_a_narrow_screen(bc):
    sign_in(bc, "carol")
    d = bc.driver
    d.set_window_size(390, 844)
    try:
        for path, marker in (("/requests", "t-pending"), ("/stock", "t-by_hall"), ("/halls", "t-halls"),
                             ("/reports", "t-recharges"), ("/audit", "t-log"), ("/health", "t-outbox")):
            go(bc, path)
            assert d.find_element(By.ID, marker).is_displayed()
            assert not d.find_elements(By.ID, "error")
            # Nothing wider than the screen but the tables' own cells: the page does not scroll sideways.
            assert d.execute_script("return document.documentElement.scrollWidth") <= 400
            if path == "/audit":
                click(bc, "verify")
                assert d.find_element(By.ID, "verdict").get_attribute("data-ok") == "yes"
        click(bc, "lang")
        assert d.find_element(By.TAG_NAME, "h1").text == "System health"
        go(bc, "/stock")
        assert d.find_element(By.TAG_NAME, "h1").text == "Stock"
        click(bc, "lang")
        assert d.find_element(By.TAG_NAME, "h1").text == "库存"
    finally:
        d.set_window_size(1200, 900)
    sign_out(bc)


def test_the_chart_agrees_with_the_table_to_the_fen(bc):
    sign_in(bc, "carol")
    go(bc, "/stock")
    d = bc.driver
    bars = {g.get_attribute("data-label"): int(g.get_attribute("data-value")) for g in d.find_elements(By.CSS_SELECTOR, "svg .bar")}
    rows = d.find_elements(By.CSS_SELECTOR, "#t-by_state tbody tr")
    table = {r.find_element(By.CSS_SELECTOR, '[data-col="state"]').get_attribute("textContent"):
             int(r.find_element(By.CSS_SELECTOR, '[data-col="cards"]').get_attribute("textContent")) for r in rows}
    assert bars == table and sum(bars.values()) == 200
    sign_out(bc)


def test_a_forged_form_without_the_token_changes_nothing(bc):
    rid = file_request(bc.bench)
    sign_in(bc, "bob")
    post_form(bc, "/requests/decide", {"id": str(rid), "decision": "approve", "comment": "forged"})
    assert "表单已过期或并非本控制台发出" in message(bc)
    assert status_of(bc, rid) == ("pending", None)
    go(bc, "/requests")
    sign_out(bc)


def test_a_second_tab_after_sign_out(bc):
    rid = file_request(bc.bench)
    sign_in(bc, "bob")
    d = bc.driver
    stolen = d.get_cookie("__Host-console")
    first = d.current_window_handle
    d.switch_to.new_window("tab")
    go(bc, "/requests")
    assert d.find_element(By.ID, f"approve-{rid}").is_displayed()
    d.switch_to.window(first)
    sign_out(bc)
    d.switch_to.window([h for h in d.window_handles if h != first][0])
    d.find_element(By.ID, f"comment-{rid}").send_keys("from the old tab")
    click(bc, f"approve-{rid}")
    assert "has ended or expired" in message(bc)
    assert d.find_element(By.ID, "signin").is_displayed()
    # The session's cookie, copied before the sign-out and put back: the session is over on the server too.
    d.add_cookie({k: stolen[k] for k in ("name", "value", "path", "secure", "httpOnly", "sameSite")})
    go(bc, "/requests")
    assert "has ended or expired" in message(bc)
    assert status_of(bc, rid) == ("pending", None)
    d.close()
    d.switch_to.window(first)


def test_the_filer_and_an_auditor_see_but_cannot_act(bc):
    rid = file_request(bc.bench, who="alice")
    for name, why, line in (("alice", "own", "may not approve"), ("carol", "role", "may not approve")):
        sign_in(bc, name)
        d = bc.driver
        row = d.find_element(By.CSS_SELECTOR, f'#t-pending tr[data-id="{rid}"]')
        assert row.find_element(By.CSS_SELECTOR, ".why-not").get_attribute("data-why") == why
        assert not d.find_elements(By.ID, f"approve-{rid}")
        token = d.find_element(By.CSS_SELECTOR, 'input[name="csrf"]').get_attribute("value")
        post_form(bc, "/requests/decide", {"csrf": token, "id": str(rid), "decision": "approve", "comment": "try"})
        assert "无权执行此操作" in message(bc) and line in message(bc)
        assert status_of(bc, rid) == ("pending", None)
        go(bc, "/requests")
        sign_out(bc)


def test_csv_links_name_the_table(bc):
    sign_in(bc, "carol")
    go(bc, "/halls")
    link = bc.driver.find_element(By.ID, "csv-halls").get_attribute("href")
    assert re.search(r"/halls\.csv\?table=halls$", link)
    sign_out(bc)


def test_the_recharges_chart_is_report_recharges_by_day_to_the_fen(bc, ledger):
    first, last = dt.date(2026, 5, 10), dt.date(2026, 5, 12)
    for day, amounts in ((first, (5000, 1234)), (last, (99999, 1))):
        start = day_bounds(day)[0]
        for i, fen in enumerate(amounts):
            ledger.add(f"31000000{i:02d}", fen, start + dt.timedelta(hours=3 + i), channel=("hotline", "pos")[i])
    sign_in(bc, "carol")
    go(bc, "/reports")
    d = bc.driver
    d.find_element(By.ID, "from").send_keys(first.strftime("%m%d%Y"))
    d.find_element(By.ID, "to").send_keys(last.strftime("%m%d%Y"))
    click(bc, "show")
    assert f"from={first}" in d.current_url and not d.find_elements(By.ID, "error")
    settings = bc.bench.system.settings
    cli = invoke("--db", settings.database_url, "--key-dir", settings.key_dir, "-u", "carol", "report", "recharges",
                 "--by", "day", "--from", first, "--to", last, "--json", env={"CARDS_PASSWORD": PASSWORDS["carol"]})
    assert cli.exit_code == 0, cli.output
    expected = {r["day"]: r["amount"] for r in json.loads(cli.stdout)["rows"]}
    assert expected == {"2026-05-10": 6234, "2026-05-12": 100000}
    assert chart_bars(bc, "recharges") == expected
    assert chart_bars(bc, "recharges-pos") == {"2026-05-10": 1234, "2026-05-12": 1}
    sign_out(bc)


def test_finance_approves_a_reversal_the_filer_cannot(bc, ledger):
    from cardmgmt import reversals
    from cardmgmt.context import Permission
    from cardmgmt.states import PostStatus

    at = dt.datetime(2026, 5, 11, 2, tzinfo=dt.UTC)
    recharge = ledger.add("3100000099", 4200, at)
    ledger.update(recharge, post_status=PostStatus.POSTED, posted_at=at)
    with bc.bench.unit(Permission.MANAGE_CARDS) as ctx:
        rid = reversals.file(ctx, ledger.get(recharge).ref, "wrong account keyed").id
    sign_in(bc, "alice")
    go(bc, "/reversals")
    d = bc.driver
    assert d.find_element(By.CSS_SELECTOR, f'#t-reversals_pending tr[data-id="{rid}"] .why-not').get_attribute("data-why") == "own"
    sign_out(bc)
    sign_in(bc, "bob")
    go(bc, "/reversals")
    d.find_element(By.ID, f"comment-{rid}").send_keys("recording heard")
    click(bc, f"approve-{rid}")
    assert f"已批准冲正 {rid}" in d.find_element(By.ID, "done").text
    post_form(bc, "/reversals/decide", {"csrf": d.find_element(By.CSS_SELECTOR, 'input[name="csrf"]').get_attribute("value"),
                                        "id": str(rid), "decision": "reject", "comment": "twice"})
    assert "is approved, not pending" in message(bc) and len(d.find_elements(By.ID, "error")) == 1
    with bc.bench.system.db.transaction() as s:
        rev = reversals.get(s, rid)
        assert (rev.status.value, rev.decided_by) == ("approved", "bob")
    go(bc, "/reversals")
    sign_out(bc)


def test_finance_records_a_payment_and_a_bad_amount_changes_nothing(bc):
    from cardmgmt import settlement

    def recorded():
        with bc.bench.system.db.transaction() as s:
            return [(p["hall"], p["amount"], p["reference"]) for p in settlement.payments(s, day_from=dt.date.fromisoformat(day),
                                                                                     day_to=dt.date.fromisoformat(day))]

    day = "2026-05-11"
    sign_in(bc, "bob")
    go(bc, f"/settlement?day={day}")
    d = bc.driver
    before = recorded()
    d.find_element(By.ID, "pay-amount").send_keys("12.345")
    d.find_element(By.ID, "pay-reference").send_keys("BR-SLIP-1")
    click(bc, "pay")
    assert "more than two decimal places" in message(bc) and recorded() == before
    assert d.find_element(By.ID, "day").get_attribute("value") == day
    d.find_element(By.ID, "pay-amount").send_keys("12.34")
    d.find_element(By.ID, "pay-reference").send_keys("BR-SLIP-1")
    click(bc, "pay")
    assert "已录入解款" in d.find_element(By.ID, "done").text and f"day={day}" in d.current_url
    assert recorded() == [*before, ("H01", 1234, "BR-SLIP-1")]
    paid = d.find_element(By.CSS_SELECTOR, '#t-settlement td[data-col="paid"]').text
    assert paid == "12.34"
    sign_out(bc)
    sign_in(bc, "carol")
    go(bc, f"/settlement?day={day}")
    assert not d.find_elements(By.ID, "pay-form") and not d.find_elements(By.CSS_SELECTOR, "#t-payments form")
    sign_out(bc)
