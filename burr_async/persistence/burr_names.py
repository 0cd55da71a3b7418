"""Burr's persister names and constructors, over burr_async's persisters.

A Burr application's persister code runs after changing its imports: each class here is
:class:`~burr_async.persistence.sqlalchemy.SQLAlchemyPersister` (or the in-memory persister)
with the constructor Burr users call, not another storage implementation.

- :class:`SQLitePersister`: ``SQLitePersister(db_path, table_name, serde_kwargs,
  connect_kwargs)`` and its ``from_values``;
- :class:`AsyncSQLitePersister`: ``await AsyncSQLitePersister.from_values(db_path, ...)``;
- :class:`PostgreSQLPersister`: ``PostgreSQLPersister.from_values(db_name, user, password,
  host, port, table_name)``;
- :class:`AsyncPostgreSQLPersister`: ``await AsyncPostgreSQLPersister.from_values(...,
  use_pool=False, **pool_kwargs)``;
- ``AsyncInMemoryPersister`` and ``AsyncDevNullPersister`` are in
  :mod:`burr_async.persistence.memory` (they need no database).

Burr's arguments keep their names and order. Those with a meaning here are mapped (the
connection arguments to the engine); the others raise
:class:`~burr_async.errors.ConfigurationError` naming the argument and why, rather than being
silently dropped.
"""

from __future__ import annotations

import os
from collections.abc import Coroutine, Generator, Mapping
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from burr_async.errors import ConfigurationError
from burr_async.persistence import _delta
from burr_async.persistence.base import AsyncBaseStatePersister
from burr_async.persistence.engine import SQLiteSynchronous, create_engine
from burr_async.persistence.models import DEFAULT_TABLE_NAME
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister, Storage
from burr_async.serde import Serde

__all__ = [
    "AsyncPostgreSQLPersister",
    "AsyncSQLitePersister",
    "PostgreSQLPersister",
    "SQLitePersister",
]

P = TypeVar("P", bound=AsyncBaseStatePersister)


class Opening(Generic[P]):
    """What Burr's async ``from_values`` returns: await it for the persister, or use it as
    ``async with Cls.from_values(...) as persister:``, which closes the persister on exit.
    Either way, once."""

    __slots__ = ("_coro", "_persister", "_used")

    def __init__(self, coro: Coroutine[Any, Any, P]) -> None:
        self._coro = coro
        self._persister: P | None = None
        self._used = False

    def _take(self) -> Coroutine[Any, Any, P]:
        if self._used:
            raise RuntimeError(
                "This from_values(...) result was already awaited or entered: call from_values "
                "again for another persister."
            )
        self._used = True
        return self._coro

    def __await__(self) -> Generator[Any, None, P]:
        return self._take().__await__()

    async def __aenter__(self) -> P:
        self._persister = await self._take()
        return await self._persister.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._persister is not None:
            await self._persister.__aexit__(exc_type, exc, tb)

    def __del__(self) -> None:
        if not self._used:  # never awaited: close the coroutine without a warning
            self._coro.close()


async def _ready(persister: P) -> P:
    return persister


def _refuse_serde_kwargs(serde_kwargs: Mapping[str, Any] | None) -> None:
    """ConfigurationError for Burr serde kwargs: they have no meaning here."""
    if serde_kwargs:
        raise ConfigurationError(
            f"serde_kwargs={dict(serde_kwargs)!r}: Burr passes these to its per-type "
            "serializers (State.serialize(**serde_kwargs)); burr_async encodes the whole state "
            "with one Serde object instead. Drop serde_kwargs and pass serde=OrjsonSerde(...) "
            "(for example OrjsonSerde(models=[MyModel]) for pydantic models); see the "
            "Serialization page of the docs."
        )


def _refuse_connection(connection: object, instead: str) -> None:
    if connection is not None:
        raise ConfigurationError(
            f"connection={type(connection).__name__} object: burr_async's persister opens its own "
            f"connections, through a SQLAlchemy engine and its pool, so it cannot use a "
            f"connection opened outside it. {instead}"
        )


