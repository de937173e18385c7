"""Fixtures for the web console's tests: an installation, the console on a live reactor, HTTPS clients, one browser.

The HTTP-level tests get a fresh installation per test on SQLite and on
PostgreSQL and a console of their own, with a clock the test moves (session
expiry is tested without sleeping).  The browser tests share one headless
Chromium and one console for the whole run (``browser_console``), on a
PostgreSQL installation of their own; each test files the requests it needs.
"""

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cardmgmt.context import Role
from cardmgmt.system import CardSystem
from testkit import databases
from testkit.console import ConsoleClient, prepare, running_console
from testkit.install import PASSWORDS, settings_for
from testkit.keys import copy_key_dir
from testkit.lifecycle import Bench
from testkit.live_api import running_reactor


@dataclass
class MovableClock:
    """The console's ``now``: real time plus however far a test has moved it."""

    offset: dt.timedelta = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, delta: dt.timedelta) -> None:
        self.offset += delta


@pytest.fixture
def console_bench(bench: Bench) -> Bench:
    """An installation for the console: see ``testkit.console.prepare``."""
    prepare(bench)
    return bench


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def console_url(console_bench: Bench, live_reactor, clock: MovableClock) -> Iterator[str]:
    """The console's base URL, running over ``console_bench``'s installation with ``clock``."""
    settings = settings_for(console_bench.system.settings.database_url, console_bench.system.settings.key_dir, None)
    with running_console(settings, live_reactor, now=clock) as server:
        yield server.url


@pytest.fixture
def client_for(console_url: str, console_bench: Bench):  # type: ignore[no-untyped-def]
    """A new browser's worth of HTTPS requests (its own cookies), for any operator to sign in with."""
    ca = str(console_bench.system.settings.key_dir / "tls-ca.pem")
    return lambda: ConsoleClient(console_url, ca)


# -- the browser, once per run ------------------------------------------------------------------------------------


@dataclass
class BrowserConsole:
    """The shared browser, the console it talks to, and the installation behind it."""

    driver: object
    url: str
    bench: Bench
    artefacts: Path


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        # Never a skip: `make system-deps` installs Debian's chromium and chromium-driver.
        pytest.fail("chromium and chromedriver are not installed; run `make system-deps` (Debian: chromium, chromium-driver)",
                    pytrace=False)
    return browser, driver


@pytest.fixture(scope="session")
def browser_console(tmp_path_factory: pytest.TempPathFactory, master_keys: Path,
                    factory_key_files: tuple[Path, Path]) -> Iterator[BrowserConsole]:
    """One headless Chromium and one console over a PostgreSQL installation, for every browser test of the run."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = _chromium()
    work = tmp_path_factory.mktemp("browser")
    try:
        name = databases.create_database("console_browser")
    except databases.PostgresUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    url = databases.migrate(databases.pg_url(name))
    key_dir = copy_key_dir(master_keys, work / "keys")
    system = CardSystem(settings_for(url, key_dir, "alice"))
    system.initialise("alice", PASSWORDS["alice"])
    bench = Bench(system, work, factory_key_files)
    bench.add_operator("bob", Role.FINANCE)
    prepare(bench, cards=200)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900",
                f"--user-data-dir={work / 'chromium-profile'}"):
        options.add_argument(arg)
    # The console's certificate comes from the installation's own CA, which this throwaway profile does not know.
    options.accept_insecure_certs = True
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    artefacts = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
    try:
        with running_reactor() as reactor, running_console(settings_for(url, key_dir, None), reactor) as server:
            yield BrowserConsole(driver, server.url, bench, artefacts)
    finally:
        driver.quit()
        bench.close_others()
        system.close()
        databases.drop_database(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On a failed browser test, keep a screenshot and the page's HTML under test-artifacts/console/."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or "browser_console" not in getattr(item, "fixturenames", ()):
        return
    bc = item.funcargs.get("browser_console")  # type: ignore[attr-defined]
    if bc is None:
        return
    bc.artefacts.mkdir(parents=True, exist_ok=True)
    stem = bc.artefacts / item.name.replace("/", "_").replace("[", "_").replace("]", "")
    try:
        bc.driver.save_screenshot(str(stem.with_suffix(".png")))
        stem.with_suffix(".html").write_text(bc.driver.page_source, encoding="utf-8")
    except Exception as e:  # the browser itself may be what failed
        stem.with_suffix(".txt").write_text(f"no screenshot: {type(e).__name__}", encoding="utf-8")
