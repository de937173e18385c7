"""The console's pages: one module each, registered in ``PAGES``, each with one template.

A page is a ``Page``: its address (``slug``), its title (a catalogue key),
the permission its view needs, its template, a ``view`` that reads what it
shows inside the request's unit of work and returns a ``View`` (tables,
charts, facts), and the ``actions`` it accepts by POST, each with the
permission its unit is opened with.  The web layer does the rest: the
session, the form token, the unit of work, the CSV of any table
(``/<slug>.csv?table=<name>``), errors as one line.

Adding a page is one module here that defines ``PAGE``, one template in ``console/templates``,
its texts in ``console/i18n.py``, and its line in ``PAGES`` below.
"""

# test-case-name: tests.console.test_web

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from cardmgmt.config import Settings
from cardmgmt.context import Context, Permission
from cardmgmt.errors import InvalidInput
from console.tables import Table

Form = Mapping[str, str]


@dataclass(frozen=True)
class Done:
    """What a successful action reports on the page it returns to: a catalogue key and the thing it acted on."""

    key: str
    ref: str = ""
    query: Mapping[str, str] = field(default_factory=dict)  # what the page returned to shows (a settlement's day)


@dataclass(frozen=True)
class Action:
    """A change a page offers: the permission its unit of work is opened with, and the service call."""

    permission: Permission
    run: Callable[[Context, Form], Done]


@dataclass
class View:
    """What a page shows: tables (each downloadable as CSV), charts, facts for its template, and CSV-only tables."""

    tables: list[Table] = field(default_factory=list)
    charts: list[Markup] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    downloads: list[Table] = field(default_factory=list)  # offered as CSV only, not shown on the page

    def table(self, name: str) -> Table | None:
        return next((t for t in [*self.tables, *self.downloads] if t.name == name), None)


@dataclass(frozen=True)
class Env:
    """What a view may need beyond its unit of work: the installation's settings, the time, the text catalogue."""

    settings: Settings
    now: dt.datetime
    t: Callable[[str], str]


@dataclass(frozen=True)
class Page:
    slug: str
    title: str  # catalogue key
    template: str
    view: Callable[[Context, Form, Env], View]
    permission: Permission = Permission.VIEW
    actions: Mapping[str, Action] = field(default_factory=dict)


def whole_number(form: Form, name: str, *, what: str, maximum: int = 10**15) -> int | None:
    """A field holding a whole number (an id, a sequence number), or None when absent; anything else is refused."""
    text = (form.get(name) or "").strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or int(text) > maximum:
        raise InvalidInput(f"{what} must be a whole number, not {text[:20]!r}")
    return int(text)


def date_field(form: Form, name: str) -> dt.date | None:
    text = (form.get(name) or "").strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text[:20]!r} is not a date like 2027-01-31") from None


from console.pages import audit, halls, health, reports, requests, reversals, settlement, stock  # noqa: E402

PAGES: tuple[Page, ...] = (requests.PAGE, reversals.PAGE, settlement.PAGE, stock.PAGE, halls.PAGE, reports.PAGE, audit.PAGE,
                           health.PAGE)
