"""Finishing work that must not be cut in half by cancellation."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

import anyio

__all__ = ["run_to_completion"]

T = TypeVar("T")

_SETTLING: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
"""Tasks started here: nothing else holds them, so nothing cancels them, and settled work
nested in them runs inline. Tasks they spawn are not in the set."""


class _Outcome(Generic[T]):
    """What the work ended with, and the future its caller waits on (None once it stopped
    waiting on it)."""

    __slots__ = ("error", "result", "waiter")

    def __init__(self, waiter: asyncio.Future[None]) -> None:
        self.waiter: asyncio.Future[None] | None = waiter
        self.result: T | None = None
        self.error: Exception | None = None


async def _run(work: Coroutine[Any, Any, T], outcome: _Outcome[T]) -> None:
    """The task's body: ``work``, its outcome recorded, and its caller woken from here (a done
    callback would take one more turn of the event loop)."""
    try:
        outcome.result = await work
    except Exception as exc:
        outcome.error = exc
    finally:
        waiter = outcome.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def run_to_completion(
    work: Coroutine[Any, Any, T],
) -> tuple[T, asyncio.CancelledError | None]:
    """Run ``work`` to its end even if the calling task is cancelled meanwhile, by an anyio
    cancel scope or by ``Task.cancel()`` (``asyncio.wait_for``, ``asyncio.timeout``).

    Returns ``(result, cancellation)``: the caller finishes its own bookkeeping, then raises
    ``cancellation`` when it is not None (the very exception that arrived, so that the anyio
    scope or asyncio timeout that cancelled recognises it as its own), so the cancellation
    arrives once the work and the caller's view of it agree. An error raised by ``work``
    propagates, unless a cancellation arrived, which then takes precedence.

    The work runs in a task of its own, which nothing else holds. Until a cancellation
    arrives the caller only waits for that task; from the first one on it waits inside a
    shielded anyio scope, so that an anyio scope does not cancel it again and again.
    """
    if asyncio.current_task() in _SETTLING:  # nothing can cancel this task
        return await work, None
    loop = asyncio.get_running_loop()
    outcome: _Outcome[T] = _Outcome(loop.create_future())
    task = loop.create_task(_run(work, outcome))
    _SETTLING.add(task)
    cancellation: asyncio.CancelledError | None = None
    try:
        assert outcome.waiter is not None
        await outcome.waiter
    except asyncio.CancelledError as exc:
        if task.cancelled():  # the work itself ended cancelled
            raise
        cancellation = exc
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
    if outcome.error is not None:
        if cancellation is not None:
            raise cancellation
        raise outcome.error
    return outcome.result, cancellation  # type: ignore[return-value]
