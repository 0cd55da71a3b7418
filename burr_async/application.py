"""The :class:`Application`: runs a graph of actions step by step, persisting every step."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from burr_async._step_store import AT_ENTRYPOINT, StepStore, StoredStep
from burr_async.actions import (
    Action,
    ResultDict,
    StreamItem,
    _checked_state,
    _resolve_inputs,
)
from burr_async.context import ApplicationContext
from burr_async.errors import (
    ApplicationBusyError,
    BurrAsyncError,
    ConcurrentStepError,
    InvalidActionResultError,
    PersistenceError,
)
from burr_async.graph import ApplicationGraph
from burr_async.hooks import ExecuteMethod, _HookSet
from burr_async.persistence.base import AsyncBaseStateSaver, ParentPointer, Status
from burr_async.state import State
from burr_async.streaming import StreamingResultContainer

__all__ = ["Application"]

StepOutcome = tuple[Action, ResultDict | None, State]
Halts = str | Collection[str] | None


class Application(StepStore):
    """A running state machine. Build it with ``await ApplicationBuilder()...abuild()``.

    Each step chooses the next action from the transitions, runs it, and, when a persister is
    set, waits until the step's row is committed before the application advances. If that write
    fails, ``state``, ``sequence_id`` and ``position`` are unchanged and the step can be retried.

    ``halt_before`` and ``halt_after`` take action names and ``"@tag:name"`` (every action with
    that tag), as a list or one string.
    """

    def __init__(
        self,
        *,
        graph: ApplicationGraph,
        state: State,
        uid: str,
        partition_key: str | None,
        sequence_id: int | None,
        position: str | None,
        status: Status,
        hooks: _HookSet,
        persister: AsyncBaseStateSaver | None,
        parent: ParentPointer | None = None,
        spawning_parent: ParentPointer | None = None,
        first_attempt: int | None = None,
        error: str | None = None,
        given_persister: object = None,
        given_initializer: object = None,
    ) -> None:
        self._graph = graph
        self._state = state
        self._entrypoint = graph.entrypoint
        self._uid = uid
        self._partition_key = partition_key
        self._sequence_id = sequence_id
        self._position = position
        self._status: Status = status
        self._error = error if status == "failed" else None
        self._hooks = hooks
        self._persister = persister
        self._parent = parent
        self._spawning_parent = spawning_parent
        # the sequence id of the first failed attempt of the action at a failed position
        self._first_attempt = (
            (sequence_id if first_attempt is None else first_attempt)
            if status == "failed"
            else None
        )
        self._given = (given_persister, given_initializer)
        self._busy = False
        self._unsettled: StoredStep | None = None

    # -- identity and position ---------------------------------------------------------------
    @property
    def state(self) -> State:
        """The state after the last committed step."""
        return self._state

    @property
    def uid(self) -> str:
        """The application id (``app_id``)."""
        return self._uid

    app_id = uid

    @property
    def partition_key(self) -> str | None:
        """The partition key (for example the user), or None."""
        return self._partition_key

    @property
    def sequence_id(self) -> int | None:
        """Number of the last step taken (0 for the first), or None before any step."""
        return self._sequence_id

    @property
    def position(self) -> str | None:
        """Name of the last action run, or None before any step."""
        return self._position

    @property
    def graph(self) -> ApplicationGraph:
        """The application's graph, with its entrypoint."""
        return self._graph

    @property
    def parent_pointer(self) -> ParentPointer | None:
        """The step this application was forked from, if it was."""
        return self._parent

    @property
    def spawning_parent_pointer(self) -> ParentPointer | None:
        """The parent step that spawned this application (``with_spawning_parent``, or a
        fan-out's child), if it is a sub-application."""
        return self._spawning_parent

    @property
    def context(self) -> ApplicationContext:
        """The :class:`~burr_async.context.ApplicationContext` the next step's action will get
        (its ``sequence_id`` is the number that step will take)."""
        upcoming = self.get_next_action()
        return self._context(upcoming.name if upcoming is not None else None)

    def _context(self, action_name: str | None) -> ApplicationContext:
        sequence_id = self._next_sequence_id()
        retrying = (
            self._first_attempt is not None
            and action_name is not None
            and action_name == self._position
        )
        return ApplicationContext(
            app_id=self._uid,
            partition_key=self._partition_key,
            sequence_id=sequence_id,
            action_name=action_name,
            state_persister=self._given[0],
            state_initializer=self._given[1],
            first_attempt_sequence_id=self._first_attempt if retrying else sequence_id,
        )

    def get_next_action(self) -> Action | None:
        """The action the next step will run, or None when the graph has nowhere to go."""
        if self._position is None:
            return self._entrypoint
        if self._status == "failed":
            return self._graph.action(self._position)
        return self._graph.next_action(self._position, self._state)

    def has_next_action(self) -> bool:
        """Whether another step can run."""
        return self.get_next_action() is not None

    def visualize(self, output_file_path: str | Path | None = None) -> str:
        """The graph as Mermaid text (the current position highlighted); also written to
        ``output_file_path`` when given."""
        text = self._graph.to_mermaid(highlight=self._position)
        if output_file_path is not None:
            Path(output_file_path).write_text(text, encoding="utf-8")
        return text

    # -- running ------------------------------------------------------------------------------
    async def astep(self, inputs: Mapping[str, Any] | None = None) -> StepOutcome | None:
        """Run one step: ``(action, result, state)``, or None when there is no next action.

        Raises the action's own exception when it fails (after storing a ``failed`` step);
        :class:`~burr_async.errors.PersistenceError` when the step could not be stored.
        """
        async with self._call(ExecuteMethod.astep):
            return await self._step(inputs)

    async def arun(
        self,
        *,
        halt_before: Halts = None,
        halt_after: Halts = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> tuple[Action | None, ResultDict | None, State]:
        """Step until an action in ``halt_after`` has run, the next action is in
        ``halt_before``, or the graph ends. Returns the last action run (or, when halted before,
        the action halted at) with its result (None when halted before) and the state."""
        before, after = self._halts(halt_before, halt_after)
        async with self._call(ExecuteMethod.arun):
            last: StepOutcome | None = None
            async for last in self._iterate(before, after, inputs):  # noqa: B007
                pass
            return self._halt_outcome(before, after, last)

    async def aiterate(
        self,
        *,
        halt_before: Halts = None,
        halt_after: Halts = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[StepOutcome, None]:
        """Like :meth:`arun`, yielding ``(action, result, state)`` after every step.

        The application is busy only while a step runs, not while the loop body does: breaking
        out of the loop leaves it ready for the next call at once.
        """
        before, after = self._halts(halt_before, halt_after)
        async with self._call(ExecuteMethod.aiterate, hold=False):
            async for outcome in self._iterate(before, after, inputs, guard=True):
                yield outcome

    async def astream_result(
        self,
        halt_after: Halts,
        halt_before: Halts = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> tuple[Action | None, StreamingResultContainer]:
        """Run until the next action is in ``halt_after`` (or ``halt_before``), then return
        that action with a container streaming its partial results.

        For a streaming action, iterate the container (``async for partial in container``) and
        ``await container.get()`` for the final ``(result, state)``; the step is persisted when
        the stream ends. A non-streaming action has already run; its container holds the result.
        When halted by ``halt_before`` the action has not run and ``get()`` gives ``(None, state)``.
        """
        before, after = self._halts(halt_before, halt_after)
        async with self._call(ExecuteMethod.astream_result):
            last: StepOutcome | None = None
            async for last in self._iterate(before | after, frozenset(), inputs):  # noqa: B007
                pass
            upcoming = self.get_next_action()
            if upcoming is None or upcoming.name not in after:
                shown = upcoming if upcoming is not None else (last[0] if last else None)
                return shown, StreamingResultContainer._finished(None, self._state)
            return upcoming, await self._container(upcoming, inputs)

    async def astream_iterate(
        self,
        halt_after: Halts = None,
        halt_before: Halts = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[tuple[Action, StreamingResultContainer], None]:
        """Step until a halt as :meth:`aiterate` does, yielding ``(action, container)`` for each
        step: the container streams a streaming action's partial results (``async for``) and
        gives ``(result, state)`` from ``await container.get()``; for a non-streaming action
        the step has already run and the container holds its result. Burr's
        ``astream_iterate``.

        Each step is persisted when its stream ends. The loop finishes a container the body
        did not read to the end before the next step; a container the body closed
        (``await container.aclose()``) abandons its step (nothing stored, the action runs again
        on the next call) and ends the loop. ``inputs`` go to every step, as in
        :meth:`aiterate`. Halts are checked before the first step too: an entrypoint in
        ``halt_before`` yields nothing.
        """
        before, after = self._halts(halt_before, halt_after)
        async with self._call(ExecuteMethod.astream_iterate, hold=False):
            while True:
                upcoming = self.get_next_action()
                if upcoming is None or upcoming.name in before:
                    return
                self._refuse_if_busy("astream_iterate")
                container = await self._container(upcoming, inputs, guard=True)
                try:
                    yield upcoming, container
                except GeneratorExit:
                    await container.aclose()
                    raise
                if container._abandoned:
                    return
                await container.get()
                if upcoming.name in after:
                    return

    async def _container(
        self, act: Action, inputs: Mapping[str, Any] | None, *, guard: bool = False
    ) -> StreamingResultContainer:
        """The container of the step running ``act``: a non-streaming action runs now (with
        ``guard``, the application busy meanwhile), a streaming one when it is read."""
        if not act.streaming:
            if guard:
                self._busy = True
            try:
                outcome = await self._step(inputs, act)
            finally:
                if guard:
                    self._busy = False
            assert outcome is not None
            return StreamingResultContainer._finished(outcome[1], outcome[2])
        run_inputs = _resolve_inputs(act, inputs, self._uid)
        return StreamingResultContainer(self._stream_step(act, run_inputs, self._sequence_id))

    # -- changing the state or position outside an action -----------------------------------
    async def update_state(self, new_state: State | Mapping[str, Any]) -> None:
        """Replace the state, as a step of its own: awaited, and persisted.

        The change takes the next ``sequence_id`` and is stored like a step (same position and
        status as before, the new state), so an application resumed from storage sees it.
        Burr's ``update_state`` is a plain assignment that is not stored; here it must be
        awaited. No action runs and no step hook is called. If the save fails the application
        is unchanged (see :class:`~burr_async.errors.PersistenceError`).
        """
        state = new_state if isinstance(new_state, State) else State(new_state)
        await self._change("update_state", state)

    async def reset_to_entrypoint(self) -> None:
        """Make the next step run the entrypoint, as a step of its own: awaited, and persisted.

        Stored with the position ``"@entrypoint"`` and the state unchanged, so an application
        resumed from storage (``resume_at_next_action=True``) also starts at its entrypoint. A
        failed last step is not re-run. Burr's ``reset_to_entrypoint`` is not stored; here it
        must be awaited.
        """
        await self._change("reset_to_entrypoint", None)

    async def _change(self, what: str, state: State | None) -> None:
        """Store ``state`` at the current position and status, or (None) the current state
        at the entrypoint, once any step left unsettled is settled."""
        self._refuse_if_busy(what)
        self._busy = True
        try:
            await self._settle_change()
            pending = self._unsettled  # an action's step whose commit is unknown: store it
            if (
                pending is not None
                and pending.action is not None
                and pending.sequence_id == self._next_sequence_id()
            ):
                if pending.exception is None:
                    assert pending.result is not None
                    await self._commit(
                        pending.action, pending.sequence_id, pending.state, pending.result
                    )
                else:
                    await self._fail(pending.action, pending.sequence_id, pending.exception)
            sequence_id = self._next_sequence_id()
            if state is None:
                step = StoredStep(
                    None, AT_ENTRYPOINT, sequence_id, self._state, "completed", None, None, None
                )
            else:
                position = self._position if self._position is not None else AT_ENTRYPOINT
                step = StoredStep(
                    None, position, sequence_id, state, self._status, self._error, None, None
                )
            await self._apply_change(step)
        finally:
            self._busy = False

    # -- internals ----------------------------------------------------------------------------
    @asynccontextmanager
    async def _call(self, method: ExecuteMethod, *, hold: bool = True) -> AsyncIterator[None]:
        """Run the execute-call hooks around a call; with ``hold``, mark the application busy
        for the whole call."""
        self._refuse_if_busy(method.value)
        self._busy = True
        try:
            await self._settle_change()
        finally:
            self._busy = hold
        try:
            if self._hooks.has("pre_run_execute_call"):
                await self._call_hooks(
                    "pre_run_execute_call", None, state=self._state, method=method
                )
            error: Exception | None = None
            try:
                yield
            except Exception as exc:
                error = exc
                raise
            finally:
                if self._hooks.has("post_run_execute_call"):
                    await self._call_hooks(
                        "post_run_execute_call",
                        None,
                        state=self._state,
                        method=method,
                        exception=error,
                    )
        finally:
            if hold:
                self._busy = False

    def _refuse_if_busy(self, what: str) -> None:
        if self._busy:
            raise ApplicationBusyError(
                f"Application {self._uid!r} is already running a step; await it before calling "
                f"{what}()."
            )

    def _halts(
        self, halt_before: Halts, halt_after: Halts
    ) -> tuple[frozenset[str], frozenset[str]]:
        """The action names of ``halt_before`` and ``halt_after``, tags expanded; raises for an
        unknown action or tag before anything runs."""
        return self._graph.resolve_names(halt_before), self._graph.resolve_names(halt_after)

    async def _iterate(
        self,
        before: frozenset[str],
        after: frozenset[str],
        inputs: Mapping[str, Any] | None,
        *,
        guard: bool = False,
    ) -> AsyncIterator[StepOutcome]:
        """Step until a halt; with ``guard``, mark the application busy during each step."""
        while True:
            upcoming = self.get_next_action()
            if upcoming is None or upcoming.name in before:
                return
            if guard:
                self._refuse_if_busy("aiterate")
                self._busy = True
                try:
                    outcome = await self._step(inputs, upcoming)
                finally:
                    self._busy = False
            else:
                outcome = await self._step(inputs, upcoming)
            assert outcome is not None
            yield outcome
            if upcoming.name in after:
                return

    def _halt_outcome(
        self,
        before: frozenset[str],
        after: frozenset[str],
        last: StepOutcome | None,
    ) -> tuple[Action | None, ResultDict | None, State]:
        if last is not None and last[0].name in after:
            return last
        upcoming = self.get_next_action()
        if upcoming is not None and upcoming.name in before:
            return upcoming, None, self._state
        if last is None:
            return None, None, self._state
        return last

    async def _step(
        self, inputs: Mapping[str, Any] | None, upcoming: Action | None = None
    ) -> StepOutcome | None:
        act = upcoming or self.get_next_action()
        if act is None:
            return None
        final: StreamItem | None = None
        async for final in self._run_step(act, _resolve_inputs(act, inputs, self._uid)):  # noqa: B007
            pass
        assert final is not None
        assert final[1] is not None
        return act, final[0], final[1]

    async def _stream_step(
        self, act: Action, run_inputs: dict[str, Any], expected_sequence_id: int | None
    ) -> AsyncGenerator[StreamItem, None]:
        # The stream runs after astream_result() returned: hold the busy flag while it runs, and
        # refuse to run once another call has advanced the application in between.
        if self._busy or self._sequence_id != expected_sequence_id:
            raise ApplicationBusyError(
                f"Application {self._uid!r} ran another call after astream_result() returned "
                f"the stream of {act.name!r}; consume a stream before calling the application "
                "again."
            )
        self._busy = True
        try:
            async with aclosing(self._run_step(act, run_inputs)) as steps:
                async for item in steps:
                    yield item
        finally:
            self._busy = False

    async def _run_step(
        self, act: Action, inputs: dict[str, Any]
    ) -> AsyncGenerator[StreamItem, None]:
        """The one step routine, which every way of running drives: run ``act`` (streamed when
        it streams, its generator closed when the step ends), check what it returned, store
        the step, and run the step hooks. Yields ``(partial, None)`` for each partial result
        of a streaming action, then ``(result, state)`` once the step is committed.

        A step whose save ended with :class:`~burr_async.errors.CommitUnknownError` is settled
        first: the very same step is saved again (its action does not run again)."""
        sequence_id = self._next_sequence_id()
        pending = self._unsettled
        if pending is not None and pending.sequence_id == sequence_id and pending.action is act:
            if pending.exception is None:
                assert pending.result is not None
                await self._commit(act, sequence_id, pending.state, pending.result)
                yield pending.result, pending.state
                return
            await self._fail(act, sequence_id, pending.exception)  # stored: now run it again
            sequence_id = self._next_sequence_id()
        before = self._state
        if self._hooks.has("pre_run_step"):
            await self._call_hooks(
                "pre_run_step", act, sequence_id=sequence_id, state=before, inputs=inputs
            )
        context = self._context(act.name)
        parameter = act._context_parameter
        if parameter is not None:
            inputs = {**inputs, parameter: context}
        try:
            if act.streaming:
                final: StreamItem | None = None
                async with aclosing(act._stream(before, inputs)) as stream:  # type: ignore[attr-defined]
                    while True:
                        with context:  # ApplicationContext.get() while the action's code runs
                            item = await anext(stream, None)
                        if item is None:
                            break
                        partial, new_state = item
                        if new_state is not None:
                            final = partial, new_state
                            break
                        yield partial, None
                if final is None or final[1] is None:
                    raise InvalidActionResultError(
                        f"Streaming action {act.name!r} ended without yielding its final "
                        "(result, State).",
                        action=act.name,
                    )
                result, after = final[0], final[1]
            else:
                with context:
                    result, after = await act._execute(before, inputs)
            after = _checked_state(act, before, after)
        except ConcurrentStepError:
            # a sub-application of the action lost a race to another worker running this very
            # step: that worker owns the step, so nothing is stored here (a failed row would
            # take the key its commit needs); the application stays where it was
            raise
        except Exception as exc:
            await self._fail(act, sequence_id, exc)
            raise
        await self._commit(act, sequence_id, after, result)
        yield result, after

    def _next_sequence_id(self) -> int:
        """The number the next step gets: 0 for the first, then one more than the last."""
        return 0 if self._sequence_id is None else self._sequence_id + 1

    async def _call_hooks(self, phase: str, act: Action | None, **kwargs: Any) -> None:
        """Call the hooks of ``phase`` with the keywords every hook gets (the app's ids, and
        the action when there is one) and ``kwargs``."""
        if act is not None:
            kwargs["action"] = act
        await self._hooks.call(
            phase,
            act.name if act is not None else None,
            app_id=self._uid,
            partition_key=self._partition_key,
            **kwargs,
        )

    async def _post_step_hooks(
        self, act: Action, sequence_id: int, result: ResultDict | None, exception: Exception | None
    ) -> None:
        """The post-step hooks of a stored step. They run shielded from cancellation: a step
        that committed while its caller was being cancelled (``asyncio.timeout``, an anyio
        cancel scope) still reaches its hooks, so a tracing hook sees the slow steps too."""
        if not self._hooks.has("post_run_step"):
            return
        with anyio.CancelScope(shield=True):
            await self._call_hooks(
                "post_run_step",
                act,
                sequence_id=sequence_id,
                state=self._state,
                result=result,
                exception=exception,
            )

    async def _commit(
        self, act: Action, sequence_id: int, state: State, result: ResultDict
    ) -> None:
        cancelled = await self._persist(
            StoredStep(act, act.name, sequence_id, state, "completed", None, result, None)
        )
        self._state = state
        self._sequence_id = sequence_id
        self._position = act.name
        self._status = "completed"
        self._error = None
        self._first_attempt = None
        try:
            await self._post_step_hooks(act, sequence_id, result, None)
        finally:
            if cancelled is not None:  # the step landed whole; now the cancellation goes through
                raise cancelled

    async def _fail(self, act: Action, sequence_id: int, exc: Exception) -> None:
        """Store a ``failed`` step (state as it was before the action) so that a resumed
        application runs the action again; the caller re-raises ``exc``."""
        error = f"{type(exc).__name__}: {exc}"
        try:
            cancelled = await self._persist(
                StoredStep(act, act.name, sequence_id, self._state, "failed", error, None, exc)
            )
        except PersistenceError as write_error:
            write_error.add_note(f"The step was being recorded as failed because: {exc!r}")
            raise write_error from exc
        if self._status != "failed" or self._position != act.name or self._first_attempt is None:
            self._first_attempt = sequence_id
        self._sequence_id = sequence_id
        self._position = act.name
        self._status = "failed"
        self._error = error
        try:
            await self._post_step_hooks(act, sequence_id, None, exc)
        except BurrAsyncError as hook_error:
            exc.add_note(str(hook_error))
        finally:
            if cancelled is not None:
                raise cancelled
