"""run_to_completion: work that a cancellation of its caller cannot cut in half."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from burr_async._shield import Shielded, run_to_completion

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


class _Statement:
    """A driver's statement: waits on a plain future the test resolves (as a driver's reply)."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.steps = 0

    async def run(self, *, fail: bool = False) -> str:
        await asyncio.sleep(0)  # a bare yield on the way, as drivers have
        self.steps += 1
        result = await self.reply
        if fail:
            raise RuntimeError("statement failed")
        return result


async def test_a_shielded_statement_outlasts_a_task_cancel_in_the_calling_task() -> None:
    statement = _Statement()
    shielded = Shielded(statement.run())
    task = asyncio.ensure_future(_await(shielded))
    await asyncio.sleep(0.001)
    task.cancel("stop")
    await asyncio.sleep(0.001)
    assert not task.done()  # still waiting on the statement's reply
    statement.reply.set_result("row")
    assert await task == "row"
    assert shielded.cancellation is not None and shielded.cancellation.args == ("stop",)
    assert statement.reply.result() == "row"  # the driver's own future was never cancelled


async def _await(shielded: Shielded[str]) -> str:
    return await shielded


async def test_a_shielded_statement_outlasts_an_anyio_scope_without_spinning() -> None:
    """The first cancellation puts the wait inside a shielded scope: anyio delivers it once,
    not once a turn of the event loop for as long as the statement runs."""
    statement = _Statement()
    shielded = Shielded(statement.run())
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while not statement.reply.done():
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count_turns())
    asyncio.get_running_loop().call_later(0.05, statement.reply.set_result, "row")
    task = asyncio.current_task()
    assert task is not None
    before = task.cancelling()  # the test runner's task may carry requests of its own
    with anyio.CancelScope() as scope:
        scope.cancel()
        result = await shielded
        deliveries = task.cancelling() - before  # each delivery of anyio's: one Task.cancel()
        assert shielded.cancellation is not None
        raise shielded.cancellation
    await counter
    assert result == "row" and scope.cancelled_caught
    assert turns > 10  # the statement took many turns of the loop, and was cancelled once
    assert deliveries == 1


async def test_a_shielded_statement_raises_its_own_error_and_keeps_the_cancellation() -> None:
    statement = _Statement()
    shielded = Shielded(statement.run(fail=True))
    task = asyncio.ensure_future(_await(shielded))
    await asyncio.sleep(0.001)
    task.cancel()
    statement.reply.set_result("row")
    with pytest.raises(RuntimeError, match="statement failed"):
        await task
    assert shielded.cancellation is not None


async def test_a_shielded_statement_without_a_cancellation_is_a_plain_await() -> None:
    statement = _Statement()
    asyncio.get_running_loop().call_soon(statement.reply.set_result, "row")
    shielded = Shielded(statement.run())
    assert await shielded == "row" and shielded.cancellation is None and statement.steps == 1


async def test_an_abandoned_shielded_statement_closes_quietly() -> None:
    """A task destroyed while it waits (its loop closing, say) closes the wait from wherever
    the garbage collector runs: after a cancellation that put the wait in a shielded scope,
    closing it elsewhere must not try to leave that scope from another task."""
    statement = _Statement()
    waiting = Shielded(statement.run()).__await__()

    async def wait_then_be_cancelled() -> None:
        waiting.send(None)  # the bare yield
        waiting.send(None)  # now on the reply's proxy
        waiting.throw(asyncio.CancelledError())  # recorded; the wait goes on, shielded

    await asyncio.ensure_future(wait_then_be_cancelled())
    waiting.close()  # from this task, not the one that entered the scope: no error
