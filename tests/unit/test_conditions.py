"""Transition conditions: default, expr, when, their combinations, and the expr sandbox."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Callable, Iterator
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
    safe_expr,
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
    assert condition.name == "done=True, mode=fast"  # Burr's rendering: no quotes
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
    assert combined.name == "a=1 & b > 2 | ~default"  # as Burr renders it
    assert repr(~when(a=1)) == "condition: ~a=1"


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
        "2 ** 10**10",
        "'a' * 10**10",
        "[0] * 10**9",
        "len(sum([[0]] * 10**7, [])) > 0",
        "1 << 10000000000",
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


# -- the sandbox's limits -----------------------------------------------------------------------
#
# Each hostile case must raise ConditionError for the stated reason, with no MemoryError or
# RecursionError behind it, allocating well under 10 MB. Returning at all is the time bound: the
# unguarded versions of these allocate gigabytes or never finish.

_TEN_MB = 10 * 2**20


def _refused_within_bounds(expression: Any, values: dict[str, Any], reason: str) -> ConditionError:
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    baseline, _ = tracemalloc.get_traced_memory()
    try:
        with pytest.raises(ConditionError, match=reason) as info:
            expr(expression).run(State(values))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not tracing:
            tracemalloc.stop()
    assert peak - baseline < _TEN_MB
    assert not isinstance(info.value.__cause__, MemoryError | RecursionError)
    return info.value


@pytest.mark.parametrize(
    ("expression", "values", "reason"),
    [
        ("'a' * 10000000000", {}, "10,000,000,000 items or characters.*at most 10,000"),
        ("'a' * n", {"n": 10**10}, "at most 10,000"),
        ("[0] * 1000000000", {}, "at most 10,000"),
        ("sorted([0] * 100000000)", {}, "at most 10,000"),
        ("len(sum([[0]] * 10000000, [])) > 0", {}, "at most 10,000"),
        ("sum(xs, [])", {"xs": [[0]] * 1000}, r"sum\(\) takes a number"),
        ("['a' * 9999] * 2", {}, "at most 10,000"),
        ("[[0] * 1000] * 1000", {}, "repeats only strings"),
        ("xs * 2", {"xs": [[0] * 5000]}, "repeats only strings"),
        ("[" + "[0] * 9999, " * 11 + "]", {}, "at most 100,000"),
        ("'%0999999999d' % 0", {}, "string formatting"),
        ("fmt % 0", {"fmt": "%0999999999d"}, "string formatting"),
        ("n * n * n", {"n": 2**2000}, "4,096 bits"),
        ("round(5, -1000000000)", {}, "ndigits"),
        ("s.strip(chars) == ''", {"s": "a" * 9000, "chars": "b" * 9000 + "a"}, "at most 100 char"),
    ],
    ids=[
        "str-times-literal",
        "str-times-state-int",
        "list-times-literal",
        "sorted-huge",
        "sum-of-lists",
        "sum-start-list",
        "list-of-long-strs",
        "list-of-lists",
        "state-list-of-lists",
        "total-budget",
        "format-width",
        "format-from-state",
        "int-product",
        "round-ndigits",
        "strip-chars",
    ],
)
def test_expr_hostile_evaluation_is_bounded(
    expression: str, values: dict[str, Any], reason: str
) -> None:
    error = _refused_within_bounds(expression, values, reason)
    assert repr(expression if len(expression) <= 120 else expression[:80]) in str(error)
    assert error.condition == expression


@pytest.mark.parametrize(
    "expression",
    ["-" * 100000 + "1", "x" + " + x" * 200000, "(" * 5000 + ")" * 5000, "a" * 1001],
    ids=["unary-chain", "addition-chain", "parentheses", "long-name"],
)
def test_expr_refuses_oversized_source_before_parsing(expression: str) -> None:
    error = _refused_within_bounds(expression, {}, "conditions may be at most 1,000")
    assert f"({len(expression):,} characters)" in str(error)
    assert error.condition == expression


def test_expr_accepts_a_source_at_the_size_cap() -> None:
    assert expr("a" * 1000).keys == ["a" * 1000]
    with pytest.raises(ConditionError, match="1,000"):
        expr(" " + "a" * 1000)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [("not " * 60 + "x", "nests deeper than 50"), ("a" + " < a" * 200, "more than 500")],
    ids=["deep", "wide"],
)
def test_expr_refuses_too_deep_or_too_large_trees(expression: str, reason: str) -> None:
    with pytest.raises(ConditionError, match=reason) as info:
        expr(expression)
    assert "Compute the value in an action" in str(info.value)


@pytest.mark.parametrize("expression", [123, b"count > 3", None, ["count > 3"]])
def test_expr_refuses_a_non_string(expression: Any) -> None:
    with pytest.raises(ConditionError, match="takes the condition as a string") as info:
        expr(expression)
    assert type(expression).__name__ in str(info.value)


@pytest.mark.parametrize(
    ("expression", "attribute"),
    [
        ("x.real > 0", "real"),
        ("x.lower == 1", "lower"),
        ("g.gi_frame.f_locals", "f_locals"),
        ("g.gi_code", "gi_code"),
        ("len(g.gi_frame.f_back.f_globals) > 0", "f_globals"),
        ("e.with_traceback(None)", "with_traceback"),
        ("fmt.format(x)", "format"),
        ("len(d.items()) > 0", "items"),
        ("question.split()[0] == 'exit'", "split"),
    ],
)
def test_expr_reads_no_attribute_but_the_listed_methods(expression: str, attribute: str) -> None:
    with pytest.raises(ConditionError) as info:
        expr(expression)
    message = str(info.value)
    assert repr(attribute) in message
    assert "lower(), upper(), strip(), startswith(), endswith(), get()" in message
    assert info.value.condition == expression


def _generator() -> Iterator[int]:
    yield from range(3)


@pytest.mark.parametrize(
    "expression", ["any(g)", "max(g) > 0", "sorted(g) == []", "sum(g) > 0", "-1 in g"]
)
@pytest.mark.parametrize("make", [_generator, itertools.count], ids=["generator", "count"])
def test_expr_never_consumes_an_iterator_in_the_state(
    expression: str, make: Callable[[], Iterator[int]]
) -> None:
    iterator = make()
    _refused_within_bounds(expression, {"g": iterator}, "iterator")
    assert next(iterator) == 0  # untouched


@pytest.mark.parametrize(
    ("expression", "values", "expected"),
    [
        ("'exit' in question.lower()", {"question": "Please EXIT now"}, True),
        ("name.upper() == 'BOB'", {"name": "bob"}, True),
        ("answer.strip() == ''", {"answer": "  \n"}, True),
        ("answer.strip('-') == 'ok'", {"answer": "--ok--"}, True),
        ("url.startswith('https://')", {"url": "http://example.com"}, False),
        ("path.endswith(('.md', '.py'))", {"path": "notes.md"}, True),
        ("meta.get('k') == 1", {"meta": {"k": 1}}, True),
        ("meta.get('missing', 0) == 0", {"meta": {"k": 1}}, True),
        ("messages[-1].get('role') == 'user'", {"messages": [{"role": "user"}]}, True),
    ],
)
def test_expr_calls_the_listed_str_and_dict_methods(
    expression: str, values: dict[str, Any], expected: bool
) -> None:
    assert expr(expression).run(State(values)) is expected


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def get(self, key: object) -> bool:
        self.calls.append(key)
        return True


class _Shouty(str):
    __slots__ = ()

    def lower(self) -> str:
        return "HACKED"


def test_expr_methods_run_only_on_a_str_or_dict() -> None:
    with pytest.raises(ConditionError, match="str method, but the value is of type int"):
        expr("x.lower() == 'a'").run(State({"x": 5}))
    with pytest.raises(ConditionError, match="dict method, but the value is of type list"):
        expr("x.get(0) == 1").run(State({"x": [1]}))
    recorder = _Recorder()
    with pytest.raises(ConditionError, match="dict method"):
        expr("x.get('k')").run(State({"x": recorder}))
    assert recorder.calls == []
    # A str subclass's own lower() is never called; str.lower is.
    assert expr("x.lower() == 'hi'").run(State({"x": _Shouty("Hi")})) is True


@pytest.mark.parametrize(
    ("expression", "values"),
    [
        (
            "messages[-1]['role'] == 'user' and count < 3",
            {"messages": [{"role": "user"}], "count": 1},
        ),
        ("'ab' * 5000 == s", {"s": "ab" * 5000}),
        ("[0] * 10000 == xs", {"xs": [0] * 10000}),
        ("['ab', 1] * 3 == xs", {"xs": ["ab", 1] * 3}),
        ("xs + ys == [1, 2, 3]", {"xs": [1], "ys": [2, 3]}),
        ("sum(xs) == 6 and sum(xs, 0.5) == 6.5", {"xs": [1, 2, 3]}),
        ("sorted(xs)[0] == 1 and max(xs) == 3 and min(3, 4) == 3", {"xs": [3, 1, 2]}),
        ("n % 2 == 1 and n // 2 == 1 and -n < 0", {"n": 3}),
        ("round(x, 2) == 1.23 and str(n) == '3' and int(s) == 3", {"x": 1.2345, "n": 3, "s": "3"}),
        ("x * y > 1", {"x": 2**2000, "y": 2**2000}),
        ("len(text[-5:]) == 5 and 'end' in text.lower()", {"text": "x" * 90000 + "END"}),
    ],
)
def test_expr_limits_leave_normal_use_alone(expression: str, values: dict[str, Any]) -> None:
    assert expr(expression).run(State(values)) is True


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("{**x} == {}", r"unpacks a dict with \*\*"),
        ("'%s' % x == 'a'", "string formatting"),
        ("x == b'a'", "constant of type bytes"),
        ("x == 1j", "constant of type complex"),
        ("x == ...", "constant of type ellipsis"),
        ("len", "without calling it"),
        ("sorted > 1", "without calling it"),
        ("len(x, y)", r"len\(\) with 2 argument"),
        ("x.lower(1)", r"\.lower\(\) with 1 argument"),
    ],
)
def test_expr_rejects_more_at_creation(expression: str, reason: str) -> None:
    with pytest.raises(ConditionError, match=reason) as info:
        expr(expression)
    assert repr(expression) in str(info.value)


def test_expr_errors_shorten_a_long_expression() -> None:
    expression = "x." + "a" * 900 + "() == 1"
    with pytest.raises(ConditionError) as info:
        expr(expression)
    message = str(info.value)
    assert f"({len(expression):,} characters)" in message
    assert len(message) < 500
    assert info.value.condition == expression


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


# -- Burr's spellings: lmda, Condition(keys, fn), reads, when's suffixes, rendering --------------


def _is_long(state: State) -> bool:
    return bool(state["turns"] >= 3)


def test_lmda_is_burrs_lambda_condition() -> None:
    condition = Condition.lmda(_is_long, ["turns"])
    assert condition.name == "lmda__is_long_"
    assert condition.reads == condition.keys == ["turns"]
    assert condition.run(State({"turns": 3})) is True
    assert condition.run(State({"turns": 1})) is False
    assert Condition.lmda(lambda s: True, []).name == "lmda_<lambda>_"


def test_condition_constructor_with_and_without_a_name() -> None:
    named = Condition(["turns"], _is_long, "long chat")
    assert named.name == str(named) == "long chat"
    unnamed = Condition(["turns"], _is_long)
    assert unnamed.name == "_is_long"
    assert unnamed.resolver(State({"turns": 5})) is True
    optional = Condition(["turns"], _is_long, optional_keys=["extra"])
    assert optional.optional_keys == ["extra"] and optional.reads == ["turns"]


def test_condition_checks_its_keys_before_calling_the_resolver() -> None:
    calls: list[State] = []

    def record(state: State) -> bool:
        calls.append(state)
        return True

    condition = Condition(["a", "b"], record, "needs a and b")
    with pytest.raises(ConditionError, match=r"\['b'\]") as info:
        condition.run(State({"a": 1}))
    assert info.value.key == "b"
    assert calls == []
    assert condition.run(State({"a": 1, "b": 2})) is True


# Each of Burr's suffixes: (kwargs, a state where it holds, a state where it does not).
SUFFIXES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ({"n__eq": 3}, {"n": 3}, {"n": 4}),
    ({"n__ne": 0}, {"n": 1}, {"n": 0}),
    ({"n__lt": 3}, {"n": 2}, {"n": 3}),
    ({"n__lte": 3}, {"n": 3}, {"n": 4}),
    ({"age__gt": 18}, {"age": 19}, {"age": 18}),
    ({"age__gte": 18}, {"age": 18}, {"age": 17}),
    ({"status__in": ["a", "b"]}, {"status": "a"}, {"status": "c"}),
    ({"status__notin": ("x",)}, {"status": "a"}, {"status": "x"}),
    ({"tags__contains": "python"}, {"tags": ["python", "go"]}, {"tags": ["go"]}),
    ({"value__is": None}, {"value": None}, {"value": 0}),
    ({"value__isnot": None}, {"value": 0}, {"value": None}),
    (
        {"age__gte": 18, "status": "active"},
        {"age": 20, "status": "active"},
        {"age": 20, "status": "x"},
    ),
]


@pytest.mark.parametrize(("kwargs", "holds", "fails"), SUFFIXES, ids=lambda v: str(v))
def test_when_suffixes(
    kwargs: dict[str, Any], holds: dict[str, Any], fails: dict[str, Any]
) -> None:
    condition = when(**kwargs)
    assert condition.run(State(holds)) is True
    assert condition.run(State(fails)) is False
    assert sorted(condition.reads) == sorted(holds)


@pytest.mark.parametrize(("kwargs", "holds", "fails"), SUFFIXES, ids=lambda v: str(v))
def test_when_agrees_with_burr(
    kwargs: dict[str, Any], holds: dict[str, Any], fails: dict[str, Any]
) -> None:
    burr_action = pytest.importorskip("burr.core.action")
    burr_state = pytest.importorskip("burr.core.state")
    theirs = burr_action.Condition.when(**kwargs)
    ours = when(**kwargs)
    assert ours.name == theirs.name
    assert ours.reads == theirs.reads
    for values in (holds, fails):
        assert ours.run(State(values)) is theirs.run(burr_state.State(values))["PROCEED"]


def test_an_unknown_suffix_is_part_of_the_key_as_in_burr() -> None:
    condition = when(a__ge=1)  # Burr has __gte, not __ge
    assert condition.reads == ["a__ge"]
    assert condition.name == "a__ge=1"
    assert condition.run(State({"a__ge": 1})) is True


def test_when_with_only_a_suffix_is_refused() -> None:
    with pytest.raises(ConditionError, match="__gt"):
        when(__gt=1)


def test_when_comparison_that_raises_is_a_condition_error() -> None:
    with pytest.raises(ConditionError, match="'n'") as info:
        when(n__gt=1).run(State({"n": "text"}))
    assert isinstance(info.value.__cause__, TypeError)


def test_rendering_matches_burr() -> None:
    burr_core = pytest.importorskip("burr.core")
    cases = [
        (lambda m: m.when(foo="bar"), "foo=bar"),
        (lambda m: m.when(b=2, a="x"), "a=x, b=2"),
        (lambda m: m.when(age__gte=18, name__in=["x"]), "age>=18, name in ['x']"),
        (lambda m: (m.when(a=1) & m.expr("b > 2")) | ~m.default, "a=1 & b > 2 | ~default"),
        (lambda m: ~(m.when(a=1) | m.when(b=2)), "~a=1 | b=2"),
    ]
    import burr_async

    for make, expected in cases:
        assert make(burr_async).name == make(burr_core).name == expected
        assert str(make(burr_async)) == expected
        assert repr(make(burr_async)) == repr(make(burr_core)) == f"condition: {expected}"


def test_str_of_when_is_its_name() -> None:
    assert str(when(foo="bar")) == "foo=bar"
    assert str(~when(foo="bar")) == "~foo=bar"


def test_combining_with_a_non_condition_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        _ = when(a=1) & True  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = when(a=1) | "b"  # type: ignore[operator]


def test_safe_expr_is_expr() -> None:
    assert safe_expr("n > 1").run(State({"n": 2})) is True
    assert Condition.safe_expr("n > 1").name == "n > 1"
    assert safe_expr is expr
