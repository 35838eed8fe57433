"""Run Alembic migrations against an engine, without an alembic.ini on disk."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, inspect

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

log = logging.getLogger(__name__)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade to `revision`; one INFO line says from where to where when anything ran
    (Alembic's line per migration is DEBUG, see `outreach.logs`)."""
    from alembic.runtime.migration import MigrationContext

    with engine.begin() as connection:
        _unbounded_statements(connection)
        before = MigrationContext.configure(connection).get_current_heads()
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        after = MigrationContext.configure(connection).get_current_heads()
    if set(before) != set(after):
        log.info(
            "database schema upgraded from %s to %s",
            ", ".join(before) or "empty",
            ", ".join(after),
        )


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        _unbounded_statements(connection)
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _unbounded_statements(connection: Connection) -> None:
    """No statement timeout for this transaction: a migration rewriting a large table runs
    as long as it needs (the service's own statements keep theirs, `store.db`)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL statement_timeout = 0")


def is_current(engine: Engine) -> bool:
    """Whether the database has every table the code expects (used by /ready)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(engine))
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        current = MigrationContext.configure(connection).get_current_heads()
    return set(current) == set(script.get_heads())
