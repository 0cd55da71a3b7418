"""Engines for the persister: URL normalisation and the SQLite connection setup."""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["DEFAULT_DATABASE_URL", "SQLiteSynchronous", "configure_sqlite", "create_engine"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///.burr_async.db"
"""The embedded default: a SQLite file in the working directory."""

SQLiteSynchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def normalize_url(url: str | sa.URL) -> str:
    """The URL with an async driver: ``sqlite://`` becomes ``sqlite+aiosqlite://`` and
    ``postgresql://`` becomes ``postgresql+asyncpg://``; others pass unchanged."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    return parsed.render_as_string(hide_password=False)


def configure_sqlite(engine: AsyncEngine, *, synchronous: SQLiteSynchronous = "FULL") -> None:
    """Set up every new SQLite connection of ``engine`` for concurrent, durable use:
    WAL journal (readers never block the writer), ``synchronous`` (``FULL``: a committed step
    survives power loss; ``NORMAL``: it survives a crash of the process, and the last steps may
    be lost on power loss, about 3x faster here), a 30 s busy timeout, and foreign keys on."""
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    sa.event.listen(engine.sync_engine, "connect", on_connect)


def create_engine(
    url: str | sa.URL,
    *,
    sqlite_synchronous: SQLiteSynchronous = "FULL",
    **engine_kwargs: Any,
) -> AsyncEngine:
    """An async engine for ``url`` (see :func:`normalize_url`), with the SQLite setup of
    :func:`configure_sqlite` when it is SQLite. ``engine_kwargs`` go to
    ``create_async_engine``."""
    normalized = make_url(normalize_url(url))
    if normalized.get_backend_name() == "sqlite":
        database = normalized.database or ""
        if database in ("", ":memory:") or "mode=memory" in str(normalized):
            engine_kwargs.setdefault("poolclass", sa.pool.StaticPool)
        engine = create_async_engine(normalized, **engine_kwargs)
        configure_sqlite(engine, synchronous=sqlite_synchronous)
        return engine
    return create_async_engine(normalized, **engine_kwargs)
