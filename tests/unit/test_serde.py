"""OrjsonSerde: round trips of the tagged types, of any JSON value (tag-shaped dicts included),
errors that name the key, and that stored data never picks the code that runs."""

from __future__ import annotations

import datetime as dt
import importlib
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from burr_async import ConfigurationError, OrjsonSerde, Serde, SerializationError, State
from tests.hostile_values import hostile_json, hostile_states


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


class Box(BaseModel):
    """A model whose field holds any JSON, tag-shaped dicts included."""

    payload: Any


SERDE = OrjsonSerde(models=[Person, Box])


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


# -- hostile and malformed stored data ---------------------------------------------------------


def test_a_user_dict_shaped_like_a_tag_comes_back_as_itself() -> None:
    values = {"k": {"__burr_async__": "bytes", "value": "aGk="}}
    assert roundtrip(values) == values


def test_a_user_dict_shaped_like_an_invalid_datetime_tag_loads_back() -> None:
    values = {"k": {"__burr_async__": "datetime", "value": "x"}}
    assert roundtrip(values) == values


@pytest.mark.parametrize(
    "value",
    [
        {"__burr_async__": "datetime", "value": "x"},
        {"__burr_async__": "set", "value": 1},
        {"__burr_async__": "pydantic", "value": {"cls": "os:system", "data": {}}},
        {"__burr_async__": "dict", "value": {"__burr_async__": "bytes", "value": "aGk="}},
        {"__burr_async__": "mystery", "value": 1},
        {"__burr_async__": "bytes", "value": "aGk=", "more": [{"__burr_async__": 1}]},
        {"__burr_async__": None},
        [{"__burr_async__": "uuid", "value": str(uuid.UUID(int=1))}],
        {"deep": {"er": [{"__burr_async__": "decimal", "value": "1.5"}]}},
    ],
)
def test_user_dicts_holding_the_tag_key_round_trip(value: Any) -> None:
    values = {"k": value, "when": dt.date(2024, 1, 1), "ok": {"plain": 1}}
    assert roundtrip(values) == values


def test_a_user_dict_holding_the_tag_key_is_stored_escaped() -> None:
    user = {"__burr_async__": "bytes", "value": "aGk="}
    stored = orjson.loads(SERDE.dumps({"k": user}))
    assert stored == {"k": {"__burr_async__": "dict", "value": user}}


def test_a_state_key_named_like_the_tag_key_round_trips() -> None:
    values = {"__burr_async__": "bytes", "value": "aGk=", "at": dt.time(1, 2)}
    assert roundtrip(values) == values


def test_a_user_dict_holding_the_tag_key_inside_a_model_round_trips() -> None:
    box = Box(payload={"__burr_async__": "bytes", "value": "aGk=", "n": [1]})
    decoded = roundtrip({"box": box, "at": dt.date(2024, 1, 1)})
    assert decoded == {"box": box, "at": dt.date(2024, 1, 1)}
    assert decoded["box"].payload == {"__burr_async__": "bytes", "value": "aGk=", "n": [1]}


