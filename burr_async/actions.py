"""Actions: the steps of an application.

An action reads state (and runtime inputs), computes a result and returns the new state. Write
them as functions decorated with :func:`action` / :func:`streaming_action`, or as subclasses of
:class:`Action` / :class:`StreamingAction`. Async and plain functions are both accepted; plain ones
run inline on the event loop, so keep them short or make them async.

A parameter named ``__context`` (after ``state``) receives the step's
:class:`~burr_async.context.ApplicationContext`; a class-based action lists ``"__context"`` in its
``inputs`` to get it. Input names starting with ``__`` are reserved for it.
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any, Self, TypeAlias

from burr_async.errors import (
    InvalidActionResultError,
    MissingInputError,
    MissingWriteError,
    ReservedInputError,
    UndeclaredWriteError,
)
from burr_async.state import State

__all__ = [
    "Action",
    "AsyncStreamingAction",
    "FunctionAction",
    "Input",
    "Result",
    "StreamingAction",
    "StreamingFunctionAction",
    "action",
    "streaming_action",
]

ResultDict: TypeAlias = dict[str, Any]
StreamItem: TypeAlias = tuple[ResultDict, State | None]

CONTEXT_INPUT = "__context"
"""The input through which an action receives its
:class:`~burr_async.context.ApplicationContext`."""


class Action(ABC):
    """A class-based action. Subclasses declare ``reads``, ``writes`` (and optionally ``inputs``)
    and implement ``run`` (sync or async, returns the result dict) and ``update`` (folds the result
    into a new State).

    ``inputs`` lists required runtime inputs, or is a ``(required, optional)`` pair of lists;
    listing ``"__context"`` there makes ``run`` (or ``stream_run``) receive the step's
    :class:`~burr_async.context.ApplicationContext` as ``__context``.
    """

    _name: str | None = None

    @property
    @abstractmethod
    def reads(self) -> list[str]:
        """State keys the action reads."""

    @property
    @abstractmethod
    def writes(self) -> list[str]:
        """State keys the action may write; writing any other key is an error."""

    @property
    def inputs(self) -> list[str] | tuple[list[str], list[str]]:
        """Runtime inputs: a list of required names, or ``(required, optional)``."""
        return []

    def run(self, state: State, **run_kwargs: Any) -> Any:
        """Compute the result dict (may be a coroutine function)."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must implement run(state, **inputs) -> dict"
        )

    def update(self, result: ResultDict, state: State) -> State:
        """Fold ``result`` into ``state`` and return the new State."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must implement update(result, state) -> State"
        )

    # -- naming ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The action's name in its graph."""
        if self._name is None:
            raise AttributeError(
                f"{type(self).__qualname__} has no name yet: pass it to with_actions(name=...)."
            )
        return self._name

    def with_name(self, name: str) -> Self:
        """A copy of this action called ``name``."""
        new = copy.copy(self)
        new._name = name
        return new

    @property
    def tags(self) -> list[str]:
        """Tags of the action: names shared by several actions, usable as ``"@tag:name"`` in
        ``halt_before`` / ``halt_after`` and in ``Graph.get_actions_by_tag``."""
        return []

    @property
    def streaming(self) -> bool:
        """Whether the action yields partial results (see :class:`StreamingAction`)."""
        return False

    @property
    def _context_parameter(self) -> str | None:
        """The keyword under which the action takes its ApplicationContext, or None. Python
        mangles ``__context`` in a method defined in a class to ``_Class__context``."""
        required, optional = self._input_names()
        if CONTEXT_INPUT not in required and CONTEXT_INPUT not in optional:
            return None
        method = getattr(self, "stream_run" if self.streaming else "run")
        return _context_name(method) or CONTEXT_INPUT

    def _input_names(self) -> tuple[frozenset[str], frozenset[str]]:
        declared = self.inputs
        if isinstance(declared, tuple):
            required, optional = declared
            return frozenset(required), frozenset(optional)
        return frozenset(declared), frozenset()

    @property
    def required_inputs(self) -> frozenset[str]:
        """Inputs that must be supplied at run time."""
        return self._input_names()[0]

    @property
    def optional_inputs(self) -> frozenset[str]:
        """Inputs that may be supplied at run time."""
        return self._input_names()[1]

    async def _execute(self, state: State, inputs: Mapping[str, Any]) -> tuple[ResultDict, State]:
        """Run the action to completion: ``(result, new_state)``."""
        result = self.run(state, **inputs)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, dict):
            raise InvalidActionResultError(
                f"Action {self.name!r}: run() must return a dict, got {type(result).__name__}.",
                action=self.name,
            )
        return result, self.update(result, state)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self._name or '(unnamed)'}>"


