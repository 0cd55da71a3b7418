"""Where the benchmark writes: SQLite files in a temporary directory, and a fresh Postgres schema
per run. Both are created at the start of a run and removed at its end."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from burr_async.persistence.engine import SQLiteSynchronous, normalize_url

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "POOL_SIZE",
    "Backend",
    "BackendUnavailableError",
    "Environment",
    "PostgresTarget",
    "Target",
    "provision",
]

Backend = Literal["memory", "sqlite", "postgres"]

DEFAULT_POSTGRES_URL = os.environ.get(
    "BURR_ASYNC_BENCH_POSTGRES_URL",
    os.environ.get(
        "BURR_ASYNC_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    ),
)
"""``BURR_ASYNC_BENCH_POSTGRES_URL``, else the test suite's ``BURR_ASYNC_TEST_POSTGRES_URL``,
else the local server's database ``test``."""

POOL_SIZE = 10
"""Connections every Postgres contender may hold (W2 runs 100 apps over them)."""


class BackendUnavailableError(RuntimeError):
    """A backend named with ``--backends`` cannot be used."""


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """A Postgres database and the schema this run owns in it."""

    url: sa.URL
    schema: str
    pool_size: int = POOL_SIZE

    @property
    def sqlalchemy_url(self) -> str:
        return self.url.render_as_string(hide_password=False)

    def asyncpg_kwargs(self) -> dict[str, Any]:
        """``asyncpg.connect``/``create_pool`` keywords for the database (no schema)."""
        return {
            "user": self.url.username,
            "password": self.url.password,
            "host": self.url.host or "127.0.0.1",
            "port": self.url.port or 5432,
            "database": self.url.database,
        }

    def libpq_conninfo(self) -> str:
        """A ``postgresql://`` URL for psycopg (no schema)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class Target:
    """One backend as the contenders see it."""

    backend: Backend
    sqlite_dir: Path | None = None
    sqlite_synchronous: SQLiteSynchronous = "FULL"
    postgres: PostgresTarget | None = None

    def sqlite_path(self, name: str) -> Path:
        """The SQLite file of one contender (each contender gets its own file)."""
        if self.sqlite_dir is None:
            raise RuntimeError("this target has no SQLite directory")
        return self.sqlite_dir / f"{name}.db"

    @property
    def pg(self) -> PostgresTarget:
        if self.postgres is None:
            raise RuntimeError("this target has no Postgres database")
        return self.postgres


@dataclass(slots=True)
class Environment:
    """The backends of one run: ``targets`` that can be used, ``skipped`` ones with the reason,
    and facts about them for the report."""

    targets: dict[Backend, Target] = field(default_factory=dict)
    skipped: dict[Backend, str] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)


def _filesystem(path: Path) -> str:
    """The filesystem type ``path`` lives on (from /proc/mounts), or "unknown"."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    best, fstype = "", "unknown"
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1]
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fstype = mount, parts[2]
    return fstype


async def _postgres_facts(pg: PostgresTarget) -> tuple[str | None, dict[str, str]]:
    """Create the run's schema; the server's durability settings. (None, facts) when it
    works, (reason, {}) when Postgres cannot be used."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install -e '.[postgres]')", {}
    try:
        conn = await asyncpg.connect(**pg.asyncpg_kwargs(), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"unreachable at {pg.url.render_as_string()}: {type(exc).__name__}: {exc}", {}
    try:
        version = await conn.fetchval("SHOW server_version")
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("synchronous_commit", "fsync", "wal_sync_method", "full_page_writes")
        }
        await conn.execute(f'CREATE SCHEMA "{pg.schema}"')
    finally:
        await conn.close()
    durability = ", ".join(f"{k}={v}" for k, v in settings.items())
    return None, {"Postgres": f"{version} ({durability}); this run's schema: {pg.schema}"}


async def _drop_schema(pg: PostgresTarget) -> None:
    import asyncpg

    conn = await asyncpg.connect(**pg.asyncpg_kwargs(), timeout=10)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{pg.schema}" CASCADE')
    finally:
        await conn.close()


@asynccontextmanager
async def provision(
    backends: list[Backend],
    *,
    postgres_url: str,
    require: set[Backend],
    sqlite_synchronous: SQLiteSynchronous,
    sqlite_parent: Path | None,
) -> AsyncIterator[Environment]:
    """Create the run's SQLite directory and Postgres schema; remove both afterwards.

    A backend in ``require`` that cannot be used is an error; any other is skipped with its
    reason."""
    env = Environment()
    sqlite_dir: Path | None = None
    pg: PostgresTarget | None = None
    try:
        if "memory" in backends:
            env.targets["memory"] = Target("memory")
        if "sqlite" in backends:
            import sqlite3

            sqlite_dir = Path(tempfile.mkdtemp(prefix="burr_async_bench_", dir=sqlite_parent))
            fstype = _filesystem(sqlite_dir)
            env.targets["sqlite"] = Target(
                "sqlite", sqlite_dir=sqlite_dir, sqlite_synchronous=sqlite_synchronous
            )
            note = " (tmpfs: fsync is free here, so SQLite figures are not durable ones)"
            env.facts["SQLite"] = f"{sqlite3.sqlite_version}, files in {sqlite_dir} on {fstype}" + (
                note if fstype == "tmpfs" else ""
            )
        if "postgres" in backends:
            url = make_url(normalize_url(postgres_url))
            candidate = PostgresTarget(url, f"bench_{uuid.uuid4().hex[:12]}")
            reason, facts = await _postgres_facts(candidate)
            if reason is not None:
                if "postgres" in require:
                    raise BackendUnavailableError(f"Postgres was asked for but is {reason}")
                env.skipped["postgres"] = reason
            else:
                pg = candidate
                env.targets["postgres"] = Target("postgres", postgres=pg)
                env.facts.update(facts)
        yield env
    finally:
        if pg is not None:
            await _drop_schema(pg)
        if sqlite_dir is not None:
            shutil.rmtree(sqlite_dir, ignore_errors=True)
