"""Transition conditions: ``default``, ``expr("...")``, ``when(key=value)``, combined with
``~``, ``&`` and ``|``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from burr_async._expr import Refused, compile_expression, shorten
from burr_async.errors import ConditionError
from burr_async.state import State

__all__ = ["Condition", "default", "expr", "when"]


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

    Names are state keys. Only a safe subset of Python is accepted, checked when the condition is
    created: literals, comparisons, ``and``/``or``/``not``, arithmetic (``+ - * / // %``),
    ``x if c else y``, indexing and slicing, calls to ``len``, ``abs``, ``min``, ``max``, ``sum``,
    ``any``, ``all``, ``bool``, ``int``, ``float``, ``str``, ``round`` and ``sorted``, and the
    methods ``lower``, ``upper``, ``strip``, ``startswith``, ``endswith`` (on a str) and ``get``
    (on a dict). No other attribute can be read. The source may be at most 1,000 characters.
    Anything else raises :class:`ConditionError` here.

    Evaluation is an interpreter over the checked syntax tree, not ``eval``: operations that
    build values (``*``, ``+``, ``sorted``, slicing, string methods) check the size first, so a
    hostile expression fails fast with :class:`ConditionError` instead of exhausting memory or
    time. A missing state key, a broken limit, or an error raised while evaluating all raise
    :class:`ConditionError` naming the condition. The full rules and limits are in
    ``docs/concepts/transitions.md``.
    """
    compiled = compile_expression(expression)
    needed = compiled.keys
    shown = shorten(expression)

    def resolve(state: State) -> bool:
        data = state._data
        for key in needed:
            if key not in data:
                raise ConditionError(
                    f"Condition expr({shown}) reads state key {key!r}, which is not in the state "
                    f"(keys: {sorted(data)}). Write the key before this transition is tried, or "
                    "test it with another condition first.",
                    condition=expression,
                    key=key,
                )
        try:
            return bool(compiled.evaluate(data))
        except Refused as exc:
            raise ConditionError(
                f"Condition expr({shown}) was stopped: {exc}",
                condition=expression,
            ) from None
        except Exception as exc:
            raise ConditionError(
                f"Condition expr({shown}) failed: {type(exc).__name__}: {exc}. Check the "
                "state's values, or guard the expression (e.g. 'n != 0 and total / n > 1').",
                condition=expression,
            ) from exc

    return Condition(needed, resolve, expression)
