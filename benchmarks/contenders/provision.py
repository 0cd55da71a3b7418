"""Provisioning shared by the contenders that write burr_async-shaped tables."""

from __future__ import annotations

from pathlib import Path

from benchmarks.targets import Target
from burr_async.persistence import migrate
from burr_async.persistence.engine import create_engine

__all__ = ["engine_url", "provision_burr_async_table"]


def engine_url(target: Target, sqlite_path: Path | None = None) -> str:
    """The SQLAlchemy URL of ``target`` (for SQLite: of the file ``sqlite_path``)."""
    if target.backend == "sqlite":
        if sqlite_path is None:
            raise ValueError("a SQLite target needs the contender's file")
        return f"sqlite+aiosqlite:///{sqlite_path}"
    return target.pg.sqlalchemy_url


async def provision_burr_async_table(
    target: Target, table_name: str, sqlite_path: Path | None = None
) -> None:
    """Create ``table_name`` with burr_async's own migrations (in the run's schema on Postgres),
    so that every contender writing this shape writes exactly the same table."""
    engine = create_engine(
        engine_url(target, sqlite_path), sqlite_synchronous=target.sqlite_synchronous
    )
    try:
        schema = target.pg.schema if target.backend == "postgres" else None
        await migrate.upgrade(engine, table_name=table_name, schema=schema)
    finally:
        await engine.dispose()
