"""Suite-wide fixtures. Async tests run on asyncio through anyio's pytest plugin.

Every test that takes ``db`` or ``persister`` runs once on SQLite and once on Postgres; each
test session provisions its own SQLite file and Postgres schema with the real migrations and
drops them afterwards (see ``tests/databases.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from burr_async.persistence import SQLAlchemyPersister, create_engine, migrate
from tests.databases import BACKENDS, POSTGRES_URL, REQUIRE_POSTGRES, Database


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
async def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    path: Path = tmp_path_factory.mktemp("sqlite") / "burr_async_test.db"
    db = Database("sqlite", f"sqlite+aiosqlite:///{path}", None)
    engine = db.engine()
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    yield db
    path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
async def postgres_db() -> AsyncIterator[Database]:
    schema = f"burr_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # the server is down or unreachable
        await engine.dispose()
        message = f"Postgres at {POSTGRES_URL} is unreachable: {exc}"
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    db = Database("postgres", POSTGRES_URL, schema)
    try:
        await migrate.upgrade(engine, schema=schema)
        yield db
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
        await engine.dispose()


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest) -> Database:
    """The provisioned database of each backend in turn."""
    return request.getfixturevalue(f"{request.param}_db")  # type: ignore[no-any-return]


@pytest.fixture
async def persister(db: Database) -> AsyncIterator[SQLAlchemyPersister]:
    """A persister owning its engine, on each backend in turn; closed after the test."""
    async with db.persister() as p:
        yield p


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def persister_backend(request: pytest.FixtureRequest) -> Database | None:
    """None for the in-memory persister, else the provisioned database of a backend."""
    if request.param == "memory":
        return None
    return request.getfixturevalue(f"{request.param}_db")  # type: ignore[no-any-return]


@pytest.fixture
async def every_persister(persister_backend: Database | None) -> AsyncIterator[Any]:
    """Each persister in turn (in memory, SQLite, Postgres), closed after the test: for the
    contract they all keep."""
    from burr_async import InMemoryPersister

    persister: Any = (
        InMemoryPersister() if persister_backend is None else persister_backend.persister()
    )
    async with persister:
        yield persister