# -- SQLite --------------------------------------------------------------------------------------
# Burr passes connect_kwargs to sqlite3.connect (sync) or aiosqlite.connect (async). What they
# mean under SQLAlchemy's aiosqlite adapter, which opens the connections here:
_SQLITE_CONNECT_ARGS = ("cached_statements", "iter_chunk_size")  # passed to aiosqlite.connect
_SQLITE_REFUSED = {
    "isolation_level": "the persister runs its statements in autocommit and manages its own "
    "transactions",
    "autocommit": "the persister runs its statements in autocommit and manages its own "
    "transactions",
    "detect_types": "SQLAlchemy converts column values itself; sqlite3's converters would change "
    "what the persister reads back",
    "factory": "SQLAlchemy's aiosqlite adapter wraps the connection; a custom sqlite3.Connection "
    "class is not supported",
    "uri": "give the database as a URL instead: "
    "SQLAlchemyPersister.from_url('sqlite:///file:app.db?mode=rwc&uri=true')",
    "database": "the database is db_path",
    "loop": "aiosqlite no longer uses it",
}


def _sqlite_engine(
    db_path: str | os.PathLike[str],
    connect_kwargs: Mapping[str, Any] | None,
    synchronous: SQLiteSynchronous,
    engine_kwargs: dict[str, Any],
) -> AsyncEngine:
    """An engine for the SQLite file ``db_path``, with Burr's ``connect_kwargs`` mapped: the
    ``timeout`` (seconds) becomes the connections' busy timeout, ``cached_statements`` and
    ``iter_chunk_size`` go to ``aiosqlite.connect``, ``check_same_thread=False`` is already so;
    anything else is refused."""
    if not isinstance(db_path, str | os.PathLike):
        raise ConfigurationError(
            f"db_path must be the path of the SQLite file (a str or os.PathLike), not a "
            f"{type(db_path).__name__}. Burr's AsyncSQLitePersister(connection) takes an open "
            "aiosqlite connection; here use await AsyncSQLitePersister.from_values(db_path)."
        )
    connect_args: dict[str, Any] = {}
    timeout: float | None = None
    for name, value in (connect_kwargs or {}).items():
        if name in _SQLITE_CONNECT_ARGS:
            connect_args[name] = value
        elif name == "timeout":
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(
                    f"connect_kwargs['timeout'] must be a number of seconds, not {value!r}."
                )
            timeout = float(value)
        elif name == "check_same_thread":
            if value is not False:
                raise ConfigurationError(
                    "connect_kwargs['check_same_thread']: aiosqlite runs each connection on its "
                    "own worker thread, which SQLAlchemy reaches from the event loop's; only "
                    "check_same_thread=False (already the case) is accepted."
                )
        elif name in _SQLITE_REFUSED:
            raise ConfigurationError(
                f"connect_kwargs[{name!r}] is not supported: {_SQLITE_REFUSED[name]}."
            )
        else:
            raise ConfigurationError(
                f"connect_kwargs[{name!r}] is not an argument of sqlite3.connect or "
                "aiosqlite.connect that burr_async maps (timeout, cached_statements, "
                "iter_chunk_size, check_same_thread=False)."
            )
    if connect_args:
        engine_kwargs = {
            **engine_kwargs,
            "connect_args": {**engine_kwargs.get("connect_args", {}), **connect_args},
        }
    url = sa.URL.create("sqlite", database=os.fspath(db_path))
    engine = create_engine(url, sqlite_synchronous=synchronous, **engine_kwargs)
    if timeout is not None:
        busy = f"PRAGMA busy_timeout={round(timeout * 1000)}"

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            # registered after the engine's own set-up (its 30 s default), so it wins
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(busy)
            finally:
                cursor.close()

        sa.event.listen(engine.sync_engine, "connect", on_connect)
    return engine


