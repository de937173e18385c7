#!/usr/bin/env python
"""Benchmark: how well a replay hears the hotline's prompts, and what listening costs, with N calls at once.

A real Asterisk in the e2e sandbox (``testkit.sandbox``, no recharge servers
needed) plays the whole catalogue that ``voice_prompts.build`` renders: an
AGI of the bench's own, reached as the sandbox's ``proof`` caller, plays
every prompt of one language (sending ``prompt=ID`` as text before each,
as the dialog does), or speaks a list of amounts (``SAY NUMBER`` and the
unit prompts, as ``ivr.agi_channel.say_amount`` does) and a run of every
digit (``SAY DIGITS``).  Four parts: zh prompts, zh numbers, en prompts, en
numbers.  Each part is one call script (``expect prompt=...`` for every
prompt, ``expect amount=...``/``expect digits=...`` for the numbers), and
each is replayed with N calls at once (``--concurrent``, default 25) through
``testkit.replay`` with text and audio both checked (``--check both``) or
audio alone (``--check audio``).

Measured:

- identification: the share of audible expects that passed on audio (every
  prompt, amount and digit run, in both languages, over every call);
- false matches: sounds heard that the call did not play (the prompts heard,
  in order, against the prompts played; a tie between look-alikes that were
  cut short counts as a false match too);
- the closeness of the matches (the lowest confidence of any expect);
- CPU: the replaying process (the media relay's thread, which decodes and
  matches every frame, and the judging) and SIPp, per call and per minute of
  call, and as cores while the part ran; the machine's cores in use meanwhile
  (other people's work included: this machine is shared).

Goal: every prompt identified, no false match, and N = 25 audio-checked calls
at once on 2 cores (the replay and SIPp together using well under 2 cores).

Run as root (about 8 minutes at the default size)::

    .venv/bin/python bench/bench_audio.py                       # 25 calls at once, text and audio
    .venv/bin/python bench/bench_audio.py --concurrent 5 --check audio
    .venv/bin/python bench/bench_audio.py --record              # append the results to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import benchlib as bl

from ivr.agi_channel import amount_parts
from testkit.callscript import ExpectText, compile_script, heard_text, parse
from testkit.hearing import Sounds
from testkit.replay import FAIL, PASS, ScriptResult, run_compiled
from testkit.sandbox import CHROOT_PY_DIR, Sandbox, build_prompts, e2e_root, free_sip_port, start_hotline
from voice_prompts.catalogue import CATALOGUE, LANGS

ROOT = bl.ROOT
TARGET_CONCURRENT = 25
PLAN = "/opt/bench-audio/plan.json"  # inside the chroot: what the next call plays
AMOUNTS = [0, 1, 10, 55, 100, 120, 999, 1000, 1050, 2000, 3000, 5000, 10000, 12345, 20000, 50000, 99999, 100000,
           1000000, 1234567]  # fen
UNITS = {"currency-yuan", "currency-jiao", "currency-fen"}

PLAYER_AGI = f'''#!/usr/bin/env python3
"""The audio benchmark's player: plays what {PLAN} lists, announcing each item as text first."""
import json
import sys

sys.path.insert(0, {CHROOT_PY_DIR!r})
from asterisk.agi import AGI

agi = AGI()
agi.answer()
with open({PLAN!r}) as f:
    plan = json.load(f)
agi.set_variable("CHANNEL(language)", plan["lang"])
for text, sounds in plan["items"]:
    agi.send_text(text)
    for kind, value in sounds:
        if kind == "play":
            agi.stream_file(value)
        elif kind == "number":
            agi.say_number(value)
        else:
            agi.say_digits(value)
