"""Finishing work that must not be cut in half by cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import Any, TypeVar

import anyio

__all__ = ["run_to_completion"]

T = TypeVar("T")

_settling: ContextVar[bool] = ContextVar("burr_async_settling", default=False)


async def _settled(work: Coroutine[Any, Any, T]) -> T:
    _settling.set(True)  # this task's own context: nested settled work runs inline
    return await work


async def run_to_completion(work: Coroutine[Any, Any, T]) -> tuple[T, bool]:
    """Run ``work`` to its end even if the calling task is cancelled meanwhile, by an anyio
    cancel scope or by ``Task.cancel()`` (``asyncio.wait_for``, ``asyncio.timeout``).

    Returns ``(result, cancelled)``: the caller finishes its own bookkeeping, then raises
    ``asyncio.CancelledError`` when ``cancelled`` is true, so the cancellation arrives once
    the work and the caller's view of it agree. An error raised by ``work`` propagates, unless
    a cancellation arrived, which then takes precedence.
    """
    if _settling.get():  # already inside settled work: nothing can cancel this task
        return await work, False
    task = asyncio.ensure_future(_settled(work))
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