class SQLitePersister(SQLAlchemyPersister):
    """Burr's ``SQLitePersister(db_path, table_name, serde_kwargs, connect_kwargs)`` and
    ``SQLitePersister.from_values(...)``: the SQLAlchemy persister on the SQLite file
    ``db_path``, owning its engine (``aclose``, ``cleanup`` or ``async with`` dispose it). All
    its methods are coroutines.

    ``connect_kwargs``: ``timeout`` (seconds) is the busy timeout; ``cached_statements``,
    ``iter_chunk_size`` and ``check_same_thread=False`` are passed on; the others are refused
    (see ``docs/porting.md``). ``serde_kwargs`` and ``connection`` are refused (pass ``serde=``;
    the persister opens its own connections). ``synchronous`` is SQLite's durability setting
    (see :func:`~burr_async.persistence.engine.configure_sqlite`)."""

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        table_name: str = DEFAULT_TABLE_NAME,
        serde_kwargs: Mapping[str, Any] | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        connection: None = None,
        *,
        serde: Serde | None = None,
        synchronous: SQLiteSynchronous = "FULL",
        storage: Storage = "delta",
        snapshot_every: int = _delta.DEFAULT_SNAPSHOT_EVERY,
        **engine_kwargs: Any,
    ) -> None:
        _refuse_serde_kwargs(serde_kwargs)
        _refuse_connection(connection, "Pass db_path alone.")
        engine = _sqlite_engine(db_path, connect_kwargs, synchronous, engine_kwargs)
        super().__init__(
            engine,
            table_name=table_name,
            serde=serde,
            storage=storage,
            snapshot_every=snapshot_every,
        )
        self._owns_engine = True

    @classmethod
    def from_values(
        cls,
        db_path: str | os.PathLike[str],
        table_name: str = DEFAULT_TABLE_NAME,
        serde_kwargs: Mapping[str, Any] | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Self:
        """The persister for ``db_path``, as the constructor (Burr's sync spelling)."""
        return cls(db_path, table_name, serde_kwargs, connect_kwargs, **kwargs)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """``from_values(**config)``, as in Burr."""
        return cls.from_values(**config)


class AsyncSQLitePersister(SQLAlchemyPersister):
    """Burr's ``AsyncSQLitePersister``: ``await AsyncSQLitePersister.from_values(db_path, ...)``
    (or ``async with AsyncSQLitePersister.from_values(...) as persister:``), then
    ``await persister.initialize()``, ``await persister.is_initialized()`` and
    ``await persister.cleanup()`` as in Burr. It is the SQLAlchemy persister on the SQLite file,
    owning its engine; the arguments are those of :class:`SQLitePersister`."""

    def __init__(self, engine: AsyncEngine, **kwargs: Any) -> None:
        if not isinstance(engine, AsyncEngine):
            raise ConfigurationError(
                f"AsyncSQLitePersister({type(engine).__name__} object): Burr's constructor takes "
                "an open aiosqlite connection; burr_async's persister opens its own connections. "
                "Use await AsyncSQLitePersister.from_values(db_path), or "
                "AsyncSQLitePersister(engine) with an engine from "
                "burr_async.persistence.create_engine."
            )
        super().__init__(engine, **kwargs)

    @classmethod
    def from_values(
        cls,
        db_path: str | os.PathLike[str],
        table_name: str = DEFAULT_TABLE_NAME,
        serde_kwargs: Mapping[str, Any] | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        *,
        serde: Serde | None = None,
        synchronous: SQLiteSynchronous = "FULL",
        storage: Storage = "delta",
        snapshot_every: int = _delta.DEFAULT_SNAPSHOT_EVERY,
        **engine_kwargs: Any,
    ) -> Opening[Self]:
        """A persister owning an engine for the SQLite file ``db_path``: await the result, or
        enter it with ``async with`` (which closes the persister on exit). The engine connects
        on first use; a bad argument raises here, before anything is awaited."""
        _refuse_serde_kwargs(serde_kwargs)
        engine = _sqlite_engine(db_path, connect_kwargs, synchronous, engine_kwargs)
        persister = cls._owning(
            engine,
            table_name=table_name,
            serde=serde,
            storage=storage,
            snapshot_every=snapshot_every,
        )
        return Opening(_ready(persister))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Opening[Self]:
        """``from_values(**config)``, as in Burr."""
        return cls.from_values(**config)


# -- Postgres ------------------------------------------------------------------------------------
# Burr's AsyncPostgreSQLPersister passes **pool_kwargs to asyncpg.create_pool. The pool here is
# SQLAlchemy's (the engine's): its size settings map onto it, asyncpg's connection arguments go
# to every connection it opens, and the pool's hooks on asyncpg's own pool are refused.
_ASYNCPG_CONNECT_ARGS = (
    "timeout",
    "command_timeout",
    "ssl",
    "direct_tls",
    "server_settings",
    "passfile",
    "statement_cache_size",
    "max_cached_statement_lifetime",
    "max_cacheable_statement_size",
    "target_session_attrs",
    "krbsrvname",
    "gsslib",
)
_ASYNCPG_IGNORED = ("min_size", "max_queries")
_ASYNCPG_REFUSED = {
    "setup": "it runs on asyncpg's own pool; run set-up on each new connection with a "
    "SQLAlchemy 'connect' event on persister.engine.sync_engine",
    "init": "it runs on asyncpg's own pool; run set-up on each new connection with a "
    "SQLAlchemy 'connect' event on persister.engine.sync_engine",
    "reset": "SQLAlchemy's pool resets a returned connection itself",
    "connection_class": "SQLAlchemy's asyncpg adapter wraps the connection; a custom class is "
    "not supported",
    "record_class": "the persister reads asyncpg's own records",
    "loop": "the engine runs on the running event loop",
    "connect": "SQLAlchemy's pool opens the connections",
}
_MIN_POOL = 3  # the persister holds two connections; reads need at least one more


def _postgres_engine(
    db_name: str,
    user: str,
    password: str | None,
    host: str,
    port: int,
    pool_kwargs: Mapping[str, Any],
    engine_kwargs: dict[str, Any],
) -> AsyncEngine:
    """An engine for the Postgres database, Burr's ``pool_kwargs`` mapped onto it."""
    connect_args: dict[str, Any] = {}
    for name, value in pool_kwargs.items():
        if name == "max_size":
            if isinstance(value, bool) or not isinstance(value, int) or value < _MIN_POOL:
                raise ConfigurationError(
                    f"max_size={value!r}: the persister holds two connections and reads on "
                    f"others; give it at least {_MIN_POOL}."
                )
            engine_kwargs.setdefault("pool_size", value)
            engine_kwargs.setdefault("max_overflow", 0)
        elif name == "max_inactive_connection_lifetime":
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}.")
            if value > 0:  # 0: asyncpg keeps idle connections forever, as the engine does
                engine_kwargs.setdefault("pool_recycle", value)
        elif name in _ASYNCPG_CONNECT_ARGS:
            connect_args[name] = value
        elif name in _ASYNCPG_IGNORED:
            continue  # no equivalent on SQLAlchemy's pool, and no effect on the steps stored
        elif name in _ASYNCPG_REFUSED:
            raise ConfigurationError(f"{name!r} is not supported: {_ASYNCPG_REFUSED[name]}.")
        else:
            raise ConfigurationError(
                f"{name!r} is not an argument of asyncpg.create_pool or asyncpg.connect that "
                "burr_async maps (see the persisters table in docs/porting.md)."
            )
    if connect_args:
        engine_kwargs["connect_args"] = {**engine_kwargs.get("connect_args", {}), **connect_args}
    url = sa.URL.create(
        "postgresql", username=user, password=password, host=host, port=port, database=db_name
    )
    return create_engine(url, **engine_kwargs)


