"""The workloads W0-W5: what each measures, its sizes, and how its figure is computed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "FULL",
    "LONG_LOADS",
    "LONG_WINDOW",
    "QUICK",
    "WARMUP",
    "WORKLOADS",
    "Sizes",
    "Workload",
    "parse_workloads",
]


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each workload is. Steps come in turns of two (``human_converse``, ``ai_converse``),
    so step counts are even."""

    w0_steps: int
    w1_steps: int
    w2_apps: int
    w2_steps: int
    w3_apps: int
    w3_seed_steps: int
    w4_steps: int
    w5_children: int
    """W5: children of the parent's one fan-out step."""
    w5_child_steps: int
    """W5: steps of each child (actions of its sub-graph, run once each; any count)."""

    def __post_init__(self) -> None:
        for name in ("w0_steps", "w1_steps", "w2_steps", "w3_seed_steps", "w4_steps"):
            value = getattr(self, name)
            if value <= 0 or value % 2:
                raise ValueError(f"{name} must be a positive even number of steps, not {value}")
        for name in ("w5_children", "w5_child_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")


FULL = Sizes(
    w0_steps=10_000,
    w1_steps=500,
    w2_apps=100,
    w2_steps=20,
    w3_apps=100,
    w3_seed_steps=2,
    w4_steps=1_000,
    w5_children=100,
    w5_child_steps=5,
)
"""What ``make bench`` runs (the sizes of the issue)."""

QUICK = Sizes(
    w0_steps=200,
    w1_steps=20,
    w2_apps=10,
    w2_steps=4,
    w3_apps=10,
    w3_seed_steps=2,
    w4_steps=40,
    w5_children=5,
    w5_child_steps=5,
)
"""``--quick``: a smoke run that only shows every path works."""

WARMUP = Sizes(
    w0_steps=200,
    w1_steps=20,
    w2_apps=20,
    w2_steps=2,
    w3_apps=10,
    w3_seed_steps=2,
    w4_steps=20,
    w5_children=20,
    w5_child_steps=5,
)
"""One untimed pass before the first round: imports, prepared statements, every pooled
connection opened (W2 runs 20 apps at once, more than any pool's 10 connections)."""


LONG_WINDOW = 20
"""W4's step-time figures are the medians of its first and of its last this many steps."""

LONG_LOADS = 20
"""W4's latest-load figure is the median of this many loads after the run."""


@dataclass(frozen=True, slots=True)
class Workload:
    """One workload: ``metric(elapsed_seconds, sizes)`` gives its figure in ``unit``.

    A ``long`` workload (W4) yields several figures per run instead (see
    :class:`benchmarks.contenders.base.LongChat`); its ``metric`` is that of the whole run and
    it is reported in its own table, and it runs only in the first ``--long-rounds`` rounds
    (1 by default). A ``fanout`` workload (W5) runs in every round and also yields figures
    (:class:`benchmarks.contenders.base.FanOut`): its ``metric`` goes to the main table, its
    figures to a table of their own."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    needs_database: bool
    metric: Callable[[float, Sizes], float]
    describe: Callable[[Sizes], str]
    long: bool = False
    fanout: bool = False


def _per(count: Callable[[Sizes], int], scale: float) -> Callable[[float, Sizes], float]:
    return lambda elapsed, sizes: elapsed * scale / count(sizes)


def _rate(count: Callable[[Sizes], int]) -> Callable[[float, Sizes], float]:
    return lambda elapsed, sizes: count(sizes) / elapsed


WORKLOADS: dict[str, Workload] = {
    w.key: w
    for w in (
        Workload(
            "W0",
            "runtime alone",
            "µs/step",
            higher_is_better=False,
            needs_database=False,
            metric=_per(lambda s: s.w0_steps, 1e6),
            describe=lambda s: f"one app, {s.w0_steps:,} steps, no persister",
        ),
        Workload(
            "W1",
            "sequential",
            "µs/step",
            higher_is_better=False,
            needs_database=True,
            metric=_per(lambda s: s.w1_steps, 1e6),
            describe=lambda s: f"one app, {s.w1_steps:,} sequential steps, each persisted",
        ),
        Workload(
            "W2",
            "concurrent",
            "steps/s",
            higher_is_better=True,
            needs_database=True,
            metric=_rate(lambda s: s.w2_apps * s.w2_steps),
            describe=lambda s: f"{s.w2_apps} apps x {s.w2_steps} steps, all apps at once",
        ),
        Workload(
            "W3",
            "resume",
            "apps/s",
            higher_is_better=True,
            needs_database=True,
            metric=_rate(lambda s: s.w3_apps),
            describe=lambda s: (
                f"load and build {s.w3_apps} stored apps one after another "
                "(initialize_from + abuild)"
            ),
        ),
        Workload(
            "W4",
            "long chat",
            "µs/step",
            higher_is_better=False,
            needs_database=True,
            metric=_per(lambda s: s.w4_steps, 1e6),
            describe=lambda s: (
                f"one app, {s.w4_steps:,} steps from an empty history that keeps every message: "
                f"bytes stored, µs/step over its first and last {LONG_WINDOW} steps, latest-load "
                f"time (median of {LONG_LOADS})"
            ),
            long=True,
        ),
        Workload(
            "W5",
            "fan-out",
            "child steps/s",
            higher_is_better=True,
            needs_database=True,
            metric=_rate(lambda s: s.w5_children * s.w5_child_steps),
            describe=lambda s: (
                f"one parent step fanning out to {s.w5_children} children of "
                f"{s.w5_child_steps} steps each (a {s.w5_child_steps}-action sub-graph, small "
                "chat-like states), all children at once: the parent step's wall time, child "
                "steps/s (÷ W2's steps/s of the same run), commits of the child steps"
            ),
            fanout=True,
        ),
    )
}


def parse_workloads(spec: str | None) -> list[Workload]:
    """``"W1,W2"`` (case-insensitive) as workloads, in W0-W5 order; all of them for None."""
    if not spec:
        return list(WORKLOADS.values())
    wanted = {part.strip().upper() for part in spec.split(",") if part.strip()}
    unknown = wanted - WORKLOADS.keys()
    if unknown:
        raise ValueError(f"unknown workload(s) {sorted(unknown)}; choose from {list(WORKLOADS)}")
    return [w for key, w in WORKLOADS.items() if key in wanted]
