"""``ha``: the hot-standby pair of recharge servers as the card database sees it."""

# test-case-name: tests.cli.test_root, tests.recharge_server.test_leadership

from cardmgmt import ha as pair
from cardmgmt.context import Permission
from cli import App, cli, emit, json_option, pass_app


@cli.group()
def ha() -> None:
    """The hot-standby pair of recharge servers."""


@ha.command("status")
@json_option
@pass_app
def ha_status(app: App, as_json: bool) -> None:
    """Each server's role, health and last heartbeat, and who holds the jobs lease.

    Example: cli.py -u carol ha status --json
    """
    with app.unit(Permission.VIEW) as ctx:
        rows = pair.status(ctx)
    if not as_json:
        rows = [{"server": r["name"], "address": r["address"], "alive": r["alive"], "role": r["role"] if r["alive"] else "down",
                 "last_heartbeat_s": r["age_seconds"], "sees_peer": (r.get("peer") or {}).get("reachable"),
                 "holds_jobs_lease": r["holds_lease"], "lease_token": r["lease_token"]} for r in rows]
    emit(rows, as_json)
