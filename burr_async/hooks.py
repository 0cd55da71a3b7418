"""Lifecycle hooks: code that runs before and after each step and each application call.

Subclass one (or several) of the classes below and pass instances to
``ApplicationBuilder.with_hooks``. The names and keyword arguments match Apache Burr's, so a Burr
hook ports by changing its import. Every method receives keyword arguments only. A method with
``**future_kwargs`` receives every argument of its phase; one without receives only the arguments
it names (so a hook declaring ``app_id`` and ``state`` alone still works). Sync variants run inline
on the loop.
"""

from __future__ import annotations

import enum
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from burr_async.actions import Action
from burr_async.errors import HookError
from burr_async.persistence.base import ParentPointer
from burr_async.state import State

if TYPE_CHECKING:
    from burr_async._step_store import StepStore, StoredStep
    from burr_async.graph import ApplicationGraph

__all__ = [
    "ExecuteMethod",
    "PostApplicationCreateHook",
    "PostApplicationExecuteCallHook",
    "PostApplicationExecuteCallHookAsync",
    "PostRunStepHook",
    "PostRunStepHookAsync",
    "PreApplicationExecuteCallHook",
    "PreApplicationExecuteCallHookAsync",
    "PreRunStepHook",
    "PreRunStepHookAsync",
]


class ExecuteMethod(enum.Enum):
    """Which application method an execute-call hook surrounds."""

    astep = "astep"
    arun = "arun"
    aiterate = "aiterate"
    astream_result = "astream_result"
    astream_iterate = "astream_iterate"


class PreRunStepHookAsync(ABC):
    """Runs before each step, after the next action is chosen."""

    @abstractmethod
    async def pre_run_step(
        self,
        *,
        app_id: str,
        partition_key: str | None,
        sequence_id: int,
        state: State,
        action: Action,
        inputs: dict[str, Any],
        **future_kwargs: Any,
    ) -> None:
        """``sequence_id`` is the number the step will get."""


class PostRunStepHookAsync(ABC):
    """Runs after each step is persisted; ``state`` is the state after the step and
    ``exception`` the action's error when the step failed."""

    @abstractmethod
    async def post_run_step(
        self,
        *,
        app_id: str,
        partition_key: str | None,
        sequence_id: int,
        state: State,
        action: Action,
        result: dict[str, Any] | None,
        exception: Exception | None,
        **future_kwargs: Any,
    ) -> None:
        """Observe a finished step."""


class PreApplicationExecuteCallHookAsync(ABC):
    """Runs when ``astep``/``arun``/``aiterate``/``astream_result``/``astream_iterate`` is
    called."""

    @abstractmethod
    async def pre_run_execute_call(
        self,
        *,
        app_id: str,
        partition_key: str | None,
        state: State,
        method: ExecuteMethod,
        **future_kwargs: Any,
    ) -> None:
        """Observe the start of an application call."""


class PostApplicationExecuteCallHookAsync(ABC):
    """Runs when an application call returns or raises."""

    @abstractmethod
    async def post_run_execute_call(
        self,
        *,
        app_id: str,
        partition_key: str | None,
        state: State,
        method: ExecuteMethod,
        exception: Exception | None,
        **future_kwargs: Any,
    ) -> None:
        """Observe the end of an application call."""


class PreRunStepHook(ABC):
    """Sync form of :class:`PreRunStepHookAsync`."""

    @abstractmethod
    def pre_run_step(self, **kwargs: Any) -> None:
        """See :meth:`PreRunStepHookAsync.pre_run_step`."""


class PostRunStepHook(ABC):
    """Sync form of :class:`PostRunStepHookAsync`."""

    @abstractmethod
    def post_run_step(self, **kwargs: Any) -> None:
        """See :meth:`PostRunStepHookAsync.post_run_step`."""


class PreApplicationExecuteCallHook(ABC):
    """Sync form of :class:`PreApplicationExecuteCallHookAsync`."""

    @abstractmethod
    def pre_run_execute_call(self, **kwargs: Any) -> None:
        """See :meth:`PreApplicationExecuteCallHookAsync.pre_run_execute_call`."""


class PostApplicationExecuteCallHook(ABC):
    """Sync form of :class:`PostApplicationExecuteCallHookAsync`."""

    @abstractmethod
    def post_run_execute_call(self, **kwargs: Any) -> None:
        """See :meth:`PostApplicationExecuteCallHookAsync.post_run_execute_call`."""


