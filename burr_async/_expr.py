"""The sandbox behind :func:`burr_async.conditions.expr`: check, compile, evaluate.

The source is size-checked, parsed once, checked against caps and a whitelist of syntax,
functions and methods, and compiled into closures, one per AST node; user text never reaches
``eval``. Operations that could build something large check the size first, so a hostile
expression ends in bounded time and memory with :class:`Refused`. State values are the
application's own (comparing them runs their methods); the caps bound what the *expression*
adds. The user-facing rules are in ``docs/concepts/transitions.md``: keep the two in step.
"""

from __future__ import annotations

import ast
import numbers
import operator
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from burr_async.errors import ConditionError

__all__ = ["MAX_SOURCE_CHARS", "Compiled", "Refused", "compile_expression", "shorten"]

MAX_SOURCE_CHARS = 1_000
"""Longest accepted source, checked before parsing so the parser's own limits never surface."""
MAX_NODES = 500
"""Most AST nodes (operators and load contexts included); bounds the steps of one evaluation."""
MAX_DEPTH = 50
"""Deepest AST nesting; keeps compilation and evaluation far from the recursion limit."""
MAX_ITEMS = 10_000
"""Most items (or characters) one value built by the expression may have."""
MAX_TOTAL = 100_000
"""Most items (or characters) all values built or copied in one evaluation may add up to."""
MAX_INT_BITS = 4_096
"""Largest product, in bits, that ``*`` may compute from two integers."""
MAX_STRIP_CHARS = 100
"""Longest ``chars`` argument of ``strip`` (its cost is length of string x length of chars)."""
MAX_ROUND_DIGITS = 100
"""Largest ``abs(ndigits)`` of ``round``: ``round(5, -10**9)`` would compute ``10**10**9``."""

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    *(ast.Expression, ast.Constant, ast.Name, ast.Load, ast.List, ast.Tuple, ast.Set, ast.Dict),
    *(ast.Subscript, ast.Slice, ast.Attribute, ast.Call, ast.IfExp),
    *(ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd),
    *(ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod),
    *(ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE),
    *(ast.In, ast.NotIn, ast.Is, ast.IsNot),
)
"""Every syntax node a condition may contain; anything else is refused by name."""
_CONSTANT_TYPES = (str, int, float, bool, type(None))
_SEQUENCES = (str, bytes, list, tuple)
_COLLECTIONS = (str, bytes, list, tuple, set, frozenset, dict)
_REPEATABLE = frozenset({str, bytes, int, float, complex, bool, type(None)})


_TOO_BIG = "Compute large values in an action, write the result to the state, and test that"
_WRONG_TYPE = "Check what the state holds under the keys it reads, or convert it in an action"


class Refused(Exception):
    """Evaluation stopped because the expression broke a size cap or a type rule.

    The message says which, then what to do; :func:`burr_async.conditions.expr` turns it into a
    ``ConditionError``.
    """

    def __init__(self, problem: str, advice: str = _WRONG_TYPE) -> None:
        super().__init__(f"{problem}. {advice}.")


class _Run:
    """One evaluation: the state's values, and how much the expression has built so far."""

    __slots__ = ("built", "data")

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.built = 0

    def build(self, size: int, what: str) -> None:
        """Account for a new value of ``size`` items built by ``what``, before building it."""
        _check_size(size, what)
        self.copy(size, what)

    def copy(self, size: int, what: str) -> None:
        """Account for a copy of ``size`` items made by ``what`` (a slice, ``lower()``, ...)."""
        self.built += size
        if self.built > MAX_TOTAL:
            raise Refused(
                f"{what} would bring what the expression builds to {self.built:,} items or "
                f"characters; one evaluation may build at most {MAX_TOTAL:,}",
                _TOO_BIG,
            )


