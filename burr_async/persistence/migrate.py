"""Running burr_async's Alembic migrations from Python (what ``burr-async db`` and
``persister.initialize()`` use). The scripts are the same ones ``alembic`` runs in a checkout."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from burr_async.errors import ConfigurationError
from burr_async.persistence.models import (
    DEFAULT_TABLE_NAME,
    validate_identifier,
    version_table_name,
)

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
    work: Callable[[Config, sa.Connection], Any],
) -> Any:
    async with _process_lock(), engine.begin() as connection:
        return await connection.run_sync(
            lambda sync: work(
                alembic_config(table_name=table_name, schema=schema, connection=sync), sync
            )
        )


async def upgrade(
    engine: AsyncEngine,
    revision: str = "head",
    *,
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
) -> None:
    """Migrate the state table up to ``revision``."""
    await _with_connection(
        engine, table_name, schema, lambda cfg, _conn: command.upgrade(cfg, revision)
    )


async def downgrade(
    engine: AsyncEngine,
    revision: str,
    *,
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
) -> None:
    """Migrate the state table down to ``revision`` (``base`` drops it)."""
    await _with_connection(
        engine, table_name, schema, lambda cfg, _conn: command.downgrade(cfg, revision)
    )


async def current(
    engine: AsyncEngine, *, table_name: str = DEFAULT_TABLE_NAME, schema: str | None = None
) -> str | None:
    """The revision the database is at, or None when it was never migrated."""

    def read(_cfg: Config, connection: sa.Connection) -> str | None:
        context = MigrationContext.configure(
            connection,
            opts={"version_table": version_table_name(table_name), "version_table_schema": schema},
        )
        return context.get_current_revision()

    return await _with_connection(engine, table_name, schema, read)  # type: ignore[no-any-return]


def head_revision() -> str | None:
    """The newest revision among the scripts."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
