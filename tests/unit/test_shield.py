"""run_to_completion: work that a cancellation of its caller cannot cut in half."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from burr_async._shield import run_to_completion

pytestmark = pytest.mark.anyio


async def slow(done: list[str], value: str = "done", *, fail: bool = False) -> str:
    await asyncio.sleep(0.02)
    done.append(value)
    if fail:
        raise RuntimeError("work failed")
    return value


async def test_work_without_a_cancellation_returns_its_result_or_raises_its_error() -> None:
    done: list[str] = []
    assert await run_to_completion(slow(done)) == ("done", None)
    with pytest.raises(RuntimeError, match="work failed"):
        await run_to_completion(slow(done, fail=True))
    assert done == ["done", "done"]


async def test_a_task_cancel_waits_for_the_work_and_hands_back_that_very_cancellation() -> None:
    done: list[str] = []
    returned: list[object] = []

    async def caller() -> None:
        result, cancellation = await run_to_completion(slow(done))
        returned.append((result, cancellation))

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0.005)
    task.cancel("stop")
    await task  # the caller chose not to raise it
    (result, cancellation), = returned  # fmt: skip
    assert result == "done" and done == ["done"]
    assert isinstance(cancellation, asyncio.CancelledError) and cancellation.args == ("stop",)


async def test_a_cancellation_takes_precedence_over_the_works_error() -> None:
    done: list[str] = []
    task = asyncio.ensure_future(run_to_completion(slow(done, fail=True)))
    await asyncio.sleep(0.005)
    task.cancel("stop")
    with pytest.raises(asyncio.CancelledError, match="stop"):
        await task
    assert done == ["done"]  # the work ran to its end all the same


async def test_an_anyio_scope_recognises_the_cancellation_raised_after_the_work() -> None:
    done: list[str] = []
    after: list[str] = []
    with anyio.move_on_after(0.005) as scope:
        _, cancellation = await run_to_completion(slow(done))
        assert cancellation is not None
        after.append("bookkeeping")
        raise cancellation
    assert scope.cancelled_caught
    assert done == ["done"] and after == ["bookkeeping"]


async def test_timeouts_inside_the_work_are_the_works_own() -> None:
    """The work runs in a task of its own: its anyio scopes and asyncio timeouts act on it as
    usual, and are not mistaken for a cancellation of the caller."""

    async def with_own_deadlines() -> str:
        with anyio.move_on_after(0.001):
            await asyncio.sleep(1)
        try:
            async with asyncio.timeout(0.001):
                await asyncio.sleep(1)
        except TimeoutError:
            return "timed out inside"
        return "not reached"

    assert await run_to_completion(with_own_deadlines()) == ("timed out inside", None)


async def test_settled_work_nested_in_settled_work_runs_inline() -> None:
    tasks: list[asyncio.Task[object] | None] = []

    async def inner() -> int:
        tasks.append(asyncio.current_task())
        return 1

    async def outer() -> int:
        tasks.append(asyncio.current_task())
        result, cancellation = await run_to_completion(inner())
        assert cancellation is None
        return result + 1

    assert await run_to_completion(outer()) == (2, None)
    assert tasks[0] is tasks[1] and tasks[0] is not asyncio.current_task()