def _check_size(size: int, what: str) -> None:
    """Refuse a value of more than ``MAX_ITEMS`` items before ``what`` builds it."""
    if size > MAX_ITEMS:
        raise Refused(
            f"{what} would build a value of {size:,} items or characters; one value may have at "
            f"most {MAX_ITEMS:,}",
            _TOO_BIG,
        )


_Node = Callable[[_Run], Any]
_Function = Callable[[_Run, list[Any]], Any]


class Compiled:
    """A checked expression: the state keys it reads, and a function evaluating it over them.

    ``evaluate(data)`` expects every name in ``keys`` to be present in ``data``; it returns the
    expression's value, raises :class:`Refused` when a cap or type rule is broken, and lets any
    other error (``ZeroDivisionError``, ``TypeError``, ...) propagate for the caller to wrap.
    """

    __slots__ = ("_root", "keys")

    def __init__(self, root: _Node, keys: list[str]) -> None:
        self._root = root
        self.keys = keys

    def evaluate(self, data: Mapping[str, Any]) -> Any:
        """The expression's value, with state keys read from ``data``."""
        return self._root(_Run(data))


def shorten(source: str) -> str:
    """``repr(source)``, cut to its first 80 characters (and its length) when it is long."""
    if len(source) <= 120:
        return repr(source)
    return f"{source[:80]!r}... ({len(source):,} characters)"


def _kind(value: object) -> str:
    return type(value).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Number)


# -- evaluation-time guards --------------------------------------------------------------------


def _repeat(run: _Run, sequence: Any, times: int) -> Any:
    """``sequence * times``, sized first; a list's str items count their characters, and items
    that are containers are refused (repeating them would multiply what comparisons walk)."""
    if times <= 0:
        return sequence[:0]
    size = len(sequence) * times
    if isinstance(sequence, list | tuple):
        _check_size(size, "`*`")
        kinds = set(map(type, sequence))
        if not kinds <= _REPEATABLE:
            odd = sorted(kind.__name__ for kind in kinds - _REPEATABLE)
            raise Refused(
                "`*` repeats only strings, and lists or tuples of numbers, strings and None; "
                f"this {_kind(sequence)} holds {', '.join(odd)}"
            )
        if kinds & {str, bytes}:
            size += times * sum(len(item) for item in sequence if type(item) in (str, bytes))
    run.build(size, "`*`")
    return sequence * times


def _mul(run: _Run, left: Any, right: Any) -> Any:
    """``*``: numbers (an int product capped in bits), or a sequence repeated by an int."""
    if _is_number(left) and _is_number(right):
        if isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            if bits > MAX_INT_BITS:
                raise Refused(
                    f"`*` of two integers could give a {bits:,}-bit number; the limit is "
                    f"{MAX_INT_BITS:,} bits",
                    _TOO_BIG,
                )
        return left * right
    if isinstance(left, _SEQUENCES) and isinstance(right, int):
        return _repeat(run, left, right)
    if isinstance(right, _SEQUENCES) and isinstance(left, int):
        return _repeat(run, right, left)
    raise Refused(
        "`*` multiplies numbers, or repeats a str, list or tuple by an int; "
        f"got {_kind(left)} and {_kind(right)}"
    )


def _add(run: _Run, left: Any, right: Any) -> Any:
    """``+``: numbers, or two sequences joined into one of at most ``MAX_ITEMS`` items."""
    if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        run.build(len(left) + len(right), "`+`")
        return operator.add(left, right)
    if _is_number(left) and _is_number(right):
        return left + right
    raise Refused(
        f"`+` adds numbers, or joins two strs, lists or tuples; got {_kind(left)} and "
        f"{_kind(right)}"
    )


def _numeric(symbol: str, apply: Callable[[Any, Any], Any]) -> Callable[[_Run, Any, Any], Any]:
    """The operator ``symbol`` restricted to numbers (so ``%`` never formats a string)."""

    def guarded(run: _Run, left: Any, right: Any) -> Any:
        if _is_number(left) and _is_number(right):
            return apply(left, right)
        if symbol == "%" and isinstance(left, str | bytes):
            raise Refused(
                "`%` string formatting is not allowed; `%` is the numeric remainder only",
                "Compare the values directly instead of formatting them",
            )
        raise Refused(f"`{symbol}` works on numbers only; got {_kind(left)} and {_kind(right)}")

    return guarded


