"""Tests for recharge_server.metrics: the Prometheus text exposition, written by hand."""

import re

from recharge_server.metrics import BUCKETS, Metrics

LINE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"\n]*"(,[a-z_]+="[^"\n]*")*\})? -?[0-9.e+Inf-]+$')


def test_requests_latency_jobs_leader_and_backlog() -> None:
    m = Metrics()
    m.observe("quote", "ok", 0.003)
    m.observe("quote", "ok", 0.3)
    m.observe("quote", "wrong_pin", 7.0)
    m.observe("commit", "replay", 0.001)
    m.job_ran("outbox", ok=True)
    m.job_ran("outbox", ok=False)
    text = m.render(leader=True, backlog={"pending": 4, "oldest_pending": None, "rejected": 1})
    lines = text.splitlines()
    assert text.endswith("\n")
    for line in lines:
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or LINE.match(line), line
    assert 'recharge_requests_total{endpoint="quote",outcome="ok"} 2' in lines
    assert 'recharge_requests_total{endpoint="commit",outcome="replay"} 1' in lines
    assert 'recharge_request_duration_seconds_bucket{endpoint="quote",le="0.005"} 1' in lines
    assert 'recharge_request_duration_seconds_bucket{endpoint="quote",le="0.5"} 2' in lines
    assert 'recharge_request_duration_seconds_bucket{endpoint="quote",le="+Inf"} 3' in lines
    assert 'recharge_request_duration_seconds_count{endpoint="quote"} 3' in lines
    assert 'recharge_request_duration_seconds_sum{endpoint="quote"} 7.303' in lines
    assert 'recharge_job_runs_total{job="outbox",result="error"} 1' in lines
    assert "recharge_leader 1" in lines
    assert 'recharge_outbox_backlog{kind="pending"} 4' in lines
    assert 'recharge_outbox_backlog{kind="rejected"} 1' in lines
    assert "recharge_outbox_backlog_known 1" in lines
    assert sum(1 for line in lines if line.startswith("recharge_request_duration_seconds_bucket{endpoint=\"quote\"")) == len(BUCKETS) + 1


def test_an_unknown_backlog_and_a_standby() -> None:
    text = Metrics().render(leader=False, backlog=None)
    assert "recharge_leader 0\n" in text
    assert "recharge_outbox_backlog_known 0\n" in text
    assert "recharge_outbox_backlog{" not in text


def test_label_values_are_escaped() -> None:
    text = Metrics()
    text.observe('we"ird\\\n', "ok", 0.1)
    assert 'endpoint="we\\"ird\\\\\\n"' in text.render(leader=False, backlog=None)


def test_the_pin_guard_figures_appear_once_the_leader_has_looked() -> None:
    from cardmgmt.lockouts import GuardStatus

    m = Metrics()
    assert "recharge_pin_guard_tripped" not in m.render(leader=False, backlog=None)
    assert m.guard_seen(GuardStatus(recent=120, limit=100, tripped=True, alerted=True)) is True
    assert m.guard_seen(GuardStatus(recent=130, limit=100, tripped=True, alerted=False)) is False
    page = m.render(leader=True, backlog=None)
    for line in ("recharge_wrong_pins_recent 130", "recharge_wrong_pins_limit 100", "recharge_pin_guard_tripped 1",
                 "recharge_pin_guard_alerts_total 1"):
        assert line in page.splitlines(), line