def _context_name(fn: Callable[..., Any]) -> str | None:
    """The name of ``fn``'s ``__context`` parameter (perhaps mangled), or None."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    for name in params:
        if name.endswith(CONTEXT_INPUT):
            return name
    return None


class Result(Action):
    """A terminal action that returns the given state keys as its result and changes nothing."""

    def __init__(self, *keys: str) -> None:
        self._keys = list(keys)

    @property
    def reads(self) -> list[str]:
        return list(self._keys)

    @property
    def writes(self) -> list[str]:
        return []

    def run(self, state: State, **run_kwargs: Any) -> ResultDict:
        return {key: state[key] for key in self._keys}

    def update(self, result: ResultDict, state: State) -> State:
        return state


class Input(Action):
    """Burr's ``Input("key", ...)``: an action that writes the given runtime inputs to the state
    under their own names, unchanged. Name it in the builder: ``with_actions(ask=Input("q"))``."""

    def __init__(self, *keys: str) -> None:
        self._keys = list(keys)

    @property
    def reads(self) -> list[str]:
        return []

    @property
    def writes(self) -> list[str]:
        return list(self._keys)

    @property
    def inputs(self) -> list[str]:
        return list(self._keys)

    def run(self, state: State, **run_kwargs: Any) -> ResultDict:
        return {key: run_kwargs[key] for key in self._keys}

    def update(self, result: ResultDict, state: State) -> State:
        return state.update(**result)


def _signature_inputs(
    fn: Callable[..., Any], bound: Mapping[str, Any]
) -> tuple[frozenset[str], frozenset[str]]:
    required: set[str] = set()
    optional: set[str] = set()
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(
            f"Action function {fn.__qualname__} must take the state as its first parameter."
        )
    for param in params[1:]:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if param.name in bound:
            continue
        if param.name.startswith("__") or param.name.endswith(CONTEXT_INPUT):
            if not param.name.endswith(CONTEXT_INPUT) and param.default is inspect.Parameter.empty:
                raise TypeError(
                    f"Action function {fn.__qualname__} takes {param.name!r}, which nothing "
                    "supplies: inputs starting with '__' are reserved, and burr_async injects "
                    "only __context (there is no __tracer). Give it a default or remove it."
                )
            continue
        (optional if param.default is not inspect.Parameter.empty else required).add(param.name)
    return frozenset(required), frozenset(optional)


def _split_output(name: str, output: Any) -> tuple[ResultDict, State]:
    if isinstance(output, State):
        return {}, output
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], State):
        result = output[0]
        if isinstance(result, Mapping):
            return dict(result), output[1]
    raise InvalidActionResultError(
        f"Action {name!r} must return (result_dict, State) or a State, got "
        f"{type(output).__name__}.",
        action=name,
    )


class _FunctionBase(Action):
    """Shared parts of the function-backed actions."""

    def __init__(
        self,
        fn: Callable[..., Any],
        reads: Iterable[str],
        writes: Iterable[str],
        bound: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None,
    ) -> None:
        self._fn = fn
        self._reads = list(reads)
        self._writes = list(writes)
        self._tags = list(tags or ())
        self._bound = dict(bound or {})
        self._name = getattr(fn, "__name__", None)
        self._required, self._optional = _signature_inputs(fn, self._bound)
        self._context = _context_name(fn)

    @property
    def fn(self) -> Callable[..., Any]:
        """The decorated function."""
        return self._fn

    @property
    def reads(self) -> list[str]:
        return self._reads

    @property
    def writes(self) -> list[str]:
        return self._writes

    @property
    def tags(self) -> list[str]:
        return list(self._tags)

    @property
    def _context_parameter(self) -> str | None:
        return None if self._context in self._bound else self._context

    @property
    def inputs(self) -> tuple[list[str], list[str]]:
        return sorted(self._required), sorted(self._optional)

    @property
    def required_inputs(self) -> frozenset[str]:
        return self._required

    @property
    def optional_inputs(self) -> frozenset[str]:
        return self._optional

    def bind(self, **kwargs: Any) -> Self:
        """A copy with ``kwargs`` pre-filled as inputs (they are no longer required)."""
        new = copy.copy(self)
        new._bound = {**self._bound, **kwargs}
        new._required, new._optional = _signature_inputs(self._fn, new._bound)
        return new

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (handy in unit tests)."""
        return self._fn(*args, **{**self._bound, **kwargs})


