"""Persisters: where application steps are stored.

:class:`SQLAlchemyPersister` (SQLite or Postgres by URL) is the production one;
:class:`InMemoryPersister` keeps steps in memory with the same contract, for tests. The
database side is imported on first use.
"""

from typing import TYPE_CHECKING

from burr_async._lazy import lazy_exports
from burr_async.persistence.base import (
    AppSummary,
    AsyncBaseStateLoader,
    AsyncBaseStatePersister,
    AsyncBaseStateSaver,
    ParentPointer,
    PersistedStateData,
    Status,
)
from burr_async.persistence.memory import InMemoryPersister

if TYPE_CHECKING:
    from burr_async.persistence.engine import (
        DEFAULT_DATABASE_URL,
        configure_sqlite,
        create_engine,
    )
    from burr_async.persistence.sqlalchemy import (
        PostgreSQLPersister,
        SQLAlchemyPersister,
        SQLitePersister,
    )

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        **dict.fromkeys(
            ("DEFAULT_DATABASE_URL", "configure_sqlite", "create_engine"),
            "burr_async.persistence.engine",
        ),
        **dict.fromkeys(
            ("PostgreSQLPersister", "SQLAlchemyPersister", "SQLitePersister"),
            "burr_async.persistence.sqlalchemy",
        ),
    },
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