agi.hangup()
'''


def plan(lang: str, part: str, quick: bool) -> list[tuple[str, list[tuple[str, object]]]]:
    """What one part plays: (text, sounds) items."""
    if part == "prompts":
        ids = [p for p in CATALOGUE if p not in UNITS]
        return [(f"prompt={p}", [("play", p)]) for p in (ids[:4] if quick else ids)]
    amounts = AMOUNTS[:4] if quick else AMOUNTS
    items: list[tuple[str, list[tuple[str, object]]]] = [
        (f"amount={fen}", [("play" if k == "play" else "number", v) for k, v in amount_parts(fen, lang)])
        for fen in amounts]
    return items + [("digits=0123456789", [("digits", "0123456789")])]


def script(items: list[tuple[str, list[tuple[str, object]]]]) -> str:
    return "call 95598 from proof\n" + "".join(f"expect {text}\n" for text, _ in items) + "expect bye\n"


@dataclass
class Part:
    lang: str
    part: str
    calls: int = 0
    passed_calls: int = 0
    audible: int = 0  # audible expects, over all calls
    identified: int = 0
    false_matches: int = 0
    lowest: float = 1.0
    wall: float = 0.0
    cpu_replay: float = 0.0
    cpu_sipp: float = 0.0
    cpu_machine: float = 0.0
    audio_seconds: float = 0.0  # call length, summed
    failures: list[str] = field(default_factory=list)


def judge_part(p: Part, result: ScriptResult, items: list[tuple[str, list[tuple[str, object]]]]) -> None:
    played = [v for _, sounds in items for k, v in sounds if k == "play" and (p.part == "prompts" or v in UNITS)]
    p.calls += len(result.calls)
    for call in result.calls:
        p.passed_calls += call.passed
        for s in call.steps:
            if not s.source.startswith("expect ") or s.source == "expect bye":
                continue
            text = s.source.removeprefix("expect ")
            if not text.startswith(("prompt=", "amount=", "digits=")):
                continue
            p.audible += 1
            if s.status == PASS and s.heard.startswith("heard"):
                p.identified += 1
                for word in s.heard.split("match ")[1:]:
                    p.lowest = min(p.lowest, float(word.split()[0].rstrip(",)")))
            elif s.status == FAIL and len(p.failures) < 5:
                p.failures.append(f"{p.lang} {p.part}: {s.source}: {s.detail}")
        heard = [h for h in call.heard if not h.id.startswith("digits/")]
        p.false_matches += sum(1 for h in heard if h.rivals) + abs(len(heard) - len(played)) + sum(
            1 for h, want in zip(heard, played, strict=False) if h.id != want)
        if call.answered is not None and call.heard:
            p.audio_seconds += call.heard[-1].until - call.answered


def run_part(sandbox: Sandbox, sounds: Sounds, lang: str, part: str, n: int, check: str, quick: bool,
             workdir: Path) -> Part:
    items = plan(lang, part, quick)
    target = sandbox.path(PLAN)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"lang": lang, "items": items}))
    compiled = compile_script(parse(script(items), name=f"{lang}-{part}"), {}, audible_only=check == "audio")
    p = Part(lang, part)
    self0, kids0, busy0 = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN),
                           bl.machine_busy_seconds())
    started = time.monotonic()
    result = run_compiled(compiled, "127.0.0.1", sandbox.sip_port, workdir / f"{lang}-{part}", calls=n,
                          concurrent=n, sounds=sounds)
    p.wall = time.monotonic() - started
    self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    p.cpu_replay = self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime
    p.cpu_sipp = kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
    p.cpu_machine = (bl.machine_busy_seconds() - busy0) / p.wall
    if result.error:
        p.failures.append(f"{lang} {part}: {result.error}")
    judge_part(p, result, items)
    audible = sum(1 for s in compiled.steps if isinstance(s, ExpectText) and heard_text(s))
    bl.log(f"{lang} {part}: {p.passed_calls}/{p.calls} calls passed, {p.identified}/{p.audible} identified "
           f"({audible} per call), {p.false_matches} false matches, {p.wall:.0f} s, replay {p.cpu_replay:.1f} s CPU, "
           f"sipp {p.cpu_sipp:.1f} s")
    return p


def report(parts: list[Part], n: int, check: str) -> str:
    rows = []
    for p in parts:
        minutes = p.audio_seconds / 60 or 1
        rows.append([p.lang, p.part, f"{p.passed_calls}/{p.calls}", f"{p.identified}/{p.audible}",
                     str(p.false_matches), f"{p.lowest:.3f}", f"{p.wall:.0f}",
                     f"{p.cpu_replay / max(1, p.calls):.2f}", f"{p.cpu_replay / minutes:.2f}",
                     f"{p.cpu_sipp / max(1, p.calls):.2f}", f"{(p.cpu_replay + p.cpu_sipp) / p.wall:.2f}",
                     f"{p.cpu_machine:.2f}"])
    table = bl.markdown_table(
        ["lang", "part", "calls passed", "audible expects identified", "false matches", "lowest match",
         "wall s", "replay CPU s/call", "replay CPU s per call-minute", "SIPp CPU s/call",
         "replay+SIPp cores", "machine cores (all users)"], rows)
    identified = sum(p.identified for p in parts) == sum(p.audible for p in parts) > 0
    false = sum(p.false_matches for p in parts)
    cores = max((p.cpu_replay + p.cpu_sipp) / p.wall for p in parts)
    all_passed = all(p.passed_calls == p.calls == n for p in parts)
    verdict = bl.markdown_table(["target", "measured", "result"], [
        ["every prompt, amount and digit identified (both languages, every call)",
         f"{sum(p.identified for p in parts)}/{sum(p.audible for p in parts)}", "PASS" if identified else "FAIL"],
        ["no false match", str(false), "PASS" if false == 0 else "FAIL"],
        [f"{TARGET_CONCURRENT} audio-checked calls at once on 2 cores",
         f"{n} at once, every call {'passed' if all_passed else 'NOT passed'}; replay+SIPp at most {cores:.2f} cores",
         "PASS" if n >= TARGET_CONCURRENT and all_passed and cores < 2 else "FAIL"],
    ])
    failures = [f for p in parts for f in p.failures]
    return "\n\n".join(x for x in [
        f"{n} calls at once per part, check `{check}`.", table, verdict,
        ("First failures:\n" + "\n".join(f"- {f}" for f in failures)) if failures else "",
    ] if x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrent", type=int, default=TARGET_CONCURRENT, help="calls at once (default %(default)s)")
    parser.add_argument("--check", choices=("both", "audio"), default="both", help="what proves an expect")
    parser.add_argument("--quick", action="store_true", help="four prompts and four amounts per part (a smoke run)")
    parser.add_argument("--workdir", type=Path, help=f"default {bl.DEFAULT_WORKDIR.relative_to(ROOT)}/audio-TIME")
    parser.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_audio: needs root (the Asterisk sandbox runs under chroot)", file=sys.stderr)
        return 2
    machine = bl.machine_summary(bl.PG_ADMIN_URL)
    workdir = args.workdir or bl.DEFAULT_WORKDIR / f"audio-{dt.datetime.now():%Y%m%d-%H%M%S}"
    workdir.mkdir(parents=True, exist_ok=True)
    prompts = build_prompts(workdir / "prompts")
    sounds = Sounds.load(prompts)
    sandbox = start_hotline(Sandbox(e2e_root(os.environ), free_sip_port()), prompts, wait=900)
    parts = []
    try:
        sandbox.install_agi("sandbox-proof.agi", PLAYER_AGI)
        for lang in LANGS:
            for part in ("prompts", "numbers"):
                parts.append(run_part(sandbox, sounds, lang, part, args.concurrent, args.check, args.quick, workdir))
    finally:
        sandbox.stop()
    body = report(parts, args.concurrent, args.check)
    print(body)
    if args.record:
        bl.record(f"audio-checked replay, {args.concurrent} calls at once ({args.check})",
                  "bench/bench_audio.py " + " ".join(argv if argv is not None else sys.argv[1:]), body,
                  bl.PG_ADMIN_URL, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