_BINARY: dict[type[ast.operator], Callable[[_Run, Any, Any], Any]] = {
    ast.Add: _add,
    ast.Sub: _numeric("-", operator.sub),
    ast.Mult: _mul,
    ast.Div: _numeric("/", operator.truediv),
    ast.FloorDiv: _numeric("//", operator.floordiv),
    ast.Mod: _numeric("%", operator.mod),
}


def _contains(item: Any, container: Any) -> bool:
    """``item in container``, refusing an iterator, which the test would consume."""
    if isinstance(container, Iterator):
        raise Refused(
            f"`in` would consume the {_kind(container)} iterator held in the state",
            "Store a list, tuple, set or dict instead of an iterator",
        )
    return item in container


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: _contains,
    ast.NotIn: lambda item, container: not _contains(item, container),
}


def _subscript(run: _Run, value: Any, key: Any) -> Any:
    """``value[key]``; a slice of a str, bytes, list or tuple counts as a copy."""
    if isinstance(key, slice) and isinstance(value, _SEQUENCES):
        run.copy(len(range(*key.indices(len(value)))), "slicing")
    return value[key]


def _collection(value: Any, function: str) -> Any:
    """``value`` if it is a builtin, sized collection that ``function`` may walk."""
    if not isinstance(value, _COLLECTIONS):
        raise Refused(
            f"{function}() takes a str, list, tuple, set or dict; got {_kind(value)}"
            + (" (an iterator would be consumed)" if isinstance(value, Iterator) else "")
        )
    return value


def _number(value: Any, function: str) -> Any:
    if not _is_number(value):
        raise Refused(f"{function}() takes a number; got {_kind(value)}")
    return value


def _extreme(pick: Callable[..., Any], name: str) -> _Function:
    def call(run: _Run, args: list[Any]) -> Any:
        return pick(_collection(args[0], name)) if len(args) == 1 else pick(args)

    return call


def _sum(run: _Run, args: list[Any]) -> Any:
    # With a number to start from, adding a list or str item fails at once (0 + [0] is a
    # TypeError), so sum() can never concatenate: sum(lists, []) is quadratic.
    start = _number(args[1], "sum") if len(args) == 2 else 0
    return sum(_collection(args[0], "sum"), start)


def _sorted(run: _Run, args: list[Any]) -> Any:
    items = _collection(args[0], "sorted")
    run.build(len(items), "sorted()")
    return sorted(items)


def _convert(target: type, accepted: tuple[type, ...]) -> _Function:
    def call(run: _Run, args: list[Any]) -> Any:
        if args and not isinstance(args[0], accepted):
            names = ", ".join("None" if t is type(None) else t.__name__ for t in accepted)
            raise Refused(f"{target.__name__}() converts {names}; got {_kind(args[0])}")
        return target(*args)

    return call


def _round(run: _Run, args: list[Any]) -> Any:
    ndigits = args[1] if len(args) == 2 else None
    if ndigits is not None and not (isinstance(ndigits, int) and abs(ndigits) <= MAX_ROUND_DIGITS):
        raise Refused(
            f"round()'s ndigits must be an int from -{MAX_ROUND_DIGITS} to "
            f"{MAX_ROUND_DIGITS}; got {ndigits!r:.40}",
            _TOO_BIG,
        )
    return round(_number(args[0], "round"), ndigits)


