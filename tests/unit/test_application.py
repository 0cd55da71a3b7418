"""Application: stepping, running, iterating, failures and the busy guard."""

from __future__ import annotations

import inspect
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest

from burr_async import (
    Application,
    ApplicationBuilder,
    ApplicationBusyError,
    CommitUnknownError,
    ConditionError,
    GraphValidationError,
    InMemoryPersister,
    PersistenceError,
    Result,
    State,
    action,
    default,
    expr,
)

from ._support import (
    FlakyError,
    chatbot_app,
    counter_app,
    counter_builder,
    single_action_app,
)

pytestmark = pytest.mark.anyio


async def test_astep_returns_action_result_state() -> None:
    app = await chatbot_app()
    assert app.sequence_id is None
    assert app.position is None
    outcome = await app.astep(inputs={"prompt": "hi"})
    assert outcome is not None
    act, result, state = outcome
    assert act.name == "user_input"
    assert result == {"prompt": "hi"}
    assert state.get_all() == {
        "chat_history": [{"role": "user", "content": "hi"}],
        "prompt": "hi",
    }
    assert app.state == state
    assert app.sequence_id == 0
    assert app.position == "user_input"


async def test_sequence_id_and_position_advance() -> None:
    app = await chatbot_app()
    seen = []
    for prompt in ("a", "b"):
        await app.astep(inputs={"prompt": prompt})
        seen.append((app.sequence_id, app.position))
        await app.astep()
        seen.append((app.sequence_id, app.position))
    assert seen == [(0, "user_input"), (1, "respond"), (2, "user_input"), (3, "respond")]
    assert app.state["response"] == "echo: b"
    assert [m["content"] for m in app.state["chat_history"]] == ["a", "echo: a", "b", "echo: b"]


async def test_astep_returns_none_when_there_is_no_next_action() -> None:
    app = await counter_app(limit=1)
    assert (await app.astep()) is not None
    outcome = await app.astep()
    assert outcome is not None
    assert outcome[0].name == "done"
    assert outcome[1] == {"count": 1}
    assert app.has_next_action() is False
    assert app.get_next_action() is None
    assert await app.astep() is None
    assert app.sequence_id == 1
    assert app.position == "done"


async def test_get_next_action() -> None:
    app = await chatbot_app()
    assert app.get_next_action().name == "user_input"  # type: ignore[union-attr]
    await app.astep(inputs={"prompt": "exit please"})
    assert app.get_next_action().name == "goodbye"  # type: ignore[union-attr]


async def test_arun_halt_after() -> None:
    app = await chatbot_app()
    act, result, state = await app.arun(halt_after=["respond"], inputs={"prompt": "yo"})
    assert act is not None
    assert act.name == "respond"
    assert result == {"response": "echo: yo"}
    assert state["response"] == "echo: yo"
    assert app.sequence_id == 1
    assert app.position == "respond"


async def test_arun_halt_before_returns_next_action_without_result() -> None:
    app = await chatbot_app()
    await app.astep(inputs={"prompt": "one"})
    act, result, state = await app.arun(halt_before=["user_input"])
    assert act is not None
    assert act.name == "user_input"
    assert result is None
    assert state["response"] == "echo: one"
    assert app.position == "respond"
    assert app.sequence_id == 1


async def test_arun_halt_after_wins_over_halt_before_of_the_next_action() -> None:
    app = await chatbot_app()
    act, result, state = await app.arun(
        halt_after=["user_input"], halt_before=["respond"], inputs={"prompt": "q"}
    )
    assert act is not None
    assert act.name == "user_input"
    assert result == {"prompt": "q"}
    assert state["prompt"] == "q"
    assert app.sequence_id == 0


async def test_arun_halt_before_the_entrypoint_runs_nothing() -> None:
    app = await chatbot_app()
    act, result, state = await app.arun(halt_before=["user_input"])
    assert act is not None
    assert act.name == "user_input"
    assert result is None
    assert state.get_all() == {"chat_history": []}
    assert app.sequence_id is None


async def test_arun_to_the_end_of_the_graph() -> None:
    app = await counter_app(limit=3)
    act, result, state = await app.arun()
    assert act is not None
    assert act.name == "done"
    assert result == {"count": 3}
    assert state["count"] == 3
    assert app.sequence_id == 3


async def test_arun_halt_at_unknown_action_names_it() -> None:
    app = await counter_app()
    with pytest.raises(GraphValidationError, match="'nope'"):
        await app.arun(halt_after=["nope"])
    assert app.sequence_id is None


