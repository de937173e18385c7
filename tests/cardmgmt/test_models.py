"""The declared models (cardmgmt/models.py) against the one schema history in migrations/ (real databases)."""

from cardmgmt.db import make_engine


def test_migrations_match_the_models(database_url):
    """Alembic's history and the declared models describe the same schema, on each backend."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from cardmgmt.models import Base

    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
