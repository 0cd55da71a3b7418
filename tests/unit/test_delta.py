"""The delta encoder and the rebuild of states from rows, without a database."""

from __future__ import annotations

import gc
from collections.abc import Callable

import orjson
import pytest

from burr_async import OrjsonSerde, State
from burr_async.persistence._delta import DamagedHistoryError, DeltaEncoder, rebuild, rebuild_last

PAD = "p" * 2000  # a state large enough that deltas never outweigh it here


def encoder(every: int = 50) -> DeltaEncoder:
    return DeltaEncoder(OrjsonSerde(), every)


def ops(text: bytes) -> dict[str, object]:
    parsed = orjson.loads(text)
    assert parsed[0] == "delta"
    return parsed[1]  # type: ignore[no-any-return]


def test_a_step_is_encoded_as_what_it_changed() -> None:
    e = encoder()
    base = State({"chat": ["a"], "gone": 1, "n": 1, "pad": PAD})
    e.remember("", "app", e.encode("", "app", 0, base).chain)
    after = base.append(chat="b").wipe(delete=["gone"]).update(n=2, new={"k": b"x"})
    written = e.encode("", "app", 1, after)
    assert written.delta
    assert ops(written.text) == {
        "set": {"n": 2, "new": {"k": {"__burr_async__": "bytes", "value": "eA=="}}},
        "append": {"chat": ["b"]},
        "drop": ["gone"],
    }


def test_the_same_step_encodes_the_same_bytes_again() -> None:
    """A write whose outcome was unknown is sent again: it must be the very same row."""
    e = encoder()
    base = State({"chat": [], "pad": PAD})
    e.remember("", "app", e.encode("", "app", 0, base).chain)
    after = base.append(chat="x")
    assert e.encode("", "app", 1, after).text == e.encode("", "app", 1, after).text


def test_a_full_state_when_the_base_is_gone_or_not_the_step_before() -> None:
    e = encoder()
    base = State({"chat": [], "pad": PAD})
    e.remember("", "app", e.encode("", "app", 0, base).chain)
    after = base.append(chat="x")
    assert not e.encode("", "app", 2, after).delta  # not the next step
    assert not e.encode("", "other", 1, after).delta  # another app
    e.forget("", "app")
    assert not e.encode("", "app", 1, after).delta  # forgotten
    e.remember("", "app", e.encode("", "app", 0, base).chain)
    del base
    gc.collect()
    assert not e.encode("", "app", 1, after).delta  # nothing holds the base any more


def test_a_full_state_every_snapshot_every_steps() -> None:
    e = encoder(every=4)
    states = [State({"chat": [], "pad": PAD})]
    kinds = []
    for seq in range(9):
        if seq:
            states.append(states[-1].append(chat=seq))
        written = e.encode("", "app", seq, states[-1])
        e.remember("", "app", written.chain)
        kinds.append(written.delta)
    assert kinds == [False, True, True, True, False, True, True, True, False]


def test_appends_are_found_by_record_or_by_identity_and_equal_is_not_the_same() -> None:
    e = encoder()
    item = {"role": "user"}
    base = State({"a": [item, 1], "pad": PAD})
    e.remember("", "app", e.encode("", "app", 0, base).chain)
    by_hand = base.update(a=[*base["a"], 2])
    assert ops(e.encode("", "app", 1, by_hand).text) == {"append": {"a": [2]}}
    several = base.append(a=2).update(other=1).append(a=3).extend(a=[4, 5])
    assert ops(e.encode("", "app", 1, several).text) == {
        "set": {"other": 1},
        "append": {"a": [2, 3, 4, 5]},
    }
    equal = base.update(a=[item, True, 2])  # 1 replaced by True, which is == 1
    assert ops(e.encode("", "app", 1, equal).text) == {"set": {"a": [item, True, 2]}}
    copied = base.update(a=[dict(item), 1, 2])  # an equal copy: not known to be unchanged
    assert ops(e.encode("", "app", 1, copied).text) == {"set": {"a": [item, 1, 2]}}


def test_a_window_is_stored_as_the_items_it_dropped_and_took_in() -> None:
    """A list kept to its last n items (the oldest leave at the front, new ones come in at the
    end) is stored as a ``trim`` of the front and an ``append``, not as the whole new list."""
    e = encoder()
    messages = [{"n": i} for i in range(5)]
    base = State({"chat": messages, "pad": PAD})
    e.remember("", "app", e.encode("", "app", 0, base).chain)
    new, newer = {"n": 5}, {"n": 6}
    assert ops(e.encode("", "app", 1, base.update(chat=[*messages[1:], new])).text) == {
        "trim": {"chat": 1},
        "append": {"chat": [{"n": 5}]},
    }
    assert ops(e.encode("", "app", 1, base.update(chat=[*messages[3:], new, newer])).text) == {
        "trim": {"chat": 3},
        "append": {"chat": [{"n": 5}, {"n": 6}]},
    }
    assert ops(e.encode("", "app", 1, base.update(chat=messages[2:])).text) == {"trim": {"chat": 2}}
    # a table before revision 0005 takes no trim section: the new list is stored whole
    old_table = e.encode("", "app", 1, base.update(chat=[*messages[1:], new]), trims=False)
    assert ops(old_table.text) == {"set": {"chat": [{"n": i} for i in range(1, 6)]}}