class PostgreSQLPersister(SQLAlchemyPersister):
    """Burr's ``PostgreSQLPersister.from_values(...)``: the SQLAlchemy persister on Postgres
    (asyncpg), owning its engine. All its methods are coroutines."""

    @classmethod
    def from_values(
        cls,
        db_name: str,
        user: str,
        password: str | None,
        host: str,
        port: int,
        table_name: str = DEFAULT_TABLE_NAME,
        *,
        schema: str | None = None,
        serde: Serde | None = None,
        storage: Storage = "delta",
        snapshot_every: int = _delta.DEFAULT_SNAPSHOT_EVERY,
        **engine_kwargs: Any,
    ) -> Self:
        """A persister owning an engine for the given Postgres connection values;
        ``engine_kwargs`` go to ``create_async_engine``."""
        url = sa.URL.create(
            "postgresql",
            username=user,
            password=password,
            host=host,
            port=port,
            database=db_name,
        )
        return cls._owning(
            create_engine(url, **engine_kwargs),
            table_name=table_name,
            schema=schema,
            serde=serde,
            storage=storage,
            snapshot_every=snapshot_every,
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """``from_values(**config)``, as in Burr."""
        return cls.from_values(**config)


class AsyncPostgreSQLPersister(SQLAlchemyPersister):
    """Burr's ``AsyncPostgreSQLPersister``:
    ``await AsyncPostgreSQLPersister.from_values(db_name, user, password, host, port,
    table_name="burr_state", use_pool=False, **pool_kwargs)`` (or ``async with``), then
    ``initialize``, ``is_initialized`` and ``cleanup`` as in Burr. It is the SQLAlchemy
    persister on asyncpg, owning its engine.

    The engine always has a pool, so one persister serves concurrent applications whatever
    ``use_pool`` says (Burr's ``use_pool=False`` is one connection that tasks cannot share).
    ``pool_kwargs``: ``max_size`` becomes the pool size (at least 3), and
    ``max_inactive_connection_lifetime`` the engine's ``pool_recycle``; asyncpg's connection
    arguments (``timeout``, ``command_timeout``, ``ssl``, ``server_settings``...) go to every
    connection; ``min_size`` and ``max_queries`` have no equivalent and are ignored; asyncpg's
    pool hooks (``setup``, ``init``, ``reset``, ``connection_class``, ``record_class``) are
    refused. Unlike Burr, ``pool_kwargs`` apply with ``use_pool=False`` too."""

    def __init__(self, engine: AsyncEngine, **kwargs: Any) -> None:
        if not isinstance(engine, AsyncEngine):
            raise ConfigurationError(
                f"AsyncPostgreSQLPersister({type(engine).__name__} object): Burr's constructor "
                "takes an asyncpg connection or pool; burr_async's persister opens its own "
                "connections. Use await AsyncPostgreSQLPersister.from_values(...), or "
                "AsyncPostgreSQLPersister(engine) with an engine from "
                "burr_async.persistence.create_engine."
            )
        super().__init__(engine, **kwargs)

    @classmethod
    def from_values(
        cls,
        db_name: str,
        user: str,
        password: str | None,
        host: str,
        port: int,
        table_name: str = DEFAULT_TABLE_NAME,
        use_pool: bool = False,
        *,
        schema: str | None = None,
        serde: Serde | None = None,
        storage: Storage = "delta",
        snapshot_every: int = _delta.DEFAULT_SNAPSHOT_EVERY,
        engine_kwargs: Mapping[str, Any] | None = None,
        **pool_kwargs: Any,
    ) -> Opening[Self]:
        """A persister owning an engine for the given Postgres connection values: await the
        result, or enter it with ``async with`` (which closes the persister on exit).
        ``engine_kwargs`` go to ``create_async_engine``; ``pool_kwargs`` are mapped as the class
        says. The engine connects on first use; a bad argument raises here."""
        if not isinstance(use_pool, bool):
            raise ConfigurationError(f"use_pool must be True or False, not {use_pool!r}.")
        engine = _postgres_engine(
            db_name, user, password, host, port, pool_kwargs, dict(engine_kwargs or {})
        )
        persister = cls._owning(
            engine,
            table_name=table_name,
            schema=schema,
            serde=serde,
            storage=storage,
            snapshot_every=snapshot_every,
        )
        return Opening(_ready(persister))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Opening[Self]:
        """``from_values(**config)``, as in Burr."""
        return cls.from_values(**config)
