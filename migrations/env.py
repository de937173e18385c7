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
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
