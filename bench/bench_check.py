#!/usr/bin/env python
"""Benchmark: check a factory's post-production file of N cards (``cardmgmt.checks.check_file``).

For each backend, on a fresh installation (migrated database, key directory,
administrator, a factory registered with its RSA public key): a batch of N
cards is ordered with ``batches.create``, the stand-in factory
(``factory_sim.produce``, no faults but ``--extra`` rows for serials after
the batch) turns its new-card file into a post-production file, and then ``checks.check_file`` is measured inside
``CardSystem.unit`` — signature and GCM verification, parsing every row,
HMAC per PIN against the stored hashes, the state change of every matched
card, the file record, the operation log, the commit — what ``cli.py batch
check`` does.  Each step runs in its own fresh Python process; wall time is
``time.perf_counter`` around the step, peak memory the process's own peak RSS
(``VmHWM``; see ``benchlib``).  The check must report every card matched and
move all N to ``produced`` (and find exactly the extra rows), or the run fails.

Targets: check ≤ 15 s for 1,000,000 cards; peak RSS ≤ 200 MB for any file,
however many extra rows a (faulty) factory signs.

    .venv/bin/python bench/bench_check.py                     # 1,000,000 cards, both backends
    .venv/bin/python bench/bench_check.py --quantity 100000 --backend postgresql
    .venv/bin/python bench/bench_check.py --quantity 100000 --extra 300000  # a file 4× its batch
    .venv/bin/python bench/bench_check.py --repeat 3 --record  # append to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

import benchlib as bl

TARGET_WALL = 15.0
TARGET_RSS_MB = 200.0


def produced_count(inst: bl.Installation) -> int:
    from sqlalchemy import func, select

    from cardmgmt.models import Card

    system = inst.system()
    try:
        with system.db.transaction() as s:
            return s.execute(select(func.count()).select_from(Card).where(Card.state == "produced")).scalar_one()
    finally:
        system.close()


def run_backend(ws: bl.Workspace, backend: str, n: int, extra: int, repeat: int, profile: bool) -> list[dict[str, Any]]:
    results = []
    for r in range(repeat):
        bl.log(f"{backend}: setting up a fresh installation (repeat {r + 1}/{repeat})")
        inst = ws.install(backend, f"{backend}-check-{r}")
        new_card = inst.home / "batch.newcard"
        produced = inst.home / "batch.produced"
        bl.log(f"{backend}: ordering {n:,} cards")
        create = bl.run_step(
            inst.spec(
                "ours_create", batch_no=bl.BATCH_NO, quantity=n, expiry=bl.expiry().isoformat(), out=str(new_card)
            ),
            ws.dir,
        )
        bl.log(f"{backend}: producing the post-production file")
        prod = bl.run_step(
            {
                "step": "produce",
                "new_card_file": str(new_card),
                "out": str(produced),
                "factory_private": str(ws.factory_keys()[0]),
                "system_public": str(inst.key_dir / "system.pub.pem"),
                "extra": extra,
            },
            ws.dir,
        )
        ws.before_measurement(backend)
        bl.log(f"{backend}: measuring check_file")
        prof_path = ws.dir / f"check-{backend}-{r}.prof" if profile else None
        check = bl.run_step(
            inst.spec(
                "ours_check", batch_no=bl.BATCH_NO, file=str(produced), profile=str(prof_path) if prof_path else None
            ),
            ws.dir,
        )
        bl.log(f"{backend}: check took {check['wall']:.2f} s, peak RSS {check['peak_rss_mb']:.0f} MB; verifying")
        in_db = produced_count(inst)
        counts = check["counts"]
        if counts["matched"] != n or counts["extra"] != extra or check["produced"] != n or in_db != n:
            raise SystemExit(
                f"check did not match every card: {check['counts']}, produced {check['produced']}, {in_db}"
            )
        if prof_path:
            bl.print_profile(prof_path)
        results.append({"check": check, "create": create, "produce": prod})
        ws.discard(inst)
    return results


def summarise(all_results: dict[str, list[dict[str, Any]]], n: int, extra: int, repeat: int, profile: bool) -> str:
    med = bl.median
    headers = [
        "backend",
        "check wall s",
        "open unit s",
        "work s",
        "commit s",
        "client CPU s",
        "PG backend CPU s",
        "other CPU s",
        "peak RSS MB",
        "RSS before MB",
        "setup: create s",
        "setup: produce s",
    ]
    if repeat > 1:
        headers.insert(2, "wall min–max s")
    rows = []
    verdicts = []
    for backend, res in all_results.items():
        cs = [x["check"] for x in res]
        walls = [c["wall"] for c in cs]
        server = [c["server_cpu"] for c in cs if c["server_cpu"] is not None]
        row = [
            backend,
            bl.fmt(med(walls), 2),
            bl.fmt(med([c["open_unit"] for c in cs]), 2),
            bl.fmt(med([c["work"] for c in cs]), 2),
            bl.fmt(med([c["commit"] for c in cs]), 2),
            bl.fmt(med([c["client_cpu"] for c in cs]), 1),
            bl.fmt(med(server) if server else None, 1),
            bl.fmt(med([c["other_cpu"] for c in cs]), 1),
            bl.fmt(max(c["peak_rss_mb"] for c in cs), 0),
            bl.fmt(med([c["rss_before_mb"] for c in cs]), 0),
            bl.fmt(med([x["create"]["wall"] for x in res]), 2),
            bl.fmt(med([x["produce"]["wall"] for x in res]), 2),
        ]
        if repeat > 1:
            row.insert(2, f"{min(walls):.2f}–{max(walls):.2f}")
        rows.append(row)
        wall = med(walls)
        rss = max(c["peak_rss_mb"] for c in cs)
        verdicts.append([
            backend, f"{wall:.2f} s", "PASS" if wall <= TARGET_WALL else "FAIL",
            f"{rss:.0f} MB", "PASS" if rss <= TARGET_RSS_MB else "FAIL",
        ])
    note = (
        f"`checks.check_file` of a post-production file of {n:,} cards (box size {bl.BOX_SIZE}), "
        + (f"all matching, plus {extra:,} extra rows for serials outside the batch; " if extra else "all matching; ")
        + (f"median of {repeat} runs, each on a fresh database; " if repeat > 1 else "one run on a fresh database; ")
        + "peak RSS is the measuring process's whole-life peak (imports included); "
        '"RSS before" is its RSS just before the timed step. Client CPU is the step process\'s user+sys CPU for '
        "its whole life; PG backend CPU is the server process's CPU during the timed step; other CPU is what "
        "the rest of the machine used while the step process ran (PostgreSQL's background writers, anybody "
        "else's work). The setup columns "
        "(ordering the batch, the simulated factory) are not part of the check."
    )
    if profile:
        note += " **Profiled run: cardmgmt timings are inflated by cProfile.**"
    table = bl.markdown_table(headers, rows)
    verdict = bl.markdown_table(
        ["backend", "check wall", f"≤ {TARGET_WALL:g} s", "peak RSS", f"≤ {TARGET_RSS_MB:g} MB"], verdicts
    )
    return f"{note}\n\n{table}\n\n{verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bl.common_arguments(parser, default_quantity=1_000_000)
    parser.add_argument(
        "--extra", type=int, default=0, metavar="N",
        help="rows for serials outside the batch in the factory's file (a faulty factory; default 0)",
    )
    args = parser.parse_args()
    if args.record and args.profile:
        parser.error("--record cannot be combined with --profile (profiled timings are not representative)")
    chosen = bl.backends(args.backend)
    ws = bl.Workspace(args.workdir, args.pg_url, args.keep, args.quiet_wait)
    bl.log(f"work directory {ws.dir}")
    pg_url = args.pg_url if "postgresql" in chosen else None
    machine = bl.machine_summary(pg_url) if args.record else None
    try:
        all_results = {b: run_backend(ws, b, args.quantity, args.extra, args.repeat, args.profile) for b in chosen}
    finally:
        ws.close()
    body = summarise(all_results, args.quantity, args.extra, args.repeat, args.profile)
    print()
    print(body)
    if args.record:
        command = "bench/bench_check.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        title = f"bench_check, {args.quantity:,} cards" + (f" + {args.extra:,} extra rows" if args.extra else "")
        bl.record(title, command, body, pg_url, machine)


if __name__ == "__main__":
    main()
