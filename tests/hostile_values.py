"""Hypothesis strategies for adversarial state: JSON-like values whose dicts use the serde's tag
key, its tag kinds and shapes equal to its tags, for the property tests that any such value
round-trips through OrjsonSerde (tests/unit/test_serde.py) and through a persister on both
backends (tests/integration/test_hostile_state.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

TAG = "__burr_async__"
KINDS = [
    "datetime",
    "date",
    "time",
    "decimal",
    "bytes",
    "uuid",
    "set",
    "frozenset",
    "pydantic",
    "dict",
]

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def texts(*, allow_nul: bool = True, max_size: int = 8) -> st.SearchStrategy[str]:
    """Text that orjson can encode (no lone surrogates) and, unless ``allow_nul``, that Postgres
    JSONB accepts (no NUL)."""
    excluded = "" if allow_nul else "\x00"
    alphabet = st.characters(blacklist_categories=("Cs",), blacklist_characters=excluded)
    return st.text(alphabet, max_size=max_size)


def hostile_json(*, for_postgres: bool = False) -> st.SearchStrategy[Any]:
    """JSON-like values (None, bools, 64-bit ints, finite floats, strings, lists, dicts with any
    string keys) biased towards what the serde's tags look like.

    ``for_postgres`` keeps to what JSONB stores unchanged: no NUL in strings, and floats below
    1e15 in magnitude (JSONB writes a float such as ``6.7e+16`` back as the integer
    ``67000000000000000``, which orjson then reads as an int).
    """
    text = texts(allow_nul=not for_postgres)
    floats = st.floats(allow_nan=False, allow_infinity=False)
    if for_postgres:
        floats = st.floats(min_value=-1e15, max_value=1e15)
    tagged_text = st.sampled_from(
        [TAG, "value", "cls", "data", *KINDS, "aGk=", "x", "2024-01-01", "1.5", "os:system"]
    )
    keys = tagged_text | text
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        INT64,
        floats,
        text,
        tagged_text,
    )

    def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        kind = st.sampled_from([*KINDS, "mystery"]) | leaves
        return st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(keys, children, max_size=4),
            # exactly a tag's shape
            st.builds(lambda k, v: {TAG: k, "value": v}, kind, children),
            # a tag's shape with more keys
            st.builds(
                lambda k, v, extra: {TAG: k, "value": v, **extra},
                kind,
                children,
                st.dictionaries(keys, children, max_size=2),
            ),
            # a pydantic tag naming a class to import
            st.builds(
                lambda name, data: {TAG: "pydantic", "value": {"cls": name, "data": data}},
                st.sampled_from(["os:system", "builtins:dict", "tests.unit.test_serde:Person"]),
                children,
            ),
            # the escape tag's shape
            st.builds(lambda d: {TAG: "dict", "value": d}, st.dictionaries(keys, children)),
        )

    return st.recursive(leaves, containers, max_leaves=12)


def hostile_states(*, for_postgres: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """A state's values: string keys (including the tag key itself) to hostile JSON values."""
    keys = st.sampled_from([TAG, "value", "k"]) | texts(allow_nul=not for_postgres, max_size=6)
    return st.dictionaries(keys, hostile_json(for_postgres=for_postgres), max_size=4)
