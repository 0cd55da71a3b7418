"""How an expire cuts its work into statements: whole small apps packed into groups, and large
apps cut before full rows (so that what is left of a spared app starts with one)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from burr_async.persistence import _retention
from burr_async.persistence._retention import part_ends, whole_app_batches


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_retention, "BATCH_ROWS", 10)


def test_parts_end_at_the_latest_full_row_within_a_batch() -> None:
    # a full row every 4 steps: each part stops at the last one within 10 steps
    assert part_ends(list(range(0, 40, 4)), 0, 39) == [8, 16, 24, 32]
    # every row full (snapshot storage): parts of exactly a batch
    assert part_ends(list(range(35)), 0, 34) == [10, 20, 30]


def test_full_rows_sparser_than_a_batch_make_longer_parts() -> None:
    assert part_ends([0, 25, 50], 0, 60) == [25, 50]
    assert part_ends([0], 0, 60) == []  # no full row to stop at: removed in one statement


def test_a_history_within_a_batch_needs_no_parts() -> None:
    assert part_ends([0, 4, 8], 0, 9) == []
    assert part_ends([20, 24], 20, 29) == []  # pruned earlier: it starts at step 20


@given(
    full=st.sets(st.integers(0, 200)).map(sorted),
    first=st.integers(0, 50),
    length=st.integers(1, 150),
)
def test_every_part_ends_before_a_full_row_and_the_parts_move_on(
    full: list[int], first: int, length: int
) -> None:
    last = first + length - 1
    full = [seq for seq in full if first <= seq <= last]
    ends = part_ends(full, first, last)
    assert ends == sorted(set(ends))
    assert all(end in full and first < end <= last for end in ends)
    start = ends[-1] if ends else first
    assert last - start + 1 <= 10 or not [seq for seq in full if seq > start]


def test_small_apps_are_packed_whole_within_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_retention, "APPS_PER_STATEMENT", 3)
    apps = [
        SimpleNamespace(partition_key="p", app_uid=f"a{n}", steps=steps)
        for n, steps in enumerate([3, 4, 11, 3, 1, 1, 1, 10])
    ]
    groups = list(whole_app_batches(apps))  # type: ignore[arg-type]
    assert groups == [
        [("p", "a0"), ("p", "a1"), ("p", "a3")],  # 10 steps; a2 (11) is removed in parts
        [("p", "a4"), ("p", "a5"), ("p", "a6")],  # three apps at most
        [("p", "a7")],  # 3 + 10 steps would be more than a batch
    ]