async def test_aiterate_yields_each_step() -> None:
    app = await counter_app(limit=2)
    steps = [(act.name, result, state["count"]) async for act, result, state in app.aiterate()]
    assert steps == [
        ("increment", {"count": 1}, 1),
        ("increment", {"count": 2}, 2),
        ("done", {"count": 2}, 2),
    ]
    assert app.sequence_id == 2


async def test_aiterate_with_halts() -> None:
    app = await counter_app(limit=5)
    names = [step[0].name async for step in app.aiterate(halt_before=["done"])]
    assert names == ["increment"] * 5
    names = [step[0].name async for step in app.aiterate(halt_after=["done"])]
    assert names == ["done"]


async def test_inputs_are_passed_to_each_step() -> None:
    app = await counter_app(limit=6)
    act, _, state = await app.arun(halt_after=["done"], inputs={"by": 2})
    assert act is not None
    assert state["count"] == 6
    assert app.sequence_id == 3  # three increments of 2, then done


# -- failures ----------------------------------------------------------------------------------


def _flaky_app_builder(failures: list[bool]) -> ApplicationBuilder:
    """``work`` fails while ``failures`` pops True; then ``after`` runs."""

    @action(reads=["n"], writes=["n"])
    async def work(state: State) -> tuple[dict[str, Any], State]:
        if failures.pop(0):
            raise FlakyError("work exploded")
        return {}, state.increment(n=1)

    @action(reads=[], writes=[])
    def after(state: State) -> State:
        return state

    return (
        ApplicationBuilder()
        .with_actions(work, after)
        .with_transitions(("work", "after"))
        .with_state(n=0)
        .with_entrypoint("work")
    )


async def test_failing_action_raises_its_own_error_and_is_rerun() -> None:
    app = await _flaky_app_builder([True, True, False]).abuild()
    with pytest.raises(FlakyError, match="work exploded"):
        await app.astep()
    assert app.state.get_all() == {"n": 0}
    assert app.sequence_id == 0
    assert app.position == "work"
    assert app.get_next_action().name == "work"  # type: ignore[union-attr]

    with pytest.raises(FlakyError):
        await app.astep()
    assert app.sequence_id == 1
    assert app.state.get_all() == {"n": 0}

    outcome = await app.astep()
    assert outcome is not None
    assert outcome[0].name == "work"
    assert app.state.get_all() == {"n": 1}
    assert app.sequence_id == 2
    assert app.get_next_action().name == "after"  # type: ignore[union-attr]


async def test_arun_stops_on_a_failing_action() -> None:
    app = await _flaky_app_builder([True, False]).abuild()
    with pytest.raises(FlakyError):
        await app.arun(halt_after=["after"])
    act, _, state = await app.arun(halt_after=["after"])
    assert act is not None
    assert act.name == "after"
    assert state["n"] == 1
    assert app.sequence_id == 2


async def test_broken_condition_raises_before_anything_changes() -> None:
    @action(reads=[], writes=[])
    def first(state: State) -> State:
        return state

    @action(reads=[], writes=[])
    def second(state: State) -> State:
        return state

    app = await (
        ApplicationBuilder()
        .with_actions(first, second)
        .with_transitions(("first", "second", expr("missing_key > 1")), ("first", "first"))
        .with_state(x=1)
        .with_entrypoint("first")
        .abuild()
    )
    await app.astep()
    with pytest.raises(ConditionError, match="'missing_key'"):
        await app.astep()
    assert app.sequence_id == 0
    assert app.position == "first"
    assert app.state.get_all() == {"x": 1}
    with pytest.raises(ConditionError, match="'missing_key'"):
        await app.arun()
    assert app.sequence_id == 0


# -- the busy guard ----------------------------------------------------------------------------


def _blocking_app_builder(started: anyio.Event, release: anyio.Event) -> ApplicationBuilder:
    @action(reads=[], writes=["done"])
    async def slow(state: State) -> State:
        started.set()
        await release.wait()
        return state.update(done=True)

    return (
        ApplicationBuilder()
        .with_actions(slow)
        .with_transitions(("slow", "slow", default))
        .with_entrypoint("slow")
        .with_identifiers(app_id="busy-app")
    )


