"""A TCP proxy on 127.0.0.1 between a persister and Postgres that can lose the answer to an
INSERT.

It forwards bytes both ways and reads the client's side of the Postgres wire protocol as it goes
(message framing only: which prepared statement is an INSERT, and when one is bound or sent as
a simple query). Once armed, the next INSERT goes to the server whole, so the server runs and
commits it, but what the server answers is dropped and the connection is cut: the client never
learns the outcome. With ``outage`` set, every other connection is cut at the same moment and
new ones are refused (accepted and closed at once) for that many seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from dataclasses import dataclass, field

_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    statements: dict[str, str] = field(default_factory=dict)
    buffer: bytearray = field(default_factory=bytearray)
    started: bool = False  # past the untyped start-up messages
    swallow: bool = False  # drop what the server says from now on, then cut

    def cut(self) -> None:
        for writer in (self.client, self.server):
            with contextlib.suppress(Exception):
                writer.transport.abort()


class PgProxy:
    """``async with PgProxy(host, port) as proxy``: listens on ``proxy.port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._armed = False
        self._skip = 0
        self._drop_request = False
        self._outage = 0.0
        self._silence = 0.0
        self.refuse_until = 0.0
        self.triggered = asyncio.Event()
        self.swallowed = 0  # answers dropped
        self.dropped = 0  # INSERTs dropped before the server saw them
        self.refused = 0  # connections refused during an outage

    async def __aenter__(self) -> PgProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            link.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    def arm(
        self,
        *,
        outage: float = 0.0,
        drop_request: bool = False,
        skip: int = 0,
        silence: float = 0.0,
    ) -> None:
        """Lose the answer to the next INSERT but ``skip`` (then, with ``outage``, refuse
        everything for that long); with ``drop_request``, lose the INSERT itself instead.
        With ``silence``, the connection is not cut at once: it stays open and says nothing
        (a silent network partition) for that many seconds, then is cut."""
        self.triggered = asyncio.Event()
        self._outage = outage
        self._silence = silence
        self._drop_request = drop_request
        self._skip = skip
        self._armed = True

    def disarm(self) -> None:
        self._armed = False

    def outage_over(self) -> bool:
        return time.monotonic() >= self.refuse_until

    # -- plumbing -------------------------------------------------------------------------------
    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.refuse_until:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        self._spawn(self._client_to_server(link, reader))
        self._spawn(self._server_to_client(link, up_reader))

    async def _client_to_server(self, link: _Link, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(65536):
                if self._inspect(link, data) and self._armed:
                    if self._skip:
                        self._skip -= 1
                    elif self._drop_request:
                        self._armed = False
                        self.dropped += 1
                        link.cut()
                        self.triggered.set()
                        return
                    else:
                        self._armed = False
                        link.swallow = True
                link.server.write(data)
                await link.server.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            link.cut()
            self._links.discard(link)

    async def _server_to_client(self, link: _Link, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(65536):
                if link.swallow:
                    if not self.triggered.is_set():
                        self._lose(link)
                    if not self._silence:
                        return
                    continue  # the server's answers vanish; the client hears nothing
                link.client.write(data)
                await link.client.drain()
        except OSError:
            pass
        finally:
            link.cut()
            self._links.discard(link)

    def _lose(self, link: _Link) -> None:
        """The server has answered the INSERT (so it ran): drop the answer and cut."""
        self.swallowed += 1
        if self._outage:
            self.refuse_until = time.monotonic() + self._outage
            for other in list(self._links):
                other.cut()
        if self._silence:
            asyncio.get_running_loop().call_later(self._silence, link.cut)
        else:
            link.cut()
        self.triggered.set()

    # -- the client's messages ------------------------------------------------------------------
    def _inspect(self, link: _Link, data: bytes) -> bool:
        """Frame the client's messages; whether one of them runs an INSERT."""
        link.buffer += data
        buf = link.buffer
        found = False
        while True:
            if not link.started:
                if len(buf) < 8:
                    break
                length, code = struct.unpack("!ii", buf[:8])
                if len(buf) < length:
                    break
                del buf[:length]
                if code not in (_SSL_REQUEST, _GSS_REQUEST, _CANCEL_REQUEST):
                    link.started = True  # the StartupMessage
                continue
            if len(buf) < 5:
                break
            kind = chr(buf[0])
            (length,) = struct.unpack("!i", buf[1:5])
            if len(buf) < 1 + length:
                break
            body = bytes(buf[5 : 1 + length])
            del buf[: 1 + length]
            if kind == "P":  # Parse: name, query
                name, query = body.split(b"\x00", 2)[:2]
                link.statements[name.decode()] = query.decode(errors="replace")
            elif kind == "B":  # Bind: portal, statement
                statement = body.split(b"\x00", 2)[1].decode()
                found |= _is_insert(link.statements.get(statement, ""))
            elif kind == "Q":  # a simple query
                found |= _is_insert(body.decode(errors="replace"))
        return found


def _is_insert(sql: str) -> bool:
    return sql.lstrip().upper().startswith("INSERT")