# name -> (fewest arguments, most arguments, implementation)
_FUNCTIONS: dict[str, tuple[int, int, _Function]] = {
    "len": (1, 1, lambda run, args: len(args[0])),
    "abs": (1, 1, lambda run, args: abs(_number(args[0], "abs"))),
    "min": (1, MAX_NODES, _extreme(min, "min")),
    "max": (1, MAX_NODES, _extreme(max, "max")),
    "sum": (1, 2, _sum),
    "any": (1, 1, lambda run, args: any(_collection(args[0], "any"))),
    "all": (1, 1, lambda run, args: all(_collection(args[0], "all"))),
    "bool": (0, 1, lambda run, args: bool(*args)),
    "int": (0, 2, _convert(int, (int, float, str))),
    "float": (0, 1, _convert(float, (int, float, str))),
    "str": (0, 1, _convert(str, (str, int, float, type(None)))),
    "round": (1, 2, _round),
    "sorted": (1, 1, _sorted),
}
FUNCTIONS = tuple(_FUNCTIONS)
"""The functions a condition may call."""


def _text_method(name: str) -> _Function:
    """The str method ``name``, called as ``str.<name>`` so a subclass's override never runs."""
    unbound: Callable[..., Any] = getattr(str, name)

    def call(run: _Run, args: list[Any]) -> Any:
        receiver = args[0]
        chars = args[1] if name == "strip" and len(args) == 2 else None
        if chars is not None and not (isinstance(chars, str) and len(chars) <= MAX_STRIP_CHARS):
            raise Refused(
                f"strip()'s chars must be a str of at most {MAX_STRIP_CHARS} characters", _TOO_BIG
            )
        if name in ("lower", "upper", "strip"):
            run.copy(len(receiver), f"{name}()")
        return unbound(*args)

    return call


# name -> (receiver type, fewest arguments, most arguments, implementation); the
# implementation gets the receiver as args[0].
_METHODS: dict[str, tuple[type, int, int, _Function]] = {
    "lower": (str, 0, 0, _text_method("lower")),
    "upper": (str, 0, 0, _text_method("upper")),
    "strip": (str, 0, 1, _text_method("strip")),
    "startswith": (str, 1, 3, _text_method("startswith")),
    "endswith": (str, 1, 3, _text_method("endswith")),
    "get": (dict, 1, 2, lambda run, args: dict.get(*args)),
}
METHODS = tuple(_METHODS)
"""The methods a condition may call (on a str, or for ``get`` a dict)."""


# -- checking and compiling ----------------------------------------------------------------------


