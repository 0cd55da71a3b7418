"""The web UI's ASGI application (Starlette): its pages, static files, errors and headers.

Pages (``GET``/``HEAD`` only; any other method is ``405``):

* ``/``: the applications, most recently updated first; filtered by partition, status and app
  id (exact or prefix), a page at a time by the persister's keyset cursor.
* ``/app?id=APP_ID&partition=P``: an application: its latest step, the fork parent and
  spawning parent as links, the graph with its position highlighted, and its step timeline a
  page at a time (``after``, ``limit``).
* ``/step?id=APP_ID&partition=P&seq=N``: one step: its error, the diff from the step before
  it, its state as a collapsible tree and as raw JSON, and the graph at its position.
* ``/static/...``: the style sheet and scripts, all shipped in the package.

Ids travel in the query string, never in the path, so that any app id or partition key (a
slash, ``..``, a percent sign) addresses its app. Every response carries a
Content-Security-Policy that only allows the UI's own scripts and styles (no network, no
inline script), and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlencode

import jinja2
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from burr_async.cli import _message
from burr_async.errors import BurrAsyncError, InvalidIdentifierError
from burr_async.persistence.base import PersistedStateData, Status
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister
from burr_async.ui import _data, _render
from burr_async.ui._graph import GivenGraph, resolve_graph

__all__ = ["create_app"]

_HERE = Path(__file__).resolve().parent
_STATUSES: tuple[str, ...] = get_args(Status)
APPS_PER_PAGE = 50
STEPS_PER_PAGE = 100
MAX_PER_PAGE = 1000

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self'"
)
_HEADERS = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class _SecurityHeaders:
    """ASGI middleware adding :data:`_HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    persister: _data.ReadAPI,
    graph: object | None = None,
    *,
    close_persister: bool = False,
    database: str | None = None,
) -> Starlette:
    """The read-only web UI over ``persister``'s stored applications, as an ASGI app: serve it
    with any ASGI server, or mount it in an application (``app.mount("/burr", ...)``).

    ``persister`` is any persister with ``load``, ``history`` and ``list_apps`` (the SQLAlchemy
    and in-memory ones); every request uses it, none opens an engine of its own, and only
    those reads are made. It must stay open while the UI serves: ``close_persister=True``
    closes it when the app shuts down (ASGI lifespan; a mounted app's lifespan is run by
    Starlette 0.x only, so close it in the host app's lifespan there).

    ``graph`` draws the applications' graph (see ``burr_async.ui._graph.resolve_graph``: a
    Graph, ApplicationGraph, Application or builder); without it, or for an application whose
    position is not in it, each page draws the graph observed in that application's stored
    steps. ``database`` labels the pages' footer (default: a SQLAlchemy persister's URL with
    the password hidden, and its table).
    """
    given = None if graph is None else resolve_graph(graph)
    ui = _UI(persister, given, database if database is not None else _label(persister))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_persister:
                await persister.aclose()  # type: ignore[attr-defined]

    routes = [
        Route("/", ui.apps, methods=["GET"], name="apps"),
        Route("/app", ui.app, methods=["GET"], name="app"),
        Route("/step", ui.step, methods=["GET"], name="step"),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    handlers: Mapping[Any, Callable[..., Any]] = {
        HTTPException: ui.http_error,
        InvalidIdentifierError: ui.bad_request,
        BurrAsyncError: ui.database_error,
        SQLAlchemyError: ui.database_error,
        OSError: ui.database_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.add_middleware(_SecurityHeaders)
    return app


def _label(persister: object) -> str:
    """The footer's description of a SQLAlchemy persister's table (password hidden)."""
    if not isinstance(persister, SQLAlchemyPersister):
        return type(persister).__name__
    url = persister.engine.url.render_as_string(hide_password=True)
    return f"{url}, table {persister.table.fullname}"


class _UI:
    """The request handlers, over one persister and its optional given graph."""

    def __init__(self, reader: _data.ReadAPI, given: GivenGraph | None, database: str) -> None:
        self.reader = reader
        self.given = given
        self.database = database
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,  # every stored string is user data
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["when"] = _render.when
        self.templates.filters["first_line"] = _render.first_line
        self.templates.filters["printable"] = _render.printable

    # -- pages --------------------------------------------------------------------------------
    async def apps(self, request: Request) -> Response:
        """The application list."""
        params = request.query_params
        search = params.get("q", "")
        match = params.get("match", "prefix")
        if match not in ("prefix", "exact"):
            raise HTTPException(400, "match must be 'prefix' or 'exact'")
        status = params.get("status") or None
        if status is not None and status not in _STATUSES:
            raise HTTPException(400, f"status must be one of {', '.join(_STATUSES)}")
        named = params.get("partition", "")
        scope = "named" if named else params.get("scope", "all")
        if scope not in ("all", "default", "named"):
            raise HTTPException(400, "scope must be 'all' or 'default'")
        after = None
        if "after_app" in params:
            after = _data.cursor(
                params["after_app"],
                params.get("after_partition") or None,
                _required(params, "after_seq"),
                _time(params.get("after_time", "")),
            )
        query = _data.AppQuery(
            partition=named or None,
            all_partitions=scope == "all",
            status=status,  # type: ignore[arg-type]  # checked against Status above
            search=search,
            match=match,  # type: ignore[arg-type]  # checked above
            after=after,
            limit=_limit(params, APPS_PER_PAGE),
        )
        summaries, more = await _data.apps_page(self.reader, query)
        filters = {
            "q": search or None,
            "match": match if search else None,
            "scope": None if scope in ("all", "named") else scope,
            "partition": named or None,
            "status": status,
            "limit": params.get("limit"),
        }
        next_page = None
        if more:
            last = summaries[-1]
            next_page = {
                **filters,
                "after_app": last.app_id,
                "after_partition": last.partition_key,
                "after_seq": last.sequence_id,
                "after_time": last.updated_at.isoformat(),
            }
        return self.render(
            request,
            "apps.html",
            summaries=summaries,
            search=search,
            match=match,
            scope=scope,
            partition=named,
            status=status or "",
            statuses=_STATUSES,
            paged=after is not None,
            first_page=filters,
            next_page=next_page,
        )

    async def app(self, request: Request) -> Response:
        """An application: its latest step, parents, graph and a page of its timeline."""
        app_id, partition = _app_of(request)
        params = request.query_params
        after = _integer(params, "after")
        limit = _limit(params, STEPS_PER_PAGE)
        latest = await self.reader.load(partition, app_id)
        if latest is None:
            raise HTTPException(404, _unknown(app_id, partition))
        steps, more = await _data.history_page(self.reader, partition, app_id, after, limit)
        ids = {"id": app_id, "partition": partition}
        pages = {
            "first": {**ids, "limit": params.get("limit")} if after is not None else None,
            "previous": None,
            "next": {**ids, "after": steps[-1].sequence_id, "limit": params.get("limit")}
            if more
            else None,
            "newest": None,
        }
        if after is not None and after >= 0:
            back = after - limit
            pages["previous"] = {**ids, "after": back if back >= 0 else None, "limit": limit}
        newest_after = latest.sequence_id - limit
        if more and newest_after > (after if after is not None else -1):
            pages["newest"] = {**ids, "after": newest_after, "limit": params.get("limit")}
        graph = await self.graph(partition, app_id, latest.position)
        return self.render(
            request,
            "app.html",
            app_id=app_id,
            partition=partition,
            latest=latest,
            parents=_parents(latest),
            steps=steps,
            after=after,
            pages=pages,
            graph=graph,
        )

    async def step(self, request: Request) -> Response:
        """One step: its state, the diff from the step before it, its error and the graph."""
        app_id, partition = _app_of(request)
        seq = _required(request.query_params, "seq")
        # the step and the one before it in one read (a delta chain is rebuilt once)
        window = await self.reader.history(partition, app_id, after_sequence_id=seq - 2, limit=2)
        by_seq = {stored.sequence_id: stored for stored in window}
        step, previous = by_seq.get(seq), by_seq.get(seq - 1)
        if step is None:
            if await self.reader.load(partition, app_id) is None:
                raise HTTPException(404, _unknown(app_id, partition))
            raise HTTPException(404, f"app {app_id!r} has no stored step {seq}")
        latest = await self.reader.load(partition, app_id)
        state = step.state.get_all()
        old = previous.state.get_all() if previous is not None else {}
        graph = await self.graph(partition, app_id, step.position)
        return self.render(
            request,
            "step.html",
            app_id=app_id,
            partition=partition,
            step=step,
            previous=previous,
            latest_seq=latest.sequence_id if latest is not None else seq,
            parents=_parents(step),
            diff=_render.diff(old, state),
            tree=_render.json_tree(state),
            raw=_render.json_text(state),
            graph=graph,
        )

    async def graph(self, partition: str | None, app_id: str, position: str) -> dict[str, Any]:
        """The graph picture's Mermaid text and what it shows, highlighting ``position``."""
        if self.given is not None and self.given.has(position):
            return {
                "source": self.given.mermaid(position),
                "observed": False,
                "mismatch": False,
                "truncated": False,
            }
        observed = await _data.observed_graph(self.reader, partition, app_id)
        return {
            "source": observed.mermaid(position),
            "observed": True,
            "mismatch": self.given is not None,
            "truncated": observed.truncated,
        }

    # -- errors -------------------------------------------------------------------------------
    async def http_error(self, request: Request, exc: Exception) -> Response:
        """An HTTP error (400, 404, 405) as a page; a 405 keeps its ``Allow`` header."""
        assert isinstance(exc, HTTPException)
        return self.render(
            request,
            "error.html",
            status_code=exc.status_code,
            headers=exc.headers,
            message=exc.detail,
        )

    async def bad_request(self, request: Request, exc: Exception) -> Response:
        """An id the persister refuses (too long, NUL): 400."""
        return self.render(request, "error.html", status_code=400, message=_message(exc, None))

    async def database_error(self, request: Request, exc: Exception) -> Response:
        """The database is unreachable or its table not provisioned: 503, in one line."""
        return self.render(request, "error.html", status_code=503, message=_message(exc, None))

    # -- rendering ----------------------------------------------------------------------------
    def render(
        self,
        request: Request,
        name: str,
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> Response:
        """The template ``name`` as an HTML response; templates link with ``url(route,
        **params)`` and ``static(path)``, which keep the prefix a mounted app is served at."""

        def url(route: str, **params: Any) -> str:
            query = urlencode({k: v for k, v in params.items() if v is not None})
            path = request.url_for(route).path
            return f"{path}?{query}" if query else path

        def static(path: str) -> str:
            return request.url_for("static", path=path).path

        html = self.templates.get_template(name).render(
            url=url, static=static, database=self.database, status_code=status_code, **context
        )
        return HTMLResponse(html, status_code=status_code, headers=headers)


def _app_of(request: Request) -> tuple[str, str | None]:
    """The app id and partition key a page is about (400 without an id)."""
    app_id = request.query_params.get("id", "")
    if not app_id:
        raise HTTPException(400, "which app? give its id: ?id=APP_ID (and &partition=KEY)")
    return app_id, request.query_params.get("partition") or None


def _required(params: Mapping[str, str], name: str) -> int:
    """The whole-number parameter ``name``, which must be given (400 otherwise)."""
    value = _integer(params, name)
    if value is None:
        raise HTTPException(400, f"{name} is required")
    return value


def _integer(params: Mapping[str, str], name: str) -> int | None:
    """The whole-number parameter ``name`` or None when absent (400 when it is not one)."""
    text = params.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number") from None


def _limit(params: Mapping[str, str], default: int) -> int:
    """The page size: ``limit``, 1 to :data:`MAX_PER_PAGE` (400 outside)."""
    limit = _integer(params, "limit")
    if limit is None:
        return default
    if not 1 <= limit <= MAX_PER_PAGE:
        raise HTTPException(400, f"limit must be from 1 to {MAX_PER_PAGE}")
    return limit


def _time(text: str) -> dt.datetime:
    """The time of an app-list cursor, an aware ISO time (400 otherwise)."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, "after_time must be an ISO time") from None
    if when.tzinfo is None:
        raise HTTPException(400, "after_time must have a time zone")
    return when


def _unknown(app_id: str, partition: str | None) -> str:
    where = f"partition {partition!r}" if partition else "the default partition"
    return f"no app {app_id!r} in {where}"


def _parents(step: PersistedStateData) -> list[dict[str, Any]]:
    """The step's fork parent and spawning parent, when it has them, as link targets."""
    parents = []
    for kind, pointer in (
        ("forked from", step.parent),
        ("spawned by", step.spawning_parent),
    ):
        if pointer is not None:
            parents.append(
                {
                    "kind": kind,
                    "app_id": pointer.app_id,
                    "partition": pointer.partition_key,
                    "sequence_id": pointer.sequence_id,
                }
            )
    return parents
