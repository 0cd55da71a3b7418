"""Durable fan-out: one step that runs sub-applications in parallel and folds their results.

``MapStates`` runs one action (or sub-graph) over many states, ``MapActions`` many actions over
one state, ``MapActionsAndStates`` every action over every state; each is an ordinary action of
the parent graph (``with_actions``). Its step runs every child as a sub-application with an id
of its own, derived from the parent's app id, the step's number and the child's index, in the
parent's partition and on the parent's persister, each child step a stored row that points to
the parent step (its spawning parent). When the step is run again, after a crash or a failed
child, the same ids are derived: a child that had finished is not run again (its stored final
state is used), one that had not resumes from its last committed step. ``reduce`` then folds
the children's final states, in submission order, into the parent's new state.

The children run as asyncio tasks of one task group, at most ``max_concurrency`` at a time.
When one fails, the others are cancelled and the parent step fails with
:class:`~burr_async.errors.ChildApplicationError`; a cancelled parent cancels its children.
Either way every child step already committed stays stored.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from abc import abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeAlias

from burr_async.actions import CONTEXT_INPUT, Action, ResultDict
from burr_async.application import Application
from burr_async.builder import ApplicationBuilder
from burr_async.context import ApplicationContext
from burr_async.errors import (
    ChildApplicationError,
    ConcurrentStepError,
    ConfigurationError,
    InvalidActionResultError,
)
from burr_async.graph import Graph, GraphBuilder
from burr_async.state import State

__all__ = [
    "MapActions",
    "MapActionsAndStates",
    "MapStates",
    "RunnableGraph",
    "SubgraphType",
    "child_app_id",
]

_CHILD_NAMESPACE = uuid.UUID("6f6a0e53-5b1e-4c0b-9d7e-4a1d2f0c9b31")


@dataclass(frozen=True, slots=True)
class RunnableGraph:
    """A graph to run as a child: from ``entrypoint`` until an action of ``halt_after`` has
    run (or the graph ends, when ``halt_after`` is empty). Burr's ``RunnableGraph``."""

    graph: Graph
    entrypoint: str
    halt_after: Sequence[str] = ()

    @staticmethod
    def create(from_: SubgraphType) -> RunnableGraph:
        """``from_`` itself when it is a RunnableGraph; an action becomes a one-action graph
        that halts after it."""
        if isinstance(from_, RunnableGraph):
            return from_
        if isinstance(from_, Action):
            try:
                name = from_.name
            except AttributeError:
                raise ConfigurationError(
                    f"{from_!r} has no name, so it cannot run as a child: give it one with "
                    ".with_name('...')."
                ) from None
            return RunnableGraph(GraphBuilder().with_actions(from_).build(), name, (name,))
        raise ConfigurationError(
            f"A fan-out child must be an Action (a function decorated with @action, or an "
            f"Action instance) or a RunnableGraph, not {type(from_).__name__}."
        )


SubgraphType: TypeAlias = Action | RunnableGraph
"""What a fan-out's ``action``/``actions`` may give: an action, or a whole sub-graph."""


def child_app_id(parent_app_id: str, sequence_id: int, index: int) -> str:
    """The app id of child ``index`` of the fan-out run by step ``sequence_id`` of
    ``parent_app_id``: a UUID derived from those three alone, so that running the step again
    finds the same children. ``sequence_id`` is the step's
    ``ApplicationContext.first_attempt_sequence_id``."""
    return str(uuid.uuid5(_CHILD_NAMESPACE, f"{parent_app_id}\x1f{sequence_id}\x1f{index}"))


@dataclass(frozen=True, slots=True)
class _Child:
    index: int
    app_id: str
    graph: RunnableGraph
    state: State


