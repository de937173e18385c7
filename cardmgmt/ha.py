"""What the hot-standby pair of recharge servers says about itself: heartbeats and the jobs lease.

The servers (``recharge_server``) write a ``ServerHeartbeat`` row each every
second and keep one ``Lease`` row for whoever runs the background jobs.
This module only reads them, in the card database, so any front end can
show the pair's state (``cli.py ha status``) without loading the servers'
code.  The lease's own rules (taking, keeping, fencing) stay with the
servers in ``recharge_server/leadership.py``.
"""

# test-case-name: tests.recharge_server.test_leadership, tests.recharge_server.test_service

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cardmgmt.context import Context, Permission
from cardmgmt.days import as_utc
from cardmgmt.models import Lease, ServerHeartbeat

LEASE_NAME = "recharge-jobs"
STALE_AFTER = 5.0  # seconds without a heartbeat before a server counts as silent


@dataclass(frozen=True)
class LeaseState:
    """The lease row as it stands after an attempt to take or keep it."""

    holder: str
    token: int
    expires_at: dt.datetime


def read_lease(session: Session, lease_name: str = LEASE_NAME) -> LeaseState | None:
    row = session.execute(select(Lease).where(Lease.name == lease_name)).scalar_one_or_none()
    if row is None:
        return None
    return LeaseState(row.holder, row.token, as_utc(row.expires_at))


def servers(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    """Every recharge server that has ever beaten, with its last heartbeat and the jobs lease."""
    lease = read_lease(session, LEASE_NAME)
    rows = session.execute(select(ServerHeartbeat).order_by(ServerHeartbeat.name)).scalars().all()
    out = []
    for row in rows:
        last_seen = as_utc(row.last_seen)
        age = (now - last_seen).total_seconds()
        try:
            detail = json.loads(row.detail or "{}")
        except ValueError:
            detail = {}
        out.append(
            {
                "name": row.name,
                "address": row.address,
                "role": row.role,
                "started_at": as_utc(row.started_at).isoformat(timespec="seconds"),
                "last_seen": last_seen.isoformat(timespec="seconds"),
                "age_seconds": round(age, 1),
                "alive": row.role != "stopped" and age <= STALE_AFTER,
                "peer": detail.get("peer"),
                "lease_holder": lease.holder if lease else None,
                "lease_token": lease.token if lease else None,
                "lease_expires_at": lease.expires_at.isoformat(timespec="seconds") if lease else None,
                "lease_valid": bool(lease and lease.expires_at > now),
                "holds_lease": bool(lease and lease.holder == row.name and lease.expires_at > now),
            }
        )
    return out


def status(ctx: Context, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The pair's state for an operator: ``servers`` read in this unit of work."""
    ctx.require(Permission.VIEW)
    return servers(ctx.session, now or dt.datetime.now(dt.UTC))
