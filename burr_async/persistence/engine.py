"""Engines for the persister: URL normalisation, and each database's connection set-up (which
its dialect module owns)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from burr_async.errors import ConfigurationError
from burr_async.persistence import _sqlite
from burr_async.persistence._dialect import async_drivername
from burr_async.persistence._sqlite import SQLiteSynchronous
from burr_async.persistence._sqlite import configure as configure_sqlite

__all__ = ["DEFAULT_DATABASE_URL", "SQLiteSynchronous", "configure_sqlite", "create_engine"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///.burr_async.db"
"""The embedded default: a SQLite file in the working directory."""


def parse_url(url: str | sa.URL) -> sa.URL:
    """``url`` as a SQLAlchemy URL with an async driver (see :func:`normalize_url`);
    ConfigurationError when it is not a URL."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigurationError(
            f"{str(url)[:200]!r} is not a database URL: use sqlite:///path/to/file.db or "
            "postgresql://user@host/dbname."
        ) from exc
    driver = async_drivername(parsed.drivername)
    return parsed.set(drivername=driver) if driver is not None else parsed


def normalize_url(url: str | sa.URL) -> str:
    """The URL with the async driver burr_async runs its database on (``sqlite://`` becomes
    ``sqlite+aiosqlite://``, ``postgresql://`` ``postgresql+asyncpg://``); others pass
    unchanged."""
    return parse_url(url).render_as_string(hide_password=False)


def create_engine(
    url: str | sa.URL,
    *,
    sqlite_synchronous: SQLiteSynchronous = "FULL",
    **engine_kwargs: Any,
) -> AsyncEngine:
    """An async engine for ``url`` (see :func:`normalize_url`). On SQLite its connections get
    the set-up of :func:`configure_sqlite` (``sqlite_synchronous``), an in-memory database one
    shared connection, and the SQLite version is checked. ``engine_kwargs`` go to
    ``create_async_engine``."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, **engine_kwargs)
    engine = create_async_engine(parsed, **_sqlite.engine_options(parsed, engine_kwargs))
    configure_sqlite(engine, synchronous=sqlite_synchronous)
    return engine
