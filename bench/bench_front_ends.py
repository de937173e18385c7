#!/usr/bin/env python
"""Benchmark: how soon new calls are answered again after one Asterisk front end dies behind the dispatcher.

The hotline is the e2e one with two Asterisks (the e2e root and a copy of
it) behind the Kamailio dispatcher (``Hotline.start_front_ends``), both
recharge servers and PostgreSQL.  Each run kills one Asterisk with SIGKILL
(the two in turn), then at once places two calls on the dispatcher, one
after the other in a few milliseconds: round robin sends one of them to the
dead front end.  Each call is answered and hangs up after the welcome
(the answer time is SIPp's 200 OK).  Measured from the kill:

- *first answer*: the earlier of the two answers, the first new call a
  caller gets through (a call sent to the live front end);
- *failover answer*: the later one, a call the dispatcher sent to the
  dead front end first, which it gives up on after its final-response
  timer (``testkit.dispatcher.FR_TIMER_MS``) and sends to the other;
- *(no kill)*: for comparison, a call placed with both alive, from
  placing it (SIPp's start included) to its answer;
- *probed down*: until ``dispatcher.list`` shows the dead one inactive
  (its OPTIONS probes, every ``PING_S`` s, go unanswered), after which no
  call is sent to it.

Then the killed Asterisk is started again and the run waits until the
dispatcher probes it live.  Goal: new calls answered within 3 s of an
Asterisk's death.

Run as root with PostgreSQL on 127.0.0.1:5432 (about 3 minutes)::

    .venv/bin/python bench/bench_front_ends.py --runs 10 --record
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib as bl

from testkit.factory import make_factory_keys
from testkit.hotline import Hotline
from testkit.sandbox import build_prompts, e2e_root

ANSWER_ONLY = """\
# Answered, then the caller hangs up after the welcome.
call 95598 from ${CALLER}
expect prompt=welcome
hangup
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--record", action="store_true", help="Append the figures to bench/RESULTS.md.")
    args = parser.parse_args()
    machine = bl.machine_summary(bl.PG_ADMIN_URL)
    workdir = Path(tempfile.mkdtemp(prefix="bench-front-ends-"))
    hotline = Hotline(workdir / "hotline", make_factory_keys(Path(tempfile.mkdtemp(prefix="factory-", dir=workdir))))
    (workdir / "hotline").mkdir(exist_ok=True)
    probe = workdir / "answer-only.call"
    probe.write_text(ANSWER_ONLY, encoding="utf-8")
    first, failover, down = [], [], []
    try:
        hotline.setup()
        hotline.start_servers()
        dispatcher = hotline.start_front_ends(e2e_root(os.environ), build_prompts(workdir / "prompts"))
        baseline = []
        for k in range(args.runs):  # both alive: from placing a call to its answer (SIPp's start included)
            placed = time.time()
            quiet = hotline.call(probe, {"CALLER": f"1376000{k:04d}"})
            assert quiet.passed and quiet.calls[0].answered, quiet.report()
            baseline.append(quiet.calls[0].answered - placed)
        with ThreadPoolExecutor(2) as pool:
            for run in range(args.runs):
                victim = hotline.sandboxes[run % 2]
                victim.kill()
                killed = time.time()
                calls = [pool.submit(hotline.call, probe, {"CALLER": f"1375{run:03d}{k:04d}"}) for k in range(2)]
                time.sleep(0.005)
                while len(dispatcher.live()) != 1 and time.time() - killed < 30:
                    time.sleep(0.05)
                down.append(time.time() - killed)
                results = [c.result() for c in calls]
                if not all(r.passed and r.calls and r.calls[0].answered for r in results):
                    raise SystemExit("a call after the kill was not answered:\n" + "\n".join(r.report() for r in results))
                answers = sorted(r.calls[0].answered - killed for r in results)
                first.append(answers[0])
                failover.append(answers[1])
                bl.log(f"run {run + 1}: killed front end {run % 2}; first answer {answers[0]:.2f} s, "
                       f"failover answer {answers[1]:.2f} s, probed down {down[-1]:.2f} s")
                victim.start()
                victim.start_fastagi()
                dispatcher.wait_live(2, timeout=30)
    finally:
        hotline.close()
    rows = [[name, f"{statistics.median(v):.2f}", f"{max(v):.2f}"]
            for name, v in (("first answer", first), ("failover answer", failover), ("probed down", down),
                            ("(no kill) answer, from placing the call", baseline))]
    table = bl.markdown_table(["from the kill to", "median s", "worst s"], rows)
    body = (f"{args.runs} runs, each killing one of two Asterisks (SIGKILL, in turn) behind Kamailio, then two "
            f"calls placed at once on the dispatcher (one goes to the dead one first).\n\n{table}")
    print(body)
    if args.record:
        bl.record("bench_front_ends: new calls after an Asterisk front end dies", " ".join(["python", *sys.argv]), body,
                  bl.PG_ADMIN_URL, machine)


if __name__ == "__main__":
    main()
