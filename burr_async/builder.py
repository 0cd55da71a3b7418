"""The :class:`ApplicationBuilder`: Burr's builder verbs, finished by ``await abuild()``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Self, cast

from burr_async._step_store import AT_ENTRYPOINT
from burr_async.actions import Action
from burr_async.application import Application
from burr_async.errors import ConfigurationError, GraphValidationError, StateNotFoundError
from burr_async.graph import ApplicationGraph, Graph, GraphBuilder, TransitionSpec
from burr_async.hooks import _HookSet
from burr_async.persistence._sync import (
    SyncPersisterAdapter,
    SyncStateLoader,
    SyncStateSaver,
    is_async_callable,
)
from burr_async.persistence.base import (
    AsyncBaseStateLoader,
    AsyncBaseStateSaver,
    ParentPointer,
    PersistedStateData,
    Status,
    _check_id,
)
from burr_async.state import State

__all__ = ["ApplicationBuilder"]


@dataclass(frozen=True, slots=True)
class _Initializer:
    loader: AsyncBaseStateLoader
    resume_at_next_action: bool
    default_state: State
    default_entrypoint: str
    fork_from_app_id: str | None
    fork_from_partition_key: str | None
    fork_from_sequence_id: int | None
    override_state_values: Mapping[str, Any] | None
    given: object


class ApplicationBuilder:
    """Collects actions, transitions, state and identity, then builds an :class:`Application`.

    Every ``with_*`` method returns the builder for chaining; ``await abuild()`` validates the
    graph (unknown or duplicate actions, missing entrypoint, unreachable actions), loads state
    when ``initialize_from`` was used, and returns the application. There is no sync
    ``build()``: it raises, saying to ``await abuild()``.
    """

    def __init__(self) -> None:
        self._graph = GraphBuilder()
        self._state: State | None = None
        self._entrypoint: str | None = None
        self._app_id: str | None = None
        self._partition_key: str | None = None
        self._spawning_parent: ParentPointer | None = None
        self._sequence_id: int | None = None
        self._hooks: list[object] = []
        self._persister: AsyncBaseStateSaver | None = None
        self._given_persister: object = None
        self._initializer: _Initializer | None = None
        self._typing: Any = None

    def with_actions(self, *actions: Action, **named_actions: Action) -> Self:
        """Add actions, positionally (by their own name) or as ``name=action``."""
        self._graph.with_actions(*actions, **named_actions)
        return self

    def with_transitions(self, *transitions: TransitionSpec) -> Self:
        """Add ``(from, to)`` or ``(from, to, condition)`` transitions; ``from`` may be a list.
        Out of one action they are tried in the order given."""
        self._graph.with_transitions(*transitions)
        return self

    def with_graph(self, graph: Graph) -> Self:
        """Add the actions and transitions of a graph built with
        :class:`~burr_async.graph.GraphBuilder`; may be combined with ``with_actions`` and
        ``with_transitions`` (names must not clash). One graph can serve many applications."""
        self._graph.with_graph(graph)
        return self

    def with_graphs(self, *graphs: Graph) -> Self:
        """:meth:`with_graph` for each graph."""
        for graph in graphs:
            self._graph.with_graph(graph)
        return self

    def with_entrypoint(self, action: str) -> Self:
        """Name the first action of a fresh application."""
        self._forbid_with_initializer("with_entrypoint")
        self._entrypoint = action
        return self

    def with_state(self, state: State | Mapping[str, Any] | None = None, **values: Any) -> Self:
        """Set initial state from a State, a dict, or keyword values (merged into any earlier)."""
        self._forbid_with_initializer("with_state")
        current = self._state or State()
        if state is not None:
            current = current.merge(state)
        self._state = current.update(**values) if values else current
        return self

    def with_identifiers(
        self,
        app_id: str | None = None,
        partition_key: str | None = None,
        sequence_id: int | None = None,
    ) -> Self:
        """Set the application id (a UUID4 string when never set), the partition key, and
        optionally the ``sequence_id`` to load with ``initialize_from``."""
        if app_id is not None:
            _check_id("app_id", app_id)
            self._app_id = app_id
        _check_id("partition_key", partition_key, optional=True)
        if partition_key is not None:
            self._partition_key = partition_key
        if sequence_id is not None:
            self._sequence_id = sequence_id
        return self

    def with_spawning_parent(
        self, app_id: str, sequence_id: int, partition_key: str | None = None
    ) -> Self:
        """Make this a sub-application of the step ``sequence_id`` of application ``app_id``
        (in ``partition_key``): the step whose action spawns it, as in Burr. The pointer is
        stored with every step of this application (``PersistedStateData.spawning_parent``;
        ``burr-async history`` and ``apps`` show it) and given to the
        ``post_application_create`` hooks. A resumed sub-application keeps the pointer it was
        stored with when this is not called. A fan-out (``MapStates`` ...) sets it on its
        children itself."""
        _check_id("app_id", app_id)
        _check_id("partition_key", partition_key, optional=True)
        if isinstance(sequence_id, bool) or not isinstance(sequence_id, int) or sequence_id < 0:
            raise ConfigurationError(
                f"with_spawning_parent(sequence_id={sequence_id!r}): the parent step's number, "
                "a whole number from 0."
            )
        self._spawning_parent = ParentPointer(app_id, partition_key, sequence_id)
        return self

    def with_hooks(self, *hooks: object) -> Self:
        """Add lifecycle hooks (see :mod:`burr_async.hooks`)."""
        self._hooks.extend(hooks)
        return self

    def with_typing(self, typing_system: Any) -> Self:
        """Type the app's state with ``typing_system`` (Burr's; for example
        ``PydanticTypingSystem(Model)`` from :mod:`burr_async.integrations.pydantic`): then
        ``app.state.data`` is the state as a ``Model``. The state is stored as before."""
        if not callable(getattr(typing_system, "construct_data", None)):
            raise ConfigurationError(
                f"with_typing takes a typing system with construct_data(state), such as "
                f"PydanticTypingSystem(Model), not {typing_system!r}."
            )
        self._typing = typing_system
        return self

    def with_state_persister(
        self, persister: AsyncBaseStateSaver | SyncStateSaver, on_every: str = "step"
    ) -> Self:
        """Persist every step through ``persister``; a step counts only once its write returns.

        A Burr-style sync persister (``save`` a plain function) is accepted: its calls run in a
        worker thread, with the same contract."""
        if on_every != "step":
            raise ConfigurationError(f"on_every={on_every!r} is not supported; use 'step'.")
        save = getattr(persister, "save", None)
        if not callable(save):
            raise ConfigurationError(
                f"{persister!r} cannot persist state: it has no save(...) method (async, or a "
                "plain function run in a worker thread)."
            )
        if is_async_callable(save):
            self._persister = cast(AsyncBaseStateSaver, persister)
        else:
            self._persister = self._adapted(persister)
        self._given_persister = persister
        return self

    def initialize_from(
        self,
        initializer: AsyncBaseStateLoader | SyncStateLoader,
        resume_at_next_action: bool,
        default_state: State | Mapping[str, Any],
        default_entrypoint: str,
        fork_from_app_id: str | None = None,
        fork_from_partition_key: str | None = None,
        fork_from_sequence_id: int | None = None,
        override_state_values: Mapping[str, Any] | None = None,
    ) -> Self:
        """Start from stored state when there is some, else from the defaults.

        The arguments are Burr's, in Burr's order. The latest step (or
        ``with_identifiers(sequence_id=...)``) of this app is loaded; with ``fork_from_app_id``
        a step of another app is copied into this one. A completed step resumes at the action
        after it (``resume_at_next_action=True``) or at ``default_entrypoint``; a failed step
        runs its action again; a step stored by ``reset_to_entrypoint`` resumes at
        ``default_entrypoint``. ``override_state_values`` are set over a loaded state (not over
        ``default_state``), as in Burr; they are stored with the next step. Excludes
        ``with_state`` and ``with_entrypoint``. A Burr-style sync loader (``load`` a plain
        function) is accepted: its calls run in a worker thread.
        """
        if self._state is not None or self._entrypoint is not None:
            used = "with_state" if self._state is not None else "with_entrypoint"
            raise ConfigurationError(
                f"initialize_from() cannot be combined with {used}(): pass the initial values "
                "as initialize_from(default_state=..., default_entrypoint=...) instead."
            )
        if fork_from_app_id is None and (
            fork_from_partition_key is not None or fork_from_sequence_id is not None
        ):
            raise ConfigurationError(
                "fork_from_partition_key and fork_from_sequence_id choose the step to fork "
                "from, and need fork_from_app_id: pass it too, or drop them."
            )
        load = getattr(initializer, "load", None)
        if not callable(load):
            raise ConfigurationError(
                f"{initializer!r} cannot load state: it has no load(...) method (async, or a "
                "plain function run in a worker thread)."
            )
        loader = (
            cast(AsyncBaseStateLoader, initializer)
            if is_async_callable(load)
            else self._adapted(initializer)
        )
        self._initializer = _Initializer(
            loader=loader,
            resume_at_next_action=resume_at_next_action,
            default_state=State(default_state),
            default_entrypoint=default_entrypoint,
            fork_from_app_id=fork_from_app_id,
            fork_from_partition_key=fork_from_partition_key,
            fork_from_sequence_id=fork_from_sequence_id,
            override_state_values=dict(override_state_values or {}),
            given=initializer,
        )
        return self

    def initialize(
        self, initializer: AsyncBaseStateLoader | SyncStateLoader, **kwargs: Any
    ) -> Self:
        """Alias of :meth:`initialize_from`, the spelling in Burr's persistence docs."""
        return self.initialize_from(initializer, **kwargs)

    def _adapted(self, persister: object) -> SyncPersisterAdapter:
        """The adapter running ``persister``'s calls in worker threads: one per object, shared
        by ``with_state_persister`` and ``initialize_from``."""
        loader = self._initializer.loader if self._initializer is not None else None
        for existing in (self._persister, loader):
            if isinstance(existing, SyncPersisterAdapter) and existing.persister is persister:
                return existing
        return SyncPersisterAdapter(persister)

    def _forbid_with_initializer(self, verb: str) -> None:
        if self._initializer is not None:
            raise ConfigurationError(
                f"{verb}() cannot be combined with initialize_from(): pass the initial values "
                "as initialize_from(default_state=..., default_entrypoint=...) instead."
            )

    def build(self) -> NoReturn:
        """Not available: raises :class:`~burr_async.errors.ConfigurationError` saying to use
        ``app = await builder.abuild()`` (building may read the database)."""
        raise ConfigurationError(
            "ApplicationBuilder.build() does not exist in burr_async: building may read the "
            "database, so it is awaited. Use: app = await builder.abuild()"
        )

    async def abuild(self) -> Application:
        """Validate, load (when ``initialize_from`` was used) and return the application."""
        if self._sequence_id is not None and self._initializer is None:
            raise ConfigurationError(
                f"with_identifiers(sequence_id={self._sequence_id}) chooses the stored step to "
                "load, but nothing is loaded: add initialize_from(persister, ...), or drop "
                "sequence_id to start a new application."
            )
        graph = self._graph.build()
        actions = graph._actions
        app_id = self._app_id or str(uuid.uuid4())
        state = self._state or State()
        entrypoint = self._entrypoint
        sequence_id: int | None = None
        position: str | None = None
        status: Status = "completed"
        error: str | None = None
        parent: ParentPointer | None = None
        spawner = self._spawning_parent
        first_attempt: int | None = None
        init = self._initializer
        if init is not None:
            entrypoint = init.default_entrypoint
            loaded = await self._load(init, app_id)
            if loaded is None:
                state = init.default_state
            else:
                state, sequence_id = loaded.state, loaded.sequence_id
                if init.override_state_values:
                    state = state.update(**init.override_state_values)
                at_entrypoint = loaded.position == AT_ENTRYPOINT
                if not at_entrypoint and loaded.position not in actions:
                    raise GraphValidationError(
                        f"Stored step {loaded.sequence_id} of app {loaded.app_id!r} is at action "
                        f"{loaded.position!r}, which this graph does not have (actions: "
                        f"{sorted(actions)}). Add the action or start a new app."
                    )
                if not at_entrypoint and (loaded.status == "failed" or init.resume_at_next_action):
                    position, status, error = loaded.position, loaded.status, loaded.error
                    if status == "failed":
                        first_attempt = await self._first_attempt(init, loaded)
                if spawner is None:
                    spawner = loaded.spawning_parent
                if init.fork_from_app_id is not None:
                    parent = ParentPointer(loaded.app_id, loaded.partition_key, loaded.sequence_id)
                    await self._record_fork(app_id, loaded, parent)
                else:  # a resumed fork still knows where it came from
                    parent = loaded.parent
        graph.validate_entrypoint(entrypoint)
        assert entrypoint is not None
        if self._typing is not None:
            if init is not None and loaded is not None and state is loaded.state:
                # the very object the persister just made, and remembers as the app's latest
                # state (a delta is written against it): typed in place, shared with no one
                state._typing = self._typing
            else:
                state = state.with_typing_system(self._typing)
        app_graph = ApplicationGraph(graph, entrypoint)
        app = Application(
            graph=app_graph,
            state=state,
            uid=app_id,
            partition_key=self._partition_key,
            sequence_id=sequence_id,
            position=position,
            status=status,
            hooks=_HookSet.of(self._hooks),
            persister=self._persister,
            parent=parent,
            spawning_parent=spawner,
            first_attempt=first_attempt,
            error=error,
            given_persister=self._given_persister,
            given_initializer=init.given if init is not None else None,
        )
        await app._hooks.call(
            "post_application_create",
            None,
            app_id=app_id,
            partition_key=self._partition_key,
            state=state,
            application_graph=app_graph,
            parent_pointer=parent,
            spawning_parent_pointer=spawner,
        )
        return app

    async def _first_attempt(self, init: _Initializer, failed: PersistedStateData) -> int:
        """The sequence id of the first of the failed attempts of ``failed``'s action that
        end the app's stored steps (``ApplicationContext.first_attempt_sequence_id`` of the
        retry): the loaded step's own, or earlier ones' when it failed more than once. Reads a
        step per further failed attempt, and only when an app resumes at a failed step."""
        first = failed.sequence_id
        while first > 0:
            earlier = await init.loader.load(failed.partition_key, failed.app_id, first - 1)
            if earlier is None or earlier.status != "failed" or earlier.position != failed.position:
                break
            first = earlier.sequence_id
        return first

    async def _load(self, init: _Initializer, app_id: str) -> PersistedStateData | None:
        if init.fork_from_app_id is None:
            loaded = await init.loader.load(self._partition_key, app_id, self._sequence_id)
            if loaded is None and self._sequence_id is not None:
                raise StateNotFoundError(
                    f"App {app_id!r} (partition_key={self._partition_key!r}) has no stored step "
                    f"{self._sequence_id} to load (never written, or pruned). Choose a stored "
                    "step (persister.history lists them) or drop sequence_id to load the latest."
                )
            return loaded
        if init.fork_from_app_id == app_id:
            raise ConfigurationError(
                f"Cannot fork app {app_id!r} into itself: give the new app another id with "
                "with_identifiers(app_id=...), or leave it unset for a fresh one."
            )
        if self._app_id is not None and await init.loader.load(self._partition_key, app_id):
            raise ConfigurationError(
                f"Cannot fork into app {app_id!r} (partition_key={self._partition_key!r}): it "
                "already has stored steps. Fork into a new app id, or leave it unset for a "
                "fresh one."
            )
        loaded = await init.loader.load(
            init.fork_from_partition_key, init.fork_from_app_id, init.fork_from_sequence_id
        )
        if loaded is None:
            where = (
                "its latest step"
                if init.fork_from_sequence_id is None
                else f"sequence_id={init.fork_from_sequence_id}"
            )
            raise StateNotFoundError(
                f"Nothing to fork from: app {init.fork_from_app_id!r} in partition "
                f"{init.fork_from_partition_key!r} has no stored step ({where}). Check the ids.",
            )
        return loaded

    async def _record_fork(
        self, app_id: str, loaded: PersistedStateData, parent: ParentPointer
    ) -> None:
        """Copy the fork source into the new app, so that the fork is on record before it runs."""
        if self._persister is None:
            return
        await self._persister.save(
            self._partition_key,
            app_id,
            loaded.sequence_id,
            loaded.position,
            loaded.state,
            loaded.status,
            error=loaded.error,
            parent=parent,
        )
