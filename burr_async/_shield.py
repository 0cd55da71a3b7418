"""Finishing work that must not be cut in half by cancellation."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

import anyio

__all__ = ["run_to_completion"]

T = TypeVar("T")

_SETTLING: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
"""Tasks started here: nothing else holds them, so nothing cancels them, and settled work
nested in them runs inline. Tasks they spawn are not in the set."""


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
    task = asyncio.ensure_future(work)
    _SETTLING.add(task)
    try:
        return await asyncio.shield(task), None
    except asyncio.CancelledError as exc:
        if task.cancelled():
            raise
        cancellation = exc
    with anyio.CancelScope(shield=True):
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:  # another request: the first one is handed back
                if task.cancelled():
                    raise
            except Exception:
                break
    if task.exception() is not None:
        raise cancellation
    return task.result(), cancellation