@pytest.mark.parametrize(
    "values",
    [
        {"chat": [{"role": "user", "content": "hi"}] * 20, "n": 1},
        {"at": dt.datetime(2024, 1, 1), "tags": {"a"}, "person": PERSON, "id": uuid.uuid4()},
        {"text": 'a string that quotes {"__burr_async__": "bytes", "value": "aGk="}'},
        {"key_with__burr_async__": 1, "__burr_async__x": 2},
    ],
    ids=["plain", "tagged", "tag-key-in-a-string", "tag-key-as-substring"],
)
def test_a_state_without_dicts_holding_the_tag_key_is_encoded_in_one_pass(
    values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(self: OrjsonSerde, data: Any) -> bytes:
        raise AssertionError("took the escaping path")

    monkeypatch.setattr(OrjsonSerde, "_encode_escaped", slow)
    assert roundtrip(values) == values


def _stored(value: Any) -> bytes:
    return orjson.dumps({"fine": 1, "k": value})


MALFORMED = {
    "invalid-datetime": {"__burr_async__": "datetime", "value": "x"},
    "datetime-not-a-string": {"__burr_async__": "datetime", "value": 20240101},
    "invalid-date": {"__burr_async__": "date", "value": "2024-02-30"},
    "invalid-time": {"__burr_async__": "time", "value": "25:00"},
    "invalid-decimal": {"__burr_async__": "decimal", "value": "one"},
    "decimal-not-a-string": {"__burr_async__": "decimal", "value": [0, [1], 0]},
    "bad-base64": {"__burr_async__": "bytes", "value": "a"},
    "base64-not-ascii": {"__burr_async__": "bytes", "value": "é"},
    "base64-bad-characters": {"__burr_async__": "bytes", "value": "!!!!"},
    "invalid-uuid": {"__burr_async__": "uuid", "value": "not-a-uuid"},
    "set-not-a-list": {"__burr_async__": "set", "value": {"a": 1}},
    "set-of-dicts": {"__burr_async__": "set", "value": [{"a": 1}]},
    "frozenset-not-a-list": {"__burr_async__": "frozenset", "value": "ab"},
    "escape-not-a-dict": {"__burr_async__": "dict", "value": [1]},
    "unknown-kind": {"__burr_async__": "mystery", "value": 1},
    "kind-not-a-string": {"__burr_async__": 5, "value": 1},
    "kind-unhashable": {"__burr_async__": [1], "value": 1},
    "extra-keys": {"__burr_async__": "bytes", "value": "aGk=", "x": 1},
    "no-value": {"__burr_async__": "bytes"},
    "pydantic-not-a-dict": {"__burr_async__": "pydantic", "value": "Person"},
    "pydantic-name-not-a-string": {"__burr_async__": "pydantic", "value": {"cls": 1, "data": {}}},
    "pydantic-missing-data": {
        "__burr_async__": "pydantic",
        "value": {"cls": "tests.unit.test_serde:Person"},
    },
    "pydantic-invalid-data": {
        "__burr_async__": "pydantic",
        "value": {"cls": "tests.unit.test_serde:Person", "data": {"name": 1}},
    },
    "nested-in-a-list": [1, [{"__burr_async__": "date", "value": "x"}]],
    "nested-in-a-set": {"__burr_async__": "set", "value": [{"__burr_async__": "time", "value": 1}]},
    "nested-in-an-escape": {
        "__burr_async__": "dict",
        "value": {"__burr_async__": {"__burr_async__": "bytes", "value": "a"}},
    },
}


@pytest.mark.parametrize("value", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_tag_is_a_serialization_error_naming_the_key(value: Any) -> None:
    with pytest.raises(SerializationError) as info:
        SERDE.loads(_stored(value))
    assert info.value.key == "k"
    assert "'k'" in str(info.value)
    assert type(info.value) is SerializationError  # not a raw ValueError, binascii.Error...


def test_a_deeply_nested_stored_value_is_a_serialization_error() -> None:
    tag = b'{"__burr_async__": "bytes", "value": "aGk="}'
    data = b'{"k": ' + b"[" * 1000 + tag + b"]" * 1000 + b"}"  # deeper than dumps ever writes
    with pytest.raises(SerializationError, match="'k'") as info:
        SERDE.loads(data)
    assert info.value.key == "k"


# -- pydantic models: only registered classes, never a stored name imported ---------------------


def test_a_stored_class_name_is_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"hostile_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(
        "import pydantic\nRAN = True\nclass Evil(pydantic.BaseModel):\n    x: int = 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = _stored({"__burr_async__": "pydantic", "value": {"cls": f"{name}:Evil", "data": {}}})
    with pytest.raises(SerializationError) as info:
        SERDE.loads(data)
    assert name not in sys.modules  # the module's code never ran
    assert info.value.key == "k"
    message = str(info.value)
    assert "'k'" in message
    assert f"'{name}:Evil'" in message
    assert "OrjsonSerde(models=[...])" in message
    assert importlib.import_module(name).RAN  # the module is importable: the serde refused it
    del sys.modules[name]


def test_dumps_refuses_an_unregistered_model() -> None:
    with pytest.raises(SerializationError) as info:
        OrjsonSerde().dumps({"fine": 1, "person": PERSON})
    assert info.value.key == "person"
    message = str(info.value)
    assert "'person'" in message
    assert "'tests.unit.test_serde:Person'" in message
    assert "OrjsonSerde(models=[Person, ...])" in message


def test_a_model_nested_in_a_registered_one_needs_no_registration() -> None:
    serde = OrjsonSerde(models=[Person])
    assert serde.loads(serde.dumps({"p": [PERSON]})) == {"p": [PERSON]}


def test_a_registered_class_is_matched_by_its_stored_name() -> None:
    class Local(BaseModel):  # not importable under its name (its qualname has <locals>)
        x: int

    serde = OrjsonSerde(models=[Local])
    data = serde.dumps({"m": Local(x=1)})
    assert b"test_a_registered_class_is_matched_by_its_stored_name.<locals>.Local" in data
    loaded = serde.loads(data)
    assert type(loaded["m"]) is Local and loaded["m"] == Local(x=1)
    with pytest.raises(SerializationError, match=r"Local'.*not registered"):
        OrjsonSerde(models=[Person]).loads(data)


class _Moved(BaseModel):
    x: int


def test_allowed_modules_import_a_model_class() -> None:
    serde = OrjsonSerde(allowed_modules=("tests.unit",))
    data = serde.dumps({"m": _Moved(x=1)})
    assert b'"tests.unit.test_serde:_Moved"' in data
    assert serde.loads(data) == {"m": _Moved(x=1)}
    assert OrjsonSerde(allowed_modules=("tests",)).loads(data) == {"m": _Moved(x=1)}


def test_an_allowed_module_is_a_prefix_of_dotted_names_not_of_text() -> None:
    data = OrjsonSerde(models=[_Moved]).dumps({"m": _Moved(x=1)})
    with pytest.raises(SerializationError, match="not registered"):
        OrjsonSerde(allowed_modules=("tests.uni",)).loads(data)
    with pytest.raises(SerializationError, match="not registered"):
        OrjsonSerde(allowed_modules=("tests.uni",)).dumps({"m": _Moved(x=1)})


def test_a_pydantic_class_that_cannot_be_imported_is_a_clear_error() -> None:
    serde = OrjsonSerde(allowed_modules=("tests.unit",))
    data = serde.dumps({"m": _Moved(x=1)}).replace(b"_Moved", b"_Gone")
    with pytest.raises(SerializationError, match=r"'tests\.unit\.test_serde:_Gone'.*cannot be"):
        serde.loads(data)


@pytest.mark.parametrize(
    "name",
    ["tests.unit.test_serde:SERDE", "tests.unit.test_serde:Person.__base__", "tests.unit:"],
)
def test_an_allowed_module_yields_only_model_classes(name: str) -> None:
    data = _stored({"__burr_async__": "pydantic", "value": {"cls": name, "data": {}}})
    with pytest.raises(SerializationError, match="'k'") as info:
        OrjsonSerde(allowed_modules=("tests.unit",)).loads(data)
    assert info.value.key == "k"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"models": [dict]},
        {"models": Person},
        {"allowed_modules": "myapp.models"},
        {"allowed_modules": ("",)},
        {"allowed_modules": ("myapp..models",)},
        {"allowed_modules": (".models",)},
    ],
    ids=["not-a-model", "a-class-not-a-list", "a-string", "empty", "double-dot", "relative"],
)
def test_a_bad_registration_is_a_configuration_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        OrjsonSerde(**kwargs)


def test_two_registered_classes_with_one_name_are_a_configuration_error() -> None:
    def make() -> type[BaseModel]:
        class Same(BaseModel):
            x: int

        return Same

    with pytest.raises(ConfigurationError, match="Same"):
        OrjsonSerde(models=[make(), make()])
    OrjsonSerde(models=[Person, Person])  # the same class twice is fine


# -- properties ---------------------------------------------------------------------------------


@given(hostile_states())
def test_hostile_json_roundtrips(values: dict[str, Any]) -> None:
    assert roundtrip(values) == values


@given(st.dictionaries(st.text(max_size=6), VALUES | hostile_json(), max_size=4))
def test_hostile_json_mixed_with_tagged_values_roundtrips(values: dict[str, Any]) -> None:
    assert roundtrip(values) == values


@given(hostile_json())
def test_hostile_json_inside_a_model_roundtrips(payload: Any) -> None:
    values = {"box": Box(payload=payload)}
    assert roundtrip(values) == values


def test_a_display_serde_loads_an_unregistered_model_as_its_data() -> None:
    stored = OrjsonSerde(models=[Person]).dumps({"who": PERSON})
    shown = OrjsonSerde(models_as_data=True).loads(stored)
    assert shown == {
        "who": {
            "name": "Ada",
            "born": "1815-12-10",
            "address": {"street": "1 St", "zip_code": "N1"},
            "tags": ["x"],
        }
    }
    # a registered class is still rebuilt, and a plain serde still refuses the stranger
    assert OrjsonSerde(models=[Person], models_as_data=True).loads(stored) == {"who": PERSON}
    with pytest.raises(SerializationError, match="not registered"):
        OrjsonSerde().loads(stored)
