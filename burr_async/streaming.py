"""The :class:`StreamingResultContainer`: what ``Application.astream_result`` and
``astream_iterate`` hand back (Burr's ``AsyncStreamingResultContainer``)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Self

from burr_async.actions import ResultDict, StreamItem
from burr_async.errors import BurrAsyncError
from burr_async.state import State

__all__ = ["AsyncStreamingResultContainer", "StreamingResultContainer"]


class StreamingResultContainer:
    """The partial results of a streaming step, then its final ``(result, state)``.

    ``async for partial in container`` yields each partial result dict; ``await container.get()``
    finishes the stream if needed and returns the final result and state. The step is persisted
    when the stream ends. ``await container.aclose()`` (or leaving ``async with container:``)
    abandons a stream that was not finished: the action's generator is closed at once (its
    ``finally`` runs), nothing is stored for the step, and the application is free for its next
    call, which runs the action again.
    """

    def __init__(self, stream: AsyncGenerator[StreamItem, None] | None) -> None:
        self._stream = stream
        self._final: tuple[ResultDict | None, State] | None = None
        self._abandoned = False

    @classmethod
    def _finished(cls, result: ResultDict | None, state: State) -> StreamingResultContainer:
        container = cls(None)
        container._final = (result, state)
        return container

    def __aiter__(self) -> StreamingResultContainer:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Abandon the stream if it has not ended (see the class docstring); a finished one is
        left as it is, so ``get()`` still returns its result."""
        stream, self._stream = self._stream, None
        if stream is not None:
            self._abandoned = self._final is None
            await stream.aclose()

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


AsyncStreamingResultContainer = StreamingResultContainer
"""Burr's name for the container of an async stream: the same class."""
