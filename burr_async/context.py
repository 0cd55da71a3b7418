"""The :class:`ApplicationContext`: what an action may know about the application running it."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["ApplicationContext"]


@dataclass(frozen=True, slots=True)
class ApplicationContext:
    """The application and step an action runs in, as in Burr.

    An action function receives it through a ``__context`` parameter::

        @action(reads=[], writes=["trace"])
        async def tag(state: State, __context: ApplicationContext) -> State:
            return state.update(trace=f"{__context.app_id}/{__context.sequence_id}")

    (a class-based action lists ``"__context"`` in its ``inputs``). While an action runs,
    :meth:`get` returns it too, for code several calls down. It is immutable; it is not
    stored with the step.

    ``state_persister`` and ``state_initializer`` are the objects given to
    ``with_state_persister`` and ``initialize_from`` (None when not set), so that an action
    can build another application on the same storage (a sub-application: see
    ``ApplicationBuilder.with_spawning_parent``). Burr's ``tracker`` and
    ``parallel_executor_factory`` have no counterpart here.
    """

    app_id: str
    """The application id."""
    partition_key: str | None
    """The partition key, or None."""
    sequence_id: int | None
    """The number of the step being run (None only outside a step, before the first one)."""
    action_name: str | None
    """The name of the action being run (or, outside a step, the next one)."""
    state_persister: Any = None
    """What ``with_state_persister`` was given, or None."""
    state_initializer: Any = None
    """What ``initialize_from`` was given, or None."""
    first_attempt_sequence_id: int | None = field(default=None, compare=False)
    """The ``sequence_id`` of this action's first attempt: the step's own ``sequence_id``,
    except when the step runs again an action whose step failed (a failed step is stored, and
    its action re-run at the next ``sequence_id``), where it is the number of the first of those
    failed attempts. A key derived from it stays the same across retries: a fan-out names its
    children by it, so that a retry finds the children of the first attempt. None when
    ``sequence_id`` is; derived from the other fields, it takes no part in comparisons."""

    @staticmethod
    def get() -> ApplicationContext | None:
        """The context of the action running in this task, or None outside one."""
        return _current.get()

    def __enter__(self) -> ApplicationContext:
        """Make this the context :meth:`get` returns until the block ends (blocks nest)."""
        _stack.set((*_stack.get(), _current.get()))
        _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = _stack.get()
        if stack:
            _current.set(stack[-1])
            _stack.set(stack[:-1])
        else:
            _current.set(None)


_current: contextvars.ContextVar[ApplicationContext | None] = contextvars.ContextVar(
    "burr_async_application_context", default=None
)
_stack: contextvars.ContextVar[tuple[ApplicationContext | None, ...]] = contextvars.ContextVar(
    "burr_async_application_context_stack", default=()
)
