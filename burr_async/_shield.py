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


async def run_to_completion(work: Coroutine[Any, Any, T]) -> tuple[T, bool]:
    """Run ``work`` to its end even if the calling task is cancelled meanwhile, by an anyio
    cancel scope or by ``Task.cancel()`` (``asyncio.wait_for``, ``asyncio.timeout``).

    Returns ``(result, cancelled)``: the caller finishes its own bookkeeping, then raises
    ``asyncio.CancelledError`` when ``cancelled`` is true, so the cancellation arrives once
    the work and the caller's view of it agree. An error raised by ``work`` propagates, unless
    a cancellation arrived, which then takes precedence.
    """
    if asyncio.current_task() in _SETTLING:  # nothing can cancel this task
        return await work, False
    task = asyncio.ensure_future(work)
    _SETTLING.add(task)
    cancelled = False
    with anyio.CancelScope(shield=True):
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.cancelled():
                    raise
                cancelled = True
            except Exception:
                break
    if cancelled and task.exception() is not None:
        raise asyncio.CancelledError
    return task.result(), cancelled