async def test_concurrent_astep_raises_application_busy() -> None:
    started, release = anyio.Event(), anyio.Event()
    app = await _blocking_app_builder(started, release).abuild()
    outcomes: list[Any] = []

    async def first_call() -> None:
        outcomes.append(await app.astep())

    async with anyio.create_task_group() as tg:
        tg.start_soon(first_call)
        await started.wait()
        try:
            # fail_after: were the guard missing, the second call would wait for `release`.
            with anyio.fail_after(2):
                with pytest.raises(ApplicationBusyError, match="'busy-app'"):
                    await app.astep()
                with pytest.raises(ApplicationBusyError, match="arun"):
                    await app.arun()
        finally:
            release.set()

    assert len(outcomes) == 1
    assert outcomes[0][2]["done"] is True
    assert app.sequence_id == 0
    # Once the first call is done the app can step again.
    await app.astep()
    assert app.sequence_id == 1


async def test_busy_flag_is_released_after_a_failure() -> None:
    app = await _flaky_app_builder([True, False]).abuild()
    with pytest.raises(FlakyError):
        await app.astep()
    assert await app.astep() is not None


# -- visualize ---------------------------------------------------------------------------------


async def test_visualize_returns_mermaid_and_writes_the_file(tmp_path: Path) -> None:
    app: Application = await chatbot_app()
    await app.astep(inputs={"prompt": "hey"})
    target = tmp_path / "graph.mmd"
    text = app.visualize(target)
    assert text.startswith("flowchart TD")
    for name in ("user_input", "respond", "goodbye"):
        assert name in text
    assert "'exit' in prompt" in text
    assert "style" in text and "user_input stroke-width" in text
    assert target.read_text(encoding="utf-8") == text
    assert app.graph.to_mermaid(highlight="user_input") == text


async def test_aiterate_closed_early_with_aclosing_frees_the_app() -> None:
    app = await counter_app(limit=5)
    async with aclosing(app.aiterate()) as steps:
        async for _ in steps:
            break
    assert app.sequence_id == 0
    outcome = await app.astep()
    assert outcome is not None
    assert app.sequence_id == 1


async def test_breaking_out_of_aiterate_frees_the_app_at_once() -> None:
    app = await counter_app(limit=5)
    async for _ in app.aiterate():
        break  # no aclosing: the generator is left for the garbage collector
    assert app.sequence_id == 0
    outcome = await app.astep()  # not ApplicationBusyError
    assert outcome is not None
    assert app.sequence_id == 1


async def test_astep_inside_an_aiterate_loop_body_is_allowed() -> None:
    app = await counter_app(limit=5)
    seen: list[int | None] = []
    async for _ in app.aiterate(halt_after=["done"]):
        seen.append(app.sequence_id)
        await app.astep()  # the loop body runs between steps, when the app is not busy
    assert seen == [0, 2, 4]  # each loop step and each body step took a number
    assert app.position == "done"


# -- halting on tags ---------------------------------------------------------------------------


@action(reads=["n"], writes=["n"], tags=["work"])
async def work(state: State) -> State:
    return state.update(n=state["n"] + 1)


@action(reads=["n"], writes=["n"], tags=["work", "review"])
async def review(state: State) -> State:
    return state.update(n=state["n"] * 10)


async def _tagged_app() -> Application:
    return await (
        ApplicationBuilder()
        .with_actions(work, review, finish=Result("n"))
        .with_transitions(("work", "review"), ("review", "finish"))
        .with_state(n=1)
        .with_entrypoint("work")
        .abuild()
    )


async def test_halt_after_a_tag_stops_at_the_first_action_with_it() -> None:
    app = await _tagged_app()
    act, _, state = await app.arun(halt_after=["@tag:work"])
    assert act is not None and act.name == "work" and state["n"] == 2
    act, _, state = await app.arun(halt_after=["@tag:review"])
    assert act is not None and act.name == "review" and state["n"] == 20


async def test_halt_before_a_tag_and_a_single_string() -> None:
    app = await _tagged_app()
    act, result, _ = await app.arun(halt_before="@tag:review")
    assert act is not None and act.name == "review" and result is None
    names = [a.name async for a, _, _ in app.aiterate(halt_after="finish")]
    assert names == ["review", "finish"]


async def test_an_unknown_tag_or_action_in_a_halt_raises_before_running() -> None:
    app = await _tagged_app()
    with pytest.raises(GraphValidationError, match="'nope'"):
        await app.arun(halt_after=["@tag:nope"])
    with pytest.raises(GraphValidationError, match="'ghost'"):
        await app.arun(halt_before=["ghost"])
    assert app.sequence_id is None


# -- update_state and reset_to_entrypoint ------------------------------------------------------


