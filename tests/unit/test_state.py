"""State: an immutable mapping whose every operation returns a new State."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from burr_async import BurrAsyncError, SerializationError, State, StateOperationError

KEYS = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
SCALARS = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none())


# -- construction and reading ------------------------------------------------------------------


def test_construction_from_dict_copies_the_dict() -> None:
    source = {"a": 1, "b": [1, 2]}
    state = State(source)
    source["a"] = 99
    source["c"] = 3
    assert state.get_all() == {"a": 1, "b": [1, 2]}
    assert "c" not in state


def test_empty_construction() -> None:
    assert len(State()) == 0
    assert len(State(None)) == 0
    assert len(State({})) == 0
    assert State().get_all() == {}


def test_construction_from_another_state() -> None:
    first = State({"a": 1})
    second = State(first)
    assert second == first
    assert second is not first
    assert second.update(a=2)["a"] == 2
    assert first["a"] == 1


def test_reading() -> None:
    state = State({"a": 1, "b": None})
    assert state["a"] == 1
    assert state["b"] is None
    assert state.get("a") == 1
    assert state.get("missing") is None
    assert state.get("missing", 5) == 5
    assert state.get("b", 5) is None
    assert "a" in state
    assert "missing" not in state
    assert list(state.keys()) == ["a", "b"]
    assert list(state) == ["a", "b"]
    assert len(state) == 2
    assert dict(state.items()) == {"a": 1, "b": None}
    assert isinstance(state, Mapping)


def test_get_all_is_a_copy() -> None:
    state = State({"a": 1})
    data = state.get_all()
    data["a"] = 2
    data["new"] = 3
    assert state.get_all() == {"a": 1}


def test_missing_key_error_names_the_key() -> None:
    state = State({"present": 1})
    with pytest.raises(KeyError, match="missing_key") as info:
        state["missing_key"]
    assert "present" in str(info.value)


def test_equality_and_repr() -> None:
    assert State({"a": 1}) == State({"a": 1})
    assert State({"a": 1}) == {"a": 1}
    assert State({"a": 1}) != State({"a": 2})
    assert State({"a": 1}) != {"a": 1, "b": 2}
    assert State({"a": 1}) != 1
    assert repr(State({"a": 1})) == "State({'a': 1})"
    with pytest.raises(TypeError):
        hash(State())


# -- writing -----------------------------------------------------------------------------------


def test_update_returns_new_state_and_leaves_original() -> None:
    original = State({"a": 1, "b": 2})
    updated = original.update(a=10, c=3)
    assert updated is not original
    assert updated.get_all() == {"a": 10, "b": 2, "c": 3}
    assert original.get_all() == {"a": 1, "b": 2}


def test_update_without_arguments_is_an_equal_new_state() -> None:
    original = State({"a": 1})
    same = original.update()
    assert same == original
    assert same is not original


def test_append_creates_list_for_missing_key() -> None:
    state = State().append(xs=1)
    assert state["xs"] == [1]


def test_append_adds_to_existing_list_and_leaves_original() -> None:
    original = State({"xs": [1, 2]})
    appended = original.append(xs=3)
    assert appended["xs"] == [1, 2, 3]
    assert original["xs"] == [1, 2]
    assert appended["xs"] is not original["xs"]


def test_append_to_tuple_gives_list() -> None:
    assert State({"xs": (1,)}).append(xs=2)["xs"] == [1, 2]


def test_append_does_not_touch_a_list_shared_with_another_state() -> None:
    shared = [1]
    first = State({"xs": shared})
    second = State({"xs": shared})
    third = State(first)
    appended = first.append(xs=2)
    assert appended["xs"] == [1, 2]
    assert shared == [1]
    assert second["xs"] == [1]
    assert third["xs"] == [1]
    assert first["xs"] == [1]


def test_extend_does_not_touch_a_list_shared_with_another_state() -> None:
    shared = ["a"]
    first = State({"xs": shared})
    second = State({"xs": shared})
    extended = first.extend(xs=iter(["b", "c"]), ys=("z",))
    assert extended["xs"] == ["a", "b", "c"]
    assert extended["ys"] == ["z"]
    assert shared == ["a"]
    assert second["xs"] == ["a"]
    assert "ys" not in first


@pytest.mark.parametrize("verb", ["append", "extend"])
def test_append_and_extend_to_a_non_list_name_the_key(verb: str) -> None:
    state = State({"counter": 3})
    with pytest.raises(TypeError, match="'counter'") as info:
        getattr(state, verb)(counter=[1])
    assert "int" in str(info.value)
    assert state["counter"] == 3


def test_increment() -> None:
    original = State({"n": 1, "f": 1.5})
    incremented = original.increment(n=2, f=1.0, fresh=4)
    assert incremented.get_all() == {"n": 3, "f": 2.5, "fresh": 4}
    assert original.get_all() == {"n": 1, "f": 1.5}
    assert original.increment(n=-5)["n"] == -4


@pytest.mark.parametrize("value", ["3", [1], None, True])
def test_increment_on_a_non_number_names_the_key(value: object) -> None:
    state = State({"total": value})
    with pytest.raises(TypeError, match="'total'") as info:
        state.increment(total=1)
    assert type(value).__name__ in str(info.value)
    assert state["total"] == value


def test_wipe_delete() -> None:
    original = State({"a": 1, "b": 2, "c": 3})
    wiped = original.wipe(delete=["a", "c", "not_there"])
    assert wiped.get_all() == {"b": 2}
    assert original.get_all() == {"a": 1, "b": 2, "c": 3}


def test_wipe_keep() -> None:
    original = State({"a": 1, "b": 2, "c": 3})
    wiped = original.wipe(keep=["a", "not_there"])
    assert wiped.get_all() == {"a": 1}
    assert original.get_all() == {"a": 1, "b": 2, "c": 3}
    assert original.wipe(keep=[]).get_all() == {}


def test_wipe_requires_exactly_one_argument() -> None:
    state = State({"a": 1})
    with pytest.raises(ValueError, match="exactly one"):
        state.wipe()
    with pytest.raises(ValueError, match="exactly one"):
        state.wipe(delete=["a"], keep=["a"])


@pytest.mark.parametrize(
    ("operation", "key"),
    [
        (lambda s: s.append(counter=1), "counter"),
        (lambda s: s.extend(counter=[1]), "counter"),
        (lambda s: s.increment(name=1), "name"),
        (lambda s: s.wipe(), None),
    ],
    ids=["append", "extend", "increment", "wipe"],
)
def test_a_state_operation_error_is_the_librarys_a_value_error_and_a_type_error(
    operation: object, key: str | None
) -> None:
    state = State({"counter": 3, "name": "x"})
    with pytest.raises(StateOperationError) as info:
        operation(state)  # type: ignore[operator]
    error = info.value
    assert isinstance(error, BurrAsyncError)
    assert isinstance(error, ValueError)  # what Burr raises
    assert isinstance(error, TypeError)  # what burr_async raised before
    assert error.key == key
    for caught in (ValueError, TypeError, BurrAsyncError):
        with contextlib.suppress(caught):
            operation(state)  # type: ignore[operator]


def test_burr_raises_value_error_for_the_same_operations() -> None:
    burr_state = pytest.importorskip("burr.core.state")
    with pytest.raises(ValueError, match="Cannot append"):
        burr_state.State({"counter": 3}).append(counter=1)
    with pytest.raises(StateOperationError):
        State({"counter": 3}).append(counter=1)


def test_merge() -> None:
    left = State({"a": 1, "b": 2})
    right = State({"b": 20, "c": 30})
    merged = left.merge(right)
    assert merged.get_all() == {"a": 1, "b": 20, "c": 30}
    assert left.get_all() == {"a": 1, "b": 2}
    assert right.get_all() == {"b": 20, "c": 30}
    assert left.merge({"a": 0}).get_all() == {"a": 0, "b": 2}


def test_subset() -> None:
    original = State({"a": 1, "b": 2, "c": 3})
    assert original.subset("a", "c").get_all() == {"a": 1, "c": 3}
    assert original.subset("a", "zzz").get_all() == {"a": 1}
    assert original.get_all() == {"a": 1, "b": 2, "c": 3}


def test_subset_with_ignore_missing_false_names_the_missing_key() -> None:
    with pytest.raises(KeyError, match="zzz"):
        State({"a": 1}).subset("a", "zzz", ignore_missing=False)
    assert State({"a": 1}).subset("a", ignore_missing=False).get_all() == {"a": 1}


def test_every_operation_returns_a_new_state() -> None:
    state = State({"xs": [1], "n": 1})
    results = [
        state.update(n=2),
        state.append(xs=2),
        state.extend(xs=[2]),
        state.increment(n=1),
        state.wipe(delete=["n"]),
        state.wipe(keep=["n"]),
        state.merge({"n": 5}),
        state.subset("n"),
    ]
    for result in results:
        assert isinstance(result, State)
        assert result is not state
    assert state.get_all() == {"xs": [1], "n": 1}


# -- properties --------------------------------------------------------------------------------


@given(
    data=st.dictionaries(KEYS, st.lists(SCALARS, max_size=4), max_size=4),
    key=KEYS,
    value=SCALARS,
)
def test_append_never_mutates(data: dict[str, list[object]], key: str, value: object) -> None:
    snapshot = copy.deepcopy(data)
    state = State(data)
    sibling = State(data)
    appended = state.append(**{key: value})
    assert appended[key] == [*snapshot.get(key, []), value]
    assert state.get_all() == snapshot
    assert sibling.get_all() == snapshot
    assert data == snapshot
    for other in data:
        if other != key:
            assert appended[other] == snapshot[other]


@given(
    left=st.dictionaries(KEYS, SCALARS, max_size=5),
    right=st.dictionaries(KEYS, SCALARS, max_size=5),
)
def test_update_and_merge_overlay_the_right_side(
    left: dict[str, object], right: dict[str, object]
) -> None:
    state = State(left)
    expected = {**left, **right}
    assert state.update(**right).get_all() == expected
    assert state.merge(right).get_all() == expected
    assert state.merge(State(right)).get_all() == expected
    assert state.get_all() == left


@given(
    data=st.dictionaries(KEYS, SCALARS, max_size=6),
    keys=st.sets(KEYS, max_size=4),
)
def test_wipe_delete_and_keep_partition_the_state(data: dict[str, object], keys: set[str]) -> None:
    state = State(data)
    deleted = state.wipe(delete=keys).get_all()
    kept = state.wipe(keep=keys).get_all()
    assert set(deleted).isdisjoint(kept)
    assert {**deleted, **kept} == data
    assert set(kept) == keys & set(data)
    assert state.subset(*keys).get_all() == kept


# -- serialize / deserialize (what a Burr persister calls) --------------------------------------


def test_serialize_is_json_able_and_deserialize_is_its_inverse() -> None:
    state = State(
        {
            "when": dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
            "tags": {"a", "b"},
            "raw": b"\x00\x01",
            "nested": [{"__burr_async__": "a user dict using the tag key"}],
            "n": 1,
        }
    )
    data = state.serialize()
    assert json.loads(json.dumps(data)) == data  # plain JSON values only
    assert State.deserialize(json.loads(json.dumps(data))) == state


def test_deserialize_keeps_values_that_are_not_tags() -> None:
    when = dt.datetime(2024, 1, 2)
    assert State.deserialize({"when": when, "pair": (1, 2)}) == {"when": when, "pair": (1, 2)}


def test_serialize_and_deserialize_report_bad_values_by_key() -> None:
    with pytest.raises(SerializationError, match="'obj'"):
        State({"obj": object()}).serialize()
    with pytest.raises(SerializationError, match="'bad'"):
        State.deserialize({"bad": {"__burr_async__": "nonsense", "value": 1}})
