#!/usr/bin/env python
"""Benchmark: the phone hotline end to end - concurrent calls, calls per second, latency, and the AGI's start cost.

The hotline is the one the end-to-end tests build (``testkit.hotline.Hotline``): a card database and a stand-in marketing database on the
PostgreSQL server, cards issued through the card services, both recharge
servers as processes (``cli.py serve A/B``), and a real Asterisk 22 in the
e2e sandbox (``~/.cache/recharge-asterisk/root-e2e``) playing the real
prompt WAVs, its AGI running the dialog under the sandbox's own Python.
Callers are SIPp running ``tests/calls/recharge-quick.call`` (a caller who
knows the menu and keys each answer as soon as the question starts: one
card, Mandarin, about 20 s), each call with a card, caller number and
account of its own from an injection file, each sending its voice (sip-tester's
G.711 sample) after the answer as a phone does.

First one call alone gives the call's length D (about 18 s).  Then for each
level N (``--levels``, default 10, 25, 50, 100), two runs per AGI mode
(``--modes``, default both, side by side in one run: the dialplan's
``HOTLINE_AGI`` is switched between runs), every call of which is judged step
by step (``testkit.replay``); a level counts only if every call passed.  The
modes: ``fastagi``, the FastAGI service beside Asterisk (``ivr.fastagi``,
one long-lived process, a thread per call), and ``process``, a Python
process per call (``ivr.agi_main``).  The runs:

- *steady*: calls arrive at N per D seconds (``-r N -rp D``), so that N are
  in flight once the first have had time to end (``-l N`` caps it there),
  until 2N calls have been made: a busy hour at N lines;
- *burst*: N calls arrive within one second (``-r N``): everybody calls at
  once, after an outage or a radio announcement.

Measured from SIPp's own timestamps (its ``[timestamp]`` log lines and its
message trace, one clock with Asterisk's log):

- calls per second: the steady arrival rate, N / D, at the highest level
  at which every call passed, is the rate the hotline sustains;
- answer -> first prompt: the 200 OK to the INVITE until the first text
  (``prompt=welcome``) reached the caller, p50 and p99;
- last key -> result: the 200 to the PIN's ``#`` until ``result=quote-ok``
  arrived (the dialog's quote round trip through the failover client, a
  recharge server and PostgreSQL), and the 200 to the confirming ``1``
  until ``result=account-ok`` (the account look-up), p50 and p99;
- where Asterisk's own time goes, from its messages.log (one clock with
  SIPp's): the call entering the dialplan (``NoOp``, after the INVITE's
  channel set-up) until ``Answer()`` runs; ``Answer()`` until the next
  step; the steps before ``AGI()`` (language, hangup handler, the mode's
  ``GotoIf``); and ``AGI()`` starting until the first text reached the
  caller (the process's start, or the FastAGI connection, and the dialog's
  first commands).  Plus the caller's side: the 200 OK's arrival at SIPp
  after ``Answer()`` ran;
- CPU: Asterisk with its AGI children, both recharge servers, and the whole
  machine (other people's tests included), as cores busy during the level.

Before the levels, the cost of starting the AGI's Python is timed inside the
chroot (``python3 -c 'import ivr.agi_main'`` against ``python3 -c pass``),
and a probe call with ``agi set debug on`` gives "Launched AGI Script" to
the first AGI command (the probe keys no PIN, which the debug log would show).

Run as root with PostgreSQL on 127.0.0.1:5432 (about 25 minutes)::

    .venv/bin/python bench/bench_hotline.py                      # 10, 25, 50, 100 concurrent, FastAGI and process AGI
    .venv/bin/python bench/bench_hotline.py --modes fastagi --levels 100
    .venv/bin/python bench/bench_hotline.py --levels 10,25
    .venv/bin/python bench/bench_hotline.py --record             # append the results to bench/RESULTS.md

Targets: >= 100 concurrent calls with every call passing; the first prompt
within 300 ms of the answer at p99 (issue 12: with FastAGI, for 100 calls
arriving within one second).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import benchlib as bl

from marketing_iface.standin import SAMPLE_ACCOUNTS
from testkit.callscript import Injection
from testkit.factory import make_factory_keys
from testkit.hotline import Hotline
from testkit.replay import CallResult, ScriptResult
from testkit.sandbox import AGI_MODES, CHROOT_APP_DIR, CHROOT_ENV, CHROOT_PY_DIR, build_prompts, e2e_root

ROOT = bl.ROOT

SCRIPT = "recharge-quick"
PROBE = """\
# The AGI start probe: the welcome, one key, the account question, and the caller hangs up.
call 95598 from 13999999999
expect prompt=welcome
send 1
expect prompt=enter-account
hangup
"""
TARGET_CONCURRENT = 100
TARGET_FIRST_PROMPT_P99_MS = 300.0
ACCOUNTS = [a.account_no for a in SAMPLE_ACCOUNTS]
_ASTERISK_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\] \w+\[\d+\]\[(C-[0-9a-f]+)\] (.*)$")


# --- measuring ------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile by nearest rank (p99 of 20 values is the largest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def cpu_seconds(pid: int | None, children: bool = False) -> float:
    """A process's user+system CPU so far (with its reaped children's, if asked), from /proc."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def asterisk_epoch(local: str) -> float:
    day, _, fraction = local.partition(".")
    return time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + float("0." + fraction)


