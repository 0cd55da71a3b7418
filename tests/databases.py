"""The test databases: one SQLite file and one Postgres schema per test session.

Each test session provisions its own SQLite file and its own Postgres schema with the real
migrations (``alembic upgrade head``) and drops them afterwards. Postgres is at
``BURR_ASYNC_TEST_POSTGRES_URL`` (default: the local server, database ``test``); when it is
unreachable the Postgres cases are skipped, except under ``CI`` or
``BURR_ASYNC_REQUIRE_POSTGRES=1``, where they fail.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from burr_async.persistence import SQLAlchemyPersister, create_engine, migrate

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

    @asynccontextmanager
    async def table_at(self, revision: str = "head") -> AsyncIterator[tuple[AsyncEngine, str]]:
        """A table of its own, migrated to ``revision``: ``(engine, table name)``; migrated
        down to nothing and the engine disposed afterwards."""
        name = f"t_{uuid.uuid4().hex[:10]}"
        engine = self.engine()
        try:
            await migrate.upgrade(engine, revision, table_name=name, schema=self.schema)
            yield engine, name
        finally:
            await migrate.downgrade(engine, "base", table_name=name, schema=self.schema)
            await engine.dispose()


async def stored_rows(persister: SQLAlchemyPersister, app_id: str) -> list[tuple[int, bool, str]]:
    """``(sequence_id, delta, state text)`` of an app's rows as stored, oldest first."""
    t = persister.table
    query = (
        sa.select(t.c.sequence_id, t.c.delta, sa.cast(t.c.state, sa.Text))
        .where(t.c.app_uid == app_id)
        .order_by(t.c.sequence_id)
    )
    async with persister.engine.connect() as conn:
        return [(seq, bool(delta), text) for seq, delta, text in (await conn.execute(query)).all()]


async def age_steps(persister: Any, pk: str, app_id: str, by: dt.timedelta) -> None:
    """Move every step of an app back in time by ``by`` (its ``created_at``), in a database
    persister's table or an ``InMemoryPersister``."""
    from burr_async import InMemoryPersister

    if isinstance(persister, InMemoryPersister):
        rows = persister._rows[(pk, app_id)]
        for seq, row in rows.items():
            rows[seq] = (*row[:6], row[6] - by, *row[7:])
        return
    t = persister.table
    async with persister.engine.begin() as conn:
        old = (
            await conn.execute(
                sa.select(t.c.sequence_id, t.c.created_at).where(
                    t.c.partition_key == pk, t.c.app_uid == app_id
                )
            )
        ).all()
        for seq, created in old:
            await conn.execute(
                sa.update(t)
                .where(t.c.partition_key == pk, t.c.app_uid == app_id, t.c.sequence_id == seq)
                .values(created_at=created - by)
            )


REPO = Path(__file__).resolve().parents[1]


def alembic_command(db: Database, table: str) -> list[str]:
    """``python -m alembic`` with the ``-x`` options that point it at ``table`` of ``db`` (run
    it from :data:`REPO`, with :func:`alembic_env`); append the command (``upgrade head``)."""
    args = [sys.executable, "-m", "alembic", "-x", f"url={db.url}", "-x", f"table_name={table}"]
    if db.schema is not None:
        args += ["-x", f"schema={db.schema}"]
    return args


def alembic_env() -> dict[str, str]:
    """The environment the Alembic command runs in: this checkout's package importable."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


async def run_alembic(db: Database, table: str, *command: str) -> str:
    """Run ``alembic COMMAND`` on ``table`` of ``db`` (two minutes at most); its stdout.
    AssertionError, with its stderr, when it fails."""
    with anyio.fail_after(120):
        done = await anyio.run_process(
            [*alembic_command(db, table), *command], cwd=REPO, env=alembic_env(), check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()
