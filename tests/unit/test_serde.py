"""OrjsonSerde: round trips of the tagged types and errors that name the key."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from burr_async import OrjsonSerde, Serde, SerializationError, State


class Address(BaseModel):
    street: str
    zip_code: str


class Person(BaseModel):
    name: str
    born: dt.date
    address: Address
    tags: list[str] = []


PERSON = Person(
    name="Ada",
    born=dt.date(1815, 12, 10),
    address=Address(street="1 St", zip_code="N1"),
    tags=["x"],
)
SERDE = OrjsonSerde()


def roundtrip(values: dict[str, Any]) -> dict[str, Any]:
    return SERDE.loads(SERDE.dumps(values))


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
        dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
        dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
        dt.date(2024, 2, 29),
        dt.time(23, 59, 58, 1),
        dt.time(1, 2, 3, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        Decimal("3.14159265358979323846264338327950288"),
        Decimal("-0.00"),
        b"\x00\xffbinary",
        b"",
        {1, 2, 3},
        set(),
        frozenset({"a", "b"}),
        PERSON,
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "plain",
        12,
        1.5,
        None,
        True,
        [1, "two", None],
        {"nested": {"dict": [1]}},
    ],
    ids=lambda v: type(v).__name__,
)
def test_roundtrip_of_a_single_value(value: Any) -> None:
    decoded = roundtrip({"k": value})
    assert decoded == {"k": value}
    assert type(decoded["k"]) is type(value)


def test_aware_and_naive_datetimes_keep_their_offset() -> None:
    naive = dt.datetime(2024, 1, 1, 12)
    aware = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    decoded = roundtrip({"naive": naive, "aware": aware})
    assert decoded["naive"].tzinfo is None
    assert decoded["aware"].utcoffset() == dt.timedelta(hours=3)
    assert decoded["aware"] == aware


def test_nested_combinations() -> None:
    when = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    values = {
        "events": [
            {"at": when, "amount": Decimal("1.10"), "raw": b"abc"},
            {"at": dt.date(2020, 1, 2), "tags": {"x", "y"}, "frozen": frozenset({1})},
        ],
        "people": {"ada": PERSON, "list": [PERSON]},
        "sets_of_dates": {dt.date(2020, 1, 1), dt.date(2020, 1, 2)},
        "frozen_of_frozen": frozenset({frozenset({1, 2})}),
        "time": dt.time(12, 0),
        "plain": {"a": [1, 2, {"b": None}]},
    }
    assert roundtrip(values) == values


def test_set_of_tuples_roundtrips() -> None:
    values = {"pairs": {(1, 2), (3, 4)}, "nested": frozenset({(1, ("a", "b"))})}
    assert roundtrip(values) == values


def test_top_level_uuid_comes_back_as_uuid_and_nested_as_string() -> None:
    ident = uuid.uuid4()
    decoded = roundtrip({"id": ident, "nested": [ident], "in_dict": {"id": ident}})
    assert decoded["id"] == ident
    assert isinstance(decoded["id"], uuid.UUID)
    assert decoded["nested"] == [str(ident)]
    assert decoded["in_dict"] == {"id": str(ident)}


def test_dumps_accepts_a_state_and_writes_plain_json() -> None:
    encoded = SERDE.dumps(State({"a": 1, "b": [True]}))
    assert orjson.loads(encoded) == {"a": 1, "b": [True]}
    assert SERDE.loads(encoded) == {"a": 1, "b": [True]}
    assert SERDE.loads(encoded.decode()) == {"a": 1, "b": [True]}


def test_orjson_serde_is_a_serde() -> None:
    assert isinstance(SERDE, Serde)


@pytest.mark.parametrize(
    "bad",
    [object(), {"inner": object()}, [1, lambda: None], {1: "int key inside"}, 2**70],
    ids=["object", "nested-object", "lambda-in-list", "nested-int-key", "huge-int"],
)
def test_unserializable_value_names_the_key(bad: Any) -> None:
    with pytest.raises(SerializationError) as info:
        SERDE.dumps({"fine": 1, "broken_key": bad})
    assert "'broken_key'" in str(info.value)
    assert info.value.key == "broken_key"
    assert isinstance(info.value, TypeError)


def test_unserializable_value_in_a_state_with_a_uuid_names_the_key() -> None:
    with pytest.raises(SerializationError, match="'bad'"):
        SERDE.dumps(State({"id": uuid.uuid4(), "bad": object()}))


def test_non_string_key_is_an_error() -> None:
    with pytest.raises(SerializationError, match="string") as info:
        SERDE.dumps({1: "x"})  # type: ignore[dict-item]
    assert info.value.key == "1"
    assert "1" in str(info.value)


def test_an_unknown_tag_loads_as_the_plain_dict_it_is() -> None:
    stored = {"k": {"__burr_async__": "mystery", "value": 1}}
    assert OrjsonSerde().loads(orjson.dumps(stored)) == stored


class _Moved(BaseModel):
    x: int


def test_a_pydantic_class_that_cannot_be_imported_is_a_clear_error() -> None:
    data = OrjsonSerde().dumps({"m": _Moved(x=1)}).replace(b"_Moved", b"_Gone")
    with pytest.raises(SerializationError, match=r"'tests\.unit\.test_serde:_Gone'.*cannot be"):
        OrjsonSerde().loads(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
    ],
)
def test_loads_rejects_bad_data(data: bytes, message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        SERDE.loads(data)


def test_loads_refuses_a_non_model_class() -> None:
    data = orjson.dumps(
        {"k": {"__burr_async__": "pydantic", "value": {"cls": "builtins:dict", "data": {}}}}
    )
    with pytest.raises(SerializationError, match="builtins:dict"):
        SERDE.loads(data)


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
TAGGED_LEAVES = st.one_of(
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.times(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.binary(max_size=8),
    st.frozensets(INT64, max_size=3),
    st.sets(st.text(max_size=3), max_size=3),
)
VALUES = st.recursive(
    JSON_LEAVES | TAGGED_LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=6), VALUES, max_size=4))
def test_roundtrip_property(values: dict[str, Any]) -> None:
    assert roundtrip(values) == values