@dataclass
class ChannelTimes:
    """One call as Asterisk's messages.log saw it (epoch seconds)."""

    caller: str = ""
    dialplan: float | None = None  # Executing [95598@hotline:1] NoOp(: the channel is set up
    answer: float | None = None  # Executing ...Answer(
    after_answer: float | None = None  # the next dialplan step
    agi: float | None = None  # Executing ... AGI( (the mode's: agi:// or recharge.agi)
    launched: float | None = None  # res_agi: Launched AGI Script
    first_command: float | None = None  # AGI Rx << (with agi debug on)


def asterisk_calls(log: str) -> dict[str, ChannelTimes]:
    """Per Asterisk call (``C-...``), when it was answered, left Answer(), launched the AGI, and its first AGI command."""
    calls: dict[str, ChannelTimes] = {}
    for line in log.splitlines():
        m = _ASTERISK_LINE.match(line)
        if not m:
            continue
        at, cid, what = asterisk_epoch(m.group(1)), m.group(2), m.group(3)
        c = calls.setdefault(cid, ChannelTimes())
        if "Executing [95598@hotline:1] NoOp(" in what:
            found = re.search(r" from (\S+?)\"?\)", what)
            c.caller = found.group(1) if found else ""
            c.dialplan = at
        elif "@hotline:" in what and '] AGI("' in what:
            c.agi = at
        elif "] Answer(" in what:
            c.answer = at
        elif "Executing [95598@hotline:3]" in what:
            c.after_answer = at
        elif "Launched AGI Script" in what:
            c.launched = at
        elif "AGI Rx <<" in what and c.first_command is None:
            c.first_command = at
    return calls


@dataclass
class Level:
    mode: str  # steady or burst
    concurrent: int
    calls: int
    agi: str = "process"  # fastagi or process
    passed: int = 0
    answered: int = 0
    elapsed: float = 0.0
    first_prompt: list[float] = field(default_factory=list)
    quote: list[float] = field(default_factory=list)
    lookup: list[float] = field(default_factory=list)
    setup_wait: list[float] = field(default_factory=list)  # NoOp -> Answer() runs
    answer_wait: list[float] = field(default_factory=list)  # Answer() -> next step
    before_agi: list[float] = field(default_factory=list)  # next step -> AGI() runs
    agi_to_text: list[float] = field(default_factory=list)  # AGI() runs -> first text at the caller
    ok_at_caller: list[float] = field(default_factory=list)  # Answer() runs -> its 200 OK at the caller
    duration: list[float] = field(default_factory=list)
    cpu_asterisk: float = 0.0
    cpu_servers: float = 0.0
    cpu_machine: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def all_passed(self) -> bool:
        return self.passed == self.calls



def _after(call: CallResult, source_prefix: str, nth: int = 1) -> float | None:
    """ms after answer when the ``nth`` step whose source starts with ``source_prefix`` was done."""
    seen = 0
    for step in call.steps:
        if step.source.startswith(source_prefix):
            seen += 1
            if seen == nth:
                return step.at_ms
    return None


