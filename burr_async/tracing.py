"""Tracing with OpenTelemetry: :class:`OpenTelemetryHook`, a hook that turns application calls,
steps and saves into spans.

``ApplicationBuilder().with_hooks(OpenTelemetryHook())`` gives each ``astep``, ``arun``,
``aiterate``, ``astream_result`` and ``astream_iterate`` call a span (``burr_async.arun``, ...),
started under whatever span is current where the call is made (a FastAPI request's, say); each
step a child span named after its action; and each step's save a child span of the step
(``burr_async.save``) that covers its wait for the group commit::

    burr_async.arun              app_id, partition_key, method
    ├── user_input               app_id, partition_key, sequence_id, action, status
    │   └── burr_async.save      backend, persister, commit.batch_size
    └── respond
        └── burr_async.save

Needs ``opentelemetry-api`` (``pip install 'burr_async[otel]'``); without an SDK configured
the API's no-op tracer makes every span free. ``import burr_async`` does not import this module.

How the spans find their parents. A call's span and its steps' spans are never attached to the
caller's context: ``aiterate`` and the streams yield to the caller between steps, and a context
attached there would leak into the caller's code (or be detached in another context when the
generator is closed elsewhere). The hook keeps the open spans of each application
(``app_id``, ``partition_key``) itself and names the parent of each new span explicitly. Only a
non-streaming step's span is made current, from its ``pre_run_step`` to its ``post_run_step``,
which run in one task with no yield to the caller in between: spans the action's code starts
(an HTTP client's, say) are children of the step. The save runs in a task of its own (the
application shields it from cancellation that way), where the save span is current while the
persister works (a database instrumentation's spans nest under it).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Span, Status, StatusCode, TracerProvider
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"burr_async.tracing needs opentelemetry-api, which is not installed ({exc}): "
        "pip install 'burr_async[otel]'."
    ) from exc

from burr_async.hooks import (
    ExecuteMethod,
    PostApplicationExecuteCallHook,
    PostRunStepHook,
    PreApplicationExecuteCallHook,
    PreRunStepHook,
)
from burr_async.persistence._observed import COMMIT_BATCH

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context

    from burr_async._step_store import StepStore, StoredStep

__all__ = ["OpenTelemetryHook"]

_Key = tuple[str, str | None]

_REMEMBERED = 1024
"""At most this many applications' loose ends are kept (the span of an ``astream_result`` call
whose stream was not read yet, a stream step whose stream was dropped); past it the oldest go."""

_UNFINISHED = "the step did not finish: it was cancelled, or its stream was not read to the end"
"""The error description of a step span ended without its ``post_run_step``, when no exception
says why."""


@dataclass(slots=True, eq=False)
class _StepSpan:
    """An open step span; ``token`` is set while the span is the current one (non-streaming)."""

    span: Span
    sequence_id: int
    task: asyncio.Task[Any] | None
    token: Token[Context] | None


@dataclass(slots=True, eq=False)
class _CallSpan:
    """An open call span and the open spans of its steps."""

    span: Span
    task: asyncio.Task[Any] | None
    steps: list[_StepSpan] = field(default_factory=list)


_task = asyncio.current_task
"""The task a hook phase runs in (hooks always run on the application's event loop)."""


def _ids(app_id: str, partition_key: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"burr_async.app_id": app_id}
    if partition_key is not None:
        attributes["burr_async.partition_key"] = partition_key
    return attributes


def _failed(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _backend(persister: object) -> str:
    """What the save spans call the storage: the SQL dialect (``sqlite``, ``postgresql``) of a
    :class:`~burr_async.persistence.sqlalchemy.SQLAlchemyPersister`, ``memory`` for the
    in-memory persisters, else the persister's class name. Imports nothing."""
    sql = sys.modules.get("burr_async.persistence.sqlalchemy")
    if sql is not None and isinstance(persister, sql.SQLAlchemyPersister):
        return str(persister.engine.dialect.name)
    if type(persister).__module__ == "burr_async.persistence.memory":
        return "memory"
    return type(persister).__name__


class OpenTelemetryHook(
    PreApplicationExecuteCallHook,
    PostApplicationExecuteCallHook,
    PreRunStepHook,
    PostRunStepHook,
):
    """Records an application's calls, steps and saves as OpenTelemetry spans (see the module
    docstring for the span tree). Pass it to ``ApplicationBuilder.with_hooks``; one instance may
    serve any number of applications, run concurrently.

    ``tracer_provider`` is where the spans go; by default the global one
    (``opentelemetry.trace.set_tracer_provider``), looked up when a span starts, so the hook
    may be built before the SDK is configured. Without an SDK every span is a no-op.

    Spans and their attributes:

    - one per call, ``burr_async.<method>`` (``burr_async.astep``, ``burr_async.arun``, ...),
      a child of the span current where the call is made: ``burr_async.app_id``,
      ``burr_async.partition_key`` (absent when None), ``burr_async.method``. A call that
      raises records the exception and has the error status. ``astream_result`` returns
      before its stream is read: its span ends then, and the streaming step's span (its child)
      covers the stream;
    - one per step, named after the action, a child of its call's span: the ids,
      ``burr_async.sequence_id``, ``burr_async.action``, and ``burr_async.status``
      (``completed`` or ``failed``). A failed step records the action's exception and has the
      error status; a step that did not finish (cancelled, a stream dropped half read, its
      save failed) has the error status, with the exception that ended its call when one did,
      and no ``burr_async.status``. A streaming step's span covers the whole stream;
    - one per save, ``burr_async.save``, a child of the step's span (or, for ``update_state``
      and ``reset_to_entrypoint``, of the span current where they are called), covering the
      wait for the commit: the ids, ``burr_async.sequence_id``, ``burr_async.action`` (the
      stored position), ``burr_async.backend`` (``sqlite``, ``postgresql``, ``memory``, or the
      persister's class name), ``burr_async.persister`` (its class name) and, on the SQL
      persisters, ``burr_async.commit.batch_size``: how many steps the commit that stored this
      one held (1 when it was written alone). A failed save records its exception.

    The hook tells applications apart by ``(app_id, partition_key)``: an application runs one
    call at a time (a call made from an ``aiterate`` loop's body nests in it), as the
    persisters require of one application.
    """

    def __init__(self, *, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("burr_async", tracer_provider=tracer_provider)
        self._calls: dict[_Key, list[_CallSpan]] = {}
        self._loose: dict[_Key, list[_StepSpan]] = {}  # steps outside a call: streams
        self._streams: dict[_Key, Context] = {}  # astream_result's span, for its stream

    # -- the hook phases (keyword arguments as burr_async.hooks documents them) ---------------
    def pre_run_execute_call(self, **kwargs: Any) -> None:
        """Start the call's span under the current span."""
        app_id: str = kwargs["app_id"]
        partition_key: str | None = kwargs["partition_key"]
        method: ExecuteMethod = kwargs["method"]
        key = (app_id, partition_key)
        self._streams.pop(key, None)  # a new call: the stream returned before is not read now
        self._drop_loose(key)
        attributes = _ids(app_id, partition_key)
        attributes["burr_async.method"] = method.value
        span = self._tracer.start_span(f"burr_async.{method.value}", attributes=attributes)
        self._calls.setdefault(key, []).append(_CallSpan(span, _task()))

    def post_run_execute_call(self, **kwargs: Any) -> None:
        """End the call's span (and the span of any step of it that did not finish)."""
        key = (kwargs["app_id"], kwargs["partition_key"])
        method: ExecuteMethod = kwargs["method"]
        exception: Exception | None = kwargs.get("exception")
        calls = self._calls.get(key)
        if not calls:
            return
        call = _innermost(calls, _task())
        calls.remove(call)
        if not calls:
            del self._calls[key]
        for step in call.steps:  # no post_run_step: its save or a hook failed, or cancelled
            self._unfinished(step, exception)
        if exception is not None:
            _failed(call.span, exception)
        call.span.end()
        if method is ExecuteMethod.astream_result and exception is None:
            _remember(self._streams, key, trace.set_span_in_context(call.span))

    def pre_run_step(self, **kwargs: Any) -> None:
        """Start the step's span under its call's; make it current for a non-streaming step."""
        app_id: str = kwargs["app_id"]
        partition_key: str | None = kwargs["partition_key"]
        sequence_id: int = kwargs["sequence_id"]
        action = kwargs["action"]
        key = (app_id, partition_key)
        self._drop_loose(key)  # a new step: any stream before it has ended
        calls = self._calls.get(key)
        task = _task()
        call = _innermost(calls, task) if calls else None
        parent = (
            trace.set_span_in_context(call.span)
            if call is not None
            else self._streams.pop(key, None)  # astream_result's stream; else the current span
        )
        attributes = _ids(app_id, partition_key)
        attributes["burr_async.sequence_id"] = sequence_id
        attributes["burr_async.action"] = action.name
        span = self._tracer.start_span(action.name, context=parent, attributes=attributes)
        # Safe to attach: a non-streaming step runs to its post_run_step without yielding to
        # the caller (a streaming one yields each partial result to it).
        token = None if action.streaming else otel_context.attach(trace.set_span_in_context(span))
        step = _StepSpan(span, sequence_id, task, token)
        if call is not None:
            call.steps.append(step)
        else:
            _remember(self._loose, key, [*self._loose.pop(key, []), step], self._end_all)

    def post_run_step(self, **kwargs: Any) -> None:
        """End the step's span: ``completed``, or ``failed`` with the action's exception."""
        key = (kwargs["app_id"], kwargs["partition_key"])
        exception: Exception | None = kwargs.get("exception")
        step = self._take_step(key, kwargs["sequence_id"])
        if step is None:  # a step saved again after an unknown commit: it had no pre_run_step
            return
        step.span.set_attribute("burr_async.status", "failed" if exception else "completed")
        if exception is not None:
            _failed(step.span, exception)
        self._close(step)

    # -- the save (the private _around_save phase of burr_async.hooks) -------------------------
    def _around_save(
        self, saving: Coroutine[Any, Any, None], store: StepStore, step: StoredStep
    ) -> Coroutine[Any, Any, None]:
        """The save of ``step``, timed by a span (see :data:`burr_async.hooks._SaveWrapper`)."""
        return self._traced_save(saving, store, step)

    async def _traced_save(
        self, saving: Coroutine[Any, Any, None], store: StepStore, step: StoredStep
    ) -> None:
        key = (store._uid, store._partition_key)
        parent: Context | None = None
        if step.action is not None:
            found = self._find_step(key, step.sequence_id)
            if found is not None:
                parent = trace.set_span_in_context(found.span)
        attributes = _ids(*key)
        attributes["burr_async.sequence_id"] = step.sequence_id
        attributes["burr_async.action"] = step.position
        attributes["burr_async.backend"] = _backend(store._persister)
        attributes["burr_async.persister"] = type(store._persister).__name__
        span = self._tracer.start_span("burr_async.save", context=parent, attributes=attributes)
        # This runs in the save's own task (or inline in a task that nothing else shares with
        # it), start to end: setting context variables here cannot leak into the caller.
        batch: list[int] = []
        batch_token = COMMIT_BATCH.set(batch)
        span_token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await saving
        except Exception as exc:
            _failed(span, exc)
            raise
        finally:
            otel_context.detach(span_token)
            COMMIT_BATCH.reset(batch_token)
            if batch:
                span.set_attribute("burr_async.commit.batch_size", batch[-1])
            span.end()

    # -- bookkeeping --------------------------------------------------------------------------
    def _find_step(self, key: _Key, sequence_id: int) -> _StepSpan | None:
        """The open span of the application's step ``sequence_id`` (the one opened in this
        task first, should two applications of one id run at once), or None."""
        task = _task()
        found: _StepSpan | None = None
        for call in reversed(self._calls.get(key, ())):
            for step in reversed(call.steps):
                if step.sequence_id == sequence_id:
                    if step.task is task:
                        return step
                    found = found or step
        for step in reversed(self._loose.get(key, ())):
            if step.sequence_id == sequence_id:
                if step.task is task:
                    return step
                found = found or step
        return found

    def _take_step(self, key: _Key, sequence_id: int) -> _StepSpan | None:
        step = self._find_step(key, sequence_id)
        if step is None:
            return None
        for call in self._calls.get(key, ()):
            if step in call.steps:
                call.steps.remove(step)
                return step
        loose = self._loose.get(key, [])
        loose.remove(step)
        if not loose:
            del self._loose[key]
        return step

    def _drop_loose(self, key: _Key) -> None:
        """End the spans of the application's stream steps left open (their stream dropped)."""
        loose = self._loose.pop(key, None)
        if loose:
            self._end_all(loose)

    def _end_all(self, steps: list[_StepSpan]) -> None:
        for step in steps:
            self._unfinished(step)

    def _unfinished(self, step: _StepSpan, exception: Exception | None = None) -> None:
        """End the span of a step that ended without its ``post_run_step``, with the error
        that ended its call when there is one."""
        if exception is not None:
            _failed(step.span, exception)
        else:
            step.span.set_status(Status(StatusCode.ERROR, _UNFINISHED))
        self._close(step)

    @staticmethod
    def _close(step: _StepSpan) -> None:
        """Stop the step's span being current (only where it was made so) and end it."""
        if step.token is not None:
            token, step.token = step.token, None
            if step.task is _task():
                otel_context.detach(token)
        step.span.end()


def _innermost(calls: list[_CallSpan], task: asyncio.Task[Any] | None) -> _CallSpan:
    """The innermost open call made in ``task``, else the innermost one."""
    if calls[-1].task is task:
        return calls[-1]
    return next((c for c in reversed(calls) if c.task is task), calls[-1])


def _remember(
    where: dict[_Key, Any],
    key: _Key,
    value: Any,
    evicted: Callable[[Any], None] | None = None,
) -> None:
    """Keep ``value`` under ``key``, dropping the oldest entries beyond :data:`_REMEMBERED`
    (``evicted`` is called with each dropped value)."""
    where.pop(key, None)
    where[key] = value
    while len(where) > _REMEMBERED:
        oldest = next(iter(where))
        dropped = where.pop(oldest)
        if evicted is not None:
            evicted(dropped)