async def _persisted_counter(persister: InMemoryPersister, app_id: str = "c") -> Application:
    return await (
        counter_builder(limit=3)
        .initialize_from(persister, True, {"count": 0}, "increment")
        .with_state_persister(persister)
        .with_identifiers(app_id=app_id)
        .abuild()
    )


async def test_update_state_is_a_stored_step_that_a_restart_sees() -> None:
    persister = InMemoryPersister()
    app = await _persisted_counter(persister)
    await app.astep()
    assert (app.sequence_id, app.state["count"]) == (0, 1)
    result = app.update_state(app.state.update(count=10))
    assert inspect.isawaitable(result)  # Burr's name; here it is awaited
    await result
    assert (app.sequence_id, app.position, app.state["count"]) == (1, "increment", 10)
    rows = await persister.history(None, "c")
    assert [(r.sequence_id, r.position, r.status, r.state["count"]) for r in rows] == [
        (0, "increment", "completed", 1),
        (1, "increment", "completed", 10),
    ]
    restarted = await _persisted_counter(persister)
    assert (restarted.sequence_id, restarted.state["count"]) == (1, 10)
    assert restarted.get_next_action().name == "done"  # count >= 3 out of "increment"


async def test_update_state_accepts_a_mapping_and_works_without_a_persister() -> None:
    app = await counter_app()
    await app.update_state({"count": 2})
    assert app.state == State({"count": 2})
    assert (app.sequence_id, app.position) == (0, None)  # before any action: at the entrypoint
    outcome = await app.astep()
    assert outcome is not None and outcome[0].name == "increment"
    assert (app.sequence_id, app.state["count"]) == (1, 3)


async def test_update_state_before_any_step_is_stored_at_the_entrypoint() -> None:
    persister = InMemoryPersister()
    app = await _persisted_counter(persister)
    await app.update_state(State({"count": 2}))
    rows = await persister.history(None, "c")
    assert [(r.position, r.state["count"]) for r in rows] == [("@entrypoint", 2)]
    restarted = await _persisted_counter(persister)
    assert restarted.position is None and restarted.state["count"] == 2
    assert restarted.get_next_action().name == "increment"


@action(reads=["ok"], writes=["fetched"])
async def fetch(state: State) -> State:
    if not state["ok"]:
        raise FlakyError("not ok yet")
    return state.update(fetched=True)


def _fetch_builder(persister: InMemoryPersister) -> ApplicationBuilder:
    return (
        ApplicationBuilder()
        .with_actions(fetch, done=Result("fetched"))
        .with_transitions(("fetch", "done"))
        .initialize_from(persister, True, {"ok": False}, "fetch")
        .with_identifiers(app_id="f")
    )


async def test_update_state_after_a_failure_keeps_the_failed_action_next() -> None:
    persister = InMemoryPersister()
    app = await _fetch_builder(persister).with_state_persister(persister).abuild()
    with pytest.raises(FlakyError):
        await app.astep()
    await app.update_state(app.state.update(ok=True))
    rows = await persister.history(None, "f")
    assert [(r.position, r.status, r.state["ok"]) for r in rows] == [
        ("fetch", "failed", False),
        ("fetch", "failed", True),
    ]
    assert rows[1].error == rows[0].error == "FlakyError: not ok yet"
    assert app.get_next_action().name == "fetch"  # the failed action runs again
    restarted = await _fetch_builder(persister).abuild()
    assert restarted.get_next_action().name == "fetch" and restarted.state["ok"] is True
    await app.astep()
    assert app.state["fetched"] is True
    assert (await persister.history(None, "f"))[-1].status == "completed"


async def test_reset_to_entrypoint_is_a_stored_step_that_a_restart_sees() -> None:
    persister = InMemoryPersister()
    app = await _persisted_counter(persister)
    await app.arun(halt_after=["done"])
    assert not app.has_next_action()
    await app.reset_to_entrypoint()
    assert app.position is None
    assert app.get_next_action().name == "increment"
    last = (await persister.history(None, "c"))[-1]
    assert (last.sequence_id, last.position, last.status) == (
        app.sequence_id,
        "@entrypoint",
        "completed",
    )
    assert last.state == app.state
    restarted = await _persisted_counter(persister)
    assert restarted.position is None
    assert restarted.get_next_action().name == "increment"
    assert restarted.state["count"] == 3
    not_resumed = await (
        counter_builder(limit=3)
        .initialize_from(persister, False, {"count": 0}, "increment")
        .with_identifiers(app_id="c")
        .abuild()
    )
    assert not_resumed.get_next_action().name == "increment"


