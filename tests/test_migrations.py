"""Alembic migrations build exactly the schema the models describe, on both backends."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from shared.migrate import pending_revisions
from shared.models import Base


def test_all_heads_applied(database_url):
    assert pending_revisions(database_url) == set()


def test_models_match_migrations(db):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        diff = [d for d in compare_metadata(context, Base.metadata) if not _is_backend_artifact(d)]
    assert diff == []


def _is_backend_artifact(diff) -> bool:  # noqa: ANN001
    # Tables that exist only for a backend feature (e.g. SQLite FTS5 shadow tables)
    # are created by migrations on purpose and have no model.
    if isinstance(diff, tuple) and diff[0] == "remove_table":
        return diff[1].name.endswith(("_fts", "_fts_data", "_fts_idx", "_fts_docsize", "_fts_config", "_fts_content"))
    return False


def test_every_model_table_exists(db):
    tables = set(inspect(db.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_upgrade_is_repeatable(database_url):
    from shared.migrate import upgrade

    upgrade(database_url)  # already at head: a no-op, not an error
    assert pending_revisions(database_url) == set()
