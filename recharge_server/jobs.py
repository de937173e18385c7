"""The background jobs, run only by the server that holds the jobs lease, each in the thread pool.

Six jobs keep the recharge side tidy: the outbox drain posts committed
recharges, then approved reversals (冲正), to the marketing system (every
second), the SMS drain hands the notices of acknowledged postings to the SMS
platform (every second, when the marketing side has an SMS interface), lapsed
holds are expired
(every five seconds), request nonces older than ten minutes are forgotten
(every minute; a request that old fails its timestamp check anyway), the
business days that have ended are closed into their recharge totals for the
reports (every five minutes, ``reports.close_days``), and
the pin guard watches the service-wide wrong-PIN rate (every ten seconds),
alerting through the operation log and the metrics when it trips.  Each is idempotent, so the moment of a leadership change, when the
old leader may finish a run the new one also starts, does no harm.

A job's run never overlaps its previous one, is bounded in time, and a
failure is logged and counted without stopping the schedule.
"""

# test-case-name: tests.recharge_server.test_jobs

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from recharge_server.metrics import Metrics

log = Logger(namespace="recharge_server.jobs")

UTC = dt.UTC
NONCE_RETENTION = dt.timedelta(minutes=10)

RunBlocking = Callable[..., defer.Deferred[Any]]


@dataclass(frozen=True)
class Job:
    """A blocking piece of work, given the time it was started, run every ``interval`` seconds by the leader."""

    name: str
    interval: float
    work: Callable[[dt.datetime], object]
    timeout: float = 30.0


def standard_jobs(
    *, db: Any, recharge: Any, marketing: Any, prune_nonces: Callable[[dt.datetime], int],
    watch_guard: Callable[[dt.datetime], object] | None = None, journal: Any = None,
) -> list[Job]:
    """The recharge server's jobs: outbox and SMS drains, hold expiry, nonce pruning and (given) the pin guard.

    ``journal`` (an ``outbox.PostingLog``) is where reversals' posting
    outcomes are logged; without one only recharges are drained.
    """
    from cardmgmt import reports
    from cardmgmt.marketing import SmsPlatform
    from marketing_iface import outbox, sms
    from marketing_iface.drains import unit_of_work

    def close_days(now: dt.datetime) -> int:
        with unit_of_work(db) as session:
            return len(reports.close_days(session, now))

    def drain(now: dt.datetime) -> object:
        if journal is None:
            return outbox.drain(db, marketing, now)
        return outbox.drain_all(db, marketing, now, journal)

    jobs = [
        Job("outbox", 1.0, drain),
        *([Job("sms", 1.0, lambda now: sms.drain(db, marketing, now))] if isinstance(marketing, SmsPlatform) else []),
        Job("expire-holds", 5.0, lambda now: recharge.expire_holds()),
        Job("prune-nonces", 60.0, lambda now: prune_nonces(now - NONCE_RETENTION)),
        Job("close-days", 300.0, close_days),
    ]
    if watch_guard is not None:
        jobs.append(Job("pin-guard", 10.0, watch_guard))
    return jobs


def _worth_noting(result: object) -> bool:
    """Whether a job's result says it did something (then it is logged)."""
    if isinstance(result, bool):
        return result
    if isinstance(result, int):
        return result > 0
    if isinstance(result, Mapping):
        return any(_worth_noting(v) for v in result.values() if isinstance(v, int))
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return any(_worth_noting(v) for v in dataclasses.asdict(result).values() if isinstance(v, int))
    return False


class JobRunner(Service):
    """Runs each job on its own schedule, skipping every run while this server is not the leader."""

    def __init__(
        self,
        jobs: Sequence[Job],
        *,
        is_leader: Callable[[], bool],
        run_blocking: RunBlocking,
        reactor: IReactorTime,
        metrics: Metrics | None = None,
    ) -> None:
        self.jobs = list(jobs)
        self.is_leader = is_leader
        self.run_blocking = run_blocking
        self.reactor = reactor
        self.metrics = metrics or Metrics()
        self.loops: dict[str, LoopingCall] = {}
        self._done: list[defer.Deferred[Any]] = []
        self._in_pool: set[str] = set()

    def startService(self) -> None:
        super().startService()
        for job in self.jobs:
            loop = LoopingCall(self.run_once, job)
            loop.clock = self.reactor
            self.loops[job.name] = loop
            self._done.append(loop.start(job.interval, now=False))

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        for loop in self.loops.values():
            if loop.running:
                loop.stop()
        # Wait for runs in progress (each has its own time limit).
        done, self._done = self._done, []
        return defer.DeferredList(done)

    def run_once(self, job: Job) -> defer.Deferred[None] | None:
        """One run of ``job`` if this server leads and the job is not still running; never fails."""
        if not self.is_leader():
            return None
        if job.name in self._in_pool:
            log.warn("job {job}: the last run is still going; skipping one", job=job.name)
            return None
        self._in_pool.add(job.name)
        now = dt.datetime.fromtimestamp(self.reactor.seconds(), UTC)
        d = self.run_blocking(self._work, job, now)
        d.addTimeout(job.timeout, self.reactor)
        d.addCallbacks(self._ran, self._failed, callbackArgs=(job,), errbackArgs=(job,))
        return d

    def _work(self, job: Job, now: dt.datetime) -> object:
        try:
            return job.work(now)
        finally:
            self._in_pool.discard(job.name)

    def _ran(self, result: object, job: Job) -> None:
        self.metrics.job_ran(job.name, ok=True)
        # A run that did nothing (most of them) is only counted, not logged.
        if _worth_noting(result):
            log.info("job {job}: {result}", job=job.name, result=result)

    def _failed(self, failure: Failure, job: Job) -> None:
        self.metrics.job_ran(job.name, ok=False)
        if failure.check(defer.TimeoutError):
            log.warn("job {job}: timed out after {seconds}s", job=job.name, seconds=job.timeout)
        else:
            log.failure("job {job} failed", failure, job=job.name)
