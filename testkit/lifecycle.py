"""A bench that walks cards through their life with the real services and files, for tests and benchmarks.

``Bench`` drives one installation as its operators would: register the
stand-in factory, create a batch (writing the new-card file), have the
factory produce it (``testkit.factory``, with faults when asked), check the
file that comes back, take the batch into stock, add halls, file and approve
issue requests.  ``issued_batch`` does the whole walk and returns the PINs,
read back from the new-card file as the factory would; ``sold_batch`` also
sells the cards at the hall, so they can be redeemed.  Operators other than
alice are signed in on demand with ``testkit.install.PASSWORDS``;
``close_others`` signs them out.
"""

# test-case-name: tests.cardmgmt.test_lifecycle_smoke, tests.cardmgmt.test_recharge, tests.cardmgmt.test_issuing

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from cardmgmt import batches, checks, factories, factory_sim, halls, issuing, operators, sales, stock
from cardmgmt.context import Permission, Role
from cardmgmt.db import normalise_url
from cardmgmt.system import CardSystem
from testkit import factory
from testkit.install import PASSWORDS, Installation, settings_for

FAR_EXPIRY = dt.date.today() + dt.timedelta(days=730)


@dataclass
class Bench:
    """One installation (``system``, signed in as alice), a work directory for its files, and the factory's keys."""

    system: CardSystem
    workdir: Path
    factory_keys: tuple[Path, Path]
    _others: dict[str, CardSystem] = field(default_factory=dict)

    def unit(self, permission: Permission = Permission.MANAGE_CARDS, who: str = "alice"):  # type: ignore[no-untyped-def]
        return self.as_(who).unit(permission)

    def as_(self, who: str) -> CardSystem:
        """The installation as operator ``who`` sees it (signed in on first use)."""
        if who == "alice":
            return self.system
        if who not in self._others:
            s = self.system.settings
            self._others[who] = CardSystem(settings_for(s.database_url, s.key_dir, who))
        return self._others[who]

    def close_others(self) -> None:
        """Sign out every operator but alice, whose ``system`` belongs to the caller."""
        for other in self._others.values():
            other.close()

    def add_operator(self, name: str, role: Role) -> None:
        with self.unit(Permission.MANAGE_OPERATORS) as ctx:
            operators.create(ctx.session, name, role, PASSWORDS[name])

    def register_factory(self, name: str = "F1") -> None:
        with self.unit() as ctx:
            factories.register(ctx, name, self.factory_keys[1])

    def create_batch(self, batch_no: str, quantity: int, *, face_value: int = 5000, box_size: int = 10,
                     expiry: dt.date = FAR_EXPIRY, factory: str = "F1") -> Path:
        out = self.workdir / f"{batch_no}.newcard"
        with self.unit() as ctx:
            batches.create(ctx, batch_no=batch_no, face_value=face_value, quantity=quantity, box_size=box_size,
                           expiry=expiry, factory_name=factory, out=out)
        return out

    def produce(self, batch_no: str, faults: factory_sim.Faults | None = None, name: str = "F1") -> Path:
        """The factory's post-production file for the batch, numbered so that each run makes a new one."""
        out = self.workdir / f"{batch_no}-{len(list(self.workdir.glob(batch_no + '*.produced')))}.produced"
        factory.produce(self.workdir / f"{batch_no}.newcard", out, self.factory_keys,
                        self.system.settings.key_dir / "system.pub.pem", factory_name=name, faults=faults)
        return out

    def check(self, batch_no: str, path: Path) -> checks.CheckReport:
        with self.unit() as ctx:
            return checks.check_file(ctx, batch_no, path)

    def stocked_batch(self, batch_no: str = "B1", quantity: int = 40, **kw: Any) -> None:
        """A batch made, produced without faults, checked and taken into stock."""
        if not self._factory_registered():
            self.register_factory()
        self.create_batch(batch_no, quantity, **kw)
        self.check(batch_no, self.produce(batch_no))
        with self.unit() as ctx:
            stock.intake(ctx, stock.Selection(batch_no=batch_no))

    def _factory_registered(self) -> bool:
        with self.system.db.transaction() as s:
            return bool(factories.listing(s))

    def add_hall(self, code: str = "H01") -> None:
        with self.unit() as ctx:
            halls.add(ctx, code, f"hall {code}")

    def states(self, batch_no: str) -> dict[str, int]:
        with self.system.db.transaction() as s:
            b = batches.get(s, batch_no)
            return stock.state_counts(s, [stock.Card.batch_id == b.id])

    def approved_request(self, quantity: int, face_value: int = 5000, hall: str = "H01") -> int:
        """An issue request filed by alice and approved by bob (finance); its id."""
        with self.unit() as ctx:
            req = issuing.file_request(ctx, face_value=face_value, quantity=quantity, hall_code=hall, reason="supply")
        with self.unit(Permission.DECIDE_REQUESTS, who="bob") as ctx:
            issuing.decide(ctx, req.id, approve=True, comment="ok")
        return req.id


