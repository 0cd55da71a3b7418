"""What a write tells the code observing it, without costing an unobserved write more than one
context-variable read.

:data:`COMMIT_BATCH` is unset (None) unless an observer (the tracing hook's save span) sets it,
in the task that awaits a save, to a list: the group writer then appends the number of rows of
the commit that stored the step's row (1 when it was written alone). Nothing here imports a
database library, so the tracing hook can use it with any persister.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__: list[str] = []

COMMIT_BATCH: ContextVar[list[int] | None] = ContextVar("burr_async_commit_batch", default=None)
"""Where the group writer notes the size of the commit a row joined, when someone listens."""
