"""Fan-out actions (MapStates, MapActions, MapActionsAndStates) on the in-memory persister."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from burr_async import (
    ApplicationBuilder,
    ApplicationContext,
    ChildApplicationError,
    ConcurrentStepError,
    ConfigurationError,
    GraphBuilder,
    InMemoryPersister,
    InvalidActionResultError,
    MapActions,
    MapActionsAndStates,
    MapStates,
    ParentPointer,
    PostApplicationCreateHook,
    RunnableGraph,
    State,
    action,
)
from burr_async.application import Application
from burr_async.parallelism import child_app_id

pytestmark = pytest.mark.anyio


class Calls:
    """What the children's actions were called with, in call order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self.grew: asyncio.Event | None = None

    def add(self, name: str, value: Any) -> None:
        self.items.append((name, value))
        if self.grew is not None:
            self.grew.set()

    async def reach(self, name: str, count: int) -> None:
        """Wait until ``name`` was called ``count`` times (bounded by the test timeout)."""
        self.grew = asyncio.Event()
        async with asyncio.timeout(10):
            while len(self.of(name)) < count:
                await self.grew.wait()
                self.grew.clear()

    def of(self, name: str) -> list[Any]:
        return [value for called, value in self.items if called == name]


calls = Calls()
gates: dict[int, asyncio.Event] = {}
fail_on: set[int] = set()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.items.clear()
    calls.grew = None
    gates.clear()
    fail_on.clear()


@action(reads=["x"], writes=["y"])
async def square(state: State) -> State:
    x = state["x"]
    calls.add("square", x)
    if x in gates:
        await gates[x].wait()
    if x in fail_on:
        raise ValueError(f"no square for {x}")
    return state.update(y=x * x)


@action(reads=["x"], writes=["y"])
def negate(state: State) -> State:
    calls.add("negate", state["x"])
    return state.update(y=-state["x"])


@action(reads=["y"], writes=["z"])
async def plus_one(state: State) -> State:
    calls.add("plus_one", state["y"])
    return state.update(z=state["y"] + 1)


@action(reads=["ys"], writes=[])
def done(state: State) -> State:
    return state