class _Compiler:
    """Turns a checked AST into closures, collecting the state keys its names read."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.shown = shorten(source)
        self.keys: set[str] = set()

    def refuse(self, problem: str, advice: str) -> ConditionError:
        """The error for a refused expression: what is wrong with it, then what to do."""
        return ConditionError(f"expr({self.shown}) {problem}. {advice}", condition=self.source)

    def check_shape(self, tree: ast.AST) -> None:
        """Refuse a tree over the node or depth cap, or with a node type not whitelisted.

        Iterative, so a deep tree cannot exhaust the stack before it is measured.
        """
        count, pending = 0, [(tree, 1)]
        advice = "Compute the value in an action, write it to the state, and test that key."
        while pending:
            node, depth = pending.pop()
            count += 1
            if count > MAX_NODES:
                raise self.refuse(f"has more than {MAX_NODES} syntax nodes", advice)
            if depth > MAX_DEPTH:
                raise self.refuse(f"nests deeper than {MAX_DEPTH} levels", advice)
            if not isinstance(node, _ALLOWED_NODES):
                raise self.refuse(
                    f"uses {type(node).__name__}, which conditions do not allow",
                    "Conditions allow literals, state keys, comparisons, and/or/not, arithmetic, "
                    "x if c else y, indexing and calls to the listed functions and methods.",
                )
            pending.extend((child, depth + 1) for child in ast.iter_child_nodes(node))

    def compile(self, node: ast.AST) -> _Node:
        """The closure evaluating ``node``; each node type has a ``_<TypeName>`` method."""
        method: Callable[[Any], _Node] | None = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.refuse(f"uses {type(node).__name__} there", "Rewrite that part.")
        return method(node)

    def _Expression(self, node: ast.Expression) -> _Node:
        return self.compile(node.body)

    def _Constant(self, node: ast.Constant) -> _Node:
        value = node.value
        if not isinstance(value, _CONSTANT_TYPES):
            raise self.refuse(
                f"uses a constant of type {_kind(value)}",
                "Constants may be strings, int and float numbers, True, False and None.",
            )
        return lambda run: value

    def _Name(self, node: ast.Name) -> _Node:
        name = node.id
        if name in _FUNCTIONS:
            raise self.refuse(
                f"uses the function {name!r} without calling it",
                f"Call it, as in {name}(x); state keys cannot be named like allowed functions.",
            )
        if name.startswith("__"):
            raise self.refuse(
                f"uses the name {shorten(name)}; dunder names are not allowed",
                "Rename the state key.",
            )
        self.keys.add(name)
        return lambda run: run.data[name]

    def _Attribute(self, node: ast.Attribute) -> _Node:
        raise self._refuse_attribute(node.attr, called=False)

    def _refuse_attribute(self, attr: str, *, called: bool) -> ConditionError:
        allowed = ", ".join(f"{name}()" for name in METHODS)
        what = "calls the method" if called else "reads the attribute"
        return self.refuse(
            f"{what} {shorten(attr)}, which conditions do not allow",
            f"Only these str/dict methods may be called: {allowed}, as in "
            "\"'exit' in question.lower()\"; no other attribute can be read.",
        )

    def _BoolOp(self, node: ast.BoolOp) -> _Node:
        parts = [self.compile(value) for value in node.values]
        stop_on = isinstance(node.op, ast.Or)  # `or` stops at a truthy value, `and` at a falsy

        def boolean(run: _Run) -> Any:
            value: Any = None
            for part in parts:
                value = part(run)
                if bool(value) is stop_on:
                    return value
            return value

        return boolean

    def _UnaryOp(self, node: ast.UnaryOp) -> _Node:
        operand = self.compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda run: not operand(run)
        negate = isinstance(node.op, ast.USub)
        symbol = "-" if negate else "+"

        def sign(run: _Run) -> Any:
            value = operand(run)
            if not _is_number(value):
                raise Refused(f"unary `{symbol}` works on numbers only; got {_kind(value)}")
            return -value if negate else +value

        return sign

    def _BinOp(self, node: ast.BinOp) -> _Node:
        if isinstance(node.op, ast.Mod) and (
            isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)
        ):
            raise self.refuse(
                "uses `%` string formatting, which conditions do not allow",
                "Compare the values directly; `%` is the numeric remainder only.",
            )
        left, right = self.compile(node.left), self.compile(node.right)
        apply = _BINARY[type(node.op)]
        return lambda run: apply(run, left(run), right(run))

    def _Compare(self, node: ast.Compare) -> _Node:
        first = self.compile(node.left)
        steps = [
            (_COMPARE[type(op)], self.compile(right))
            for op, right in zip(node.ops, node.comparators, strict=True)
        ]

        def compare(run: _Run) -> bool:
            left = first(run)
            for test, operand in steps:
                right = operand(run)
                if not test(left, right):
                    return False
                left = right
            return True

        return compare

    def _IfExp(self, node: ast.IfExp) -> _Node:
        test, body = self.compile(node.test), self.compile(node.body)
        orelse = self.compile(node.orelse)
        return lambda run: body(run) if test(run) else orelse(run)

    def _List(self, node: ast.List) -> _Node:
        items = [self.compile(item) for item in node.elts]
        return lambda run: [item(run) for item in items]

    def _Tuple(self, node: ast.Tuple) -> _Node:
        items = [self.compile(item) for item in node.elts]
        return lambda run: tuple(item(run) for item in items)

    def _Set(self, node: ast.Set) -> _Node:
        items = [self.compile(item) for item in node.elts]
        return lambda run: {item(run) for item in items}

    def _Dict(self, node: ast.Dict) -> _Node:
        if any(key is None for key in node.keys):
            raise self.refuse("unpacks a dict with **", "Write the keys out.")
        pairs = [
            (self.compile(key), self.compile(value))
            for key, value in zip(node.keys, node.values, strict=True)
            if key is not None
        ]
        return lambda run: {key(run): value(run) for key, value in pairs}

    def _Subscript(self, node: ast.Subscript) -> _Node:
        value, key = self.compile(node.value), self.compile(node.slice)
        return lambda run: _subscript(run, value(run), key(run))

    def _Slice(self, node: ast.Slice) -> _Node:
        parts: list[_Node | None] = [
            None if part is None else self.compile(part)
            for part in (node.lower, node.upper, node.step)
        ]
        return lambda run: slice(*(None if part is None else part(run) for part in parts))

    def _Call(self, node: ast.Call) -> _Node:
        if node.keywords:
            raise self.refuse(
                "passes keyword arguments", "Conditions' functions take positional arguments only."
            )
        func = node.func
        args = [self.compile(arg) for arg in node.args]
        owner: type | None = None
        if isinstance(func, ast.Name) and func.id in _FUNCTIONS:
            name, (fewest, most, function) = func.id, _FUNCTIONS[func.id]
        elif isinstance(func, ast.Attribute) and func.attr in _METHODS:
            name, (owner, fewest, most, function) = f".{func.attr}", _METHODS[func.attr]
            target = self.compile(func.value)
        elif isinstance(func, ast.Attribute):
            raise self._refuse_attribute(func.attr, called=True)
        else:
            callee = shorten(ast.unparse(func))
            raise self.refuse(
                f"calls {callee}, which conditions do not allow",
                f"Conditions may call {', '.join(FUNCTIONS)} and the methods {', '.join(METHODS)}.",
            )
        if not fewest <= len(args) <= most:
            takes = f"{fewest}" if fewest == most else f"{fewest} to {most}"
            raise self.refuse(
                f"calls {name}() with {len(args)} argument(s)", f"{name}() takes {takes} here."
            )
        if owner is not None:
            receiver_type = owner

            def call_method(run: _Run) -> Any:
                value = target(run)
                if not isinstance(value, receiver_type):
                    raise Refused(
                        f"{name}() is a {receiver_type.__name__} method, but the value is of type "
                        f"{_kind(value)}"
                    )
                return function(run, [value, *(arg(run) for arg in args)])

            return call_method
        return lambda run: function(run, [arg(run) for arg in args])


def compile_expression(source: object) -> Compiled:
    """Check ``source`` and compile it; raises :class:`ConditionError` saying what is wrong.

    Checks, in order: ``source`` is a str of at most ``MAX_SOURCE_CHARS`` characters; it parses
    as one Python expression; it has at most ``MAX_NODES`` nodes nested at most ``MAX_DEPTH``
    deep, all of whitelisted types; its calls, methods, constants and names are allowed.
    """
    if not isinstance(source, str):
        raise ConditionError(
            f'expr() takes the condition as a string, such as expr("count > 3"); got a '
            f"{_kind(source)}. Pass the expression's source text.",
        )
    compiler = _Compiler(source)
    if len(source) > MAX_SOURCE_CHARS:
        raise compiler.refuse(
            f"is {len(source):,} characters long; conditions may be at most {MAX_SOURCE_CHARS:,}",
            "Compute the value in an action, write it to the state, and test that key.",
        )
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise compiler.refuse(f"is not a valid expression: {exc.msg}", "Fix its syntax.") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise compiler.refuse(f"cannot be parsed ({exc})", "Fix its syntax.") from None
    compiler.check_shape(tree)
    root = compiler.compile(tree)
    return Compiled(root, sorted(compiler.keys))
