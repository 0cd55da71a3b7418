"""ApplicationBuilder: the builder verbs and the validation done by abuild()."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from burr_async import (
    ApplicationBuilder,
    ConfigurationError,
    GraphBuilder,
    GraphValidationError,
    InMemoryPersister,
    State,
    action,
    expr,
)

from ._support import chatbot_builder

pytestmark = pytest.mark.anyio


@action(reads=[], writes=[])
def one(state: State) -> State:
    return state


@action(reads=[], writes=[])
def two(state: State) -> State:
    return state


@action(reads=[], writes=[])
def three(state: State) -> State:
    return state


def _linear() -> ApplicationBuilder:
    return ApplicationBuilder().with_actions(one, two).with_transitions(("one", "two"))


# -- graph validation --------------------------------------------------------------------------


async def test_unknown_action_in_transition_is_named() -> None:
    builder = _linear().with_transitions(("two", "ghost")).with_entrypoint("one")
    with pytest.raises(GraphValidationError, match="'ghost'"):
        await builder.abuild()


async def test_duplicate_positional_action_names_are_named() -> None:
    with pytest.raises(GraphValidationError, match="'one'"):
        await (
            ApplicationBuilder().with_actions(one).with_actions(one).with_entrypoint("one").abuild()
        )


async def test_duplicate_positional_and_keyword_action_names_are_named() -> None:
    with pytest.raises(GraphValidationError, match="'two'"):
        await ApplicationBuilder().with_actions(one, two, two=three).with_entrypoint("one").abuild()


async def test_missing_entrypoint() -> None:
    with pytest.raises(GraphValidationError, match="entrypoint"):
        await _linear().abuild()


async def test_unknown_entrypoint_is_named() -> None:
    with pytest.raises(GraphValidationError, match="'nope'"):
        await _linear().with_entrypoint("nope").abuild()


async def test_unreachable_action_is_named() -> None:
    builder = _linear().with_actions(three).with_entrypoint("one")
    with pytest.raises(GraphValidationError, match=r"\['three'\]"):
        await builder.abuild()


async def test_graph_validation_error_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        await _linear().with_entrypoint("nope").abuild()


# -- initialize_from exclusions ----------------------------------------------------------------


def _init(builder: ApplicationBuilder) -> ApplicationBuilder:
    return builder.initialize_from(
        InMemoryPersister(),
        resume_at_next_action=True,
        default_state={},
        default_entrypoint="one",
    )


@pytest.mark.parametrize("verb", ["with_state", "with_entrypoint"])
def test_initialize_from_after_with_verb(verb: str) -> None:
    builder = _linear()
    if verb == "with_state":
        builder.with_state(x=1)
    else:
        builder.with_entrypoint("one")
    with pytest.raises(ConfigurationError, match=f"initialize_from.*{verb}"):
        _init(builder)


@pytest.mark.parametrize("verb", ["with_state", "with_entrypoint"])
def test_with_verb_after_initialize_from(verb: str) -> None:
    builder = _init(_linear())
    call = (
        (lambda: builder.with_state(x=1))
        if verb == "with_state"
        else (lambda: builder.with_entrypoint("one"))
    )
    with pytest.raises(ConfigurationError, match=rf"{verb}.*initialize_from"):
        call()


def test_initialize_from_needs_a_loader() -> None:
    with pytest.raises(ConfigurationError, match="load"):
        _linear().initialize_from(
            object(),  # type: ignore[arg-type]
            resume_at_next_action=True,
            default_state={},
            default_entrypoint="one",
        )


async def test_initialize_is_an_alias() -> None:
    app = await (
        _linear()
        .initialize(
            InMemoryPersister(),
            resume_at_next_action=True,
            default_state={"x": 1},
            default_entrypoint="one",
        )
        .abuild()
    )
    assert app.state.get_all() == {"x": 1}
    assert app.get_next_action() is not None
    assert app.get_next_action().name == "one"  # type: ignore[union-attr]


# -- transitions -------------------------------------------------------------------------------


async def test_transition_from_a_list_of_actions() -> None:
    builder = (
        ApplicationBuilder()
        .with_actions(one, two, three)
        .with_transitions(("one", "two"), (["one", "two"], "three", expr("go")))
    )
    app = await builder.with_entrypoint("one").with_state(go=True).abuild()
    pairs = [(t.from_, t.to) for t in app.graph.transitions]
    assert pairs == [("one", "two"), ("one", "three"), ("two", "three")]
    assert app.graph.transitions[1].condition.name == "go"


@pytest.mark.parametrize(
    "spec",
    [("one",), ("one", "two", expr("x"), "extra"), ("one", "two", "x > 1")],
    ids=["too-short", "too-long", "string-condition"],
)
def test_malformed_transition(spec: Any) -> None:
    with pytest.raises(ConfigurationError, match="Transition"):
        _linear().with_transitions(spec)


# -- state and identity ------------------------------------------------------------------------


async def _built(builder: ApplicationBuilder) -> Any:
    return await builder.with_entrypoint("one").abuild()


async def test_with_state_from_dict_state_and_keywords() -> None:
    assert (await _built(_linear().with_state({"a": 1}))).state.get_all() == {"a": 1}
    assert (await _built(_linear().with_state(State({"b": 2})))).state.get_all() == {"b": 2}
    assert (await _built(_linear().with_state(c=3))).state.get_all() == {"c": 3}


async def test_with_state_merges_calls_and_keywords_win() -> None:
    builder = _linear().with_state({"a": 1, "b": 1}, b=2).with_state(State({"c": 3}), a=4)
    assert (await _built(builder)).state.get_all() == {"a": 4, "b": 2, "c": 3}


async def test_with_state_does_not_alias_the_callers_dict() -> None:
    source = {"a": 1}
    builder = _linear().with_state(source)
    source["a"] = 2
    assert (await _built(builder)).state["a"] == 1


async def test_no_state_gives_empty_state() -> None:
    assert (await _built(_linear())).state.get_all() == {}


async def test_with_identifiers() -> None:
    app = await _built(_linear().with_identifiers(app_id="app-1", partition_key="user-7"))
    assert app.uid == "app-1"
    assert app.app_id == "app-1"
    assert app.partition_key == "user-7"


async def test_fresh_app_id_is_a_uuid4_and_partition_key_may_be_none() -> None:
    first = await _built(_linear())
    second = await _built(_linear())
    parsed = uuid.UUID(first.uid)
    assert parsed.version == 4
    assert str(parsed) == first.uid
    assert first.uid != second.uid
    assert first.partition_key is None
    assert first.sequence_id is None
    assert first.position is None
    assert first.parent_pointer is None


@pytest.mark.parametrize(
    "kwargs",
    [{"app_id": ""}, {"app_id": 5}, {"partition_key": 5}],
    ids=["empty-app-id", "int-app-id", "int-partition"],
)
def test_bad_identifiers(kwargs: dict[str, Any]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ConfigurationError, match=name):
        _linear().with_identifiers(**kwargs)


# -- actions -----------------------------------------------------------------------------------


async def test_positional_actions_use_the_function_name_and_keyword_actions_are_renamed() -> None:
    app = await (
        ApplicationBuilder()
        .with_actions(one, renamed=two)
        .with_transitions(("one", "renamed"))
        .with_entrypoint("one")
        .abuild()
    )
    assert set(app.graph.actions) == {"one", "renamed"}
    assert app.graph.action("one").name == "one"
    assert app.graph.action("renamed").name == "renamed"
    assert two.name == "two"
    outcome = await app.astep()
    outcome = await app.astep()
    assert outcome is not None
    assert outcome[0].name == "renamed"
    assert app.position == "renamed"


def test_with_actions_rejects_non_actions() -> None:
    def plain(state: State) -> State:
        return state

    with pytest.raises(ConfigurationError, match=r"plain.*not an action"):
        ApplicationBuilder().with_actions(plain)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"'named'.*not an action"):
        ApplicationBuilder().with_actions(named="just a string")  # type: ignore[arg-type]


# -- persister and hooks -----------------------------------------------------------------------


def test_with_state_persister_checks() -> None:
    with pytest.raises(ConfigurationError, match="on_every='call'"):
        _linear().with_state_persister(InMemoryPersister(), on_every="call")
    with pytest.raises(ConfigurationError, match="save"):
        _linear().with_state_persister(object())  # type: ignore[arg-type]


async def test_with_hooks_rejects_non_hooks_at_build() -> None:
    class NotAHook:
        pass

    with pytest.raises(TypeError, match="NotAHook"):
        await _built(_linear().with_hooks(NotAHook()))


async def test_builder_chain_builds_the_chatbot() -> None:
    app = await (
        chatbot_builder()
        .with_state(chat_history=[])
        .with_entrypoint("user_input")
        .with_identifiers(app_id="chat", partition_key="me")
        .abuild()
    )
    assert app.uid == "chat"
    assert app.get_next_action().name == "user_input"  # type: ignore[union-attr]
    assert app.has_next_action() is True


async def test_a_sequence_id_without_initialize_from_is_refused() -> None:
    builder = chatbot_builder().with_identifiers(app_id="a", sequence_id=5)
    with pytest.raises(ConfigurationError, match=r"sequence_id=5.*initialize_from"):
        await builder.abuild()


@pytest.mark.parametrize(
    ("app_id", "partition_key"),
    [("a\x00b", None), ("x" * 256, None), ("a", "p\x00"), ("a", "p" * 10_000), ("", None)],
    ids=["nul-app", "long-app", "nul-partition", "long-partition", "empty-app"],
)
def test_ids_that_no_backend_can_store_are_refused_up_front(
    app_id: str, partition_key: str | None
) -> None:
    from burr_async import InvalidIdentifierError

    with pytest.raises(InvalidIdentifierError) as info:
        ApplicationBuilder().with_identifiers(app_id=app_id, partition_key=partition_key)
    assert len(str(info.value)) < 300  # a 10 kB id is quoted shortened


# -- Burr's spellings: with_graph, build(), initialize_from's order and overrides -----------------


async def test_with_graph_builds_an_application_from_a_reusable_graph() -> None:
    graph = (
        GraphBuilder()
        .with_actions(one, two)
        .with_transitions(("one", "two"), ("two", "one"))
        .build()
    )
    first = await ApplicationBuilder().with_graph(graph).with_entrypoint("one").abuild()
    second = await ApplicationBuilder().with_graph(graph).with_entrypoint("two").abuild()
    await first.astep()
    await second.astep()
    assert (first.position, second.position) == ("one", "two")
    assert set(first.graph.actions) == set(graph.actions)


async def test_with_graph_combines_with_actions_and_transitions() -> None:
    graph = GraphBuilder().with_actions(one, two).with_transitions(("one", "two")).build()
    app = await (
        ApplicationBuilder()
        .with_graph(graph)
        .with_actions(three)
        .with_transitions(("two", "three"))
        .with_entrypoint("one")
        .abuild()
    )
    names = [step[0].name async for step in app.aiterate()]
    assert names == ["one", "two", "three"]
    other = GraphBuilder().with_actions(three).build()
    both = (
        await ApplicationBuilder()
        .with_graphs(graph, other)
        .with_transitions(("two", "three"))
        .with_entrypoint("one")
        .abuild()
    )
    assert set(both.graph.actions) == {"one", "two", "three"}
    with pytest.raises(GraphValidationError, match="'one'"):
        ApplicationBuilder().with_graph(graph).with_actions(one)


def test_build_says_to_await_abuild() -> None:
    with pytest.raises(ConfigurationError, match=r"await builder\.abuild\(\)"):
        _linear().with_entrypoint("one").build()


async def test_initialize_from_takes_burrs_positional_order() -> None:
    persister = InMemoryPersister()
    builder = (
        _linear()
        .initialize_from(persister, True, {"x": 1}, "one")
        .with_state_persister(persister)
        .with_identifiers(app_id="positional")
    )
    app = await builder.abuild()
    assert app.state["x"] == 1
    await app.astep()
    resumed = await (
        _linear()
        .initialize_from(persister, True, {"x": 1}, "one", None, None, None, {"x": 5})
        .with_identifiers(app_id="positional")
        .abuild()
    )
    assert resumed.position == "one" and resumed.state["x"] == 5


async def test_override_state_values_apply_to_a_loaded_state_only() -> None:
    persister = InMemoryPersister()
    fresh = await (
        _linear()
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={"x": 1},
            default_entrypoint="one",
            override_state_values={"x": 100, "y": 2},
        )
        .with_state_persister(persister)
        .with_identifiers(app_id="ov")
        .abuild()
    )
    assert fresh.state.get_all() == {"x": 1}  # nothing loaded: the defaults, as in Burr
    await fresh.astep()
    loaded = await (
        _linear()
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={"x": 1},
            default_entrypoint="one",
            override_state_values={"x": 100, "y": 2},
        )
        .with_state_persister(persister)
        .with_identifiers(app_id="ov")
        .abuild()
    )
    assert loaded.state.get_all() == {"x": 100, "y": 2}
    assert (await persister.load(None, "ov")).state.get_all() == {"x": 1}  # not stored yet...
    await loaded.astep()
    assert (await persister.load(None, "ov")).state.get_all() == {"x": 100, "y": 2}  # ...now


async def test_override_state_values_apply_to_a_fork() -> None:
    persister = InMemoryPersister()
    source = await (
        _linear()
        .initialize_from(persister, True, {"x": 1}, "one")
        .with_state_persister(persister)
        .with_identifiers(app_id="src")
        .abuild()
    )
    await source.astep()
    fork = await (
        _linear()
        .initialize_from(
            persister, True, {}, "one", fork_from_app_id="src", override_state_values={"x": 7}
        )
        .with_state_persister(persister)
        .with_identifiers(app_id="fork")
        .abuild()
    )
    assert fork.state["x"] == 7
    assert (await persister.load(None, "fork")).state["x"] == 1  # the fork's record: a copy


@pytest.mark.parametrize("given", [{"fork_from_partition_key": "p"}, {"fork_from_sequence_id": 0}])
def test_fork_details_without_fork_from_app_id_are_refused(given: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="fork_from_app_id"):
        _linear().initialize_from(InMemoryPersister(), True, {}, "one", **given)