def measure(level: Level, result: ScriptResult, rows: tuple[tuple[str, ...], ...], ast_log: str) -> None:
    level.passed = sum(c.passed for c in result.calls)
    level.answered = len(result.calls)
    level.elapsed = result.run.elapsed if result.run else 0.0
    level.failures = [f"{c.call_id}: step {s.number} {s.source}: {s.detail}" for c, s in result.failures()][:5]
    for call in result.calls:
        if call.answered is None:
            continue
        done = [s.at_ms for s in call.steps if s.at_ms is not None]
        if done:
            level.duration.append(max(done) / 1000)
        first = call.text_at(r"prompt=welcome")
        if first is not None:
            level.first_prompt.append(first)
        pin_sent, quoted = _after(call, "send ${PIN}"), call.text_at(r"result=quote-ok")
        if pin_sent is not None and quoted is not None:
            level.quote.append(quoted - pin_sent)
        confirmed, found = _after(call, "send 1", 2), call.text_at(r"result=account-ok")
        if confirmed is not None and found is not None:
            level.lookup.append(found - confirmed)
    # Asterisk's view, joined to SIPp's by the caller number each call had (one injection row per call).
    by_caller = {}
    for call in result.calls:
        number = int(call.call_id.split("-", 1)[0])  # SIPp's call number; the calls take the rows in order
        by_caller[rows[(number - 1) % len(rows)][0]] = call
    for times in asterisk_calls(ast_log).values():
        if times.dialplan is not None and times.answer is not None:
            level.setup_wait.append((times.answer - times.dialplan) * 1000)
        if times.answer is not None and times.after_answer is not None:
            level.answer_wait.append((times.after_answer - times.answer) * 1000)
        if times.after_answer is not None and times.agi is not None:
            level.before_agi.append((times.agi - times.after_answer) * 1000)
        call = by_caller.get(times.caller)
        if call is None:
            continue
        if call.answered is not None and times.answer is not None:
            level.ok_at_caller.append((call.answered - times.answer) * 1000)
        if times.agi is not None and call.texts:
            level.agi_to_text.append((min(t.at for t in call.texts) - times.agi) * 1000)


def agi_import_cost(root: Path, runs: int) -> tuple[float, float]:
    """Median seconds for the chroot's ``python3 -c pass`` and ``python3 -c 'import ivr.agi_main'``."""
    env = {**CHROOT_ENV, "PYTHONPATH": f"{CHROOT_APP_DIR}:{CHROOT_PY_DIR}"}

    def once(code: str) -> float:
        started = time.perf_counter()
        subprocess.run(["chroot", str(root), "/usr/bin/env", f"PYTHONPATH={env['PYTHONPATH']}", "/usr/bin/python3",
                        "-c", code], env=CHROOT_ENV, check=True, capture_output=True)
        return time.perf_counter() - started

    once("import ivr.agi_main")  # warm the page cache
    bare = statistics.median(once("pass") for _ in range(runs))
    full = statistics.median(once("import ivr.agi_main") for _ in range(runs))
    return bare, full


# --- reporting ------------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def report(levels: list[Level], bare: float, full: float, probe: list[ChannelTimes], setup_s: float,
           call_length: float) -> str:
    def both(values: list[float]) -> str:
        return f"{ms(pct(values, 50))} / {ms(pct(values, 99))}"

    rows, asterisk_rows = [], []
    for lv in levels:
        rows.append([
            str(lv.concurrent), lv.mode, lv.agi, f"{lv.passed}/{lv.calls}",
            f"{lv.concurrent / call_length:.2f}" if lv.mode == "steady" else f"{lv.concurrent} in 1 s",
            f"{statistics.median(lv.duration):.1f}" if lv.duration else "n/a",
            both(lv.first_prompt), both(lv.lookup), both(lv.quote),
            f"{lv.cpu_asterisk:.2f}", f"{lv.cpu_servers:.2f}", f"{lv.cpu_machine:.2f}",
        ])
        asterisk_rows.append([str(lv.concurrent), lv.mode, lv.agi, both(lv.setup_wait), both(lv.answer_wait),
                              both(lv.ok_at_caller), both(lv.before_agi), both(lv.agi_to_text), both(lv.first_prompt)])
    table = bl.markdown_table(
        ["concurrent", "arrivals", "AGI", "calls passed", "arrival calls/s", "call s (p50)",
         "answer→first prompt ms p50/p99", "confirm→account-ok ms p50/p99", "PIN #→quote-ok ms p50/p99",
         "Asterisk+AGI cores", "servers cores", "machine cores"], rows)
    asterisk_table = bl.markdown_table(
        ["concurrent", "arrivals", "AGI", "dialplan start→Answer() ms", "Answer()→next step ms",
         "Answer()→200 OK at caller ms", "next step→AGI() ms", "AGI()→first text at caller ms",
         "(answer→first prompt ms)"], asterisk_rows)
    passed = {n for n in {lv.concurrent for lv in levels}
              if all(lv.all_passed for lv in levels if lv.concurrent == n) and
              {lv.mode for lv in levels if lv.concurrent == n} == {"steady", "burst"}}
    best = max(passed, default=0)
    rows = [[f">= {TARGET_CONCURRENT} concurrent calls, every call passing (steady and burst)",
             f"{best} concurrent", "PASS" if best >= TARGET_CONCURRENT else "FAIL"]]
    for agi in sorted({lv.agi for lv in levels}):
        for mode in ("steady", "burst"):
            top = [lv for lv in levels if lv.mode == mode and lv.agi == agi and lv.all_passed
                   and lv.concurrent <= TARGET_CONCURRENT]
            if top:
                worst = max(top, key=lambda lv: pct(lv.first_prompt, 99) or 0.0)
                p99 = pct(worst.first_prompt, 99)
                rows.append([f"first prompt <= {TARGET_FIRST_PROMPT_P99_MS:.0f} ms after answer, p99 ({mode}, {agi})",
                             f"{ms(p99)} ms (at {worst.concurrent} concurrent)",
                             "PASS" if p99 is not None and p99 <= TARGET_FIRST_PROMPT_P99_MS else "FAIL"])
    verdict = bl.markdown_table(["target", "measured", "result"], rows)
    probe_ms = [(t.first_command - t.launched) * 1000 for t in probe if t.launched and t.first_command]
    agi = ("AGI start, inside the chroot (under the sandbox's own python3): "
           f"`python3 -c pass` {bare * 1000:.0f} ms, `python3 -c 'import ivr.agi_main'` {full * 1000:.0f} ms "
           f"(medians); one call alone, \"Launched AGI Script\" → first AGI command "
           f"{', '.join(f'{v:.0f}' for v in probe_ms) or 'n/a'} ms.")
    failures = [f"- {lv.concurrent} concurrent, {lv.mode}: {f}" for lv in levels for f in lv.failures]
    return "\n\n".join(x for x in [
        table, verdict,
        "Where the first prompt's time goes (Asterisk's messages.log and SIPp, p50 / p99):\n\n" + asterisk_table,
        agi,
        f"One call alone lasts {call_length:.1f} s (D); steady arrivals are N calls per D. "
        f"Set-up (installation, cards, servers, Asterisk, prompts): {setup_s:.0f} s.",
        ("First failures:\n" + "\n".join(failures)) if failures else "",
    ] if x)


