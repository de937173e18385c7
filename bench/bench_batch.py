#!/usr/bin/env python
"""Benchmark: order a batch of N cards (``cardmgmt.batches.create``) against a bare loop doing the same work.

For each backend, on fresh installations (migrated database, key directory,
administrator, a factory registered with its RSA public key), two steps are
measured, each in its own fresh Python process:

``ours``  ``batches.create`` inside ``CardSystem.unit`` (schema check, key
          load, operator authentication, PIN generation, HMAC, bulk insert,
          AES-GCM sealed new-card file with RSA-PSS signature, operation log,
          commit) — what ``cli.py batch create`` does.
``bare``  the same work written straight: ``os.urandom`` 18-digit PINs,
          ``hmac.digest`` per PIN, one bulk insert into the same ``cards``
          table (``executemany`` on SQLite, ``COPY`` through psycopg on
          PostgreSQL), AES-GCM (pycryptodome) over the same file bytes, the
          same file layout, signature and fsync, one commit.

Wall time is ``time.perf_counter`` around the step; peak memory is the step
process's own peak RSS (``VmHWM``; see ``benchlib`` for why not ``ru_maxrss``).  Both files are then
opened with ``sealed_files.open_sealed`` and the rows counted, and the
database row counts are checked, so a step that did less work cannot look fast.

Targets: ours ≤ 20 s, ours ≤ 1.5 × bare, peak RSS < 500 MB.

    .venv/bin/python bench/bench_batch.py                     # 1,000,000 cards, both backends
    .venv/bin/python bench/bench_batch.py --quantity 100000 --backend sqlite
    .venv/bin/python bench/bench_batch.py --repeat 3 --record  # append to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import benchlib as bl

TARGET_WALL = 20.0
TARGET_RATIO = 1.5
TARGET_RSS_MB = 500.0


def prepare_bare(ws: bl.Workspace, inst: bl.Installation, n: int) -> dict[str, Any]:
    """The bare loop's database gets its batch row up front (untimed); returns the bare step's spec."""
    from cardmgmt import factories
    from cardmgmt.keys import load_keyring
    from cardmgmt.models import Batch
    from cardmgmt.serials import make_serial

    first = 1  # a fresh installation's serial counter starts at 1
    header = {
        "batch_no": bl.BATCH_NO,
        "face_value": bl.FACE_VALUE,
        "quantity": n,
        "box_size": bl.BOX_SIZE,
        "expiry": bl.expiry().isoformat(),
        "first_serial": make_serial(first),
        "last_serial": make_serial(first + n - 1),
    }
    system = inst.system()
    with system.db.transaction() as s:
        factory = factories.get(s, bl.FACTORY)
        batch = Batch(
            **{k: v for k, v in header.items() if k != "expiry"},
            expiry=bl.expiry(),
            factory_id=factory.id,
            new_card_digest="",
            created_by=bl.ADMIN,
        )
        s.add(batch)
        s.flush()
        batch_id = batch.id
    system.close()
    return inst.spec(
        "bare_create",
        path=str(inst.home / "cards.db"),
        quantity=n,
        first_seq=first,
        batch_id=batch_id,
        header=header,
        pin_key=load_keyring(inst.key_dir).pin_key.hex(),
        factory_public=str(ws.factory_keys()[1]),
        system_private=str(inst.key_dir / "system.pem"),
        out=str(inst.home / "bare.newcard"),
    )


def verify(ws: bl.Workspace, inst: bl.Installation, path: Path, n: int) -> None:
    """The file opens, holds n rows whose first PIN hashes to the stored hash; the database holds n cards."""
    from sqlalchemy import select

    from cardmgmt import pins, sealed_files
    from cardmgmt.keys import load_keyring, load_private_key, load_public_key
    from cardmgmt.models import Card

    with sealed_files.open_sealed(
        path,
        kind=bl.NEW_CARD,
        sender=load_public_key(inst.key_dir / "system.pub.pem"),
        recipient=load_private_key(ws.factory_keys()[0]),
    ) as f:
        rows = f.rows()
        serial, _box, pin = next(rows).decode().rstrip("\n").split(",")
        count = 1 + sum(1 for _ in rows)
    stored_count = inst.card_count()
    system = inst.system()
    with system.db.transaction() as s:
        stored = s.execute(select(Card.pin_hash).where(Card.serial == serial)).scalar_one()
    system.close()
    if count != n or stored_count != n or stored != pins.pin_hash(load_keyring(inst.key_dir).pin_key, pin):
        raise SystemExit(f"verification failed for {path}: file rows {count}, cards {stored_count}, expected {n}")


def run_backend(ws: bl.Workspace, backend: str, n: int, repeat: int, profile: bool) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {"ours": [], "bare": []}
    for r in range(repeat):
        bl.log(f"{backend}: setting up two fresh installations (repeat {r + 1}/{repeat})")
        ours = ws.install(backend, f"{backend}-ours-{r}")
        bare = ws.install(backend, f"{backend}-bare-{r}")
        bare_spec = prepare_bare(ws, bare, n)
        ours_spec = ours.spec(
            "ours_create",
            batch_no=bl.BATCH_NO,
            quantity=n,
            expiry=bl.expiry().isoformat(),
            out=str(ours.home / "ours.newcard"),
            profile=str(ws.dir / f"create-{backend}-{r}.prof") if profile else None,
        )
        # Alternate the order so neither variant always runs on a warmer machine.
        order = [("ours", ours, ours_spec), ("bare", bare, bare_spec)]
        if r % 2 == 1:
            order.reverse()
        for variant, inst, spec in order:
            ws.before_measurement(backend)
            bl.log(f"{backend}: measuring {variant} ({n:,} cards)")
            res = bl.run_step(spec, ws.dir)
            bl.log(f"{backend}: {variant} took {res['wall']:.2f} s, peak RSS {res['peak_rss_mb']:.0f} MB; verifying")
            verify(ws, inst, Path(spec["out"]), n)
            results[variant].append(res)
        if profile and ours_spec["profile"]:
            bl.print_profile(Path(ours_spec["profile"]))
        ws.discard(ours)
        ws.discard(bare)
    return results


def summarise(all_results: dict[str, dict[str, list[dict[str, Any]]]], n: int, repeat: int, profile: bool) -> str:
    med = bl.median
    headers = [
        "backend",
        "variant",
        "wall s",
        "open unit s",
        "work s",
        "commit s",
        "client CPU s",
        "PG backend CPU s",
        "other CPU s",
        "peak RSS MB",
        "RSS before MB",
    ]
    if repeat > 1:
        headers.insert(3, "wall min–max s")
    rows = []
    for backend, res in all_results.items():
        for variant in ("ours", "bare"):
            rs = res[variant]
            walls = [x["wall"] for x in rs]
            server = [x["server_cpu"] for x in rs if x["server_cpu"] is not None]
            row = [
                backend,
                variant,
                bl.fmt(med(walls), 2),
                bl.fmt(med([x["open_unit"] for x in rs]), 2),
                bl.fmt(med([x["work"] for x in rs]), 2),
                bl.fmt(med([x["commit"] for x in rs]), 2),
                bl.fmt(med([x["client_cpu"] for x in rs]), 1),
                bl.fmt(med(server) if server else None, 1),
                bl.fmt(med([x["other_cpu"] for x in rs]), 1),
                bl.fmt(max(x["peak_rss_mb"] for x in rs), 0),
                bl.fmt(med([x["rss_before_mb"] for x in rs]), 0),
            ]
            if repeat > 1:
                row.insert(3, f"{min(walls):.2f}–{max(walls):.2f}")
            rows.append(row)
    figures = bl.markdown_table(headers, rows)

    verdict_rows = []
    for backend, res in all_results.items():
        ours_wall = med([x["wall"] for x in res["ours"]])
        bare_wall = med([x["wall"] for x in res["bare"]])
        ratio = ours_wall / bare_wall
        rss = max(x["peak_rss_mb"] for x in res["ours"])
        verdict_rows.append(
            [
                backend,
                f"{ours_wall:.2f} s",
                "PASS" if ours_wall <= TARGET_WALL else "FAIL",
                f"{ratio:.2f}×",
                "PASS" if ratio <= TARGET_RATIO else "FAIL",
                f"{rss:.0f} MB",
                "PASS" if rss < TARGET_RSS_MB else "FAIL",
            ]
        )
    verdicts = bl.markdown_table(
        [
            "backend",
            "ours wall",
            f"≤ {TARGET_WALL:g} s",
            "ours / bare",
            f"≤ {TARGET_RATIO:g}×",
            "ours peak RSS",
            f"< {TARGET_RSS_MB:g} MB",
        ],
        verdict_rows,
    )
    note = (
        f"`batches.create` of {n:,} cards (box size {bl.BOX_SIZE}); "
        + (f"median of {repeat} runs, each on fresh databases; " if repeat > 1 else "one run on fresh databases; ")
        + "peak RSS is the measuring process's whole-life peak (imports included); "
        '"RSS before" is its RSS just before the timed step. '
        "Client CPU is the step process's user+sys CPU for its whole life; PG backend CPU is the server process's "
        "CPU during the timed step; other CPU is what the rest of the machine used while the step process ran "
        "(PostgreSQL's background writers, anybody else's work)."
    )
    if profile:
        note += " **Profiled run: cardmgmt timings are inflated by cProfile.**"
    return f"{note}\n\n{figures}\n\n{verdicts}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bl.common_arguments(parser, default_quantity=1_000_000)
    args = parser.parse_args()
    if args.record and args.profile:
        parser.error("--record cannot be combined with --profile (profiled timings are not representative)")
    chosen = bl.backends(args.backend)
    ws = bl.Workspace(args.workdir, args.pg_url, args.keep, args.quiet_wait)
    bl.log(f"work directory {ws.dir}")
    pg_url = args.pg_url if "postgresql" in chosen else None
    machine = bl.machine_summary(pg_url) if args.record else None
    try:
        all_results = {b: run_backend(ws, b, args.quantity, args.repeat, args.profile) for b in chosen}
    finally:
        ws.close()
    body = summarise(all_results, args.quantity, args.repeat, args.profile)
    print()
    print(body)
    if args.record:
        command = "bench/bench_batch.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        bl.record(f"bench_batch, {args.quantity:,} cards", command, body, pg_url, machine)


if __name__ == "__main__":
    main()
