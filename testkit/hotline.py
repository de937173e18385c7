"""The whole hotline on this machine, for the end-to-end phone tests and ``bench/bench_hotline.py``.

``Hotline`` puts together what a caller's call goes through: a card
database and a stand-in marketing database of their own on the PostgreSQL
server (``testkit.install.Installation``), cards issued through the card
services (``testkit.lifecycle``), both recharge servers as processes
(``cli.py serve A/B``, ``testkit.pair``), and a real Asterisk in its sandbox
(``testkit.sandbox``) playing the prompt WAVs that ``voice_prompts.build``
renders, in Mandarin and English, with its AGI configured for both servers
and the installation's API key.  Calls are placed with SIPp from the scripts
in ``tests/calls`` (``testkit.replay``).

Asterisk is brought up by ``testkit.sandbox.start_hotline``, as ``make demo``
does, in the e2e root (``testkit.sandbox.e2e_root``), waiting up to
``SANDBOX_WAIT`` seconds while another process runs it.  Needs root,
PostgreSQL on 127.0.0.1:5432, SIPp, espeak-ng and sox.
"""

# test-case-name: tests.e2e.test_hotline

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from cardmgmt import stock
from cardmgmt.context import Role
from cardmgmt.keys import load_api_key
from cardmgmt.models import Batch, Card, Recharge
from cardmgmt.system import CardSystem
from ivr.client import RechargeClient
from marketing_iface.standin import SAMPLE_ACCOUNTS
from testkit import books
from testkit.callscript import Compiled, Injection, compile_script, load
from testkit.dispatcher import Dispatcher
from testkit.frontends import FrontEnds
from testkit.hearing import Sounds
from testkit.install import PASSWORDS, Installation
from testkit.lifecycle import Bench, issued_batch, read_pins, sold_batch
from testkit.pair import Server
from testkit.replay import CALLER_AUDIO, ScriptResult, run_compiled
from testkit.sandbox import SANDBOX_WAIT, Sandbox, free_sip_port, start_hotline

ROOT = Path(__file__).resolve().parents[1]
CALLS = ROOT / "tests" / "calls"
ACCOUNTS = [a.account_no for a in SAMPLE_ACCOUNTS]
BALANCES = {a.account_no: a.balance for a in SAMPLE_ACCOUNTS}


