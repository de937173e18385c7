"""The recharge servers' pair (``ha.status``), the outbox's backlog (``outbox.backlog``) and the wrong-PIN lockouts.

Over the last 24 hours, hour by hour (``reports.hourly``): the outbox's
backlog at each hour's end and the wrong PINs entered in each hour, as a
table and two charts drawn from its rows.
"""

# test-case-name: tests.console.test_web

from cardmgmt import ha, lockouts, reports
from cardmgmt.context import Context
from cardmgmt.recharge import Policy
from console.charts import Bar, bar_chart
from console.pages import Env, Form, Page, View
from console.tables import Column, Table
from marketing_iface import outbox

SERVERS = [Column("name", "col.server"), Column("address", "col.address"), Column("state", "col.role"),
           Column("age_seconds", "col.heartbeat_age"), Column("holds_lease", "col.holds_lease"),
           Column("lease_token", "col.lease_token")]
BACKLOG = [Column("pending", "col.outbox_pending"), Column("oldest_pending", "col.oldest_pending"),
           Column("rejected", "col.outbox_rejected")]
LOCKOUTS = [Column("kind", "col.kind"), Column("value", "col.value"), Column("failures", "col.failures"),
            Column("last_failure", "col.last_failure"), Column("lapses_at", "col.lapses_at")]
HOURLY = [Column("hour", "col.hour_end"), Column("backlog", "col.backlog"), Column("committed", "col.committed"),
          Column("posted", "col.posted_in_hour"), Column("wrong_pins", "col.wrong_pins")]


def _when(value: object) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value or "")


def view(ctx: Context, _query: Form, env: Env) -> View:
    servers = [{**r, "state": env.t(f"role.{r['role']}") if r["alive"] else env.t("role.down"),
                "holds_lease": env.t("yes") if r["holds_lease"] else ""} for r in ha.status(ctx, env.now)]
    backlog = dict(outbox.backlog(ctx.session))
    backlog["oldest_pending"] = _when(backlog["oldest_pending"])
    locked = [{**r, "kind": env.t(f"lockout.{r['kind']}"), "last_failure": _when(r["last_failure"]),
               "lapses_at": _when(r["lapses_at"])}
              for r in lockouts.active(ctx, Policy.from_settings(env.settings), env.now)]
    hours = reports.hourly(ctx.session, env.now)
    charts = [bar_chart(env.t(f"chart.{key}"), [Bar(r["hour"][5:16].replace("T", " "), r[key], str(r[key])) for r in hours],
                        key.replace("_", "-")) for key in ("backlog", "wrong_pins")]
    return View(tables=[Table("servers", SERVERS, servers), Table("outbox", BACKLOG, [backlog]),
                        Table("lockouts", LOCKOUTS, locked), Table("hourly", HOURLY, hours)], charts=charts,
                facts={"alive": sum(1 for r in servers if r["state"] != env.t("role.down"))})


PAGE = Page("health", "page.health", "health.html", view)
