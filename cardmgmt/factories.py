"""Card factories and the RSA public keys their files are sealed for and signed with."""

# test-case-name: tests.cli.test_factory, tests.cardmgmt.test_checks

from pathlib import Path

from Crypto.PublicKey import RSA
from Crypto.PublicKey.RSA import RsaKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from cardmgmt.context import Context, Permission
from cardmgmt.errors import AlreadyExists, InvalidInput, NotFound
from cardmgmt.keys import load_public_key, public_key_fingerprint
from cardmgmt.models import Factory

MIN_RSA_BITS = 2048


def register(ctx: Context, name: str, public_key_file: Path) -> Factory:
    """Register a factory with its public key."""
    ctx.require(Permission.MANAGE_CARDS)
    name = name.strip()
    if not name or len(name) > 64:
        raise InvalidInput("a factory name must be 1-64 characters")
    key = load_public_key(public_key_file)
    if key.size_in_bits() < MIN_RSA_BITS:
        raise InvalidInput(f"the factory's key has {key.size_in_bits()} bits; at least {MIN_RSA_BITS} are needed")
    # With the system's own key as a factory's, a file "signed by the factory"
    # could be made by anyone holding the system key, and new-card files
    # sealed "for the factory" would open with it: the two sides must differ.
    if public_key_fingerprint(key) == public_key_fingerprint(ctx.keys.system_public):
        raise InvalidInput("that is the system's own public key, not a factory's")
    if ctx.session.execute(select(Factory.id).where(Factory.name == name)).first():
        raise AlreadyExists(f"factory {name!r} is already registered")
    factory = Factory(name=name, public_key_pem=key.export_key(format="PEM").decode(), fingerprint=public_key_fingerprint(key))
    ctx.session.add(factory)
    ctx.session.flush()
    ctx.log("factory.register", f"factory {name}", after={"fingerprint": factory.fingerprint})
    return factory


def get(session: Session, name: str) -> Factory:
    f = session.execute(select(Factory).where(Factory.name == name)).scalar_one_or_none()
    if f is None:
        raise NotFound(f"factory {name!r} is not registered")
    return f


def public_key(factory: Factory) -> RsaKey:
    return RSA.import_key(factory.public_key_pem)


def listing(session: Session) -> list[Factory]:
    return list(session.execute(select(Factory).order_by(Factory.name)).scalars())
