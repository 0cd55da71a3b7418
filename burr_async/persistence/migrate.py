"""Running burr_async's Alembic migrations from Python (what ``burr-async db`` and
``persister.initialize()`` use). The scripts are the same ones ``alembic`` runs in a checkout.

Alembic is imported when a migration runs, not when burr_async is imported. Every function
raises :class:`~burr_async.errors.PersistenceError` (naming the table and the revision) for a
database or Alembic failure, and :class:`~burr_async.errors.ConfigurationError` for bad names.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from burr_async.errors import ConfigurationError
from burr_async.persistence._dialect import dialect_class
from burr_async.persistence._errors import ErrorContext, translated
from burr_async.persistence.models import (
    DEFAULT_TABLE_NAME,
    HEAD_REVISION,
    validate_identifier,
    version_table_name,
)

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["alembic_config", "current", "downgrade", "script_location", "upgrade"]


def script_location() -> str:
    """Where the migration scripts are: inside the installed package, or the checkout's
    top-level ``migrations/`` (an editable install)."""
    packaged = resources.files("burr_async") / "_migrations"
    if packaged.is_dir():
        return str(packaged)
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").is_file():
        return str(checkout)
    raise ConfigurationError(
        "burr_async's migration scripts are missing from this installation; reinstall the package."
    )


def alembic_config(
    url: str | None = None,
    *,
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
    connection: sa.Connection | None = None,
) -> Config:
    """An Alembic ``Config`` for the state table ``table_name`` (in ``schema``)."""
    from alembic.config import Config

    validate_identifier(table_name, "table name")
    if schema is not None:
        validate_identifier(schema, "schema")
    config = Config()
    config.set_main_option("script_location", script_location())
    config.attributes.update(
        {"url": url, "table_name": table_name, "schema": schema, "connection": connection}
    )
    return config


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _process_lock() -> asyncio.Lock:
    """Alembic keeps its running context in module globals: one migration at a time per
    process (per event loop)."""
    loop = asyncio.get_running_loop()
    lock = _LOCKS.get(loop)
    if lock is None:
        lock = _LOCKS[loop] = asyncio.Lock()
    return lock


async def _with_connection(
    engine: AsyncEngine,
    table_name: str,
    schema: str | None,
    what: str,
    work: Callable[[Config, sa.Connection], Any],
) -> Any:
    from alembic.util import CommandError

    cls = dialect_class(engine.dialect.name)
    if schema is not None and not cls.supports_schema:
        raise ConfigurationError(
            f"schema={schema!r} is only supported on Postgres; on {cls.name} use another "
            "table_name or database file."
        )
    config = alembic_config(table_name=table_name, schema=schema)
    qualified = f"{schema}.{table_name}" if schema else table_name
    context = ErrorContext(
        qualified,
        lambda: "burr-async db upgrade",
        HEAD_REVISION,
        driver_errors=cls.driver_errors,
    )
    with translated(context, what, extra=(CommandError,)):
        async with _process_lock(), engine.begin() as connection:

            def run(sync: sa.Connection) -> Any:
                config.attributes["connection"] = sync
                return work(config, sync)

            return await connection.run_sync(run)


async def upgrade(
    engine: AsyncEngine,
    revision: str = "head",
    *,
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
) -> None:
    """Migrate the state table up to ``revision``."""
    from alembic import command

    await _with_connection(
        engine,
        table_name,
        schema,
        f"Migrating up to revision {revision!r}",
        lambda cfg, _conn: command.upgrade(cfg, revision),
    )


async def downgrade(
    engine: AsyncEngine,
    revision: str,
    *,
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
) -> None:
    """Migrate the state table down to ``revision`` (``base`` drops it)."""
    from alembic import command

    await _with_connection(
        engine,
        table_name,
        schema,
        f"Migrating down to revision {revision!r}",
        lambda cfg, _conn: command.downgrade(cfg, revision),
    )


async def current(
    engine: AsyncEngine, *, table_name: str = DEFAULT_TABLE_NAME, schema: str | None = None
) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    def read(_cfg: Config, connection: sa.Connection) -> str | None:
        context = MigrationContext.configure(
            connection,
            opts={"version_table": version_table_name(table_name), "version_table_schema": schema},
        )
        return context.get_current_revision()

    return await _with_connection(  # type: ignore[no-any-return]
        engine, table_name, schema, "Reading the revision", read
    )


def head_revision() -> str | None:
    """The newest revision among the scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