class PostApplicationCreateHook(ABC):
    """Runs once when ``abuild()`` has created the application."""

    @abstractmethod
    def post_application_create(
        self,
        *,
        app_id: str,
        partition_key: str | None,
        state: State,
        application_graph: ApplicationGraph,
        parent_pointer: ParentPointer | None,
        spawning_parent_pointer: ParentPointer | None,
        **future_kwargs: Any,
    ) -> None:
        """Observe the new application (sync or async). ``application_graph`` is its graph
        with the entrypoint; ``parent_pointer`` the step it was forked from (None when it was
        not); ``spawning_parent_pointer`` the parent step that spawned it, when it is a
        sub-application (``with_spawning_parent``, a fan-out's child), else None."""


_SaveWrapper = Callable[
    [Coroutine[Any, Any, None], "StepStore", "StoredStep"], Coroutine[Any, Any, None]
]
"""The private ``_around_save`` phase: ``hook._around_save(saving, store, step)`` is given the
persister's ``save`` coroutine of one step (not awaited yet), the application storing it and
the step, and returns the coroutine the application awaits instead; it must await ``saving``
exactly once and let its outcome (return or exception) through unchanged. A hook has it only to
observe the save (:class:`burr_async.tracing.OpenTelemetryHook` times it); it is not public API,
and an application with no such hook pays nothing for it."""

_PHASES = (
    "pre_run_step",
    "post_run_step",
    "pre_run_execute_call",
    "post_run_execute_call",
    "post_application_create",
)


class _HookSet:
    """The hooks of one application, grouped by phase once, at build time."""

    __slots__ = ("around_save", "by_phase", "named")

    def __init__(self, hooks: Iterable[object]) -> None:
        hooks = list(hooks)
        for hook in hooks:
            if not any(callable(getattr(hook, phase, None)) for phase in _PHASES):
                raise TypeError(
                    f"{type(hook).__qualname__} is not a hook: subclass one of burr_async's hook "
                    "classes (e.g. PostRunStepHookAsync)."
                )
        self.by_phase: dict[str, list[object]] = {
            phase: [h for h in hooks if callable(getattr(h, phase, None))] for phase in _PHASES
        }
        # For each (hook, phase) whose method has no **kwargs: the keywords it names.
        self.named: dict[tuple[int, str], frozenset[str]] = {}
        for phase, members in self.by_phase.items():
            for hook in members:
                names = _named_keywords(getattr(hook, phase))
                if names is not None:
                    self.named[id(hook), phase] = names
        wrappers: list[_SaveWrapper] = [
            h._around_save  # type: ignore[attr-defined]
            for h in hooks
            if callable(getattr(h, "_around_save", None))
        ]
        # What StepStore._save calls with each save, or None (the common case: one None test).
        self.around_save: _SaveWrapper | None = (
            None if not wrappers else wrappers[0] if len(wrappers) == 1 else _chain(wrappers)
        )

    @classmethod
    def of(cls, hooks: Sequence[object]) -> _HookSet:
        """The hook set of ``hooks``: one shared set when there are none (a set is never
        changed once made)."""
        return cls(hooks) if hooks else _NO_HOOKS

    def has(self, phase: str) -> bool:
        return bool(self.by_phase[phase])

    async def call(self, phase: str, action_name: str | None, /, **kwargs: Any) -> None:
        """Call every hook of ``phase``; the first failure is raised as :class:`HookError`."""
        for hook in self.by_phase[phase]:
            named = self.named.get((id(hook), phase))
            given = kwargs if named is None else {k: v for k, v in kwargs.items() if k in named}
            try:
                outcome = getattr(hook, phase)(**given)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                raise HookError(hook, phase, action_name, kwargs["app_id"]) from exc


_NO_HOOKS = _HookSet(())
"""The hook set of the applications built without hooks."""


def _chain(wrappers: list[_SaveWrapper]) -> _SaveWrapper:
    """One save wrapper applying ``wrappers`` in order (the first hook's innermost)."""

    def chained(
        saving: Coroutine[Any, Any, None], store: StepStore, step: StoredStep
    ) -> Coroutine[Any, Any, None]:
        for wrap in wrappers:
            saving = wrap(saving, store, step)
        return saving

    return chained


def _named_keywords(method: Any) -> frozenset[str] | None:
    """The keyword parameters ``method`` names, or None when it takes ``**kwargs`` (or its
    signature cannot be read): then it is given every keyword."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(
        p.name
        for p in params
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )
