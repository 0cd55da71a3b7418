"""Graph: construction, validation, next-action choice and the Mermaid diagram."""

from __future__ import annotations

import re

import pytest

from burr_async import (
    ApplicationGraph,
    ConfigurationError,
    Graph,
    GraphBuilder,
    GraphValidationError,
    Result,
    State,
    Transition,
    action,
    default,
    expr,
    when,
)

from ._support import chatbot_app


@action(reads=[], writes=[])
def alpha(state: State) -> State:
    return state


@action(reads=[], writes=[])
def beta(state: State) -> State:
    return state


@action(reads=[], writes=[])
def gamma(state: State) -> State:
    return state


ACTIONS = {"alpha": alpha, "beta": beta, "gamma": gamma}


def test_transition_defaults_to_the_default_condition() -> None:
    transition = Transition("alpha", "beta")
    assert transition.condition is default
    assert transition.from_ == "alpha"
    assert transition.to == "beta"


def test_graph_exposes_copies_of_actions_and_transitions() -> None:
    transitions = [Transition("alpha", "beta"), Transition("beta", "gamma")]
    graph = Graph(ACTIONS, transitions)
    assert graph.actions == ACTIONS
    assert graph.transitions == transitions
    graph.actions.pop("alpha")
    graph.transitions.clear()
    assert set(graph.actions) == {"alpha", "beta", "gamma"}
    assert len(graph.transitions) == 2
    assert graph.action("beta") is beta


def test_unknown_action_lookup_names_it() -> None:
    graph = Graph(ACTIONS, [])
    with pytest.raises(GraphValidationError, match="'delta'") as info:
        graph.action("delta")
    assert "alpha" in str(info.value)


@pytest.mark.parametrize(
    "transition",
    [Transition("alpha", "nowhere"), Transition("nowhere", "alpha")],
    ids=["to", "from"],
)
def test_transition_naming_an_unknown_action(transition: Transition) -> None:
    with pytest.raises(GraphValidationError, match="nowhere") as info:
        Graph(ACTIONS, [transition])
    assert "['alpha', 'beta', 'gamma']" in str(info.value)


def test_next_action_tries_transitions_in_order() -> None:
    graph = Graph(
        ACTIONS,
        [
            Transition("alpha", "beta", when(go="beta")),
            Transition("alpha", "gamma", expr("go != 'none'")),
            Transition("alpha", "alpha"),
        ],
    )
    assert graph.next_action("alpha", State({"go": "beta"})) is beta
    assert graph.next_action("alpha", State({"go": "gamma"})) is gamma
    assert graph.next_action("alpha", State({"go": "none"})) is alpha
    assert graph.next_action("gamma", State({"go": "beta"})) is None


def test_validate_entrypoint_missing() -> None:
    graph = Graph(ACTIONS, [Transition("alpha", "beta"), Transition("alpha", "gamma")])
    with pytest.raises(GraphValidationError, match="no entrypoint"):
        graph.validate_entrypoint(None)


def test_validate_entrypoint_unknown() -> None:
    graph = Graph(ACTIONS, [Transition("alpha", "beta"), Transition("alpha", "gamma")])
    with pytest.raises(GraphValidationError, match="'omega'"):
        graph.validate_entrypoint("omega")


def test_validate_entrypoint_unreachable_names_the_actions() -> None:
    graph = Graph(ACTIONS, [Transition("alpha", "beta"), Transition("gamma", "alpha")])
    with pytest.raises(GraphValidationError) as info:
        graph.validate_entrypoint("alpha")
    assert "['gamma']" in str(info.value)
    assert "'alpha'" in str(info.value)
    graph.validate_entrypoint("gamma")


def test_mermaid_lists_actions_and_condition_labels() -> None:
    graph = Graph(
        {**ACTIONS, "the end": Result("x")},
        [
            Transition("alpha", "beta", expr("count >= 3")),
            Transition("alpha", "gamma", ~when(done=True)),
            Transition("alpha", "the end"),
            Transition("beta", "alpha", expr('mode == "x"')),
        ],
    )
    text = graph.to_mermaid()
    assert text.startswith("flowchart TD\n")
    assert text.endswith("\n")
    for name in ("alpha", "beta", "gamma", "the end"):
        assert f'["{name}"]' in text
    assert '-- "count >= 3" -->' in text
    assert '-- "~done=True" -->' in text
    assert "mode == #quot;x#quot;" in text
    assert re.search(r"^    a0_alpha --> a3_the_end$", text, re.MULTILINE)
    assert "style" not in text


