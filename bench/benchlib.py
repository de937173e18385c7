"""Shared machinery for ``bench_batch.py`` and ``bench_check.py``.

The parent process (the script the engineer runs) sets installations up and
tears them down; every *measured* step runs in a fresh Python interpreter
started by ``run_step`` (``python bench/benchlib.py SPEC.json``).  Peak memory
is that process's own high-water resident set size, ``VmHWM`` from
``/proc/self/status``, read as the worker's last act: the kernel's count of
resident pages, so C-side buffers (psycopg's COPY buffer, SQLite's page cache,
pycryptodome) are included, which ``tracemalloc`` would miss.

``ru_maxrss`` from ``getrusage(RUSAGE_CHILDREN)`` or ``os.wait4`` is *not*
used, because on Linux it is polluted by the parent: ``subprocess`` starts
children with vfork+exec, and exec folds the parent's high-water RSS into the
child's ``maxrss`` (measured here: a child whose VmHWM was 11 MB reported
411 MB after the parent had once touched 400 MB); ``RUSAGE_CHILDREN`` is
moreover the maximum over every child reaped so far.  ``run_step`` still
records the ``wait4`` figure as ``wait4_maxrss_mb``, for comparison only.

This module imports only the standard library at the top, so the bare-loop
worker never loads SQLAlchemy or ``cardmgmt`` (it would inflate its RSS and
blur the comparison); the framework steps import ``cardmgmt`` inside their
functions.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cardmgmt.serials import luhn_digit  # the same serials are the same work for the bare loop

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
DEFAULT_WORKDIR = BENCH_DIR / "out"  # ignored by git (.gitignore: bench/out/)
PG_ADMIN_URL = os.environ.get("CARDS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

ADMIN, ADMIN_PASSWORD = "benchadmin", "bench-secret-1"
FACTORY = "Bench Factory"
FACE_VALUE = 5000  # fen
BOX_SIZE = 100  # cli.py's default
BATCH_NO = "BENCH1"
NEW_CARD = "new-card"
ORDERED = "ordered"
CARD_COLUMNS = ("batch_id", "serial", "box_no", "pin_hash", "state")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Process measurements (used inside the workers)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def proc_cpu_seconds(pid: int | None) -> float | None:
    """user+system CPU seconds of another process (the PostgreSQL backend), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def machine_busy_seconds() -> float:
    """CPU-seconds all processes on the machine have used since boot (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait: float, threshold: float = 0.25, sample: float = 2.0) -> float:
    """Wait until the machine uses less than ``threshold`` of a core; returns the last busy fraction seen.

    Other people's test runs on a 2-core machine halve our figures' meaning;
    a step that starts on a busy machine anyway says so in the log and in the
    "other CPU" column.
    """
    deadline = time.monotonic() + max_wait
    while True:
        b0 = machine_busy_seconds()
        time.sleep(sample)
        busy = (machine_busy_seconds() - b0) / sample
        if busy < threshold or time.monotonic() >= deadline:
            if busy >= threshold:
                log(f"machine still busy ({busy:.2f} cores in use by others); measuring anyway")
            return busy


# --------------------------------------------------------------------------
# Running a step in a fresh interpreter


def run_step(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run ``spec["step"]`` in a new interpreter; its result, its peak RSS, and its CPU time from ``wait4``."""
    tag = f"{spec['step']}-{uuid.uuid4().hex[:8]}"
    spec_path = workdir / f"{tag}.spec.json"
    result_path = workdir / f"{tag}.result.json"
    spec = {**spec, "result": str(result_path)}
    spec_path.write_text(json.dumps(spec))
    busy0 = machine_busy_seconds()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(spec_path)], cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    busy = machine_busy_seconds() - busy0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"step {spec['step']} failed with exit status {proc.returncode}")
    result = json.loads(result_path.read_text())
    spec_path.unlink()
    result_path.unlink()
    result["wait4_maxrss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux; see the module docstring
    result["client_cpu"] = usage.ru_utime + usage.ru_stime
    # CPU the rest of the machine used while the step process lived: PostgreSQL's
    # background writers, and anybody else's work competing for the two cores.
    result["other_cpu"] = max(0.0, busy - result["client_cpu"] - (result.get("server_cpu") or 0.0))
    return result


def _worker_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = STEPS[spec["step"]](spec)
    result["peak_rss_mb"] = _status_kb("VmHWM") / 1024
    Path(spec["result"]).write_text(json.dumps(result))


# --------------------------------------------------------------------------
# Framework steps (cardmgmt), run inside workers


def _system(spec: dict[str, Any]):  # type: ignore[no-untyped-def]
    from cardmgmt.config import Settings
    from cardmgmt.system import CardSystem

    return CardSystem(
        Settings(database_url=spec["url"], key_dir=Path(spec["key_dir"]), operator=ADMIN, password=ADMIN_PASSWORD)
    )


def _warm(system) -> int | None:  # type: ignore[no-untyped-def]
    """Open the pooled connection before timing; its PostgreSQL backend pid (None on SQLite)."""
    from sqlalchemy import text

    system.db.check_schema()
    if system.db.engine.dialect.name != "postgresql":
        return None
    with system.db.engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _same_backend(system, pid: int | None) -> bool:  # type: ignore[no-untyped-def]
    return pid is None or _warm(system) == pid


class _Profiler:
    """cProfile around the measured call when a profile path is given (timings are then inflated)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.prof = None
        if path:
            import cProfile

            self.prof = cProfile.Profile()

    def __enter__(self) -> None:
        if self.prof:
            self.prof.enable()

    def __exit__(self, *exc: object) -> None:
        if self.prof:
            self.prof.disable()
            self.prof.dump_stats(self.path)


def step_ours_create(spec: dict[str, Any]) -> dict[str, Any]:
    """``batches.create`` in one authenticated unit of work, as ``cli.py batch create`` runs it."""
    from cardmgmt import batches
    from cardmgmt.context import Permission

    system = _system(spec)
    pid = _warm(system)
    rss_before = rss_mb()
    server0 = proc_cpu_seconds(pid)
    expiry = dt.date.fromisoformat(spec["expiry"])
    with _Profiler(spec.get("profile")):
        t0 = time.perf_counter()
        with system.unit(Permission.MANAGE_CARDS) as ctx:
            t1 = time.perf_counter()
            batches.create(
                ctx,
                batch_no=spec["batch_no"],
                face_value=FACE_VALUE,
                quantity=spec["quantity"],
                box_size=BOX_SIZE,
                expiry=expiry,
                factory_name=FACTORY,
                out=Path(spec["out"]),
            )
            t2 = time.perf_counter()
        t3 = time.perf_counter()
    server1 = proc_cpu_seconds(pid)
    same = _same_backend(system, pid)
    system.close()
    return {
        "wall": t3 - t0,
        "open_unit": t1 - t0,
        "work": t2 - t1,
        "commit": t3 - t2,
        "server_cpu": _cpu_delta(server0, server1) if same else None,
        "rss_before_mb": rss_before,
    }


def step_ours_check(spec: dict[str, Any]) -> dict[str, Any]:
    """``checks.check_file`` in one authenticated unit of work, as ``cli.py batch check`` runs it."""
    from cardmgmt import checks
    from cardmgmt.context import Permission

    system = _system(spec)
    pid = _warm(system)
    rss_before = rss_mb()
    server0 = proc_cpu_seconds(pid)
    with _Profiler(spec.get("profile")):
        t0 = time.perf_counter()
        with system.unit(Permission.MANAGE_CARDS) as ctx:
            t1 = time.perf_counter()
            report = checks.check_file(ctx, spec["batch_no"], Path(spec["file"]))
            t2 = time.perf_counter()
        t3 = time.perf_counter()
    server1 = proc_cpu_seconds(pid)
    same = _same_backend(system, pid)
    system.close()
    return {
        "wall": t3 - t0,
        "open_unit": t1 - t0,
        "work": t2 - t1,
        "commit": t3 - t2,
        "server_cpu": _cpu_delta(server0, server1) if same else None,
        "rss_before_mb": rss_before,
        "counts": report.counts,
        "produced": report.produced,
        "clean": report.clean,
    }


def step_produce(spec: dict[str, Any]) -> dict[str, Any]:
    """The stand-in factory turns the new-card file into a post-production file (no faults but ``extra`` rows)."""
    from cardmgmt import factory_sim
    from cardmgmt.keys import load_private_key, load_public_key

    factory_key = load_private_key(Path(spec["factory_private"]))
    system_key = load_public_key(Path(spec["system_public"]))
    rss_before = rss_mb()
    t0 = time.perf_counter()
    report = factory_sim.produce(
        Path(spec["new_card_file"]),
        Path(spec["out"]),
        factory_name=FACTORY,
        factory_key=factory_key,
        system_key=system_key,
        faults=factory_sim.Faults(extra=spec.get("extra", 0)),
    )
    return {"wall": time.perf_counter() - t0, "rss_before_mb": rss_before, "rows_written": report.rows_written}


# --------------------------------------------------------------------------
# The bare loop: the same work with no framework (stdlib, psycopg/sqlite3, pycryptodome)


def step_bare_create(spec: dict[str, Any]) -> dict[str, Any]:
    """Draw PINs, HMAC them, one bulk insert, one AES-GCM sealed file: straight-line code.

    The file it writes has the same format as ``sealed_files.write_sealed``
    (header, AES-256-GCM body, tag, RSA-PSS signature, fsync), so the parent
    can open it with ``cardmgmt.sealed_files.open_sealed`` to prove the work
    was the same.  The database is configured as ``cardmgmt.db`` configures
    it (SQLite: WAL, synchronous=NORMAL, foreign keys on).
    """
    import base64
    import hashlib
    import hmac
    import struct

    from Crypto.Cipher import AES, PKCS1_OAEP
    from Crypto.Hash import SHA256
    from Crypto.PublicKey import RSA
    from Crypto.Signature import pss

    n, first, box_size, batch_id = spec["quantity"], spec["first_seq"], BOX_SIZE, spec["batch_id"]
    pin_key = bytes.fromhex(spec["pin_key"])
    recipient = RSA.import_key(Path(spec["factory_public"]).read_bytes())
    signer = RSA.import_key(Path(spec["system_private"]).read_bytes())
    modulus = 10**18
    limit = (2**64 // modulus) * modulus
    chunk_rows = 20_000

    def fingerprint(key: Any) -> str:
        return hashlib.sha256(key.public_key().export_key(format="DER")).hexdigest()[:16]

    if spec["backend"] == "postgresql":
        import psycopg

        conn: Any = psycopg.connect(spec["url"])
        pid: int | None = conn.info.backend_pid
    else:
        import sqlite3

        conn = sqlite3.connect(spec["path"], timeout=30, isolation_level=None)
        for pragma in ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
        pid = None
    rss_before = rss_mb()
    server0 = proc_cpu_seconds(pid)

    t0 = time.perf_counter()
    file_key, nonce = os.urandom(32), os.urandom(12)
    header = {
        **spec["header"],
        "kind": NEW_CARD,
        "wrapped_key": base64.b64encode(PKCS1_OAEP.new(recipient, hashAlgo=SHA256).encrypt(file_key)).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "recipient": fingerprint(recipient),
        "signer": fingerprint(signer),
        "format": 1,
    }
    header_json = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    head = struct.pack(">I", len(header_json)) + header_json
    cipher = AES.new(file_key, AES.MODE_GCM, nonce=nonce, mac_len=16)
    cipher.update(head)
    signed = SHA256.new()
    out = open(spec["out"], "wb")  # noqa: SIM115 - closed below

    def emit(data: bytes) -> None:
        out.write(data)
        signed.update(data)

    emit(b"RCSEAL1\n")
    emit(head)

    def rows() -> Iterator[tuple[int, str, int, bytes, str]]:
        for start in range(0, n, chunk_rows):
            k = min(chunk_rows, n - start)
            pins: list[str] = []
            while len(pins) < k:
                need = k - len(pins)
                words = memoryview(os.urandom(8 * (need + need // 16 + 1))).cast("Q")
                pins.extend(f"{w % modulus:018d}" for w in words if w < limit)
            del pins[k:]
            lines = []
            for i, pin in enumerate(pins, start):
                body = f"{first + i:011d}"
                serial = body + str(luhn_digit(body))
                box = i // box_size + 1
                yield (batch_id, serial, box, hmac.digest(pin_key, pin.encode(), "sha256"), ORDERED)
                lines.append(f"{serial},{box},{pin}\n".encode())
            emit(cipher.encrypt(b"".join(lines)))

    if spec["backend"] == "postgresql":
        with conn.cursor() as cur, cur.copy(f"COPY cards ({', '.join(CARD_COLUMNS)}) FROM STDIN") as copy:
            for row in rows():
                copy.write_row(row)
    else:
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO cards ({', '.join(CARD_COLUMNS)}) VALUES (?, ?, ?, ?, ?)", rows())
    emit(cipher.digest())
    signature = pss.new(signer).sign(signed)
    out.write(signature + struct.pack(">H", len(signature)))
    out.flush()
    os.fsync(out.fileno())
    out.close()
    t1 = time.perf_counter()
    conn.commit() if spec["backend"] == "postgresql" else conn.execute("COMMIT")
    t2 = time.perf_counter()
    server1 = proc_cpu_seconds(pid)
    conn.close()
    return {
        "wall": t2 - t0,
        "open_unit": 0.0,
        "work": t1 - t0,
        "commit": t2 - t1,
        "server_cpu": _cpu_delta(server0, server1),
        "rss_before_mb": rss_before,
    }


STEPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ours_create": step_ours_create,
    "ours_check": step_ours_check,
    "bare_create": step_bare_create,
    "produce": step_produce,
}


# --------------------------------------------------------------------------
# Installations (parent side)


class Workspace:
    """One benchmark invocation: a work directory, shared keys, and the databases to drop at the end."""

    def __init__(self, workdir: Path | None, pg_admin_url: str, keep: bool, quiet_wait: float = 0) -> None:
        base = Path(workdir) if workdir else DEFAULT_WORKDIR
        self.dir = (base / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}").resolve()
        self.dir.mkdir(parents=True)
        self.pg_admin_url = pg_admin_url
        self.keep = keep
        self.quiet_wait = quiet_wait
        self.pg_databases: list[str] = []
        self._master_keys: Path | None = None
        self._factory: tuple[Path, Path] | None = None

    # RSA key generation is slow; one key directory and one factory key pair
    # serve every installation of the run (each gets its own copy).
    def master_keys(self) -> Path:
        if self._master_keys is None:
            from testkit.keys import make_key_dir

            self._master_keys = make_key_dir(self.dir / "master-keys")
        return self._master_keys

    def factory_keys(self) -> tuple[Path, Path]:
        if self._factory is None:
            from testkit.factory import make_factory_keys

            self._factory = make_factory_keys(self.dir)
        return self._factory

    def _pg_admin(self):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(self.pg_admin_url, autocommit=True, connect_timeout=5)

    def checkpoint(self, backend: str) -> None:
        """Flush PostgreSQL's dirty buffers before a measurement, so no run pays for the previous one's."""
        if backend == "postgresql":
            with self._pg_admin() as conn:
                conn.execute("CHECKPOINT")
        os.sync()

    def before_measurement(self, backend: str) -> None:
        """A checkpoint, then (with --quiet-wait) a wait for the other processes on the machine to go idle."""
        self.checkpoint(backend)
        if self.quiet_wait > 0:
            wait_for_quiet(self.quiet_wait)

    def new_database(self, backend: str, label: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self.dir / label / 'cards.db'}"
        name = f"bench_cards_{uuid.uuid4().hex[:10]}_{label.replace('-', '_')}"
        with self._pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.pg_databases.append(name)
        return f"{self.pg_admin_url.rsplit('/', 1)[0]}/{name}"

    def install(self, backend: str, label: str) -> Installation:
        """A migrated database, a key directory, an administrator, and the bench factory registered."""
        from cardmgmt import factories
        from cardmgmt.config import Settings
        from cardmgmt.context import Permission
        from cardmgmt.db import make_engine, upgrade
        from cardmgmt.system import CardSystem
        from testkit.keys import copy_key_dir

        home = self.dir / label
        home.mkdir()
        url = self.new_database(backend, label)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        key_dir = copy_key_dir(self.master_keys(), home / "keys")
        system = CardSystem(Settings(database_url=url, key_dir=key_dir, operator=ADMIN, password=ADMIN_PASSWORD))
        system.initialise(ADMIN, ADMIN_PASSWORD)
        with system.unit(Permission.MANAGE_CARDS) as ctx:
            factories.register(ctx, FACTORY, self.factory_keys()[1])
        system.close()
        return Installation(backend, url, home, key_dir)

    def discard(self, inst: Installation) -> None:
        """Drop an installation's database (and its files unless --keep) once it has been measured."""
        if inst.backend == "postgresql":
            name = inst.url.rsplit("/", 1)[1]
            with self._pg_admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.pg_databases.remove(name)
        if not self.keep:
            shutil.rmtree(inst.home, ignore_errors=True)

    def close(self) -> None:
        if self.pg_databases:
            with self._pg_admin() as conn:
                for name in self.pg_databases:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.pg_databases.clear()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            log(f"kept work directory {self.dir}")


class Installation:
    def __init__(self, backend: str, url: str, home: Path, key_dir: Path) -> None:
        self.backend, self.url, self.home, self.key_dir = backend, url, home, key_dir

    def spec(self, step: str, **extra: Any) -> dict[str, Any]:
        return {"step": step, "backend": self.backend, "url": self.url, "key_dir": str(self.key_dir), **extra}

    def system(self):  # type: ignore[no-untyped-def]
        from cardmgmt.config import Settings
        from cardmgmt.system import CardSystem

        return CardSystem(
            Settings(database_url=self.url, key_dir=self.key_dir, operator=ADMIN, password=ADMIN_PASSWORD)
        )

    def card_count(self, batch_no: str = BATCH_NO) -> int:
        from cardmgmt import batches

        system = self.system()
        try:
            with system.db.transaction() as s:
                return batches.card_count(s, batches.get(s, batch_no))
        finally:
            system.close()


def expiry() -> dt.date:
    return dt.date.today() + dt.timedelta(days=730)


# --------------------------------------------------------------------------
# Reporting


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine_summary(pg_admin_url: str | None) -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    pg = "not used"
    if pg_admin_url:
        try:
            import psycopg

            with psycopg.connect(pg_admin_url, autocommit=True, connect_timeout=5) as conn:
                pg = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        except Exception:  # noqa: BLE001 - only for the summary line
            pg = "unreachable"
    commit = _run(["git", "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "status", "--porcelain", "--", "cardmgmt", "migrations"])
    changed = sorted({line.split(maxsplit=1)[-1] for line in dirty.splitlines()}) if dirty not in ("", "?") else []
    tree = commit + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, Python {platform.python_version()}, "
        f"PostgreSQL {pg}, {platform.system()} {platform.release()}; code at {tree}"
    )


def record(title: str, command: str, body: str, pg_admin_url: str | None, machine: str | None = None) -> None:
    """Append a dated section to bench/RESULTS.md.

    ``machine`` is ``machine_summary()`` taken when the run started (it names
    the code measured); if the working tree changed during the run, the
    section says so.
    """
    now = dt.datetime.now(dt.UTC)
    at_end = machine_summary(pg_admin_url)
    machine = machine or at_end
    changed = "" if at_end == machine else f"\n\n**The code changed during the run**; at the end: {at_end}"
    section = f"\n### {now:%Y-%m-%d %H:%M} UTC — {title}\n\n`{command}`\n\nMachine: {machine}{changed}\n\n{body}\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n")
    with RESULTS.open("a") as f:
        f.write(section)
    log(f"appended a section to {RESULTS}")


def common_arguments(parser: Any, default_quantity: int) -> None:
    parser.add_argument("--quantity", type=int, default=default_quantity, help="cards per batch (default %(default)s)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--workdir", type=Path, help=f"where databases and files go (default {DEFAULT_WORKDIR.relative_to(ROOT)}/)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="measure each step this many times (median reported)")
    parser.add_argument("--pg-url", default=PG_ADMIN_URL, help="PostgreSQL maintenance database (env CARDS_BENCH_PG)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (databases are always dropped)")
    parser.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    parser.add_argument(
        "--profile", action="store_true", help="run the cardmgmt step under cProfile (timings inflated; not recordable)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        metavar="SECONDS",
        help="before each measured step, wait up to this long for other processes to leave the CPUs idle "
        "(default %(default)s; 0 = don't wait)",
    )


def backends(choice: str) -> list[str]:
    return ["sqlite", "postgresql"] if choice == "both" else [choice]


def print_profile(path: Path, limit: int = 25) -> None:
    import pstats

    stats = pstats.Stats(str(path), stream=sys.stdout)
    for key in ("tottime", "cumulative"):
        print(f"\n--- profile {path.name}, top {limit} by {key} ---")
        stats.sort_stats(key).print_stats(limit)


if __name__ == "__main__":
    _worker_main(sys.argv[1])
