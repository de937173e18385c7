"""The catalogue: every text a template or page names exists in both languages; the language is chosen as documented."""

import re
from pathlib import Path

from cardmgmt.states import CardState
from console import i18n
from console.pages import PAGES

ROOT = Path(__file__).resolve().parents[2] / "console"


def test_every_literal_key_in_templates_and_pages_is_in_the_catalogue():
    used: set[str] = set()
    for path in [*(ROOT / "templates").glob("*.html")]:
        used.update(re.findall(r"t\('([a-z_.]+)'\)", path.read_text()))
    for path in (ROOT / "pages").glob("*.py"):
        used.update(re.findall(r'"((?:col|page|chart|table|role|why_not|done|error|verdict|state|level|lockout)\.[a-z_]+)"',
                               path.read_text()))
    used.update(f"table.{name}" for name in ("pending", "history", "by_hall", "by_state", "halls", "log", "servers",
                                             "outbox", "lockouts", "recharges", "recharges_by_channel", "sales",
                                             "reversals", "stock_value", "reversals_pending", "reversals_decided",
                                             "settlement", "payments", "hourly", "recharges_by_month",
                                             "recharges_by_channel_by_month", "sales_by_month", "reversals_by_month"))
    used.update(("payment.payment", "payment.void"))
    used.update(f"why_not_reversal.{w}" for w in ("own", "role", "decided"))
    used.update(f"reversal.{s}" for s in ("pending", "approved", "rejected"))
    used.update(f"state.{s.value}" for s in CardState)
    used.update(p.title for p in PAGES)
    missing = sorted(k for k in used if k not in i18n.CATALOGUE)
    assert missing == []
    assert all(len(v) == 2 and all(v) for v in i18n.CATALOGUE.values())


def test_the_language_is_the_query_then_the_cookie_then_mandarin():
    assert i18n.pick("en", "zh") == "en"
    assert i18n.pick(None, "en") == "en"
    assert i18n.pick("fr", None) == "zh"
    assert i18n.text("en", "page.stock") == "Stock" and i18n.text("zh", "page.stock") == "库存"
    assert i18n.text("en", "no.such.key") == "no.such.key"
