"""Transition conditions: ``default``, ``expr("...")``, ``when(key=value)``, combined with
``~``, ``&`` and ``|``."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from typing import Any

from burr_async.errors import ConditionError
from burr_async.state import State

__all__ = ["Condition", "default", "expr", "when"]

_SAFE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "abs": abs,
    "min": min,
    "max": max,
    "sum": sum,
    "any": any,
    "all": all,
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "round": round,
    "sorted": sorted,
}
_SAFE_CONSTANTS: dict[str, Any] = {"True": True, "False": False, "None": None}

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.Is,
    ast.IsNot,
    ast.IfExp,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.List,
    ast.Tuple,
    ast.Set,
    ast.Dict,
    ast.Subscript,
    ast.Slice,
    ast.Attribute,
    ast.Call,
)


class Condition:
    """A named predicate over the state, used to choose a transition.

    ``keys`` are the state keys the predicate reads; ``resolver`` returns whether it holds.
    """

    __slots__ = ("_keys", "_name", "_resolver")

    def __init__(self, keys: Iterable[str], resolver: Callable[[State], bool], name: str) -> None:
        self._keys = sorted(set(keys))
        self._resolver = resolver
        self._name = name

    @property
    def keys(self) -> list[str]:
        """State keys the condition reads."""
        return list(self._keys)

    @property
    def name(self) -> str:
        """A readable form, shown in errors and diagrams."""
        return self._name

    def run(self, state: State) -> bool:
        """Evaluate against ``state``; raises :class:`ConditionError` naming a missing key."""
        return self._resolver(state)

    def __invert__(self) -> Condition:
        inner = self._resolver
        return Condition(self._keys, lambda state: not inner(state), f"~({self._name})")

    def __and__(self, other: Condition) -> Condition:
        left, right = self._resolver, other._resolver
        return Condition(
            [*self._keys, *other._keys],
            lambda state: left(state) and right(state),
            f"({self._name}) & ({other._name})",
        )

    def __or__(self, other: Condition) -> Condition:
        left, right = self._resolver, other._resolver
        return Condition(
            [*self._keys, *other._keys],
            lambda state: left(state) or right(state),
            f"({self._name}) | ({other._name})",
        )

    def __repr__(self) -> str:
        return f"Condition({self._name})"

    # Burr spells these as constructors on the class too.
    @staticmethod
    def expr(expression: str) -> Condition:
        """See :func:`expr`."""
        return expr(expression)

    @staticmethod
    def when(**kwargs: Any) -> Condition:
        """See :func:`when`."""
        return when(**kwargs)


default = Condition([], lambda state: True, "default")
"""The condition that always holds: the fallback transition."""


def when(**kwargs: Any) -> Condition:
    """Holds when every given key equals its value, e.g. ``when(done=True)``."""
    if not kwargs:
        raise ConditionError("when() needs at least one key=value pair.")
    items = list(kwargs.items())
    name = ", ".join(f"{k}={v!r}" for k, v in items)

    def resolve(state: State) -> bool:
        data = state._data
        for key, value in items:
            if key not in data:
                raise ConditionError(
                    f"Condition when({name}) reads state key {key!r}, which is not in the state "
                    f"(keys: {sorted(data)}).",
                    condition=f"when({name})",
                    key=key,
                )
            if data[key] != value:
                return False
        return True

    return Condition(kwargs, resolve, name)


def expr(expression: str) -> Condition:
    """A condition written as a Python expression over state keys, e.g. ``"'exit' in question"``.

    Only a safe subset is accepted: literals, names of state keys, comparisons, boolean and
    arithmetic operators, indexing, attribute reads of public names, and calls to a few builtins
    (``len``, ``min``, ``max``, ``sum``, ``any``, ``all``, ``abs``, ``bool``, ``int``, ``float``,
    ``str``, ``round``, ``sorted``). Anything else is rejected when the condition is created.
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionError(
            f"expr({expression!r}) is not a valid expression: {exc.msg}.", condition=expression
        ) from None
    keys: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ConditionError(
                f"expr({expression!r}) uses {type(node).__name__}, which conditions do not allow.",
                condition=expression,
            )
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ConditionError(
                f"expr({expression!r}) reads attribute {node.attr!r}; private and dunder "
                "attributes are not allowed.",
                condition=expression,
            )
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in _SAFE_FUNCTIONS
        ):
            raise ConditionError(
                f"expr({expression!r}) calls something other than the allowed functions "
                f"{sorted(_SAFE_FUNCTIONS)}.",
                condition=expression,
            )
        if isinstance(node, ast.Name):
            if node.id.startswith("__"):
                raise ConditionError(
                    f"expr({expression!r}) uses the name {node.id!r}; dunder names are not "
                    "allowed.",
                    condition=expression,
                )
            if node.id not in _SAFE_FUNCTIONS and node.id not in _SAFE_CONSTANTS:
                keys.add(node.id)
    code = compile(tree, f"<expr {expression!r}>", "eval")
    needed = sorted(keys)
    sandbox: dict[str, Any] = {"__builtins__": {}, **_SAFE_FUNCTIONS}

    def resolve(state: State) -> bool:
        data = state._data
        scope: dict[str, Any] = {}
        for key in needed:
            if key not in data:
                raise ConditionError(
                    f"Condition expr({expression!r}) reads state key {key!r}, which is not in "
                    f"the state (keys: {sorted(data)}).",
                    condition=expression,
                    key=key,
                )
            scope[key] = data[key]
        try:
            return bool(eval(code, sandbox, scope))
        except Exception as exc:
            raise ConditionError(
                f"Condition expr({expression!r}) failed: {type(exc).__name__}: {exc}",
                condition=expression,
            ) from exc

    return Condition(needed, resolve, expression)
