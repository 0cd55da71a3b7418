"""Transition conditions: default, expr, when, their combinations, and the expr sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from burr_async import (
    ApplicationBuilder,
    Condition,
    ConditionError,
    State,
    action,
    default,
    expr,
    when,
)

pytestmark = pytest.mark.anyio


def test_default_always_holds() -> None:
    assert default.run(State()) is True
    assert default.run(State({"x": 0})) is True
    assert default.name == "default"
    assert default.keys == []


@pytest.mark.parametrize(
    ("expression", "values", "expected"),
    [
        ("count >= 3", {"count": 3}, True),
        ("count >= 3", {"count": 2}, False),
        ("'exit' in prompt", {"prompt": "please exit now"}, True),
        ("'exit' in prompt", {"prompt": "hello"}, False),
        ("len(items) > 2", {"items": [1, 2, 3]}, True),
        ("len(items) > 2", {"items": [1]}, False),
        ("a + b == 5 and not done", {"a": 2, "b": 3, "done": False}, True),
        ("mode in ('x', 'y') or n % 2 == 1", {"mode": "z", "n": 3}, True),
        ("data['k'][0] == 1", {"data": {"k": [1]}}, True),
        ("max(xs) - min(xs) < 2", {"xs": [4, 5]}, True),
        ("x.real > 0", {"x": 5}, True),
        ("y if flag else z", {"flag": False, "y": 1, "z": 0}, False),
        ("value is None", {"value": None}, True),
    ],
)
def test_expr_evaluates_over_state_keys(
    expression: str, values: dict[str, Any], expected: bool
) -> None:
    condition = expr(expression)
    assert condition.run(State(values)) is expected
    assert condition.name == expression


def test_expr_keys_are_state_names_only() -> None:
    assert expr("len(items) > limit and True").keys == ["items", "limit"]
    assert expr("max(xs) > 0").keys == ["xs"]
    assert expr("1 < 2").keys == []


def test_expr_allowed_call_does_not_need_the_function_in_state() -> None:
    assert expr("len(x) > 2").run(State({"x": "abcd"})) is True


def test_when() -> None:
    condition = when(done=True, mode="fast")
    assert condition.keys == ["done", "mode"]
    assert condition.name == "done=True, mode='fast'"
    assert condition.run(State({"done": True, "mode": "fast"})) is True
    assert condition.run(State({"done": True, "mode": "slow"})) is False
    assert condition.run(State({"done": False, "mode": "fast"})) is False


def test_when_needs_a_key() -> None:
    with pytest.raises(ConditionError, match="when"):
        when()


def test_static_constructors_on_condition() -> None:
    assert Condition.expr("n > 1").run(State({"n": 2})) is True
    assert Condition.when(n=1).run(State({"n": 1})) is True


@pytest.mark.parametrize(("a", "b"), [(True, True), (True, False), (False, True), (False, False)])
def test_combinators(a: bool, b: bool) -> None:
    state = State({"a": a, "b": b})
    ca, cb = when(a=True), expr("b")
    assert (~ca).run(state) is (not a)
    assert (ca & cb).run(state) is (a and b)
    assert (ca | cb).run(state) is (a or b)
    assert (~(ca & ~cb)).run(state) is (not (a and not b))


def test_combinator_names_and_keys() -> None:
    combined = (when(a=1) & expr("b > 2")) | ~default
    assert combined.keys == ["a", "b"]
    assert combined.name == "((a=1) & (b > 2)) | (~(default))"
    assert repr(~when(a=1)) == "Condition(~(a=1))"


def test_and_short_circuits() -> None:
    # The right side reads a missing key, but is never evaluated.
    assert (when(a=False) & expr("missing > 1")).run(State({"a": True})) is False
    assert (when(a=True) | expr("missing > 1")).run(State({"a": True})) is True


# -- the sandbox -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "().__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "x.__class__",
        "x._private",
        "x.__dict__",
        "open('x')",
        "eval('1')",
        "exec('1')",
        "getattr(x, 'y')",
        "x.upper()",
        "len.__self__",
        "__builtins__",
        "lambda: 1",
        "(lambda: 1)()",
        "[i for i in x]",
        "{i for i in x}",
        "{i: 1 for i in x}",
        "any(i for i in x)",
        "(y := 1)",
        "f'{x}'",
        "x ** 1000",
        "sorted(x, key=len)",
        "len(*x)",
    ],
)
def test_expr_rejects_unsafe_code_at_creation(expression: str) -> None:
    with pytest.raises(ConditionError) as info:
        expr(expression)
    assert repr(expression) in str(info.value)
    assert info.value.condition == expression


def test_expr_rejects_syntax_errors() -> None:
    with pytest.raises(ConditionError, match="not a valid expression") as info:
        expr("count >=")
    assert "'count >='" in str(info.value)
    with pytest.raises(ConditionError):
        expr("x = 1")


def test_expr_builtins_are_not_reachable() -> None:
    # A name that is not a whitelisted function is a state key, never a builtin.
    condition = expr("print")
    assert condition.keys == ["print"]
    with pytest.raises(ConditionError, match="'print'"):
        condition.run(State())
    assert condition.run(State({"print": 0})) is False


def test_missing_key_at_evaluation_names_the_key() -> None:
    condition = expr("count > 3")
    with pytest.raises(ConditionError) as info:
        condition.run(State({"other": 1}))
    assert "'count'" in str(info.value)
    assert "count > 3" in str(info.value)
    assert info.value.key == "count"


def test_when_missing_key_at_evaluation_names_the_key() -> None:
    with pytest.raises(ConditionError) as info:
        when(done=True).run(State())
    assert "'done'" in str(info.value)
    assert info.value.key == "done"


def test_expr_failing_at_evaluation_chains_the_cause() -> None:
    with pytest.raises(ConditionError, match="ZeroDivisionError") as info:
        expr("x / 0 > 1").run(State({"x": 1}))
    assert isinstance(info.value.__cause__, ZeroDivisionError)


# -- transitions are tried in order ------------------------------------------------------------


@action(reads=[], writes=[])
def start(state: State) -> State:
    return state


@action(reads=[], writes=[])
def first(state: State) -> State:
    return state


@action(reads=[], writes=[])
def second(state: State) -> State:
    return state


@action(reads=[], writes=[])
def fallback(state: State) -> State:
    return state


async def _next_after_start(x: int, *, reverse: bool) -> str:
    specific = [("start", "first", when(x=1)), ("start", "second", expr("x >= 1"))]
    if reverse:
        specific.reverse()
    app = await (
        ApplicationBuilder()
        .with_actions(start, first, second, fallback)
        .with_transitions(*specific, ("start", "fallback", default))
        .with_state(x=x)
        .with_entrypoint("start")
        .abuild()
    )
    await app.astep()
    outcome = await app.astep()
    assert outcome is not None
    return outcome[0].name


async def test_first_matching_transition_wins() -> None:
    assert await _next_after_start(1, reverse=False) == "first"
    assert await _next_after_start(1, reverse=True) == "second"
    assert await _next_after_start(2, reverse=False) == "second"
    assert await _next_after_start(0, reverse=False) == "fallback"
