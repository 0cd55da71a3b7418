"""Helpers of the web UI's tests: serve an ASGI app under uvicorn on a loopback port, in the
test's event loop (the persister's connections belong to that loop), and read its pages."""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import socket
from collections.abc import AsyncIterator

import anyio
import uvicorn
from starlette.types import ASGIApp

__all__ = ["links", "serve"]


@contextlib.asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port the OS picks) while the block runs; yield its
    base URL. The server starts and stops within bounded timeouts, running its lifespan."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", access_log=False, ws="none", http="h11"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        with anyio.fail_after(20):
            while not server.started:
                if task.done():
                    task.result()  # the server failed to start: raise its error
                    raise RuntimeError("uvicorn stopped before it started")
                await anyio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with anyio.fail_after(20):
            await task
        sock.close()


_HREF = re.compile(r'<a[^>]*\brel="(?P<rel>[a-z]+)"[^>]*\bhref="(?P<href>[^"]*)"')


def links(page: str) -> dict[str, str]:
    """The pager links of a page by their ``rel`` (first, prev, next, last), unescaped."""
    return {m["rel"]: html.unescape(m["href"]) for m in _HREF.finditer(page)}
