"""Fan-out on the database backends: children stored with their spawning parent, a process
killed mid-fan-out resumed without re-running finished children, two workers racing."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from burr_async import (
    ApplicationBuilder,
    ApplicationContext,
    ConcurrentStepError,
    MapActions,
    MapActionsAndStates,
    MapStates,
    ParentPointer,
    SQLAlchemyPersister,
    State,
    action,
)
from burr_async.application import Application
from burr_async.parallelism import child_app_id
from tests.databases import Database

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]

# A parent whose one step fans out to CHILDREN sub-graphs of three steps (a, b, c). Every
# action call is logged (flushed and fsynced) before it returns. With "block", children from
# BLOCK_FROM on stop inside their step b until the process is killed.
WORKER = """
import os, sys, anyio
from burr_async import (ApplicationBuilder, GraphBuilder, MapStates, RunnableGraph,
                        SQLAlchemyPersister, State, action)

url, schema, app_id, log_path, mode = sys.argv[1:6]
CHILDREN, BLOCK_FROM = 8, 4

def log(line):
    with open(log_path, "a") as f:
        f.write(line + "\\n"); f.flush(); os.fsync(f.fileno())

@action(reads=["i"], writes=["a"])
async def a(state):
    log(f"{state['i']} a")
    return state.update(a=state["i"] * 10)

@action(reads=["a"], writes=["b"])
async def b(state):
    log(f"{state['i']} b")
    if mode == "block" and state["i"] >= BLOCK_FROM:
        await anyio.sleep(3600)
    return state.update(b=state["a"] + 1)

@action(reads=["b"], writes=["c"])
async def c(state):
    log(f"{state['i']} c")
    return state.update(c=state["b"] * 2)

# c leads back to a: a child is finished because it halted after c, not because it is stuck
CHILD = (GraphBuilder().with_actions(a, b, c)
         .with_transitions(("a", "b"), ("b", "c"), ("c", "a")).build())

class FanOut(MapStates):
    reads = ["n"]
    writes = ["results"]
    def action(self, state, inputs):
        return RunnableGraph(CHILD, entrypoint="a", halt_after=["c"])
    def states(self, state, context, inputs):
        for i in range(state["n"]):
            yield state.update(i=i)
    def reduce(self, state, states):
        return state.update(results=[s["c"] for s in states])

@action(reads=["results"], writes=[])
def report(state):
    return state

async def main():
    async with SQLAlchemyPersister.from_url(url, schema=schema or None) as persister:
        app = await (ApplicationBuilder()
            .with_actions(fan=FanOut(), report=report)
            .with_transitions(("fan", "report"))
            .initialize_from(persister, resume_at_next_action=True,
                             default_state={"n": CHILDREN}, default_entrypoint="fan")
            .with_state_persister(persister)
            .with_identifiers(app_id=app_id, partition_key="crash").abuild())
        _, _, state = await app.arun(halt_after=["fan"])
        print(" ".join(map(str, state["results"])))

