"""Transition conditions: ``default``, ``expr("...")``, ``when(key=value)``, ``Condition.lmda``
and ``Condition(keys, fn)``, combined with ``~``, ``&`` and ``|``.

Names render as Burr's do: ``when(foo="bar")`` is ``foo=bar``, ``when(age__gte=18)`` is
``age>=18``, ``a & b`` is ``a=1 & b > 2``, ``~c`` is ``~default``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from burr_async._expr import Refused, compile_expression, shorten
from burr_async.errors import ConditionError
from burr_async.state import State

__all__ = ["Condition", "default", "expr", "safe_expr", "when"]

Resolver = Callable[[State], bool]


def _contains(container: Any, item: Any) -> bool:
    return item in container


def _is_in(item: Any, container: Any) -> bool:
    return item in container


def _not_in(item: Any, container: Any) -> bool:
    return item not in container


# Burr's suffixes for when(key__suffix=value), with the symbol each renders as.
_OPERATORS: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
    "eq": ("==", operator.eq),
    "ne": ("!=", operator.ne),
    "lt": ("<", operator.lt),
    "lte": ("<=", operator.le),
    "gt": (">", operator.gt),
    "gte": (">=", operator.ge),
    "in": ("in", _is_in),
    "notin": ("not in", _not_in),
    "contains": ("contains", _contains),
    "is": ("is", operator.is_),
    "isnot": ("is not", operator.is_not),
}


class Condition:
    """A named predicate over the state, used to choose a transition.

    ``Condition(keys, resolver, name=None)`` as in Burr: ``keys`` are the state keys the
    resolver reads (all must be in the state when it runs, else :class:`ConditionError`);
    ``resolver(state)`` returns whether the condition holds. Without a ``name`` the resolver's
    ``__name__`` is shown. ``optional_keys`` are keys it may read that may be absent.
    """

    __slots__ = ("_keys", "_name", "_optional_keys", "_resolver")

    KEY: ClassVar[str] = "PROCEED"
    """Burr's key for a condition's result in a dict; kept for code that names it."""

    def __init__(
        self,
        keys: Iterable[str],
        resolver: Resolver,
        name: str | None = None,
        optional_keys: Iterable[str] | None = None,
    ) -> None:
        self._keys = list(dict.fromkeys(keys))
        self._optional_keys = list(optional_keys or ())
        self._name = name if name is not None else getattr(resolver, "__name__", "condition")
        self._resolver = self._checking(resolver)

    @classmethod
    def _make(cls, keys: Iterable[str], resolver: Resolver, name: str) -> Condition:
        """A condition whose resolver checks its keys itself (when, expr, the combinators)."""
        new = cls.__new__(cls)
        new._keys = list(dict.fromkeys(keys))
        new._optional_keys = []
        new._name = name
        new._resolver = resolver
        return new

    def _checking(self, resolver: Resolver) -> Resolver:
        keys = self._keys
        if not keys:
            return resolver

        def resolve(state: State) -> bool:
            data = state._data
            missing = [key for key in keys if key not in data]
            if missing:
                raise ConditionError(
                    f"Condition {self._name!r} reads state key(s) {missing}, which are not in "
                    f"the state (keys: {sorted(data)}).",
                    condition=self._name,
                    key=missing[0],
                )
            return bool(resolver(state))

        return resolve

    @property
    def keys(self) -> list[str]:
        """State keys the condition reads."""
        return list(self._keys)

    @property
    def reads(self) -> list[str]:
        """State keys the condition reads (Burr's name for :attr:`keys`)."""
        return list(self._keys)

    @property
    def optional_keys(self) -> list[str]:
        """State keys the condition may read that may be absent."""
        return list(self._optional_keys)

    @property
    def name(self) -> str:
        """A readable form, shown in errors and diagrams (Burr's rendering)."""
        return self._name

    @property
    def resolver(self) -> Resolver:
        """The function of the state that decides the condition."""
        return self._resolver

    def run(self, state: State) -> bool:
        """Whether the condition holds for ``state``; raises :class:`ConditionError` naming a
        missing key. (Burr's ``run`` returns ``{Condition.KEY: bool}``; this returns the bool.)"""
        return self._resolver(state)

    def __invert__(self) -> Condition:
        inner = self._resolver
        return Condition._make(self._keys, lambda state: not inner(state), f"~{self._name}")

    def __and__(self, other: Condition) -> Condition:
        if not isinstance(other, Condition):
            return NotImplemented
        left, right = self._resolver, other._resolver
        return Condition._make(
            [*self._keys, *other._keys],
            lambda state: left(state) and right(state),
            f"{self._name} & {other._name}",
        )

    def __or__(self, other: Condition) -> Condition:
        if not isinstance(other, Condition):
            return NotImplemented
        left, right = self._resolver, other._resolver
        return Condition._make(
            [*self._keys, *other._keys],
            lambda state: left(state) or right(state),
            f"{self._name} | {other._name}",
        )

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"condition: {self._name}"

    # Burr spells these as constructors on the class too.
    @staticmethod
    def expr(expression: str) -> Condition:
        """See :func:`expr`."""
        return expr(expression)

    @staticmethod
    def safe_expr(expression: str) -> Condition:
        """See :func:`expr` (every ``expr`` is sandboxed; Burr's ``safe_expr`` is the same)."""
        return expr(expression)

    @staticmethod
    def when(**kwargs: Any) -> Condition:
        """See :func:`when`."""
        return when(**kwargs)

    @staticmethod
    def lmda(resolver: Resolver, state_keys: Sequence[str]) -> Condition:
        """A condition from a function of the state that reads ``state_keys``, named as Burr
        names it: ``lmda_<function name>_``."""
        name = getattr(resolver, "__name__", "condition")
        return Condition(state_keys, resolver, name=f"lmda_{name}_")


default = Condition._make([], lambda state: True, "default")
"""The condition that always holds: the fallback transition."""


def _parse_when_key(kwarg: str) -> tuple[str, str | None, Callable[[Any, Any], Any]]:
    """``(state_key, symbol, compare)``; symbol None for a plain ``key=value``."""
    for suffix, (symbol, compare) in _OPERATORS.items():
        dunder = f"__{suffix}"
        if kwarg.endswith(dunder):
            key = kwarg[: -len(dunder)]
            if not key:
                raise ConditionError(
                    f"when({kwarg}=...) has no state key before '__{suffix}'.", key=kwarg
                )
            return key, symbol, compare
    return kwarg, None, operator.eq


def _when_part(key: str, symbol: str | None, value: Any) -> str:
    if symbol is None:
        return f"{key}={value}"
    if symbol.isalnum() or " " in symbol:
        return f"{key} {symbol} {value!r}"
    return f"{key}{symbol}{value!r}"


def when(**kwargs: Any) -> Condition:
    """Holds when every constraint holds, e.g. ``when(done=True)``, ``when(age__gte=18)``.

    A plain ``key=value`` tests equality; Burr's suffixes test otherwise: ``__eq``, ``__ne``,
    ``__lt``, ``__lte``, ``__gt``, ``__gte``, ``__in``, ``__notin``, ``__contains`` (the
    state's value contains ``value``), ``__is`` and ``__isnot``. Any other ``__`` in a name is
    part of the state key. A key missing from the state raises :class:`ConditionError`.
    """
    if not kwargs:
        raise ConditionError("when() needs at least one key=value pair.")
    parsed = [(*_parse_when_key(kwarg), value) for kwarg, value in kwargs.items()]
    name = ", ".join(
        _when_part(key, symbol, value) for key, symbol, _, value in sorted(parsed, key=_first)
    )
    checks = [(key, compare, value) for key, _, compare, value in parsed]

    def resolve(state: State) -> bool:
        data = state._data
        for key, compare, value in checks:
            if key not in data:
                raise ConditionError(
                    f"Condition when({name}) reads state key {key!r}, which is not in the state "
                    f"(keys: {sorted(data)}).",
                    condition=f"when({name})",
                    key=key,
                )
            try:
                if not compare(data[key], value):
                    return False
            except Exception as exc:
                raise ConditionError(
                    f"Condition when({name}) failed on key {key!r}: {type(exc).__name__}: {exc}.",
                    condition=f"when({name})",
                    key=key,
                ) from exc
        return True

    return Condition._make([key for key, _, _ in checks], resolve, name)


def _first(item: tuple[Any, ...]) -> Any:
    return item[0]


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

    return Condition._make(sorted(needed), resolve, expression)


safe_expr = expr
"""Burr's ``safe_expr``: the same as :func:`expr`, which is always sandboxed."""
