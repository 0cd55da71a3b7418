"""Persisters: where application steps are stored.

:class:`SQLAlchemyPersister` (SQLite or Postgres by URL) is the production one;
:class:`InMemoryPersister` keeps steps in memory with the same contract, for tests.
"""

from burr_async.persistence.base import (
    AsyncBaseStateLoader,
    AsyncBaseStatePersister,
    AsyncBaseStateSaver,
    ParentPointer,
    PersistedStateData,
    Status,
)
from burr_async.persistence.engine import DEFAULT_DATABASE_URL, configure_sqlite, create_engine
from burr_async.persistence.memory import InMemoryPersister
from burr_async.persistence.sqlalchemy import (
    AppSummary,
    PostgreSQLPersister,
    SQLAlchemyPersister,
    SQLitePersister,
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "AppSummary",
    "AsyncBaseStateLoader",
    "AsyncBaseStatePersister",
    "AsyncBaseStateSaver",
    "InMemoryPersister",
    "ParentPointer",
    "PersistedStateData",
    "PostgreSQLPersister",
    "SQLAlchemyPersister",
    "SQLitePersister",
    "Status",
    "configure_sqlite",
    "create_engine",
]
