"""Alembic environment for burr_async's state table.

Options (each from ``config.attributes`` when run programmatically, else ``-x name=value``):
``url`` (else ``BURR_ASYNC_DATABASE_URL``, else ``sqlalchemy.url``, else the embedded SQLite
file), ``table_name`` (default ``burr_state``) and ``schema`` (Postgres). The version table is
``<table_name>_alembic_version``, separate from any other Alembic history in the database.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from burr_async.persistence._dialect import dialect_class
from burr_async.persistence.engine import DEFAULT_DATABASE_URL, normalize_url
from burr_async.persistence.models import (
    DEFAULT_TABLE_NAME,
    build_table,
    validate_identifier,
    version_table_name,
)

config = context.config
_x = context.get_x_argument(as_dictionary=True)


def _option(name: str) -> Any:
    value = config.attributes.get(name)
    return value if value is not None else _x.get(name)


table_name = validate_identifier(_option("table_name") or DEFAULT_TABLE_NAME, "table name")
schema = _option("schema")
if schema is not None:
    schema = validate_identifier(schema, "schema")
target_metadata = build_table(table_name, schema).metadata


def _url() -> str:
    return normalize_url(
        _option("url")
        or os.environ.get("BURR_ASYNC_DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
        or DEFAULT_DATABASE_URL
    )


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=version_table_name(table_name),
        version_table_schema=schema,
        **kwargs,
    )


def _run(connection: Connection) -> None:
    dialect = dialect_class(connection.dialect.name)
    _configure(connection=connection, render_as_batch=dialect.render_as_batch)
    with context.begin_transaction():
        dialect.lock_for_migration(connection, table_name, schema)
        context.run_migrations(table_name=table_name, schema=schema)


async def _run_async() -> None:
    engine = create_async_engine(_url(), poolclass=sa.pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations(table_name=table_name, schema=schema)
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    asyncio.run(_run_async())