def read_pins(bench: Bench, batch_no: str) -> dict[str, str]:
    """Serial → PIN of a batch made on this bench, read back from its new-card file as the factory would."""
    return factory.read_pins(bench.workdir / f"{batch_no}.newcard", bench.factory_keys[0],
                             bench.system.settings.key_dir / "system.pub.pem")


def issued_batch(bench: Bench, batch_no: str = "B1", quantity: int = 20, **kw: Any) -> dict[str, str]:
    """A batch whose cards are all issued to hall H01; returns serial → PIN."""
    bench.stocked_batch(batch_no, quantity, **kw)
    with bench.system.db.transaction() as s:
        has_hall = bool(halls.listing(s))
    if not has_hall:
        bench.add_hall("H01")
    rid = bench.approved_request(quantity, face_value=kw.get("face_value", 5000))
    with bench.unit() as ctx:
        issuing.collect(ctx, rid)
    return read_pins(bench, batch_no)


def sold_batch(bench: Bench, batch_no: str = "B1", quantity: int = 20, **kw: Any) -> dict[str, str]:
    """A batch whose cards are all issued to hall H01 and sold there, so they can be redeemed; serial → PIN."""
    pins = issued_batch(bench, batch_no, quantity, **kw)
    with bench.unit(Permission.SELL_CARDS) as ctx:
        sales.sell(ctx, "H01", stock.Selection(batch_no=batch_no))
    return pins


@contextmanager
def paired_installation(workdir: Path, factory_keys: tuple[Path, Path], batch_no: str, quantity: int, *,
                        box_size: int = 10, card_url: str = "") -> Iterator[Installation]:
    """An ``Installation`` on PostgreSQL (on ``card_url`` when given) with a batch sold, engines on both databases
    (``card_engine``, ``marketing_engine``), the cards as ``cards`` (serial, PIN) and the server pair running."""
    inst = Installation(workdir, given_card_url=card_url)
    inst.card_engine = inst.marketing_engine = None  # type: ignore[attr-defined]
    try:
        inst.setup()
        system = CardSystem(inst.settings())
        bench = None
        try:
            system.initialise("alice", PASSWORDS["alice"])
            bench = Bench(system, inst.workdir, factory_keys)
            bench.add_operator("bob", Role.FINANCE)
            inst.cards = list(sold_batch(bench, batch_no, quantity, box_size=box_size).items())  # type: ignore[attr-defined]
        finally:
            if bench is not None:
                bench.close_others()
            system.close()
        inst.card_engine = create_engine(normalise_url(inst.card_url), pool_pre_ping=True)  # type: ignore[attr-defined]
        inst.marketing_engine = create_engine(normalise_url(inst.marketing_url), pool_pre_ping=True)  # type: ignore[attr-defined]
        inst.start_pair()
        yield inst
    finally:
        for engine in (inst.card_engine, inst.marketing_engine):  # type: ignore[attr-defined]
            if engine is not None:
                engine.dispose()
        inst.teardown()
