"""Persisters: where application steps are stored.

:class:`SQLAlchemyPersister` (SQLite or Postgres by URL) is the production one;
:class:`InMemoryPersister` keeps steps in memory with the same contract, for tests. Burr's
persister names are here too: ``SQLitePersister``, ``AsyncSQLitePersister``,
``PostgreSQLPersister`` and ``AsyncPostgreSQLPersister`` (from
:mod:`burr_async.persistence.burr_names`), ``AsyncInMemoryPersister`` and
``AsyncDevNullPersister`` (from
:mod:`burr_async.persistence.memory`). The database side is imported on first use.
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
from burr_async.persistence.memory import (
    AsyncDevNullPersister,
    AsyncInMemoryPersister,
    InMemoryPersister,
)

if TYPE_CHECKING:
    from burr_async.persistence.burr_names import (
        AsyncPostgreSQLPersister,
        AsyncSQLitePersister,
        PostgreSQLPersister,
        SQLitePersister,
    )
    from burr_async.persistence.engine import (
        DEFAULT_DATABASE_URL,
        configure_sqlite,
        create_engine,
    )
    from burr_async.persistence.sqlalchemy import SQLAlchemyPersister

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        **dict.fromkeys(
            ("DEFAULT_DATABASE_URL", "configure_sqlite", "create_engine"),
            "burr_async.persistence.engine",
        ),
        "SQLAlchemyPersister": "burr_async.persistence.sqlalchemy",
        **dict.fromkeys(
            (
                "AsyncPostgreSQLPersister",
                "AsyncSQLitePersister",
                "PostgreSQLPersister",
                "SQLitePersister",
            ),
            "burr_async.persistence.burr_names",
        ),
    },
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "AppSummary",
    "AsyncBaseStateLoader",
    "AsyncBaseStatePersister",
    "AsyncBaseStateSaver",
    "AsyncDevNullPersister",
    "AsyncInMemoryPersister",
    "AsyncPostgreSQLPersister",
    "AsyncSQLitePersister",
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