class Hotline:
    """One hotline: installation with cards, the server pair, Asterisk with prompts; see the module docstring.

    Set up in order: ``setup()``, issue cards, ``start_servers()``,
    ``start_asterisk()``; ``close()`` undoes it all.  ``call()`` replays a
    script from ``tests/calls`` (or any path) and returns its result.
    """

    def __init__(self, workdir: Path, factory_keys: tuple[Path, Path]) -> None:
        self.workdir = workdir
        self.inst = Installation(workdir)
        self.factory_keys = factory_keys
        self.system: CardSystem | None = None
        self.bench: Bench | None = None
        self.sandbox: Sandbox | None = None  # the first Asterisk
        self.sandboxes: list[Sandbox] = []
        self.dispatcher: Dispatcher | None = None
        self.front_ends: FrontEnds | None = None
        self.sounds: Sounds | None = None  # what calls are checked to hear
        self.card_engine: Engine | None = None
        self.marketing_engine: Engine | None = None

    # --- the installation and its cards --------------------------------------------------------

    def setup(self) -> None:
        self.inst.setup()
        self.system = CardSystem(self.inst.settings())
        self.system.initialise("alice", PASSWORDS["alice"])
        self.bench = Bench(self.system, self.workdir, self.factory_keys)
        self.bench.add_operator("bob", Role.FINANCE)
        self.card_engine = create_engine(_psycopg(self.inst.card_url))
        self.marketing_engine = create_engine(_psycopg(self.inst.marketing_url), pool_pre_ping=True)

    def issue(self, batch_no: str, quantity: int, *, face_value: int = 5000,
              expiry: dt.date | None = None, sold: bool = True) -> list[tuple[str, str]]:
        """A batch whose cards are all issued to a hall and (unless ``sold`` is false) sold there; (serial, PIN)."""
        assert self.bench is not None
        kw = {"expiry": expiry} if expiry else {}
        walk = sold_batch if sold else issued_batch
        pins = walk(self.bench, batch_no, quantity, face_value=face_value, box_size=10, **kw)
        return sorted(pins.items())

    def stock(self, batch_no: str, quantity: int, *, face_value: int = 5000) -> list[tuple[str, str]]:
        """A batch taken into stock and never issued; (serial, PIN)."""
        assert self.bench is not None
        self.bench.stocked_batch(batch_no, quantity, face_value=face_value, box_size=10)
        return sorted(read_pins(self.bench, batch_no).items())

    def void(self, serial: str) -> None:
        assert self.bench is not None
        with self.bench.unit() as ctx:
            stock.void(ctx, stock.Selection.serial(serial), "damaged at the hall")

    def freeze(self, serial: str) -> None:
        assert self.bench is not None
        with self.bench.unit() as ctx:
            stock.freeze(ctx, stock.Selection.serial(serial), "reported stolen")

    def expire(self, batch_no: str) -> None:
        """Move a batch's expiry date into the past.

        No service backdates an expiry (a batch cannot be created already
        expired, and time does not pass in a test), so the date is set
        directly; "expired" is derived from it alone.
        """
        assert self.card_engine is not None
        with self.card_engine.begin() as c:
            c.execute(update(Batch).where(Batch.batch_no == batch_no)
                      .values(expiry=dt.date.today() - dt.timedelta(days=3)))

    # --- the servers ----------------------------------------------------------------------------

    def start_servers(self) -> None:
        self.inst.start_pair()
        self.wait_serving()

    @property
    def primary(self) -> Server:
        return self.inst.servers[0]

    @property
    def standby(self) -> Server:
        return self.inst.servers[1]

    def restart_stopped_servers(self) -> None:
        """Start again the servers a test killed, and wait until each serves requests."""
        for server in self.inst.servers:
            if not server.alive:
                server.start()
        for server in self.inst.servers:
            server.wait_ready()
        self.wait_serving()

    def wait_serving(self, timeout: float = 30.0) -> None:
        """Wait until each server answers an account look-up (listening is not enough: it needs its database)."""
        for server in self.inst.servers:
            client = RechargeClient([("127.0.0.1", server.port)], load_api_key(self.inst.workdir / "keys"), timeout=2.0,
                                    tls=self.inst.tls())
            end = time.monotonic() + timeout
            answer: dict[str, object] = {}
            while time.monotonic() < end:
                answer = client.account(call_id="e2e-ready", account_no=ACCOUNTS[0])
                if answer.get("outcome") == "ok":
                    break
                time.sleep(0.25)
            else:
                raise AssertionError(f"server {server.name} does not serve requests ({answer}); see {server.log}")

    def client(self, timeout: float = 1.0) -> RechargeClient:
        return self.inst.client(timeout=timeout)

    # --- Asterisk ---------------------------------------------------------------------------------

    def start_asterisk(self, root: Path, prompts: Path) -> Sandbox:
        """Start the sandbox, install the prompts for both languages, point the AGI at both servers."""
        api_key = (self.inst.workdir / "keys" / "api.key").read_bytes()
        ca_cert = (self.inst.workdir / "keys" / "tls-ca.pem").read_bytes()
        sandbox = start_hotline(Sandbox(root, free_sip_port()), prompts,
                                [("127.0.0.1", s.port) for s in self.inst.servers], api_key, wait=SANDBOX_WAIT,
                                ca_cert=ca_cert)
        self.sandboxes.append(sandbox)
        self.sandbox = self.sandbox or sandbox
        self.sounds = Sounds.load(prompts)  # what calls are checked to hear (``call(..., audio=...)``)
        return sandbox

    def start_front_ends(self, root: Path, prompts: Path) -> Dispatcher:
        """Two Asterisks (``root`` and a copy of it beside it) behind a Kamailio dispatcher; calls then go to the dispatcher."""
        api_key = (self.inst.workdir / "keys" / "api.key").read_bytes()
        ca_cert = (self.inst.workdir / "keys" / "tls-ca.pem").read_bytes()
        edge = FrontEnds(root, self.workdir / "dispatcher")
        self.front_ends = edge
        self.dispatcher = edge.start(prompts, [("127.0.0.1", s.port) for s in self.inst.servers], api_key, ca_cert)
        self.sandboxes = edge.sandboxes
        self.sandbox = edge.sandboxes[0]
        self.sounds = Sounds.load(prompts)
        return self.dispatcher

    @property
    def sip_target(self) -> tuple[str, int]:
        """Where a caller sends its calls: the dispatcher when there is one, else the one Asterisk."""
        if self.dispatcher is not None:
            return self.dispatcher.address, self.dispatcher.port
        assert self.sandbox is not None
        return "127.0.0.1", self.sandbox.sip_port

    # --- calls ------------------------------------------------------------------------------------

    def compile(self, script: str | Path, variables: Mapping[str, str],
                injection: Injection | None = None, audible_only: bool = False) -> Compiled:
        path = Path(script) if Path(script).suffix == ".call" else CALLS / f"{script}.call"
        audio = str(CALLER_AUDIO) if CALLER_AUDIO.is_file() else None  # a caller's voice, as phones send it
        return compile_script(load(path), variables, injection, audio=audio, audible_only=audible_only)

    def call(self, script: str | Path, variables: Mapping[str, str], *, injection: Injection | None = None,
             calls: int = 1, concurrent: int = 1, rate: float | None = None, rate_period_ms: int = 1000,
             timeout: float | None = None, trace_messages: bool = True, audio: str = "both") -> ScriptResult:
        """Replay one script (``calls`` copies, ``concurrent`` at once) against this hotline's Asterisk.

        ``audio``: ``both`` checks what each call heard as well as its texts,
        ``only`` what it heard alone (``testkit.replay``), ``none`` its texts.
        """
        compiled = self.compile(script, variables, injection, audible_only=audio == "only")
        workdir = self.workdir / "calls" / f"{compiled.script.name}-{time.monotonic_ns()}"
        return run_compiled(compiled, *self.sip_target, workdir, calls=calls,
                            concurrent=concurrent, rate=rate, rate_period_ms=rate_period_ms, timeout=timeout,
                            trace_messages=trace_messages, sounds=self.sounds if audio != "none" else None)

    def call_many(self, jobs: Mapping[str, Mapping[str, str]]) -> dict[str, ScriptResult]:
        """Replay several scripts at once (one SIPp each), each with its variables; results by script name."""
        with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
            futures = {name: pool.submit(self.call, name, variables) for name, variables in jobs.items()}
            return {name: f.result() for name, f in futures.items()}

    def call_while(self, script: str, variables: Mapping[str, str], *, when_step: int,
                   action: Callable[[], None]) -> ScriptResult:
        """Replay ``script`` and run ``action`` as soon as the scenario reaches step ``when_step`` (its log says so)."""
        compiled = self.compile(script, variables)
        if when_step not in compiled.sync_steps:
            raise ValueError(f"step {when_step} of {script} is not one the scenario waits for")
        workdir = self.workdir / "calls" / f"{compiled.script.name}-{time.monotonic_ns()}"
        log = workdir / f"{compiled.script.name}.logs.log"
        done = threading.Event()
        fired: list[float] = []

        def watch() -> None:
            while not done.is_set():
                try:
                    if f" {when_step} sync " in log.read_text(encoding="utf-8", errors="replace"):
                        action()
                        fired.append(time.monotonic())
                        return
                except FileNotFoundError:
                    pass
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            result = run_compiled(compiled, *self.sip_target, workdir)
        finally:
            done.set()
            watcher.join(10)
        if not fired:
            raise AssertionError(f"step {when_step} of {script} was never reached, so the action never ran:\n"
                                 + result.report())
        return result

    # --- what the books say ---------------------------------------------------------------------

    def card_state(self, serial: str) -> str:
        assert self.card_engine is not None
        with self.card_engine.connect() as c:
            return str(c.execute(select(Card.state).where(Card.serial == serial)).scalar_one())

    def recharges(self, serials: Sequence[str]) -> list[Recharge]:
        """The recharge records of these cards (detached, fully loaded)."""
        assert self.card_engine is not None
        with Session(self.card_engine) as s:
            found = list(s.scalars(select(Recharge).where(Recharge.card_serial.in_(list(serials)))))
            s.expunge_all()
        return found

    def unposted(self) -> int:
        assert self.card_engine is not None
        return books.unposted(self.card_engine)

    def wait_until_posted(self, timeout: float = 60.0) -> bool:
        """Whether the outbox drained (every recharge posted to the marketing system) within ``timeout``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.unposted() == 0:
                return True
            time.sleep(0.2)
        return self.unposted() == 0

    def balance(self, account_no: str) -> int:
        assert self.marketing_engine is not None
        with self.marketing_engine.connect() as m:
            return int(m.execute(text("SELECT balance FROM accounts WHERE account_no = :a"),
                                 {"a": account_no}).scalar_one())

    def interface_rows(self, account_no: str) -> list[tuple[str, int, str]]:
        """The marketing system's interface rows for an account: (recharge_ref, amount, card_serial)."""
        assert self.marketing_engine is not None
        with self.marketing_engine.connect() as m:
            rows = m.execute(text("SELECT recharge_ref, amount, card_serial FROM recharge_interface "
                                  "WHERE account_no = :a ORDER BY id"), {"a": account_no}).all()
        return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]

    # --- the end ---------------------------------------------------------------------------------

    def close(self) -> None:
        try:
            if self.front_ends is not None:
                self.front_ends.stop()
            for sandbox in self.sandboxes:
                sandbox.stop()
        finally:
            for engine in (self.card_engine, self.marketing_engine):
                if engine is not None:
                    engine.dispose()
            if self.bench is not None:
                self.bench.close_others()
            if self.system is not None:
                self.system.close()
            self.inst.teardown()


def _psycopg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://")