class Squares(MapStates):
    """Squares every x of ``xs`` into ``ys`` (a sync generator, a sync reduce)."""

    @property
    def reads(self) -> list[str]:
        return ["xs"]

    @property
    def writes(self) -> list[str]:
        return ["ys"]

    def action(self, state: State, inputs: dict[str, Any]) -> Any:
        return square

    def states(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> Iterator[State]:
        for x in state["xs"]:
            yield state.update(x=x)

    def reduce(self, state: State, states: Iterator[State]) -> State:
        return state.update(ys=[s["y"] for s in states])


async def build(
    fan_out: Any,
    persister: InMemoryPersister | None,
    *,
    app_id: str = "parent",
    xs: list[int] | None = None,
    resume: bool = False,
) -> Application:
    builder = (
        ApplicationBuilder()
        .with_actions(fan=fan_out, done=done)
        .with_transitions(("fan", "done"))
        .with_identifiers(app_id=app_id, partition_key="user")
    )
    state = {"xs": xs if xs is not None else [1, 2, 3]}
    if persister is not None:
        builder = builder.with_state_persister(persister)
        if resume:
            return await builder.initialize_from(
                persister,
                resume_at_next_action=True,
                default_state=state,
                default_entrypoint="fan",
            ).abuild()
    return await builder.with_state(state).with_entrypoint("fan").abuild()


async def test_map_states_runs_each_state_as_a_stored_child() -> None:
    persister = InMemoryPersister()
    app = await build(Squares(), persister)
    _, _, state = await app.arun(halt_after=["fan"])
    assert state["ys"] == [1, 4, 9]
    assert sorted(calls.of("square")) == [1, 2, 3]
    ids = [child_app_id("parent", 0, i) for i in range(3)]
    for index, child in enumerate(ids):
        stored = await persister.load("user", child)
        assert stored is not None
        assert stored.state["x"] == index + 1 and stored.state["y"] == (index + 1) ** 2
        assert stored.position == "square" and stored.status == "completed"
        assert stored.spawning_parent == ParentPointer("parent", "user", 0)
    summaries = {s.app_id: s for s in await persister.list_apps("user")}
    assert set(summaries) == {"parent", *ids}
    assert summaries["parent"].spawning_parent is None


async def test_child_ids_depend_on_parent_step_and_index_only() -> None:
    assert child_app_id("a", 0, 0) == child_app_id("a", 0, 0)
    assert len({child_app_id("a", 0, 0), child_app_id("a", 1, 0), child_app_id("a", 0, 1)}) == 3
    assert child_app_id("a", 0, 0) != child_app_id("b", 0, 0)


async def test_a_fan_out_in_a_loop_gets_new_children_each_time() -> None:
    persister = InMemoryPersister()
    app = await (
        ApplicationBuilder()
        .with_actions(fan=Squares())
        .with_transitions(("fan", "fan"))
        .with_state(xs=[2])
        .with_entrypoint("fan")
        .with_identifiers(app_id="loop", partition_key="user")
        .with_state_persister(persister)
        .abuild()
    )
    await app.astep()
    await app.astep()
    assert calls.of("square") == [2, 2]
    children = [s.app_id for s in await persister.list_apps("user") if s.spawning_parent]
    assert sorted(children) == sorted([child_app_id("loop", 0, 0), child_app_id("loop", 1, 0)])


class ModelsOverPrompts(MapActionsAndStates):
    """Every action over every state, async generators and an async reduce."""

    @property
    def reads(self) -> list[str]:
        return ["xs"]

    @property
    def writes(self) -> list[str]:
        return ["ys"]

    async def actions(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        yield square
        yield negate

    async def states(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> AsyncIterator[State]:
        for x in state["xs"]:
            yield state.update(x=x)

    async def reduce(self, state: State, states: AsyncIterator[State]) -> State:
        return state.update(ys=[s["y"] async for s in states])


async def test_map_actions_and_states_is_every_action_over_every_state_in_order() -> None:
    app = await build(ModelsOverPrompts(), InMemoryPersister(), xs=[2, 3])
    _, _, state = await app.arun(halt_after=["fan"])
    assert state["ys"] == [4, 9, -2, -3]  # action by action, state by state


class BothOnOne(MapActions):
    """Two actions over one state, given as a list."""

    @property
    def reads(self) -> list[str]:
        return ["xs"]

    @property
    def writes(self) -> list[str]:
        return ["ys"]

    def actions(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> list[Any]:
        return [square, negate.with_name("neg")]

    def state(self, state: State, inputs: dict[str, Any]) -> State:
        return state.update(x=state["xs"][0])

    def reduce(self, state: State, states: Iterator[State]) -> State:
        return state.update(ys=[s["y"] for s in states])


async def test_map_actions_runs_each_action_on_one_state() -> None:
    persister = InMemoryPersister()
    app = await build(BothOnOne(), persister, xs=[5])
    _, _, state = await app.arun(halt_after=["fan"])
    assert state["ys"] == [25, -5]
    second = await persister.load("user", child_app_id("parent", 0, 1))
    assert second is not None and second.position == "neg"


class SubGraphs(MapStates):
    """A two-action sub-graph per state, halting after its second action."""

    @property
    def reads(self) -> list[str]:
        return ["xs"]

    @property
    def writes(self) -> list[str]:
        return ["ys"]

    def action(self, state: State, inputs: dict[str, Any]) -> RunnableGraph:
        graph = (
            GraphBuilder()
            .with_actions(square, plus_one, negate)
            .with_transitions(("square", "plus_one"), ("plus_one", "negate"))
            .build()
        )
        return RunnableGraph(graph, entrypoint="square", halt_after=["plus_one"])

    def states(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> list[State]:
        return [state.update(x=x) for x in state["xs"]]

    def reduce(self, state: State, states: Iterator[State]) -> State:
        return state.update(ys=[s["z"] for s in states])


async def test_a_child_can_run_a_whole_sub_graph_until_its_halt() -> None:
    persister = InMemoryPersister()
    app = await build(SubGraphs(), persister, xs=[2, 3])
    _, _, state = await app.arun(halt_after=["fan"])
    assert state["ys"] == [5, 10]
    assert calls.of("negate") == []  # halted after plus_one
    history = await persister.history("user", child_app_id("parent", 0, 0))
    assert [h.position for h in history] == ["square", "plus_one"]
    assert all(h.spawning_parent == ParentPointer("parent", "user", 0) for h in history)


async def test_a_resumed_sub_graph_child_that_had_halted_does_not_run_on() -> None:
    persister = InMemoryPersister()
    gates[3] = asyncio.Event()  # the last child stops inside its first step
    app = await build(SubGraphs(), persister, xs=[2, 3])
    task = asyncio.create_task(app.arun(halt_after=["fan"]))
    await calls.reach("plus_one", 1)
    await calls.reach("square", 2)
    await asyncio.sleep(0.01)  # the first child's plus_one step commits
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    first = await persister.load("user", child_app_id("parent", 0, 0))
    assert first is not None and first.position == "plus_one"  # halted there; negate is next
    calls.items.clear()
    gates.clear()
    resumed = await build(SubGraphs(), persister, xs=[2, 3], resume=True)
    _, _, state = await resumed.arun(halt_after=["fan"])
    assert state["ys"] == [5, 10]
    assert calls.items == [("square", 3), ("plus_one", 9)]  # the halted child did not go on


class Tracked(Squares):
    """Counts how many children run at once."""

    running = 0
    peak = 0

    def action(self, state: State, inputs: dict[str, Any]) -> Any:
        return tracked


@action(reads=["x"], writes=["y"])
async def tracked(state: State) -> State:
    Tracked.running += 1
    Tracked.peak = max(Tracked.peak, Tracked.running)
    await asyncio.sleep(0.01)
    Tracked.running -= 1
    return state.update(y=state["x"])


@pytest.mark.parametrize(("limit", "peak"), [(2, 2), (1, 1), (None, 6)])
async def test_max_concurrency_bounds_the_children_running_at_once(
    limit: int | None, peak: int
) -> None:
    Tracked.running = Tracked.peak = 0
    app = await build(Tracked(max_concurrency=limit), InMemoryPersister(), xs=list(range(6)))
    _, _, state = await app.arun(halt_after=["fan"])
    assert state["ys"] == list(range(6))
    assert Tracked.peak == peak


async def test_max_concurrency_as_a_class_attribute() -> None:
    class Bounded(Tracked):
        max_concurrency = 3

    Tracked.running = Tracked.peak = 0
    app = await build(Bounded(), None, xs=list(range(7)))
    await app.arun(halt_after=["fan"])
    assert Tracked.peak == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_max_concurrency_must_be_a_positive_whole_number(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        Squares(max_concurrency=bad)


async def test_a_failing_child_fails_the_parent_step_and_a_retry_reruns_only_it() -> None:
    persister = InMemoryPersister()
    fail_on.add(2)
    app = await build(Squares(), persister)
    with pytest.raises(ChildApplicationError) as caught:
        await app.arun(halt_after=["fan"])
    error = caught.value
    assert error.child_index == 1 and error.child_app_id == child_app_id("parent", 0, 1)
    assert error.child_action == "square" and isinstance(error.__cause__, ValueError)
    assert "no square for 2" in str(error) and "Child 1" in str(error)
    stored = await persister.load("user", "parent")
    assert stored is not None and stored.status == "failed" and stored.sequence_id == 0
    assert (
        stored.error is not None and "Child 1" in stored.error and "no square for 2" in stored.error
    )
    child = await persister.load("user", child_app_id("parent", 0, 1))
    assert child is not None and child.status == "failed"

    fail_on.clear()
    calls.items.clear()
    _, _, state = await app.arun(halt_after=["fan"])  # the retry runs at sequence_id 1
    assert state["ys"] == [1, 4, 9]
    assert calls.of("square") == [2]  # the children that had completed did not run again
    assert app.sequence_id == 1


async def test_a_retry_resumed_from_storage_after_two_failures_finds_the_first_children() -> None:
    persister = InMemoryPersister()
    fail_on.add(3)
    app = await build(Squares(), persister)
    for _ in range(2):
        with pytest.raises(ChildApplicationError):
            await app.arun(halt_after=["fan"])
    assert app.sequence_id == 1
    fail_on.clear()
    calls.items.clear()
    resumed = await build(Squares(), persister, resume=True)
    assert resumed.context.first_attempt_sequence_id == 0
    _, _, state = await resumed.arun(halt_after=["fan"])
    assert state["ys"] == [1, 4, 9] and calls.of("square") == [3]
    spawned = [s for s in await persister.list_apps("user") if s.spawning_parent is not None]
    assert len(spawned) == 3  # no second set of children


async def test_when_a_child_fails_the_others_are_cancelled_and_their_steps_stay() -> None:
    persister = InMemoryPersister()
    gates[1] = asyncio.Event()  # child 0 never finishes by itself
    fail_on.add(3)
    app = await build(Squares(), persister)
    with pytest.raises(ChildApplicationError) as caught:
        await app.arun(halt_after=["fan"])
    assert caught.value.child_index == 2
    assert await persister.load("user", child_app_id("parent", 0, 0)) is None  # cancelled
    finished = await persister.load("user", child_app_id("parent", 0, 1))
    assert finished is not None and finished.status == "completed"


async def test_cancelling_the_parent_cancels_the_children_and_keeps_their_steps() -> None:
    persister = InMemoryPersister()
    gates[3] = asyncio.Event()
    app = await build(Squares(), persister)
    task = asyncio.create_task(app.arun(halt_after=["fan"]))
    await calls.reach("square", 3)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await persister.load("user", "parent") is None  # the parent step did not happen
    for index in (0, 1):
        stored = await persister.load("user", child_app_id("parent", 0, index))
        assert stored is not None and stored.status == "completed"
    assert await persister.load("user", child_app_id("parent", 0, 2)) is None

    calls.items.clear()
    gates.clear()
    resumed = await build(Squares(), persister, resume=True)
    _, _, state = await resumed.arun(halt_after=["fan"])
    assert state["ys"] == [1, 4, 9]
    assert calls.of("square") == [3]  # only the child that had not finished


async def test_two_workers_on_one_fan_out_commit_each_child_step_once() -> None:
    persister = InMemoryPersister()
    for x in (1, 2, 3):
        gates[x] = asyncio.Event()
    first = await build(Squares(), persister, resume=True)
    second = await build(Squares(), persister, resume=True)
    runs = [asyncio.create_task(a.arun(halt_after=["fan"])) for a in (first, second)]
    await calls.reach("square", 6)
    for gate in gates.values():
        gate.set()
    outcomes = await asyncio.gather(*runs, return_exceptions=True)
    races = [o for o in outcomes if isinstance(o, ConcurrentStepError)]
    assert races, outcomes  # both workers ran every child: at least one lost a race
    assert all(
        not isinstance(o, BaseException) or isinstance(o, ConcurrentStepError) for o in outcomes
    )
    for index in range(3):
        history = await persister.history("user", child_app_id("parent", 0, index))
        assert [h.sequence_id for h in history] == [0]
    parent = await persister.history("user", "parent")
    assert all(step.status == "completed" for step in parent)  # no failed row for a race

    resumed = await build(Squares(), persister, resume=True)
    if resumed.position != "fan":
        _, _, state = await resumed.arun(halt_after=["fan"])
    else:
        state = resumed.state
    assert state["ys"] == [1, 4, 9]


class Spied(PostApplicationCreateHook):
    def __init__(self) -> None:
        self.pointers: list[ParentPointer | None] = []

    def post_application_create(self, **kwargs: Any) -> None:
        self.pointers.append(kwargs["spawning_parent_pointer"])


async def test_with_spawning_parent_is_stored_and_kept_on_resume() -> None:
    persister = InMemoryPersister()
    hook = Spied()
    child = await (
        ApplicationBuilder()
        .with_actions(negate)
        .with_state(x=4)
        .with_entrypoint("negate")
        .with_identifiers(app_id="by-hand", partition_key="user")
        .with_spawning_parent("parent", 7, "user")
        .with_state_persister(persister)
        .with_hooks(hook)
        .abuild()
    )
    assert child.spawning_parent_pointer == ParentPointer("parent", "user", 7)
    await child.astep()
    stored = await persister.load("user", "by-hand")
    assert stored is not None and stored.spawning_parent == ParentPointer("parent", "user", 7)
    resumed = await (
        ApplicationBuilder()
        .with_actions(negate)
        .initialize_from(
            persister, resume_at_next_action=True, default_state={}, default_entrypoint="negate"
        )
        .with_identifiers(app_id="by-hand", partition_key="user")
        .with_hooks(hook)
        .abuild()
    )
    assert resumed.spawning_parent_pointer == ParentPointer("parent", "user", 7)
    assert hook.pointers == [ParentPointer("parent", "user", 7)] * 2


@pytest.mark.parametrize("bad", [-1, True, "3", None])
def test_with_spawning_parent_needs_a_step_number(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="sequence_id"):
        ApplicationBuilder().with_spawning_parent("parent", bad)


async def test_first_attempt_sequence_id_stays_across_failed_retries() -> None:
    seen: list[tuple[int | None, int | None]] = []
    failures = [True, True, False]

    @action(reads=[], writes=[])
    def flaky(state: State, __context: ApplicationContext) -> State:
        seen.append((__context.sequence_id, __context.first_attempt_sequence_id))
        if failures.pop(0):
            raise RuntimeError("not yet")
        return state

    app = await (
        ApplicationBuilder()
        .with_actions(flaky)
        .with_transitions(("flaky", "flaky"))
        .with_entrypoint("flaky")
        .with_state_persister(InMemoryPersister())
        .abuild()
    )
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await app.astep()
    failures.append(False)
    await app.astep()
    await app.astep()
    assert seen == [(0, 0), (1, 0), (2, 0), (3, 3)]


class NotStates(Squares):
    def states(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> Iterator[Any]:
        yield {"x": 1}


class BadReduce(Squares):
    def reduce(self, state: State, states: Iterator[State]) -> Any:
        return {"ys": []}


@pytest.mark.parametrize(
    ("fan_out", "message"), [(NotStates(), "State objects"), (BadReduce(), "reduce")]
)
async def test_bad_children_or_reduce_fail_the_step_clearly(fan_out: Any, message: str) -> None:
    app = await build(fan_out, InMemoryPersister())
    with pytest.raises(InvalidActionResultError, match=message):
        await app.astep()


async def test_an_unnamed_class_action_cannot_be_a_child() -> None:
    class Unnamed(Squares):
        def action(self, state: State, inputs: dict[str, Any]) -> Any:
            from burr_async import Result

            return Result("x")

    app = await build(Unnamed(), InMemoryPersister())
    with pytest.raises(ConfigurationError, match="with_name"):
        await app.astep()


async def test_a_fan_out_runs_without_a_persister() -> None:
    app = await build(Squares(), None)
    _, _, state = await app.arun(halt_after=["fan"])
    assert state["ys"] == [1, 4, 9]


async def test_inputs_the_fan_out_declares_reach_the_children() -> None:
    @action(reads=["x"], writes=["y"])
    def scale(state: State, factor: int) -> State:
        return state.update(y=state["x"] * factor)

    class Scaled(Squares):
        @property
        def inputs(self) -> list[str]:
            return ["factor"]

        def action(self, state: State, inputs: dict[str, Any]) -> Any:
            return scale

    app = await build(Scaled(), InMemoryPersister())
    _, _, state = await app.arun(halt_after=["fan"], inputs={"factor": 10})
    assert state["ys"] == [10, 20, 30]
