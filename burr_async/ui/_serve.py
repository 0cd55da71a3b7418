"""``burr-async ui``: serve the web UI over the table of the command line's ``--url``.

The command builds one :class:`~burr_async.SQLAlchemyPersister` (``from_url``, display serde as
the reading commands use) that every request shares, serves :func:`burr_async.ui.create_app`
under uvicorn, and closes the persister when the server shuts down (ASGI lifespan).
"""

from __future__ import annotations

import contextlib

import uvicorn

from burr_async.persistence.sqlalchemy import SQLAlchemyPersister
from burr_async.serde import OrjsonSerde
from burr_async.ui._app import create_app

__all__ = ["serve"]


def serve(
    url: str,
    *,
    table_name: str,
    schema: str | None,
    host: str,
    port: int,
    graph: object | None,
    database: str,
) -> None:
    """Serve the UI on ``host:port`` until interrupted (Ctrl+C); the persister on ``url`` is
    closed on shutdown. ``database`` is the footer's label (the URL with its password hidden)."""
    persister = SQLAlchemyPersister.from_url(
        url,
        table_name=table_name,
        schema=schema,
        serde=OrjsonSerde(models_as_data=True),  # display only: a pydantic model as its data
    )
    app = create_app(persister, graph, close_persister=True, database=database)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,  # request lines carry user data; the pages escape it, a log would not
        log_level="warning",
        ws="none",
        server_header=False,
    )
    # uvicorn re-raises the Ctrl+C it shut down on: for this command, a normal stop
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()
