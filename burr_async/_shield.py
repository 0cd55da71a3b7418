"""Finishing work that must not be cut in half by cancellation.

Two tools. :func:`settle` (and :func:`run_to_completion` over it) runs any coroutine in a task
of its own, which nothing else holds, so that neither an anyio cancel scope nor
``Task.cancel()`` reaches it: the right tool for code that may enter cancel scopes or asyncio
timeouts of its own. :class:`Shielded` awaits one driver call in the calling task itself, with
no task and no extra turn of the event loop, for the write path's hot statement: it is only
for awaitables that wait on plain futures and never cancel their own task (a database
driver's statement), because it keeps every cancellation of the task away from them.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, Generic, TypeVar

import anyio

__all__ = ["Outcome", "Shielded", "run_to_completion", "settle"]

T = TypeVar("T")

_SETTLING: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
"""Tasks started here: nothing else holds them, so nothing cancels them, and settled work
nested in them runs inline. Tasks they spawn are not in the set."""


class Outcome(Generic[T]):
    """How settled work ended: its ``result`` or its ``error`` (an Exception), and the
    ``cancellation`` of its caller that arrived meanwhile, if one did."""

    __slots__ = ("cancellation", "error", "result", "waiter")

    def __init__(self, waiter: asyncio.Future[None] | None = None) -> None:
        self.waiter = waiter  # what the caller waits on, None once it stopped waiting on it
        self.result: T | None = None
        self.error: Exception | None = None
        self.cancellation: asyncio.CancelledError | None = None


async def _run(work: Coroutine[Any, Any, T], outcome: Outcome[T]) -> None:
    """``work``, its outcome recorded, and its caller woken from here (a done callback would
    take one more turn of the event loop): the body of the work's task, or of settled work run
    inline."""
    try:
        outcome.result = await work
    except Exception as exc:
        outcome.error = exc
    finally:
        waiter = outcome.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def settle(work: Coroutine[Any, Any, T]) -> Outcome[T]:
    """Run ``work`` to its end even if the calling task is cancelled meanwhile, by an anyio
    cancel scope or by ``Task.cancel()`` (``asyncio.wait_for``, ``asyncio.timeout``), and
    return how it ended: neither its error nor the cancellation is raised here. The caller
    finishes its own bookkeeping, then raises ``outcome.cancellation`` when it is not None
    (the very exception that arrived, so that the anyio scope or asyncio timeout that
    cancelled recognises it as its own).

    The work runs in a task of its own, which nothing else holds. Until a cancellation
    arrives the caller only waits for that task; from the first one on it waits inside a
    shielded anyio scope, so that an anyio scope does not cancel it again and again. A
    cancellation of the work's own (raised out of it by one of its own scopes) is raised.
    """
    if asyncio.current_task() in _SETTLING:  # nothing can cancel this task
        inline: Outcome[T] = Outcome()
        await _run(work, inline)
        return inline
    loop = asyncio.get_running_loop()
    outcome: Outcome[T] = Outcome(loop.create_future())
    task = loop.create_task(_run(work, outcome))
    _SETTLING.add(task)
    try:
        assert outcome.waiter is not None
        await outcome.waiter
    except asyncio.CancelledError as exc:
        if task.cancelled():  # the work itself ended cancelled
            raise
        outcome.cancellation = exc
        outcome.waiter = None
        with anyio.CancelScope(shield=True):
            while not task.done():
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:  # another request: the first one is handed back
                    if task.cancelled():
                        raise
    if task.cancelled():  # the work ended cancelled (its own scope's cancellation, say)
        raise asyncio.CancelledError
    return outcome


async def run_to_completion(
    work: Coroutine[Any, Any, T],
) -> tuple[T, asyncio.CancelledError | None]:
    """:func:`settle`, for a caller that wants the work's error raised: returns ``(result,
    cancellation)``, and raises the work's error, unless a cancellation arrived, which then
    takes precedence (it is raised instead)."""
    outcome = await settle(work)
    if outcome.error is not None:
        if outcome.cancellation is not None:
            raise outcome.cancellation
        raise outcome.error
    return outcome.result, outcome.cancellation  # type: ignore[return-value]


def _resolve(proxy: asyncio.Future[None], _done: asyncio.Future[Any]) -> None:
    if not proxy.done():
        proxy.set_result(None)


class Shielded(Generic[T]):
    """``await Shielded(awaitable)`` awaits ``awaitable`` in the calling task, where neither
    ``Task.cancel()`` nor an anyio cancel scope can interrupt it: the task waits on a proxy of
    each future the awaitable waits on, so a cancellation cancels the proxy, is recorded in
    :attr:`cancellation` (the first one; the caller raises it once its bookkeeping is done),
    and the task goes on waiting on the same future. From the first cancellation on, the wait
    is inside a shielded anyio scope, so that an anyio scope does not cancel it again and
    again. The awaitable's own result or error comes out of the ``await``.

    Only for an awaitable that waits on plain asyncio futures and never cancels its own task
    (a database driver's statement): one that enters its own cancel scopes or asyncio timeouts
    would never see them fire. Run anything else with :func:`settle`."""

    __slots__ = ("_awaitable", "cancellation")

    def __init__(self, awaitable: Awaitable[T]) -> None:
        self._awaitable = awaitable
        self.cancellation: asyncio.CancelledError | None = None

    def __await__(self) -> Generator[Any, None, T]:
        inner = self._awaitable.__await__()
        scope: anyio.CancelScope | None = None
        thrown: BaseException | None = None  # what the task threw in, for the awaitable
        try:
            while True:
                try:
                    waited = inner.send(None) if thrown is None else inner.throw(thrown)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                thrown = None
                if not isinstance(waited, asyncio.Future):
                    # a bare yield (the task steps again at once), or what the task refuses
                    try:
                        yield waited
                    except asyncio.CancelledError as exc:
                        scope = self._cancelled(exc, scope)
                    except GeneratorExit:
                        raise
                    except BaseException as exc:
                        thrown = exc
                    continue
                waited._asyncio_future_blocking = False  # as the task does with what it waits on
                while not waited.done():
                    proxy: asyncio.Future[None] = waited.get_loop().create_future()
                    waited.add_done_callback(functools.partial(_resolve, proxy))
                    proxy._asyncio_future_blocking = True
                    try:
                        yield proxy
                    except asyncio.CancelledError as exc:
                        scope = self._cancelled(exc, scope)
        except GeneratorExit:  # abandoned: the task awaiting it is being destroyed
            scope = None  # its scope goes with it (exiting it outside that task would fail)
            inner.close()
            raise
        finally:
            if scope is not None:
                scope.__exit__(None, None, None)

    def _cancelled(
        self, exc: asyncio.CancelledError, scope: anyio.CancelScope | None
    ) -> anyio.CancelScope:
        if self.cancellation is None:
            self.cancellation = exc
        if scope is None:
            scope = anyio.CancelScope(shield=True)
            scope.__enter__()
        return scope
