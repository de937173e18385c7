"""Alembic environment: runs revisions on the engine handed over by ``cardmgmt.db``.

``cardmgmt.db.upgrade()`` passes the engine in ``config.attributes``; the
``alembic`` command line (for writing new revisions) reads
``CARDS_DATABASE_URL`` through ``cardmgmt.config.Settings``.
"""

from alembic import context

from cardmgmt.config import Settings
from cardmgmt.db import make_engine
from cardmgmt.models import Base

config = context.config
target_metadata = Base.metadata

engine = config.attributes.get("engine") or make_engine(Settings.load().database_url)

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode changes an SQLite table by copying it and dropping the
        # old one, which with foreign keys enforced fails for any table that
        # other rows refer to (cards).  The pragma only takes effect outside a
        # transaction, hence here; a revision that copies such tables runs
        # ``PRAGMA foreign_key_check`` before it ends.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if sqlite:
            # The connection goes back to the application's pool: enforce again.
            connection.rollback()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