async def test_reset_to_entrypoint_clears_a_failure() -> None:
    app = await counter_app()

    @action(reads=[], writes=[])
    def boom(state: State) -> State:
        raise FlakyError("boom")

    failing = await (
        ApplicationBuilder()
        .with_actions(boom, ok=Result())
        .with_transitions(("ok", "boom"))
        .with_entrypoint("ok")
        .abuild()
    )
    await failing.astep()
    with pytest.raises(FlakyError):
        await failing.astep()
    assert failing.get_next_action().name == "boom"
    await failing.reset_to_entrypoint()
    assert failing.get_next_action().name == "ok"
    assert app.position is None


async def test_update_state_refused_while_a_step_runs() -> None:
    started, release = anyio.Event(), anyio.Event()

    @action(reads=[], writes=[])
    async def slow(state: State) -> State:
        started.set()
        await release.wait()
        return state

    app = await single_action_app(slow)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.astep)
        await started.wait()
        with pytest.raises(ApplicationBusyError, match="update_state"):
            await app.update_state(State())
        with pytest.raises(ApplicationBusyError, match="reset_to_entrypoint"):
            await app.reset_to_entrypoint()
        release.set()
    await app.update_state(State({"x": 1}))
    assert app.state["x"] == 1


class _FailingSaves(InMemoryPersister):
    """Saves fail with the given errors, one per save, then succeed."""

    def __init__(self, *errors: Exception) -> None:
        super().__init__()
        self.errors = list(errors)

    async def save(self, *args: Any, **kwargs: Any) -> None:
        await super().save(*args, **kwargs)  # the row lands...
        if self.errors:
            raise self.errors.pop(0)  # ...but the caller hears an error


async def test_a_failed_update_state_leaves_the_application_unchanged() -> None:
    persister = _FailingSaves()
    app = await _persisted_counter(persister)  # type: ignore[arg-type]
    await app.astep()

    class Broken(InMemoryPersister):
        async def save(self, *args: Any, **kwargs: Any) -> None:
            raise OSError("disk gone")

    app._persister = Broken()
    with pytest.raises(PersistenceError, match="disk gone") as info:
        await app.update_state(State({"count": 99}))
    assert info.value.sequence_id == 1 and info.value.action == "increment"
    assert (app.sequence_id, app.state["count"]) == (0, 1)


async def test_an_update_state_whose_commit_is_unknown_is_settled_by_the_next_call() -> None:
    persister = _FailingSaves(CommitUnknownError("lost the reply", app_id="c"))
    app = await _persisted_counter(persister)  # type: ignore[arg-type]
    with pytest.raises(CommitUnknownError):
        await app.update_state(State({"count": 2}))
    assert app.sequence_id is None and app.state["count"] == 0
    # The row had landed; the next call saves the very same step again (accepted, since it is
    # identical), applies it, and only then runs its own step.
    persister._rows.clear()  # as if it had not landed: the settle writes it
    outcome = await app.astep()
    assert outcome is not None
    assert (app.sequence_id, app.state["count"]) == (1, 3)
    rows = await persister.history(None, "c")
    assert [(r.sequence_id, r.position, r.state["count"]) for r in rows] == [
        (0, "@entrypoint", 2),
        (1, "increment", 3),
    ]


class _LostSaves(InMemoryPersister):
    """The first ``lost`` saves never land, and their outcome is unknown to the caller."""

    def __init__(self, lost: int) -> None:
        super().__init__()
        self.lost = lost

    async def save(self, *args: Any, **kwargs: Any) -> None:
        if self.lost:
            self.lost -= 1
            raise CommitUnknownError("the connection dropped", app_id="c")
        await super().save(*args, **kwargs)


async def test_update_state_first_settles_an_actions_step_whose_commit_is_unknown() -> None:
    persister = _LostSaves(lost=1)
    app = await _persisted_counter(persister)
    with pytest.raises(CommitUnknownError):
        await app.astep()
    assert app.sequence_id is None
    await app.update_state(State({"count": 50}))
    rows = await persister.history(None, "c")
    assert [(r.sequence_id, r.position, r.state["count"]) for r in rows] == [
        (0, "increment", 1),  # the step, saved again (its action did not run again)
        (1, "increment", 50),  # then the update, at the step's position
    ]
    assert (app.sequence_id, app.position, app.state["count"]) == (1, "increment", 50)
