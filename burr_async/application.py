"""The :class:`Application`: runs a graph of actions step by step, persisting every step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from burr_async._shield import run_to_completion
from burr_async.actions import (
    Action,
    ResultDict,
    StreamItem,
    _checked_state,
    _resolve_inputs,
)
from burr_async.errors import (
    ApplicationBusyError,
    BurrAsyncError,
    ConfigurationError,
    PersistenceError,
)
from burr_async.graph import Graph
from burr_async.hooks import ExecuteMethod, _HookSet
from burr_async.persistence.base import AsyncBaseStateSaver, ParentPointer, Status
from burr_async.state import State

__all__ = ["Application", "StreamingResultContainer"]

StepOutcome = tuple[Action, ResultDict | None, State]


class Application:
    """A running state machine. Build it with ``await ApplicationBuilder()...abuild()``.

    Each step chooses the next action from the transitions, runs it, and, when a persister is
    set, waits until the step's row is committed before the application advances. If that write
    fails, ``state``, ``sequence_id`` and ``position`` are unchanged and the step can be retried.
    """

    def __init__(
        self,
        *,
        graph: Graph,
        state: State,
        entrypoint: str,
        uid: str,
        partition_key: str | None,
        sequence_id: int | None,
        position: str | None,
        status: Status,
        hooks: _HookSet,
        persister: AsyncBaseStateSaver | None,
        parent: ParentPointer | None = None,
    ) -> None:
        self._graph = graph
        self._state = state
        self._entrypoint = graph.action(entrypoint)
        self._uid = uid
        self._partition_key = partition_key
        self._sequence_id = sequence_id
        self._position = position
        self._status: Status = status
        self._hooks = hooks
        self._persister = persister
        self._parent = parent
        self._busy = False
        self._has_step_hooks = hooks.has("pre_run_step") or hooks.has("post_run_step")

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
    def graph(self) -> Graph:
        """The application's graph."""
        return self._graph

    @property
    def parent_pointer(self) -> ParentPointer | None:
        """The step this application was forked from, if it was."""
        return self._parent

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
        halt_before: Collection[str] | None = None,
        halt_after: Collection[str] | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> tuple[Action | None, ResultDict | None, State]:
        """Step until an action in ``halt_after`` has run, the next action is in
        ``halt_before``, or the graph ends. Returns the last action run (or, when halted before,
        the action halted at) with its result (None when halted before) and the state."""
        async with self._call(ExecuteMethod.arun):
            last: StepOutcome | None = None
            async for last in self._iterate(halt_before, halt_after, inputs):  # noqa: B007
                pass
            return self._halt_outcome(halt_before, halt_after, last)

    async def aiterate(
        self,
        *,
        halt_before: Collection[str] | None = None,
        halt_after: Collection[str] | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[StepOutcome, None]:
        """Like :meth:`arun`, yielding ``(action, result, state)`` after every step.

        The application is busy only while a step runs, not while the loop body does: breaking
        out of the loop leaves it ready for the next call at once.
        """
        async with self._call(ExecuteMethod.aiterate, hold=False):
            async for outcome in self._iterate(halt_before, halt_after, inputs, guard=True):
                yield outcome

    async def astream_result(
        self,
        halt_after: Collection[str],
        halt_before: Collection[str] | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> tuple[Action | None, StreamingResultContainer]:
        """Run until the next action is in ``halt_after`` (or ``halt_before``), then return
        that action with a container streaming its partial results.

        For a streaming action, iterate the container (``async for partial in container``) and
        ``await container.get()`` for the final ``(result, state)``; the step is persisted when
        the stream ends. A non-streaming action has already run; its container holds the result.
        When halted by ``halt_before`` the action has not run and ``get()`` gives ``(None, state)``.
        """
        self._check_halts(halt_before, halt_after)
        stop_at = set(halt_after) | set(halt_before or ())
        async with self._call(ExecuteMethod.astream_result):
            last: StepOutcome | None = None
            async for last in self._iterate(stop_at, None, inputs):  # noqa: B007
                pass
            upcoming = self.get_next_action()
            if upcoming is None or upcoming.name not in halt_after:
                shown = upcoming if upcoming is not None else (last[0] if last else None)
                return shown, StreamingResultContainer._finished(None, self._state)
            if not upcoming.streaming:
                outcome = await self._step(inputs)
                assert outcome is not None
                return upcoming, StreamingResultContainer._finished(outcome[1], outcome[2])
            run_inputs = _resolve_inputs(upcoming, inputs, self._uid)
            stream = self._stream_step(upcoming, run_inputs, self._sequence_id)
            return upcoming, StreamingResultContainer(stream)

    # -- internals ----------------------------------------------------------------------------
    @asynccontextmanager
    async def _call(self, method: ExecuteMethod, *, hold: bool = True) -> AsyncIterator[None]:
        """Run the execute-call hooks around a call; with ``hold``, mark the application busy
        for the whole call."""
        self._refuse_if_busy(method.value)
        self._busy = hold
        try:
            if self._hooks.has("pre_run_execute_call"):
                await self._hooks.call(
                    "pre_run_execute_call",
                    None,
                    app_id=self._uid,
                    partition_key=self._partition_key,
                    state=self._state,
                    method=method,
                )
            error: Exception | None = None
            try:
                yield
            except Exception as exc:
                error = exc
                raise
            finally:
                if self._hooks.has("post_run_execute_call"):
                    await self._hooks.call(
                        "post_run_execute_call",
                        None,
                        app_id=self._uid,
                        partition_key=self._partition_key,
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

    def _check_halts(self, *groups: Collection[str] | None) -> None:
        for group in groups:
            for name in group or ():
                self._graph.action(name)

    async def _iterate(
        self,
        halt_before: Collection[str] | None,
        halt_after: Collection[str] | None,
        inputs: Mapping[str, Any] | None,
        *,
        guard: bool = False,
    ) -> AsyncIterator[StepOutcome]:
        """Step until a halt; with ``guard``, mark the application busy during each step."""
        self._check_halts(halt_before, halt_after)
        before = set(halt_before or ())
        after = set(halt_after or ())
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
        halt_before: Collection[str] | None,
        halt_after: Collection[str] | None,
        last: StepOutcome | None,
    ) -> tuple[Action | None, ResultDict | None, State]:
        if last is not None and last[0].name in (halt_after or ()):
            return last
        upcoming = self.get_next_action()
        if upcoming is not None and upcoming.name in (halt_before or ()):
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
        run_inputs = _resolve_inputs(act, inputs, self._uid)
        sequence_id = self._next_sequence_id()
        before = self._state
        if self._has_step_hooks:
            await self._pre_step_hooks(act, sequence_id, run_inputs)
        try:
            result, after = await act._execute(before, run_inputs)
            after = _checked_state(act, before, after)
        except Exception as exc:
            await self._fail(act, sequence_id, exc)
            raise
        await self._commit(act, sequence_id, after, result)
        return act, result, after

    async def _stream_step(
        self, act: Action, run_inputs: dict[str, Any], expected_sequence_id: int | None
    ) -> AsyncIterator[StreamItem]:
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
            sequence_id = self._next_sequence_id()
            before = self._state
            if self._has_step_hooks:
                await self._pre_step_hooks(act, sequence_id, run_inputs)
            try:
                final: tuple[ResultDict, State] | None = None
                async for partial, new_state in act._stream(before, run_inputs):  # type: ignore[attr-defined]
                    if new_state is None:
                        yield partial, None
                    else:
                        final = partial, _checked_state(act, before, new_state)
                        break
                if final is None:
                    raise ConfigurationError(
                        f"Streaming action {act.name!r} ended without its final (result, State)."
                    )
            except Exception as exc:
                await self._fail(act, sequence_id, exc)
                raise
            await self._commit(act, sequence_id, final[1], final[0])
        finally:
            self._busy = False
        yield final

    def _next_sequence_id(self) -> int:
        """The number the next step gets: 0 for the first, then one more than the last."""
        return 0 if self._sequence_id is None else self._sequence_id + 1

    async def _pre_step_hooks(self, act: Action, sequence_id: int, inputs: dict[str, Any]) -> None:
        if self._hooks.has("pre_run_step"):
            await self._hooks.call(
                "pre_run_step",
                act.name,
                app_id=self._uid,
                partition_key=self._partition_key,
                sequence_id=sequence_id,
                state=self._state,
                action=act,
                inputs=inputs,
            )

    async def _commit(
        self, act: Action, sequence_id: int, state: State, result: ResultDict
    ) -> None:
        cancelled = await self._persist(act, sequence_id, state, "completed", None)
        self._state = state
        self._sequence_id = sequence_id
        self._position = act.name
        self._status = "completed"
        if cancelled:  # the step landed whole; now the cancellation may go through
            raise asyncio.CancelledError
        if self._has_step_hooks and self._hooks.has("post_run_step"):
            await self._hooks.call(
                "post_run_step",
                act.name,
                app_id=self._uid,
                partition_key=self._partition_key,
                sequence_id=sequence_id,
                state=state,
                action=act,
                result=result,
                exception=None,
            )

    async def _fail(self, act: Action, sequence_id: int, exc: Exception) -> None:
        """Store a ``failed`` step (state as it was before the action) so that a resumed
        application runs the action again; the caller re-raises ``exc``."""
        try:
            cancelled = await self._persist(
                act, sequence_id, self._state, "failed", f"{type(exc).__name__}: {exc}"
            )
        except PersistenceError as write_error:
            write_error.add_note(f"The step was being recorded as failed because: {exc!r}")
            raise write_error from exc
        self._sequence_id = sequence_id
        self._position = act.name
        self._status = "failed"
        if cancelled:
            raise asyncio.CancelledError
        if self._has_step_hooks and self._hooks.has("post_run_step"):
            try:
                await self._hooks.call(
                    "post_run_step",
                    act.name,
                    app_id=self._uid,
                    partition_key=self._partition_key,
                    sequence_id=sequence_id,
                    state=self._state,
                    action=act,
                    result=None,
                    exception=exc,
                )
            except BurrAsyncError as hook_error:
                exc.add_note(str(hook_error))

    async def _persist(
        self, act: Action, sequence_id: int, state: State, status: Status, error: str | None
    ) -> bool:
        """Save the step and return once it is durable, even if the caller is cancelled
        meanwhile; returns whether a cancellation arrived (the caller re-raises it once the
        application agrees with what was stored)."""
        persister = self._persister
        if persister is None:
            return False
        try:
            _, cancelled = await run_to_completion(
                persister.save(
                    self._partition_key,
                    self._uid,
                    sequence_id,
                    act.name,
                    state,
                    status,
                    error=error,
                    **({"parent": self._parent} if self._parent is not None else {}),
                )
            )
            return cancelled
        except BurrAsyncError as exc:
            if type(exc) is PersistenceError and await self._landed(
                act, sequence_id, state, status
            ):
                return False
            if isinstance(exc, PersistenceError) and exc.app_id is None:
                raise PersistenceError(
                    f"Saving the step failed: {exc}",
                    app_id=self._uid,
                    partition_key=self._partition_key,
                    sequence_id=sequence_id,
                    action=act.name,
                ) from exc
            raise
        except Exception as exc:
            if await self._landed(act, sequence_id, state, status):
                return False
            raise PersistenceError(
                f"Saving the step failed ({type(exc).__name__}: {exc}); the application did not "
                "advance and the step can be retried",
                app_id=self._uid,
                partition_key=self._partition_key,
                sequence_id=sequence_id,
                action=act.name,
            ) from exc

    async def _landed(self, act: Action, sequence_id: int, state: State, status: Status) -> bool:
        """After a failed save: whether the row is stored all the same (the connection broke
        between the commit and its acknowledgement). Only an identical row counts."""
        load = getattr(self._persister, "load", None)
        if load is None:
            return False
        try:
            found = await load(self._partition_key, self._uid, sequence_id)
        except Exception:  # still unreachable: the save's own error is the one to report
            return False
        return (
            found is not None
            and found.position == act.name
            and found.status == status
            and found.state == state
        )


class StreamingResultContainer:
    """The partial results of a streaming step, then its final ``(result, state)``.

    ``async for partial in container`` yields each partial result dict; ``await container.get()``
    finishes the stream if needed and returns the final result and state. The step is persisted
    when the stream ends.
    """

    def __init__(self, stream: AsyncIterator[StreamItem] | None) -> None:
        self._stream = stream
        self._final: tuple[ResultDict | None, State] | None = None

    @classmethod
    def _finished(cls, result: ResultDict | None, state: State) -> StreamingResultContainer:
        container = cls(None)
        container._final = (result, state)
        return container

    def __aiter__(self) -> StreamingResultContainer:
        return self

    async def __anext__(self) -> ResultDict:
        """The next partial result; a loop that breaks early can be resumed, or finished by
        :meth:`get`."""
        while self._stream is not None:
            try:
                partial, state = await anext(self._stream)
            except StopAsyncIteration:
                self._stream = None
                break
            if state is None:
                return partial
            self._final = (partial, state)
        raise StopAsyncIteration

    async def get(self) -> tuple[ResultDict | None, State]:
        """The final ``(result, state)``, draining any partial results not yet consumed."""
        async for _ in self:
            pass
        if self._final is None:  # the stream raised or was cancelled where it was read
            raise BurrAsyncError(
                "The stream ended without its final result (it raised or was cancelled where it "
                "was read); the application's history shows what was stored for this step."
            )
        return self._final
