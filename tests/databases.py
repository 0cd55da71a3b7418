"""The test databases: one SQLite file and one Postgres schema per test session.

Each test session provisions its own SQLite file and its own Postgres schema with the real
migrations (``alembic upgrade head``) and drops them afterwards. Postgres is at
``BURR_ASYNC_TEST_POSTGRES_URL`` (default: the local server, database ``test``); when it is
unreachable the Postgres cases are skipped, except under ``CI`` or
``BURR_ASYNC_REQUIRE_POSTGRES=1``, where they fail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from burr_async.persistence import SQLAlchemyPersister, create_engine

POSTGRES_URL = os.environ.get(
    "BURR_ASYNC_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("CI", "").lower() == "true" or bool(
    os.environ.get("BURR_ASYNC_REQUIRE_POSTGRES")
)
BACKENDS = ["sqlite", "postgres"]


@dataclass(frozen=True)
class Database:
    """One provisioned test database: how to reach it and where the table lives."""

    backend: str
    url: str
    schema: str | None

    def engine(self) -> AsyncEngine:
        return create_engine(self.url)

    def persister(self, engine: AsyncEngine | None = None, **kwargs: object) -> SQLAlchemyPersister:
        if engine is None:
            return SQLAlchemyPersister.from_url(self.url, schema=self.schema, **kwargs)  # type: ignore[arg-type]
        return SQLAlchemyPersister(engine, schema=self.schema, **kwargs)  # type: ignore[arg-type]
