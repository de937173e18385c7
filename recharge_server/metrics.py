"""What a recharge server counts, and its ``/metrics`` page in the Prometheus text format.

A handful of series, written out by hand rather than through a client
library: requests by endpoint and outcome, a request-latency histogram by
endpoint, background job runs by job and result, the outbox backlog (read
from the database when the page is scraped) and whether this server holds
the jobs lease.  Everything is touched only from the reactor thread.
"""

# test-case-name: tests.recharge_server.test_metrics

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Seconds.  The client gives a server half a second, so most of the detail is below that.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: int = 0
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.total += 1
        self.sum += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1


class Metrics:
    """The counters of one server process."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.latency: defaultdict[str, _Histogram] = defaultdict(_Histogram)
        self.job_runs: Counter[tuple[str, str]] = Counter()
        # The pin guard's last look (the leader's; None until it has looked) and its alerts.
        self.pin_guard: Any = None
        self.pin_guard_alerts = 0

    def observe(self, endpoint: str, outcome: str, seconds: float) -> None:
        """One answered request: its endpoint, its outcome (or error code) and how long it took."""
        self.requests[(endpoint, outcome)] += 1
        self.latency[endpoint].observe(max(0.0, seconds))

    def guard_seen(self, status: Any) -> bool:
        """Keep the pin guard's last look (a ``lockouts.GuardStatus``); true when it raised an alert."""
        self.pin_guard = status
        self.pin_guard_alerts += bool(status.alerted)
        return bool(status.alerted)

    def job_ran(self, job: str, ok: bool) -> None:
        self.job_runs[(job, "ok" if ok else "error")] += 1

    def render(self, *, leader: bool, backlog: Mapping[str, object] | None) -> str:
        """The whole exposition; ``backlog`` is ``outbox.backlog()``'s answer, or ``None`` if unknown."""
        out: list[str] = []

        def head(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        head("recharge_requests_total", "counter", "API requests answered, by endpoint and outcome or error.")
        for (endpoint, outcome), n in sorted(self.requests.items()):
            out.append(f"recharge_requests_total{_labels(endpoint=endpoint, outcome=outcome)} {n}")

        head("recharge_request_duration_seconds", "histogram", "Time from a request's arrival to its answer.")
        for endpoint, h in sorted(self.latency.items()):
            for bound, n in zip(BUCKETS, h.counts, strict=True):
                out.append(
                    f"recharge_request_duration_seconds_bucket{_labels(endpoint=endpoint, le=_number(bound))} {n}"
                )
            out.append(f"recharge_request_duration_seconds_bucket{_labels(endpoint=endpoint, le='+Inf')} {h.total}")
            out.append(f"recharge_request_duration_seconds_sum{_labels(endpoint=endpoint)} {_number(h.sum)}")
            out.append(f"recharge_request_duration_seconds_count{_labels(endpoint=endpoint)} {h.total}")

        head("recharge_job_runs_total", "counter", "Background job runs on this server, by job and result.")
        for (job, result), n in sorted(self.job_runs.items()):
            out.append(f"recharge_job_runs_total{_labels(job=job, result=result)} {n}")

        head("recharge_leader", "gauge", "1 if this server holds the jobs lease, else 0.")
        out.append(f"recharge_leader {1 if leader else 0}")

        head("recharge_outbox_backlog", "gauge", "Recharges waiting to be posted to the marketing system, by kind.")
        for kind, value in sorted((backlog or {}).items()):
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.append(f"recharge_outbox_backlog{_labels(kind=str(kind))} {_number(value)}")

        head("recharge_outbox_backlog_known", "gauge", "1 if the backlog could be read for this scrape, else 0.")
        out.append(f"recharge_outbox_backlog_known {0 if backlog is None else 1}")

        guard = self.pin_guard
        if guard is not None:  # only the leader looks
            head("recharge_wrong_pins_recent", "gauge", "Wrong PINs across the service in the guard window.")
            out.append(f"recharge_wrong_pins_recent {guard.recent}")
            head("recharge_wrong_pins_limit", "gauge", "The service-wide wrong-PIN budget of the guard window.")
            out.append(f"recharge_wrong_pins_limit {guard.limit}")
            head("recharge_pin_guard_tripped", "gauge", "1 while no PIN is tested for anyone (the guard is tripped).")
            out.append(f"recharge_pin_guard_tripped {1 if guard.tripped else 0}")
        head("recharge_pin_guard_alerts_total", "counter", "Pin-guard alerts written to the operation log by this server.")
        out.append(f"recharge_pin_guard_alerts_total {self.pin_guard_alerts}")
        return "\n".join(out) + "\n"