class MapActionsAndStates(Action):
    """An action that runs every action of ``actions`` over every state of
    ``states`` as sub-applications, then folds their final states with ``reduce``.

    Subclass it and define ``reads``, ``writes``, ``actions``, ``states`` and ``reduce``.
    Children are ordered action by action, then state by state within each action; a child's
    index is its place in that order. ``actions`` and ``states`` may return any iterable,
    or be (async) generators; they must give the same children, in the same order, when the
    step runs again (they see the same state), which is what makes the fan-out resumable.
    ``reduce`` is a plain method, given an iterator of the children's final states, or an
    ``async def``, given an async iterator of them; either returns the parent's new state.

    ``max_concurrency`` (a class attribute, or the constructor's argument) bounds how many
    children run at once; None runs them all at once. Runtime inputs the action declares in
    ``inputs`` are passed to every child's run.
    """

    max_concurrency: int | None = None

    def __init__(self, *, max_concurrency: int | None = None) -> None:
        if max_concurrency is not None:
            self.max_concurrency = max_concurrency
        limit = self.max_concurrency
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ConfigurationError(
                f"{type(self).__qualname__}.max_concurrency must be a whole number from 1, or "
                f"None for no bound; got {limit!r}."
            )

    @abstractmethod
    def actions(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> Iterable[SubgraphType] | AsyncIterable[SubgraphType]:
        """The actions (or RunnableGraphs) to run over each state."""

    @abstractmethod
    def states(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> Iterable[State] | AsyncIterable[State]:
        """The states each action runs on."""

    @abstractmethod
    def reduce(self, state: State, states: Any) -> Any:
        """Fold the children's final states (in submission order) into the parent's state."""

    @property
    def _context_parameter(self) -> str | None:
        return CONTEXT_INPUT

    def run(self, state: State, **run_kwargs: Any) -> ResultDict:
        raise InvalidActionResultError(
            f"{type(self).__qualname__} runs as a step of an application: its children need the "
            "application's ids and persister. Add it to a graph (with_actions) and run that.",
            action=self._name,
        )

    async def _children(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> list[_Child]:
        graphs = [
            RunnableGraph.create(a) for a in await _gather(self.actions(state, context, inputs))
        ]
        states = await _gather(self.states(state, context, inputs))
        for substate in states:
            if not isinstance(substate, State):
                raise InvalidActionResultError(
                    f"Fan-out {self.name!r}: states() must give State objects, got "
                    f"{type(substate).__name__}.",
                    action=self.name,
                )
        origin = context.first_attempt_sequence_id
        assert origin is not None
        pairs = [(g, s) for g in graphs for s in states]
        return [
            _Child(i, child_app_id(context.app_id, origin, i), g, s)
            for i, (g, s) in enumerate(pairs)
        ]

    async def _execute(self, state: State, inputs: Mapping[str, Any]) -> tuple[ResultDict, State]:
        run_inputs = dict(inputs)
        context = run_inputs.pop(CONTEXT_INPUT, None)
        if not isinstance(context, ApplicationContext) or context.sequence_id is None:
            raise InvalidActionResultError(
                f"Fan-out {self.name!r} ran outside an application step.", action=self.name
            )
        children = await self._children(state, context, run_inputs)
        finals = await _run_children(self, context, children, run_inputs)
        if inspect.iscoroutinefunction(self.reduce):
            new_state = await self.reduce(state, _aiter(finals))
        else:
            new_state = self.reduce(state, iter(finals))
            if inspect.isawaitable(new_state):
                new_state = await new_state
        if not isinstance(new_state, State):
            raise InvalidActionResultError(
                f"Fan-out {self.name!r}: reduce() must return a State, got "
                f"{type(new_state).__name__}.",
                action=self.name,
            )
        return {}, new_state


class MapStates(MapActionsAndStates):
    """Run one action (or sub-graph), ``action``, over every state of ``states``."""

    @abstractmethod
    def action(self, state: State, inputs: dict[str, Any]) -> SubgraphType:
        """The action or RunnableGraph each child runs."""

    def actions(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> Iterable[SubgraphType]:
        return [self.action(state, inputs)]


class MapActions(MapActionsAndStates):
    """Run every action (or sub-graph) of ``actions`` over one state, ``state``
    (the parent's state unless overridden)."""

    def state(self, state: State, inputs: dict[str, Any]) -> State:
        """The state every child starts from; the parent's by default."""
        return state

    def states(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> Iterable[State]:
        return [self.state(state, inputs)]


async def _gather(items: Iterable[Any] | AsyncIterable[Any]) -> list[Any]:
    """Every item of a plain or async iterable (an awaitable giving one is awaited first)."""
    if inspect.isawaitable(items):
        items = await items
    if isinstance(items, AsyncIterable):
        return [item async for item in items]
    return list(items)


async def _aiter(states: list[State]) -> AsyncIterator[State]:
    for substate in states:
        yield substate


async def _run_children(
    fan_out: MapActionsAndStates,
    context: ApplicationContext,
    children: list[_Child],
    inputs: dict[str, Any],
) -> list[State]:
    """Run (or resume) every child, at most ``max_concurrency`` at once, and return their
    final states in submission order; raise for the first child that failed."""
    limit = fan_out.max_concurrency
    gate: AbstractAsyncContextManager[Any] = (
        asyncio.Semaphore(limit) if limit is not None else nullcontext()
    )
    finals: list[State | None] = [None] * len(children)
    failures: list[tuple[_Child, str | None, Exception]] = []

    async def run_one(child: _Child) -> None:
        app: Application | None = None
        try:
            async with gate:
                app = await _child_app(context, child)
                finals[child.index] = await _finish(app, child, inputs)
        except Exception as exc:
            at = app.position if app is not None and app.position is not None else None
            failures.append((child, at, exc))
            raise

    try:
        async with asyncio.TaskGroup() as group:
            for child in children:
                group.create_task(run_one(child), name=f"{context.app_id}/child-{child.index}")
    except BaseExceptionGroup:
        if not failures:
            raise
        races = [exc for _, _, exc in failures if isinstance(exc, ConcurrentStepError)]
        if races:  # another worker runs this fan-out: it owns the step
            raise races[0] from None
        child, at, exc = failures[0]
        raise ChildApplicationError(
            action=fan_out.name,
            app_id=context.app_id,
            partition_key=context.partition_key,
            child_index=child.index,
            child_app_id=child.app_id,
            child_action=at,
            exception=exc,
        ) from exc
    assert all(final is not None for final in finals)
    return [final for final in finals if final is not None]


async def _child_app(context: ApplicationContext, child: _Child) -> Application:
    """The child's application: resumed from the parent's storage when it has steps there,
    else new, at the graph's entrypoint with the child's state."""
    assert context.first_attempt_sequence_id is not None
    builder = (
        ApplicationBuilder()
        .with_graph(child.graph.graph)
        .with_identifiers(app_id=child.app_id, partition_key=context.partition_key)
        .with_spawning_parent(
            context.app_id, context.first_attempt_sequence_id, context.partition_key
        )
    )
    persister = context.state_persister
    loader = context.state_initializer
    if loader is None and persister is not None and callable(getattr(persister, "load", None)):
        loader = persister
    if persister is not None:
        builder = builder.with_state_persister(persister)
    if loader is not None:
        builder = builder.initialize_from(
            loader,
            resume_at_next_action=True,
            default_state=child.state,
            default_entrypoint=child.graph.entrypoint,
        )
    else:
        builder = builder.with_state(child.state).with_entrypoint(child.graph.entrypoint)
    return await builder.abuild()


async def _finish(app: Application, child: _Child, inputs: dict[str, Any]) -> State:
    """Run the child until it halts, unless its stored steps show it had already finished:
    its last step completed an action of ``halt_after`` (or it has nowhere to go)."""
    halt_after = list(child.graph.halt_after)
    done = app.position is not None and app._status == "completed" and app.position in halt_after
    if done or not app.has_next_action():
        return app.state
    _, _, final = await app.arun(halt_after=halt_after or None, inputs=inputs)
    return final
