"""The :class:`Application`: runs a graph of actions step by step, persisting every step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

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
    CommitUnknownError,
    ConcurrentStepError,
    InvalidActionResultError,
    PersistenceError,
)
from burr_async.graph import Graph
from burr_async.hooks import ExecuteMethod, _HookSet
from burr_async.persistence.base import AsyncBaseStateSaver, ParentPointer, Status
from burr_async.state import State
from burr_async.streaming import StreamingResultContainer

__all__ = ["Application"]

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
        self._unsettled: _Step | None = None

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
        try:
            if act.streaming:
                final: StreamItem | None = None
                async with aclosing(act._stream(before, inputs)) as stream:  # type: ignore[attr-defined]
                    async for partial, new_state in stream:
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
                result, after = await act._execute(before, inputs)
            after = _checked_state(act, before, after)
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
        cancelled = await self._persist(act, sequence_id, state, "completed", None, result=result)
        self._state = state
        self._sequence_id = sequence_id
        self._position = act.name
        self._status = "completed"
        try:
            await self._post_step_hooks(act, sequence_id, result, None)
        finally:
            if cancelled:  # the step landed whole; now the cancellation may go through
                raise asyncio.CancelledError

    async def _fail(self, act: Action, sequence_id: int, exc: Exception) -> None:
        """Store a ``failed`` step (state as it was before the action) so that a resumed
        application runs the action again; the caller re-raises ``exc``."""
        try:
            cancelled = await self._persist(
                act,
                sequence_id,
                self._state,
                "failed",
                f"{type(exc).__name__}: {exc}",
                exception=exc,
            )
        except PersistenceError as write_error:
            write_error.add_note(f"The step was being recorded as failed because: {exc!r}")
            raise write_error from exc
        self._sequence_id = sequence_id
        self._position = act.name
        self._status = "failed"
        try:
            await self._post_step_hooks(act, sequence_id, None, exc)
        except BurrAsyncError as hook_error:
            exc.add_note(str(hook_error))
        finally:
            if cancelled:
                raise asyncio.CancelledError

    async def _persist(
        self,
        act: Action,
        sequence_id: int,
        state: State,
        status: Status,
        error: str | None,
        *,
        result: ResultDict | None = None,
        exception: Exception | None = None,
    ) -> bool:
        """Save the step and return once it is durable, even if the caller is cancelled
        meanwhile; returns whether a cancellation arrived (the caller re-raises it once the
        application agrees with what was stored). Whether a save that fails left the step
        stored is the persister's to settle (see :class:`~burr_async.persistence.base.
        AsyncBaseStateSaver`); a step it could not settle is remembered, and saved again by
        the next step."""
        if self._persister is None:
            return False
        step = _Step(act, sequence_id, state, status, error, result, exception)
        _, cancelled = await run_to_completion(self._save(step))
        return cancelled

    async def _save(self, step: _Step) -> None:
        assert self._persister is not None
        try:
            await self._persister.save(
                self._partition_key,
                self._uid,
                step.sequence_id,
                step.action.name,
                step.state,
                step.status,
                error=step.error,
                **({"parent": self._parent} if self._parent is not None else {}),
            )
        except PersistenceError as exc:
            exc.add_ids(
                app_id=self._uid,
                partition_key=self._partition_key,
                sequence_id=step.sequence_id,
                action=step.action.name,
            )
            if isinstance(exc, CommitUnknownError):
                self._unsettled = step  # the next step saves it again
            elif isinstance(exc, ConcurrentStepError):
                self._unsettled = None  # another step holds the key: nothing left to settle
            raise
        except BurrAsyncError:
            raise
        except Exception as exc:  # a custom persister's own error
            raise PersistenceError(
                f"Saving the step failed ({type(exc).__name__}: {exc}); the application did not "
                "advance and the step can be retried",
                app_id=self._uid,
                partition_key=self._partition_key,
                sequence_id=step.sequence_id,
                action=step.action.name,
            ) from exc
        self._unsettled = None


@dataclass(frozen=True, slots=True)
class _Step:
    """A step handed to the persister, kept when its save could not be settled."""

    action: Action
    sequence_id: int
    state: State
    status: Status
    error: str | None
    result: ResultDict | None
    exception: Exception | None