def test_mermaid_highlight() -> None:
    graph = Graph(ACTIONS, [Transition("alpha", "beta")])
    text = graph.to_mermaid(highlight="beta")
    style_lines = [line for line in text.splitlines() if "style" in line]
    assert len(style_lines) == 1
    assert "beta" in style_lines[0]
    assert "style" not in graph.to_mermaid(highlight="unknown")


@pytest.mark.anyio
async def test_application_graph_and_visualize() -> None:
    app = await chatbot_app()
    text = app.graph.to_mermaid()
    for name in ("user_input", "respond", "goodbye"):
        assert name in text
    assert "'exit' in prompt" in text
    assert app.visualize() == text


# -- GraphBuilder, tags, ApplicationGraph ------------------------------------------------------


@action(reads=[], writes=[], tags=["io", "fast"])
def tagged_one(state: State) -> State:
    return state


@action(reads=[], writes=[], tags=["io"])
def tagged_two(state: State) -> State:
    return state


def test_graph_builder_builds_a_reusable_graph() -> None:
    graph = (
        GraphBuilder()
        .with_actions(alpha, beta, end=Result("x"))
        .with_transitions(("alpha", "beta"), (["beta"], "end", when(x=1)), ("beta", "alpha"))
        .build()
    )
    assert isinstance(graph, Graph)
    assert set(graph.actions) == {"alpha", "beta", "end"}
    assert [(t.from_, t.to) for t in graph.transitions] == [
        ("alpha", "beta"),
        ("beta", "end"),
        ("beta", "alpha"),
    ]
    assert graph.get_action("end").name == "end"
    assert graph.get_action("alpha") is graph.action("alpha")


def test_graph_builder_with_graph_combines_graphs() -> None:
    first = GraphBuilder().with_actions(alpha, beta).with_transitions(("alpha", "beta")).build()
    combined = (
        GraphBuilder().with_graph(first).with_actions(gamma).with_transitions(("beta", "gamma"))
    ).build()
    assert set(combined.actions) == {"alpha", "beta", "gamma"}
    assert len(combined.transitions) == 2
    with pytest.raises(GraphValidationError, match="'alpha'"):
        GraphBuilder().with_graph(first).with_actions(alpha)


def test_graph_builder_refuses_what_the_application_builder_refuses() -> None:
    with pytest.raises(GraphValidationError, match="no actions"):
        GraphBuilder().build()
    with pytest.raises(GraphValidationError, match="nowhere"):
        GraphBuilder().with_actions(alpha).with_transitions(("alpha", "nowhere")).build()
    with pytest.raises(ConfigurationError, match="not an action"):
        GraphBuilder().with_actions(lambda state: state)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not a Graph"):
        GraphBuilder().with_graph("graph")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Transition"):
        GraphBuilder().with_transitions(("alpha",))  # type: ignore[arg-type]


def test_get_action_of_an_unknown_name_is_a_value_error() -> None:
    graph = Graph(ACTIONS, [])
    with pytest.raises(ValueError, match="'delta'"):
        graph.get_action("delta")


def test_get_actions_by_tag() -> None:
    graph = Graph({"one": tagged_one, "two": tagged_two, "alpha": alpha}, [])
    assert [a.name for a in graph.get_actions_by_tag("io")] == ["tagged_one", "tagged_two"]
    assert graph.get_actions_by_tag("fast") == [tagged_one]
    with pytest.raises(GraphValidationError, match="'slow'") as info:
        graph.get_actions_by_tag("slow")
    assert isinstance(info.value, ValueError)
    assert "['fast', 'io']" in str(info.value)


def test_resolve_names_expands_tags_and_checks_names() -> None:
    graph = Graph({"tagged_one": tagged_one, "tagged_two": tagged_two, "alpha": alpha}, [])
    assert graph.resolve_names(None) == frozenset()
    assert graph.resolve_names("alpha") == {"alpha"}
    assert graph.resolve_names(["@tag:io", "alpha"]) == {"tagged_one", "tagged_two", "alpha"}
    with pytest.raises(GraphValidationError, match="'nope'"):
        graph.resolve_names(["@tag:nope"])
    with pytest.raises(GraphValidationError, match="'ghost'"):
        graph.resolve_names(["ghost"])


@pytest.mark.parametrize("name", ["@entrypoint", "@tag:x", "@"])
def test_action_names_starting_with_at_are_reserved(name: str) -> None:
    with pytest.raises(GraphValidationError, match="reserved"):
        Graph({name: alpha}, [])


@pytest.mark.anyio
async def test_the_application_graph_has_the_entrypoint() -> None:
    app = await chatbot_app()
    assert isinstance(app.graph, ApplicationGraph)
    assert app.graph.entrypoint.name == "user_input"
    assert app.graph.get_action("respond").name == "respond"