anyio.run(main)
"""


def _calls(text: str) -> list[tuple[int, str]]:
    return [(int(i), name) for i, name in (line.split() for line in text.splitlines())]


async def _positions(persister: SQLAlchemyPersister, app_id: str) -> list[str | None]:
    positions: list[str | None] = []
    for index in range(8):
        stored = await persister.load("crash", child_app_id(app_id, 0, index))
        positions.append(stored.position if stored is not None else None)
    return positions


async def test_a_process_killed_mid_fan_out_resumes_only_unfinished_children(
    db: Database, tmp_path: Path
) -> None:
    app_id = str(uuid.uuid4())
    log = tmp_path / "calls.log"
    argv = [sys.executable, "-c", WORKER, db.url, db.schema or "", app_id, str(log)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    wanted = ["c"] * 4 + [
        "a"
    ] * 4  # children 0 to 3 finished, 4 to 7 stopped inside b (a committed)
    async with db.persister() as persister:
        process = await anyio.open_process([*argv, "block"], cwd=REPO, env=env)
        try:
            with anyio.fail_after(120):
                for _ in range(2400):
                    if await _positions(persister, app_id) == wanted and log.exists():
                        blocked = {i for i, name in _calls(log.read_text()) if name == "b"}
                        if blocked >= {4, 5, 6, 7}:
                            break
                    await anyio.sleep(0.05)
                else:
                    pytest.fail(f"the fan-out never reached the kill point: {log.read_text()}")
        finally:
            process.kill()  # SIGKILL: no cleanup, no last commit
            await process.wait()
            await process.aclose()
        assert process.returncode == -9
        assert await persister.load("crash", app_id) is None  # the parent step never landed
        before = _calls(log.read_text())

        done = await anyio.run_process([*argv, "resume"], cwd=REPO, env=env)
        results = [int(v) for v in done.stdout.split()]
        assert results == [(i * 10 + 1) * 2 for i in range(8)]  # every child, once, in order

        resumed = _calls(log.read_text())[len(before) :]
        assert [call for call in resumed if call[0] < 4] == []  # finished: not run again
        for index in range(4, 8):  # from their last committed step: b again, then c
            assert [name for i, name in resumed if i == index] == ["b", "c"]
        for index in range(8):
            history = await persister.history("crash", child_app_id(app_id, 0, index))
            assert [(h.sequence_id, h.position) for h in history] == [
                (0, "a"),
                (1, "b"),
                (2, "c"),
            ]
            assert {h.spawning_parent for h in history} == {ParentPointer(app_id, "crash", 0)}
        parent = await persister.history("crash", app_id)
        assert [(h.sequence_id, h.position, h.status) for h in parent] == [(0, "fan", "completed")]


calls: list[int] = []
gate: asyncio.Event | None = None


@pytest.fixture(autouse=True)
def _reset_calls() -> Iterator[None]:
    calls.clear()
    yield
    calls.clear()


@action(reads=["x"], writes=["y"])
async def slow_square(state: State) -> State:
    calls.append(state["x"])
    assert gate is not None
    await gate.wait()
    return state.update(y=state["x"] ** 2)


class Squares(MapStates):
    @property
    def reads(self) -> list[str]:
        return ["xs"]

    @property
    def writes(self) -> list[str]:
        return ["ys"]

    def action(self, state: State, inputs: dict[str, Any]) -> Any:
        return slow_square

    def states(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> list[State]:
        return [state.update(x=x) for x in state["xs"]]

    def reduce(self, state: State, states: Any) -> State:
        return state.update(ys=[s["y"] for s in states])


async def _parent(persister: SQLAlchemyPersister, app_id: str) -> Application:
    return await (
        ApplicationBuilder()
        .with_actions(fan=Squares())
        .with_transitions(("fan", "fan"))
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={"xs": [1, 2, 3, 4]},
            default_entrypoint="fan",
        )
        .with_state_persister(persister)
        .with_identifiers(app_id=app_id, partition_key="race")
        .abuild()
    )


async def test_two_workers_resuming_one_fan_out_commit_each_child_step_once(
    db: Database,
) -> None:
    global gate
    gate = asyncio.Event()
    app_id = str(uuid.uuid4())
    async with db.persister() as one, db.persister() as two:  # two workers, two engines
        first, second = await _parent(one, app_id), await _parent(two, app_id)
        runs = [asyncio.create_task(a.arun(halt_after=["fan"])) for a in (first, second)]
        with anyio.fail_after(30):
            for _ in range(600):
                if len(calls) == 8:
                    break
                await asyncio.sleep(0.01)
        gate.set()
        outcomes = await asyncio.gather(*runs, return_exceptions=True)
        assert any(isinstance(o, ConcurrentStepError) for o in outcomes), outcomes
        assert all(
            isinstance(o, ConcurrentStepError) or not isinstance(o, BaseException) for o in outcomes
        ), outcomes
        parent = await one.history("race", app_id)
        assert all(step.status == "completed" for step in parent)  # a race stores no failure
        for index in range(4):  # committed once, or (both workers cancelled it) not yet
            history = await one.history("race", child_app_id(app_id, 0, index))
            assert [(h.sequence_id, h.status) for h in history] in ([(0, "completed")], [])

        history_of = [await one.history("race", child_app_id(app_id, 0, i)) for i in range(4)]
        unfinished = [x for x, steps in zip([1, 2, 3, 4], history_of, strict=True) if not steps]
        calls.clear()
        final = await _parent(one, app_id)
        if final.sequence_id is None:  # neither worker finished: a third run does
            _, _, state = await final.arun(halt_after=["fan"])
            assert sorted(calls) == unfinished  # only children neither worker committed
        else:
            assert unfinished == []
            state = final.state
        assert state["ys"] == [1, 4, 9, 16]
        children = await one.list_apps("race", limit=1000)
        spawned = [s for s in children if s.spawning_parent == ParentPointer(app_id, "race", 0)]
        assert len(spawned) == 4


@action(reads=["x"], writes=["y"])
async def double(state: State) -> State:
    return state.update(y=state["x"] * 2)


@action(reads=["x"], writes=["y"])
async def add_ten(state: State) -> State:
    return state.update(y=state["x"] + 10)


class EachState(MapStates):
    reads = ["xs"]
    writes = ["ys"]

    def action(self, state: State, inputs: dict[str, Any]) -> Any:
        return double

    def states(self, state: State, context: ApplicationContext, inputs: dict[str, Any]) -> Any:
        return [state.update(x=x) for x in state["xs"]]

    async def reduce(self, state: State, states: Any) -> State:
        return state.update(ys=[s["y"] async for s in states])


class EachAction(MapActions):
    reads = ["xs"]
    writes = ["ys"]

    def actions(self, state: State, context: ApplicationContext, inputs: dict[str, Any]) -> Any:
        return [double, add_ten]

    def state(self, state: State, inputs: dict[str, Any]) -> State:
        return state.update(x=state["xs"][0])

    def reduce(self, state: State, states: Any) -> State:
        return state.update(ys=[s["y"] for s in states])


class EveryPair(MapActionsAndStates):
    reads = ["xs"]
    writes = ["ys"]

    async def actions(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> Any:
        yield double
        yield add_ten

    async def states(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> Any:
        for x in state["xs"]:
            yield state.update(x=x)

    def reduce(self, state: State, states: Any) -> State:
        return state.update(ys=[s["y"] for s in states])


@pytest.mark.parametrize(
    ("fan_out", "expected"),
    [(EachState(), [2, 4]), (EachAction(), [2, 11]), (EveryPair(), [2, 4, 11, 12])],
    ids=["MapStates", "MapActions", "MapActionsAndStates"],
)
async def test_each_fan_out_class_stores_its_children_and_the_cli_lists_them(
    db: Database, fan_out: Any, expected: list[int]
) -> None:
    app_id = f"parent-{uuid.uuid4().hex[:8]}"
    async with db.persister() as persister:
        app = await (
            ApplicationBuilder()
            .with_actions(fan=fan_out)
            .with_transitions(("fan", "fan"))
            .with_state(xs=[1, 2])
            .with_entrypoint("fan")
            .with_state_persister(persister)
            .with_identifiers(app_id=app_id, partition_key="cls")
            .abuild()
        )
        _, _, state = await app.arun(halt_after=["fan"])
        assert state["ys"] == expected
        children = await persister.list_children("cls", app_id, 0)
        ids = {child_app_id(app_id, 0, i) for i in range(len(expected))}
        assert {c.app_id for c in children} == ids
        assert {c.spawning_parent for c in children} == {ParentPointer(app_id, "cls", 0)}
    args = ["--url", db.url, *(["--schema", db.schema] if db.schema else [])]
    listed = await anyio.run_process(
        [sys.executable, "-c", "from burr_async.cli import main; main()", *args,
         "apps", "-p", "cls", "--spawned-by", f"{app_id}@0"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "250"},
    )  # fmt: skip
    out = listed.stdout.decode()
    assert all(child in out for child in ids), out
    assert out.count(f"{app_id}@0") == len(expected), out