@pytest.mark.parametrize(
    "change",
    [
        lambda m: [m[1], m[0], *m[2:]],  # reordered
        lambda m: [*m[1:3], dict(m[3]), m[4]],  # a kept item replaced by an equal copy
        lambda m: [{"n": 0}, *m[1:]],  # the first item replaced
        lambda m: [],  # emptied
        lambda m: [*m[2:4], {"n": 9}, m[4]],  # an item inserted between kept ones
    ],
)
def test_a_list_that_is_not_a_window_of_the_one_before_is_stored_whole(
    change: Callable[[list[object]], list[object]],
) -> None:
    e = encoder()
    messages: list[object] = [{"n": i} for i in range(5)]
    base = State({"chat": messages, "pad": PAD})
    e.remember("", "app", e.encode("", "app", 0, base).chain)
    changed = change(messages)
    written = ops(e.encode("", "app", 1, base.update(chat=changed)).text)
    assert written == {"set": {"chat": changed}}
    assert (
        rebuild_last([(0, False, full_text(base)), (1, True, delta_text(written))])[0]["chat"]
        == changed
    )


def test_a_window_over_repeated_objects_rebuilds_exactly() -> None:
    """The kept run is looked for from the first repeat of the new list's first item: a list of
    one object many times over still rebuilds into the very list the step made."""
    e = encoder()
    x, y = {"x": 1}, {"y": 2}
    base = State({"chat": [x, x, x, y], "pad": PAD})
    e.remember("", "app", e.encode("", "app", 0, base).chain)
    for changed in ([x, x, y, y], [x, y], [y, x], [x, x, x, y, x]):
        text = e.encode("", "app", 1, base.update(chat=changed)).text
        rebuilt, _ = rebuild_last([(0, False, full_text(base)), (1, True, text.decode())])
        assert rebuilt["chat"] == changed, (changed, ops(text))


def test_state_records_which_lists_it_extended() -> None:
    s = State({"a": [1], "b": 0})
    grown = s.append(a=2)
    assert grown._grown == {"a": ((s["a"], 1),)}
    assert grown.update(b=1)._grown == grown._grown  # other keys keep the record
    assert grown.update(a=[9])._grown is None  # a replaced list loses it
    assert grown.wipe(delete=["a"])._grown is None
    assert State({"a": [1]})._grown is None
    twice = grown.append(a=3)
    assert [count for _, count in twice._grown["a"]] == [1, 2]  # type: ignore[index]
    assert twice == State({"a": [1, 2, 3], "b": 0})


def full_text(state: State) -> str:
    return OrjsonSerde().dumps(state).decode()


def delta_text(sections: dict[str, object]) -> str:
    return orjson.dumps(["delta", sections]).decode()


def rows(*texts: str, start: int = 0) -> list[tuple[int, bool, str]]:
    return [(start + i, text.startswith("["), text) for i, text in enumerate(texts)]


def test_rows_rebuild_into_each_state() -> None:
    stored = rows(
        '{"a": [1], "b": 1}',
        '["delta", {"append": {"a": [2]}, "set": {"c": 3}}]',
        '["delta", {"drop": ["b"]}]',
        '{"z": 0}',
        '["delta", {}]',
        '["delta", {"set": {"w": [1, 2, 3]}}]',
        '["delta", {"trim": {"w": 2}, "append": {"w": [4, 5]}}]',
        '["delta", {"append": {"w": [6]}, "trim": {"w": 1}}]',
        start=5,
    )
    assert [(seq, state) for seq, state, _ in rebuild(stored)] == [
        (5, {"a": [1], "b": 1}),
        (6, {"a": [1, 2], "b": 1, "c": 3}),
        (7, {"a": [1, 2], "c": 3}),
        (8, {"z": 0}),
        (9, {"z": 0}),
        (10, {"z": 0, "w": [1, 2, 3]}),
        (11, {"z": 0, "w": [3, 4, 5]}),
        (12, {"z": 0, "w": [4, 5, 6]}),
    ]
    assert rebuild_last(stored)[0] == {"z": 0, "w": [4, 5, 6]}
    assert rebuild_last(stored[:3]) == ({"a": [1, 2], "c": 3}, False)


@pytest.mark.parametrize(
    "delta",
    [
        "not json",
        '{"a": 1}',
        '["delta"]',
        '["other", {}]',
        '["delta", {"zip": {}}]',
        '["delta", {"set": []}]',
        '["delta", {"drop": ["missing"]}]',
        '["delta", {"drop": [1]}]',
        '["delta", {"append": {"b": [1]}}]',
        '["delta", {"append": {"a": 1}}]',
        '["delta", {"trim": {"b": 1}}]',
        '["delta", {"trim": {"a": 1}}]',
        '["delta", {"trim": {"c": 0}}]',
        '["delta", {"trim": {"c": -1}}]',
        '["delta", {"trim": {"c": 4}}]',
        '["delta", {"trim": {"c": 1.0}}]',
        '["delta", {"trim": {"c": true}}]',
        '["delta", {"trim": ["c"]}]',
    ],
)
def test_a_damaged_delta_is_refused(delta: str) -> None:
    stored = [(0, False, '{"a": [], "b": 1, "c": [1, 2, 3]}'), (1, True, delta)]
    with pytest.raises(DamagedHistoryError):
        rebuild_last(stored)
    with pytest.raises(DamagedHistoryError):
        list(rebuild(stored))


def test_a_chain_must_start_full_and_be_contiguous() -> None:
    with pytest.raises(DamagedHistoryError, match="no full state"):
        rebuild_last([(3, True, '["delta", {}]')])
    gap = [(0, False, "{}"), (2, True, '["delta", {}]')]
    with pytest.raises(DamagedHistoryError, match="missing"):
        rebuild_last(gap)
    with pytest.raises(DamagedHistoryError, match="not stored"):
        list(rebuild(gap))
    with pytest.raises(DamagedHistoryError):
        rebuild_last([(0, False, "[1]")])
