"""Actions: function and class based, inputs, binding, and the checks on what they return."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from burr_async import (
    Action,
    ActionError,
    ApplicationBuilder,
    ApplicationContext,
    AsyncStreamingAction,
    ConfigurationError,
    FunctionAction,
    Input,
    InvalidActionResultError,
    MissingInputError,
    MissingWriteError,
    ReservedInputError,
    Result,
    State,
    StreamingAction,
    UndeclaredWriteError,
    action,
    streaming_action,
)

from ._support import single_action_app

pytestmark = pytest.mark.anyio


# -- function actions --------------------------------------------------------------------------


@action(reads=["n"], writes=["n"])
async def add_async(state: State, amount: int) -> tuple[dict[str, Any], State]:
    new = state.update(n=state["n"] + amount)
    return {"n": new["n"]}, new


@action(reads=["n"], writes=["n"])
def double_sync(state: State) -> State:
    return state.update(n=state["n"] * 2)


@action(reads=[], writes=["greeting"])
def greet(state: State, name: str, punctuation: str = "!") -> tuple[dict[str, Any], State]:
    text = f"hello {name}{punctuation}"
    return {"greeting": text}, state.update(greeting=text)


async def test_async_function_returning_result_and_state() -> None:
    app = await single_action_app(add_async, n=1)
    act, result, state = await app.astep(inputs={"amount": 4}) or pytest.fail("no step")
    assert act.name == "add_async"
    assert result == {"n": 5}
    assert state.get_all() == {"n": 5}
    assert app.state["n"] == 5


async def test_sync_function_returning_only_state() -> None:
    app = await single_action_app(double_sync, n=3)
    outcome = await app.astep()
    assert outcome is not None
    assert outcome[1] == {}
    assert outcome[2]["n"] == 6


async def test_sync_action_runs_inline_on_the_event_loop_thread() -> None:
    seen: list[int] = []

    @action(reads=[], writes=[])
    def where(state: State) -> State:
        seen.append(threading.get_ident())
        return state

    app = await single_action_app(where)
    await app.astep()
    assert seen == [threading.get_ident()]


async def test_function_action_properties() -> None:
    assert isinstance(greet, FunctionAction)
    assert greet.name == "greet"
    assert greet.reads == []
    assert greet.writes == ["greeting"]
    assert greet.required_inputs == {"name"}
    assert greet.optional_inputs == {"punctuation"}
    assert greet.inputs == (["name"], ["punctuation"])
    assert greet.streaming is False


async def test_optional_input_uses_default_or_given_value() -> None:
    app = await single_action_app(greet)
    outcome = await app.astep(inputs={"name": "ann"})
    assert outcome is not None
    assert outcome[1] == {"greeting": "hello ann!"}

    app = await single_action_app(greet)
    outcome = await app.astep(inputs={"name": "bob", "punctuation": "?", "unrelated": 1})
    assert outcome is not None
    assert outcome[2]["greeting"] == "hello bob?"


async def test_bind_prefills_inputs_and_leaves_the_original_unbound() -> None:
    bound = greet.bind(name="cy")
    assert bound is not greet
    assert bound.required_inputs == frozenset()
    assert bound.optional_inputs == {"punctuation"}
    assert greet.required_inputs == {"name"}

    app = await single_action_app(bound, name="bound_greet")
    outcome = await app.astep()
    assert outcome is not None
    assert outcome[2]["greeting"] == "hello cy!"

    app = await single_action_app(greet)
    with pytest.raises(MissingInputError, match="'name'"):
        await app.astep()


async def test_bind_can_fill_optional_inputs_and_stacks() -> None:
    bound = greet.bind(punctuation=".").bind(name="di")
    assert bound.optional_inputs == frozenset()
    app = await single_action_app(bound, name="g")
    outcome = await app.astep()
    assert outcome is not None
    assert outcome[1] == {"greeting": "hello di."}


async def test_missing_required_input_names_action_and_key() -> None:
    app = await single_action_app(greet)
    with pytest.raises(MissingInputError) as info:
        await app.astep(inputs={"punctuation": "?"})
    err = info.value
    assert "'greet'" in str(err)
    assert "'name'" in str(err)
    assert app.uid in str(err)
    assert err.action == "greet"
    assert err.key == "name"
    assert err.missing == ["name"]
    assert isinstance(err, ValueError)
    assert isinstance(err, ActionError)
    assert app.sequence_id is None
    assert app.position is None


async def test_calling_a_decorated_action_directly() -> None:
    result, state = greet(State(), name="ed")
    assert result == {"greeting": "hello ed!"}
    assert state["greeting"] == "hello ed!"

    result, state = await add_async(State({"n": 1}), amount=2)
    assert result == {"n": 3}
    assert double_sync(State({"n": 4}))["n"] == 8

    result, _ = greet.bind(name="fay")(State(), punctuation="?")
    assert result == {"greeting": "hello fay?"}


def test_action_on_a_generator_raises_type_error() -> None:
    def gen(state: State) -> Iterator[State]:
        yield state

    async def agen(state: State) -> AsyncIterator[State]:
        yield state

    with pytest.raises(TypeError, match=r"gen.*streaming_action"):
        action(reads=[], writes=[])(gen)
    with pytest.raises(TypeError, match=r"agen.*streaming_action"):
        action(reads=[], writes=[])(agen)


def test_streaming_action_on_a_plain_function_raises_type_error() -> None:
    def plain(state: State) -> State:
        return state

    with pytest.raises(TypeError, match="plain"):
        streaming_action(reads=[], writes=[])(plain)


def test_function_must_take_state_first() -> None:
    def keyword_only(*, state: State) -> State:
        return state

    with pytest.raises(TypeError, match="keyword_only"):
        action(reads=[], writes=[])(keyword_only)


# -- what an action may write -----------------------------------------------------------------


async def test_writing_an_undeclared_key_names_action_and_key() -> None:
    @action(reads=[], writes=["allowed"])
    def sneaky(state: State) -> State:
        return state.update(allowed=1, secret=2)

    app = await single_action_app(sneaky, allowed=0)
    with pytest.raises(UndeclaredWriteError) as info:
        await app.astep()
    assert "'sneaky'" in str(info.value)
    assert "'secret'" in str(info.value)
    assert info.value.action == "sneaky"
    assert info.value.keys == ["secret"]
    assert app.state.get_all() == {"allowed": 0}


async def test_rewriting_an_undeclared_key_with_an_equal_value_is_allowed() -> None:
    @action(reads=["x"], writes=["y"])
    def same(state: State) -> State:
        return state.update(x=list(state["x"]), y=1)

    app = await single_action_app(same, x=[1, 2])
    outcome = await app.astep()
    assert outcome is not None
    assert outcome[2].get_all() == {"x": [1, 2], "y": 1}


async def test_deleting_an_undeclared_key_names_action_and_key() -> None:
    @action(reads=[], writes=["keep_me"])
    def deleter(state: State) -> State:
        return state.wipe(delete=["precious"])

    app = await single_action_app(deleter, keep_me=1, precious=2)
    with pytest.raises(UndeclaredWriteError, match=r"'deleter'.*'precious'"):
        await app.astep()
    assert app.state.get_all() == {"keep_me": 1, "precious": 2}


async def test_missing_declared_write_names_action_and_key() -> None:
    @action(reads=[], writes=["promised"])
    def lazy(state: State) -> State:
        return state

    app = await single_action_app(lazy)
    with pytest.raises(MissingWriteError) as info:
        await app.astep()
    assert "'lazy'" in str(info.value)
    assert "'promised'" in str(info.value)
    assert info.value.keys == ["promised"]
    assert info.value.key == "promised"


@pytest.mark.parametrize(
    "output",
    [None, {"a": 1}, (State(), {"a": 1}), ({"a": 1}, {"a": 1}), (["a"], State()), 42],
    ids=["none", "dict", "reversed", "dict-dict", "list-result", "int"],
)
async def test_bad_return_value_names_the_action(output: object) -> None:
    @action(reads=[], writes=[])
    def broken(state: State) -> Any:
        return output

    app = await single_action_app(broken)
    with pytest.raises(InvalidActionResultError, match="'broken'") as info:
        await app.astep()
    assert isinstance(info.value, TypeError)
    assert info.value.action == "broken"


# -- class-based actions -----------------------------------------------------------------------


class Scale(Action):
    """Sync run; ``factor`` required, ``offset`` optional."""

    @property
    def reads(self) -> list[str]:
        return ["x"]

    @property
    def writes(self) -> list[str]:
        return ["x", "history"]

    @property
    def inputs(self) -> tuple[list[str], list[str]]:
        return ["factor"], ["offset"]

    def run(self, state: State, **run_kwargs: Any) -> dict[str, Any]:
        return {"x": state["x"] * run_kwargs["factor"] + run_kwargs.get("offset", 0)}

    def update(self, result: dict[str, Any], state: State) -> State:
        return state.update(x=result["x"]).append(history=result["x"])


class AsyncFetch(Action):
    """Async run with required inputs declared as a plain list."""

    @property
    def reads(self) -> list[str]:
        return []

    @property
    def writes(self) -> list[str]:
        return ["fetched"]

    @property
    def inputs(self) -> list[str]:
        return ["url"]

    async def run(self, state: State, **run_kwargs: Any) -> dict[str, Any]:
        return {"body": f"<{run_kwargs['url']}>"}

    def update(self, result: dict[str, Any], state: State) -> State:
        return state.update(fetched=result["body"])


async def test_class_action_with_sync_run() -> None:
    scale = Scale()
    assert scale.required_inputs == {"factor"}
    assert scale.optional_inputs == {"offset"}
    app = await single_action_app(scale, name="scale", x=2)
    outcome = await app.astep(inputs={"factor": 3})
    assert outcome is not None
    act, result, state = outcome
    assert act.name == "scale"
    assert result == {"x": 6}
    assert state.get_all() == {"x": 6, "history": [6]}

    app = await single_action_app(scale, name="scale", x=2)
    outcome = await app.astep(inputs={"factor": 3, "offset": 1})
    assert outcome is not None
    assert outcome[2]["x"] == 7


async def test_class_action_with_async_run() -> None:
    fetch = AsyncFetch()
    assert fetch.required_inputs == {"url"}
    assert fetch.optional_inputs == frozenset()
    app = await single_action_app(fetch, name="fetch")
    outcome = await app.astep(inputs={"url": "x.org"})
    assert outcome is not None
    assert outcome[1] == {"body": "<x.org>"}
    assert outcome[2]["fetched"] == "<x.org>"


async def test_class_action_missing_input_names_action_and_key() -> None:
    app = await single_action_app(AsyncFetch(), name="fetch")
    with pytest.raises(MissingInputError, match=r"'fetch'.*'url'"):
        await app.astep()


async def test_class_action_run_returning_non_dict_is_invalid() -> None:
    class ReturnsList(AsyncFetch):
        async def run(self, state: State, **run_kwargs: Any) -> Any:
            return ["not", "a", "dict"]

    app = await single_action_app(ReturnsList(), name="lister")
    with pytest.raises(InvalidActionResultError, match=r"'lister'.*list"):
        await app.astep(inputs={"url": "u"})


async def test_class_action_update_returning_non_state_is_invalid() -> None:
    class BadUpdate(AsyncFetch):
        def update(self, result: dict[str, Any], state: State) -> Any:
            return dict(state)

    app = await single_action_app(BadUpdate(), name="bad_update")
    with pytest.raises(InvalidActionResultError, match="'bad_update'"):
        await app.astep(inputs={"url": "u"})


def test_unnamed_class_action() -> None:
    scale = Scale()
    with pytest.raises(AttributeError, match="Scale"):
        _ = scale.name
    named = scale.with_name("scaler")
    assert named.name == "scaler"
    assert named is not scale
    assert scale._name is None
    assert "scaler" in repr(named)


async def test_class_action_must_implement_run() -> None:
    class NoRun(Action):
        reads: list[str] = []  # type: ignore[assignment]
        writes: list[str] = []  # type: ignore[assignment]

    app = await single_action_app(NoRun(), name="norun")
    with pytest.raises(NotImplementedError, match="NoRun"):
        await app.astep()


# -- Result ------------------------------------------------------------------------------------


async def test_result_is_a_terminal_action_returning_the_keys() -> None:
    result_action = Result("a", "b")
    assert result_action.reads == ["a", "b"]
    assert result_action.writes == []
    app = await single_action_app(result_action, name="final", a=1, b=[2], c=3)
    outcome = await app.astep()
    assert outcome is not None
    act, result, state = outcome
    assert act.name == "final"
    assert result == {"a": 1, "b": [2]}
    assert state.get_all() == {"a": 1, "b": [2], "c": 3}
    assert await app.astep() is None
    assert app.has_next_action() is False


async def test_result_positionally_needs_a_name() -> None:
    with pytest.raises(ConfigurationError, match="no name"):
        ApplicationBuilder().with_actions(Result("a"))


# -- tags, names, Input ------------------------------------------------------------------------


def test_tags_on_function_and_class_actions() -> None:
    @action(reads=[], writes=[], tags=["io", "slow"])
    def tagged(state: State) -> State:
        return state

    @streaming_action(reads=[], writes=[], tags=["stream"])
    async def tagged_stream(state: State) -> AsyncIterator[tuple[dict[str, Any], State | None]]:
        yield {}, state

    assert tagged.tags == ["io", "slow"]
    assert tagged.bind().tags == ["io", "slow"]
    assert tagged.with_name("other").tags == ["io", "slow"]
    assert tagged_stream.tags == ["stream"]
    assert add_async.tags == []
    assert Result("n").tags == []
    tagged.tags.append("mutated")
    assert tagged.tags == ["io", "slow"]


def test_with_name_returns_a_renamed_copy() -> None:
    renamed = add_async.with_name("plus")
    assert renamed.name == "plus"
    assert add_async.name == "add_async"
    result = Result("n")
    named = result.with_name("out")
    assert named.name == "out" and named is not result
    with pytest.raises(AttributeError, match="no name"):
        _ = result.name


async def test_input_writes_its_inputs_to_the_state() -> None:
    app = await (
        ApplicationBuilder()
        .with_actions(ask=Input("question", "tone"), out=Result("question"))
        .with_transitions(("ask", "out"))
        .with_entrypoint("ask")
        .abuild()
    )
    ask = app.graph.get_action("ask")
    assert ask.reads == [] and ask.writes == ["question", "tone"]
    assert ask.required_inputs == {"question", "tone"}
    act, result, state = await app.arun(
        halt_after=["out"], inputs={"question": "why?", "tone": "calm", "extra": 1}
    )
    assert act is not None and act.name == "out"
    assert state.get_all() == {"question": "why?", "tone": "calm"}
    assert result == {"question": "why?"}
    other = await (
        ApplicationBuilder().with_actions(ask=Input("question")).with_entrypoint("ask").abuild()
    )
    with pytest.raises(MissingInputError, match="question"):
        await other.astep()


def test_async_streaming_action_is_burrs_name_for_streaming_action() -> None:
    assert AsyncStreamingAction is StreamingAction


# -- __context ---------------------------------------------------------------------------------


@action(reads=[], writes=["seen"])
async def sees_context(state: State, __context: ApplicationContext) -> State:
    return state.update(
        seen=[
            __context.app_id,
            __context.partition_key,
            __context.sequence_id,
            __context.action_name,
        ]
    )


@action(reads=[], writes=["seen"])
def sees_context_sync(state: State, __context: ApplicationContext, label: str = "x") -> State:
    return state.update(seen=f"{label}:{__context.sequence_id}")


async def test_a_function_action_receives_the_application_context() -> None:
    assert sees_context.required_inputs == frozenset()
    assert sees_context.inputs == ([], [])
    app = await (
        ApplicationBuilder()
        .with_actions(look=sees_context)
        .with_transitions(("look", "look"))
        .with_entrypoint("look")
        .with_identifiers(app_id="ctx-app", partition_key="pk")
        .abuild()
    )
    await app.astep()
    assert app.state["seen"] == ["ctx-app", "pk", 0, "look"]
    await app.astep()
    assert app.state["seen"] == ["ctx-app", "pk", 1, "look"]
    plain = await single_action_app(sees_context_sync)
    await plain.astep(inputs={"label": "L"})
    assert plain.state["seen"] == "L:0"


async def test_a_streaming_function_action_receives_the_application_context() -> None:
    @streaming_action(reads=[], writes=["seen"])
    async def streams(
        state: State, __context: ApplicationContext
    ) -> AsyncIterator[tuple[dict[str, Any], State | None]]:
        yield {"partial": __context.action_name}, None
        yield {}, state.update(seen=__context.sequence_id)

    app = await single_action_app(streams, name="s")
    await app.astep()
    assert app.state["seen"] == 0


class ContextAction(Action):
    """A class-based action asks for the context by listing __context in its inputs; Python
    mangles the parameter name in the class body, which is handled."""

    @property
    def reads(self) -> list[str]:
        return []

    @property
    def writes(self) -> list[str]:
        return ["seen"]

    @property
    def inputs(self) -> list[str]:
        return ["__context", "label"]

    def run(self, state: State, __context: ApplicationContext, label: str) -> dict[str, Any]:
        return {"seen": f"{label}@{__context.action_name}"}

    def update(self, result: dict[str, Any], state: State) -> State:
        return state.update(**result)


async def test_a_class_action_receives_the_application_context() -> None:
    app = await single_action_app(ContextAction(), name="cls")
    with pytest.raises(MissingInputError, match="label") as info:
        await app.astep()
    assert info.value.missing == ["label"]
    await app.astep(inputs={"label": "hi"})
    assert app.state["seen"] == "hi@cls"


async def test_inputs_starting_with_a_double_underscore_are_refused() -> None:
    app = await single_action_app(sees_context_sync)
    with pytest.raises(ReservedInputError, match="__context") as info:
        await app.astep(inputs={"__context": "forged"})
    assert isinstance(info.value, ValueError)
    assert info.value.keys == ["__context"]
    assert app.sequence_id is None


def test_a_double_underscore_parameter_other_than_context_is_refused() -> None:
    with pytest.raises(TypeError, match="__tracer"):

        @action(reads=[], writes=[])
        def traced(state: State, __tracer: Any) -> State:
            return state

    @action(reads=[], writes=[])
    def defaulted(state: State, __tracer: Any = None) -> State:
        return state

    assert defaulted.required_inputs == frozenset()


async def test_a_bound_context_is_not_replaced() -> None:
    fixed = ApplicationContext(app_id="fixed", partition_key=None, sequence_id=9, action_name="z")
    app = await single_action_app(sees_context.bind(__context=fixed), name="look")
    await app.astep()
    assert app.state["seen"] == ["fixed", None, 9, "z"]