# --- running --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="10,25,50,100", help="concurrent calls per level (default %(default)s)")
    parser.add_argument("--modes", default="fastagi,process",
                        help="AGI modes, each run side by side at every level (default %(default)s)")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every level in every mode even after calls failed (a busy machine's time-outs)")
    parser.add_argument("--import-runs", type=int, default=15, help="timings of the AGI's import (default %(default)s)")
    parser.add_argument("--workdir", type=Path, help=f"default {bl.DEFAULT_WORKDIR.relative_to(ROOT)}/hotline-TIME")
    parser.add_argument("--quiet-wait", type=float, default=60, metavar="SECONDS",
                        help="before each level, wait up to this long for the machine to go quiet (default %(default)s)")
    parser.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(AGI_MODES):
        print(f"bench_hotline: --modes takes {', '.join(AGI_MODES)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench_hotline: needs root (the Asterisk sandbox runs under chroot)", file=sys.stderr)
        return 2
    machine = bl.machine_summary(bl.PG_ADMIN_URL)
    workdir = args.workdir or bl.DEFAULT_WORKDIR / f"hotline-{dt.datetime.now():%Y%m%d-%H%M%S}"
    workdir.mkdir(parents=True, exist_ok=True)
    bl.log(f"work directory {workdir}")

    started = time.monotonic()
    # A directory of its own: the key files are created, never overwritten, and --workdir may be reused.
    hotline = Hotline(workdir / "hotline", make_factory_keys(Path(tempfile.mkdtemp(prefix="factory-", dir=workdir))))
    (workdir / "hotline").mkdir(exist_ok=True)
    results: list[Level] = []
    try:
        hotline.setup()
        needed = 3 * sum(levels) * len(modes) + 1
        bl.log(f"issuing {needed} cards")
        cards = hotline.issue("H1", needed + 10)
        hotline.start_servers()
        prompts = build_prompts(workdir / "prompts")
        hotline.start_asterisk(e2e_root(os.environ), prompts)
        sandbox = hotline.sandbox
        assert sandbox is not None
        setup_s = time.monotonic() - started
        bl.log(f"hotline ready in {setup_s:.0f} s; Asterisk SIP on 127.0.0.1:{sandbox.sip_port}")

        bare, full = agi_import_cost(sandbox.root, args.import_runs)
        bl.log(f"chroot python3: bare {bare * 1000:.0f} ms, import ivr.agi_main {full * 1000:.0f} ms")
        probe_file = workdir / "agi-probe.call"
        probe_file.write_text(PROBE, encoding="utf-8")
        sandbox.set_agi_mode("process")  # the probe times the process AGI's start
        sandbox.rx("agi set debug on")
        mark = len(sandbox.messages_log())
        probe: list[ChannelTimes] = []
        try:
            for _ in range(3):
                hotline.call(probe_file, {})
        finally:
            sandbox.rx("agi set debug off")
        probe = list(asterisk_calls(sandbox.messages_log()[mark:]).values())

        calibration = hotline.call(SCRIPT, {}, injection=Injection(("CALLER", "ACCOUNT", "PIN"), (
            ("13719999999", ACCOUNTS[0], cards[0][1]),)))
        if not calibration.passed:
            raise SystemExit("a single call does not pass:\n" + calibration.report())
        call_length = max(s.at_ms or 0 for s in calibration.calls[0].steps) / 1000
        used = 1
        active = list(modes)  # a mode whose calls failed at a level is not taken to the next (unless --keep-going)
        keep_going = args.keep_going
        for n in levels:
            for mode in ("steady", "burst"):
                for agi in active:
                    total = 2 * n if mode == "steady" else n
                    rows = tuple((f"1371{i:07d}", ACCOUNTS[i % len(ACCOUNTS)], pin)
                                 for i, (_serial, pin) in enumerate(cards[used:used + total], start=used))
                    used += total
                    sandbox.set_agi_mode(agi)
                    level = run_level(hotline, mode, n, rows, call_length, args.quiet_wait, agi)
                    results.append(level)
                    if not level.all_passed:
                        bl.log(f"level {n} {mode} {agi}: not every call passed. First: {level.failures[:1]}")
            failed = {lv.agi for lv in results if lv.concurrent == n and not lv.all_passed}
            if failed and not keep_going:
                active = [agi for agi in active if agi not in failed]
                bl.log(f"{', '.join(sorted(failed))}: stopping here")
            if not active:
                break
    finally:
        hotline.close()

    body = report(results, bare, full, probe, setup_s, call_length)
    print(body)
    if args.record:
        command = "bench/bench_hotline.py " + " ".join(argv if argv is not None else sys.argv[1:])
        bl.record("bench_hotline: phone calls end to end (SIPp → Asterisk 22 → AGI → server pair → PostgreSQL)",
                  command.strip(), body, bl.PG_ADMIN_URL, machine)
    return 0 if results and all(lv.all_passed for lv in results) else 1


def run_level(hotline: Hotline, mode: str, n: int, rows: tuple[tuple[str, ...], ...], call_length: float,
              quiet_wait: float, agi: str) -> Level:
    """One run of ``len(rows)`` calls, at most ``n`` at once, arriving steadily (n per call length) or in a burst."""
    sandbox = hotline.sandbox
    assert sandbox is not None
    if quiet_wait:
        bl.wait_for_quiet(quiet_wait)
    total = len(rows)
    bl.log(f"level {n} {mode} {agi}: {total} calls, at most {n} at once")
    mark = len(sandbox.messages_log())
    pids = [s.proc.pid for s in hotline.inst.servers if s.proc]
    service = sandbox.fastagi_worker()
    ast0 = cpu_seconds(sandbox._pid(), True) + cpu_seconds(service)
    srv0, busy0 = sum(cpu_seconds(p) for p in pids), bl.machine_busy_seconds()
    t0 = time.monotonic()
    period = round(call_length * 1000) if mode == "steady" else 1000
    # Texts only: the levels measure the hotline, not the replay's listening (bench/bench_audio.py measures that).
    result = hotline.call(SCRIPT, {}, injection=Injection(("CALLER", "ACCOUNT", "PIN"), rows), calls=total,
                          concurrent=n, rate=n, rate_period_ms=period, audio="none")
    wall = time.monotonic() - t0
    level = Level(mode, n, total, agi)
    level.cpu_asterisk = (cpu_seconds(sandbox._pid(), True) + cpu_seconds(service) - ast0) / wall
    level.cpu_servers = (sum(cpu_seconds(p) for p in pids) - srv0) / wall
    level.cpu_machine = (bl.machine_busy_seconds() - busy0) / wall
    measure(level, result, rows, sandbox.messages_log()[mark:])
    bl.log(f"level {n} {mode} {agi}: {level.passed}/{level.calls} passed, first prompt p50/p99 "
           f"{ms(pct(level.first_prompt, 50))}/{ms(pct(level.first_prompt, 99))} ms, PIN→quote p99 "
           f"{ms(pct(level.quote, 99))} ms")
    return level


if __name__ == "__main__":
    sys.exit(main())