class FunctionAction(_FunctionBase):
    """An action made from a function by :func:`action`."""

    async def _execute(self, state: State, inputs: Mapping[str, Any]) -> tuple[ResultDict, State]:
        output = self._fn(state, **self._bound, **inputs)
        if inspect.isawaitable(output):
            output = await output
        return _split_output(self.name, output)


class StreamingAction(Action):
    """A class-based action that yields partial results before its final one.

    ``stream_run`` is a (sync or async) generator of result dicts; the last dict it yields is the
    final result, which ``update`` folds into the state.
    """

    @property
    def streaming(self) -> bool:
        return True

    def stream_run(self, state: State, **run_kwargs: Any) -> Any:
        """Yield partial result dicts; the last one is the final result."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must implement stream_run(state, **inputs)"
        )

    async def _stream(
        self, state: State, inputs: Mapping[str, Any]
    ) -> AsyncGenerator[StreamItem, None]:
        last: ResultDict | None = None
        async with _iterating(self.stream_run(state, **inputs)) as items:
            async for item in items:
                if last is not None:
                    yield last, None
                last = item
        if last is None:
            raise InvalidActionResultError(
                f"Streaming action {self.name!r} yielded nothing; it must yield at least its "
                "final result.",
                action=self.name,
            )
        yield last, self.update(last, state)

    async def _execute(self, state: State, inputs: Mapping[str, Any]) -> tuple[ResultDict, State]:
        return await _drain(self.name, self._stream(state, inputs))


AsyncStreamingAction = StreamingAction
"""Burr's name for a class-based streaming action with an ``async`` ``stream_run``: here the
same class as :class:`StreamingAction`, whose ``stream_run`` may be sync or async."""


class StreamingFunctionAction(_FunctionBase):
    """An action made from a generator function by :func:`streaming_action`.

    The generator yields ``(partial_result, None)`` any number of times and finally
    ``(final_result, new_state)``.
    """

    @property
    def streaming(self) -> bool:
        return True

    async def _stream(
        self, state: State, inputs: Mapping[str, Any]
    ) -> AsyncGenerator[StreamItem, None]:
        async with _iterating(self._fn(state, **self._bound, **inputs)) as items:
            async for item in items:
                if (
                    not isinstance(item, tuple)
                    or len(item) != 2
                    or not isinstance(item[0], Mapping)
                    or not (item[1] is None or isinstance(item[1], State))
                ):
                    raise InvalidActionResultError(
                        f"Streaming action {self.name!r} must yield (dict, None) for partial "
                        f"results and (dict, State) last, got {item!r:.200}.",
                        action=self.name,
                    )
                yield dict(item[0]), item[1]
                if item[1] is not None:
                    return

    async def _execute(self, state: State, inputs: Mapping[str, Any]) -> tuple[ResultDict, State]:
        return await _drain(self.name, self._stream(state, inputs))


@asynccontextmanager
async def _iterating(source: Any) -> AsyncIterator[AsyncIterator[Any]]:
    """The items of a sync or async iterable, as an async iterator; on leaving the block (the
    step ended, or its stream was abandoned) a generator underneath is closed at once, so its
    ``finally`` runs now rather than at garbage collection."""
    try:
        yield source if hasattr(source, "__aiter__") else _from_sync(source)
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
        else:
            close = getattr(source, "close", None)
            if close is not None:
                close()


async def _from_sync(source: Any) -> AsyncIterator[Any]:
    for item in source:
        yield item


async def _drain(name: str, stream: AsyncGenerator[StreamItem, None]) -> tuple[ResultDict, State]:
    async with aclosing(stream):
        async for result, state in stream:
            if state is not None:
                return result, state
    raise InvalidActionResultError(
        f"Streaming action {name!r} ended without yielding its final (result, State).",
        action=name,
    )


def action(
    reads: Iterable[str], writes: Iterable[str], tags: Iterable[str] | None = None
) -> Callable[[Callable[..., Any]], FunctionAction]:
    """Turn a function ``fn(state, **inputs)`` into an action.

    The function (sync or async) returns ``(result_dict, new_state)`` or just ``new_state``.
    Parameters after ``state`` are runtime inputs (those with defaults are optional), except
    ``__context``, which receives the step's ApplicationContext. ``tags`` label the action
    (see :attr:`Action.tags`).
    """

    def decorate(fn: Callable[..., Any]) -> FunctionAction:
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise TypeError(
                f"{fn.__qualname__} is a generator: decorate it with @streaming_action instead."
            )
        return FunctionAction(fn, reads, writes, tags=tags)

    return decorate


def _pydantic_action(
    reads: Iterable[str],
    writes: Iterable[str],
    state_input_type: Any = None,
    state_output_type: Any = None,
    tags: Iterable[str] | None = None,
) -> Callable[[Callable[..., Any]], FunctionAction]:
    """``@action.pydantic(reads=..., writes=...)``: an action on pydantic models; see
    :func:`burr_async.integrations.pydantic.pydantic_action` (needs ``pydantic``)."""
    from burr_async.integrations.pydantic import pydantic_action

    return pydantic_action(reads, writes, state_input_type, state_output_type, tags)


# Burr's spelling: the pydantic variant hangs on the decorator itself
action.pydantic = _pydantic_action  # type: ignore[attr-defined]


def streaming_action(
    reads: Iterable[str], writes: Iterable[str], tags: Iterable[str] | None = None
) -> Callable[[Callable[..., Any]], StreamingFunctionAction]:
    """Turn a (preferably async) generator function into a streaming action; see
    :class:`StreamingFunctionAction` for what it yields. ``tags`` as for :func:`action`."""

    def decorate(fn: Callable[..., Any]) -> StreamingFunctionAction:
        if not (inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn)):
            raise TypeError(
                f"{fn.__qualname__} must be a generator function to be a streaming action."
            )
        return StreamingFunctionAction(fn, reads, writes, tags=tags)

    return decorate


def _resolve_inputs(
    act: Action, inputs: Mapping[str, Any] | None, app_id: str | None = None
) -> dict[str, Any]:
    """The inputs ``act`` accepts, taken from ``inputs``; raises when a required one is missing
    or one is reserved (``__...``). The ApplicationContext is added by the application."""
    required = act.required_inputs - {CONTEXT_INPUT}
    if inputs:
        reserved = sorted(k for k in inputs if k.startswith("__"))
        if reserved:
            raise ReservedInputError(reserved, app_id)
    if not inputs:
        if required:
            raise MissingInputError(act.name, sorted(required), app_id)
        return {}
    missing = [name for name in required if name not in inputs]
    if missing:
        raise MissingInputError(act.name, sorted(missing), app_id)
    accepted = required | act.optional_inputs
    return {k: v for k, v in inputs.items() if k in accepted}


def _checked_state(act: Action, before: State, after: State) -> State:
    """``after`` if ``act`` changed only the keys it declares, else raise."""
    if not isinstance(after, State):
        raise InvalidActionResultError(
            f"Action {act.name!r}: update() must return a State, got {type(after).__name__}.",
            action=act.name,
        )
    writes = act.writes
    old = before._data
    new = after._data
    changed = [
        k for k, v in new.items() if k not in old or (old[k] is not v and _differs(old[k], v))
    ]
    changed.extend(k for k in old if k not in new)
    undeclared = [k for k in changed if k not in writes]
    if undeclared:
        raise UndeclaredWriteError(act.name, undeclared, list(writes))
    missing = [k for k in writes if k not in new]
    if missing:
        raise MissingWriteError(act.name, missing)
    return after


def _differs(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except Exception:  # values whose comparison is ambiguous (arrays) count as changed
        return True
