"""The report: results (medians), ratios, targets, durability settings and the environment, as
Markdown for the terminal and for the marked section of ``docs/performance.md``."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import chat
from benchmarks.contenders import CONTENDERS
from benchmarks.runner import RunResult
from benchmarks.workloads import LONG_LOADS, LONG_WINDOW, WORKLOADS, Workload

__all__ = ["DOCS_PATH", "render", "write_docs"]

DOCS_PATH = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
START_MARK = "<!-- bench:start -->"
END_MARK = "<!-- bench:end -->"

_PACKAGES = (
    "burr_async",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "orjson",
    "apache-burr",
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint-postgres",
    "psycopg",
)


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    median = statistics.median(values)
    half = (max(values) - min(values)) / 2
    return f" ±{100 * half / median:.0f}%" if median else ""


def _table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _row_label(workload: Workload, backend: str) -> tuple[str, str]:
    where = "—" if backend == "memory" else backend
    return f"{workload.key} {workload.title} ({workload.unit})", where


def _short_ran(result: RunResult) -> list[tuple[str, str]]:
    """The (workload, backend) pairs that ran, but for the long workloads (their own table)."""
    return [(w, b) for w, b in result.ran() if not WORKLOADS[w].long]


def _results(result: RunResult) -> list[str]:
    keys = [e.key for e in result.config.contenders]
    header = ["workload", "backend", *(CONTENDERS[k].label for k in keys)]
    rows: list[list[str]] = []
    for wkey, backend in _short_ran(result):
        workload = WORKLOADS[wkey]
        label, where = _row_label(workload, backend)
        cells = []
        for key in keys:
            values = result.values(wkey, backend, key)
            if values:
                cells.append(_fmt(statistics.median(values)) + _spread(values))
            else:
                status = result.status.get((key, backend), "")
                cells.append(
                    "not installed"
                    if status.startswith("not installed")
                    else ("failed" if status.startswith("failed") else "—")
                )
        rows.append([label, where, *cells])
    return _table(header, rows, ["l", "l", *("r" for _ in keys)])


def _time_ratio(result: RunResult, wkey: str, backend: str, a: str, b: str) -> float | None:
    """``a``'s time per unit divided by ``b``'s (below 1: ``a`` is faster)."""
    va, vb = result.median(wkey, backend, a), result.median(wkey, backend, b)
    if va is None or vb is None or va == 0 or vb == 0:
        return None
    return vb / va if WORKLOADS[wkey].higher_is_better else va / vb


def _ratios(result: RunResult) -> list[str]:
    keys = [e.key for e in result.config.contenders]
    pairs = [("burr_async", k) for k in keys if k != "burr_async"]
    if "burr_async-snapshot" in keys and "raw" in keys:
        pairs.append(("burr_async-snapshot", "raw"))
    if not pairs:
        return []
    header = [
        "workload",
        "backend",
        *(f"{CONTENDERS[a].label} ÷ {CONTENDERS[b].label}" for a, b in pairs),
    ]
    rows = []
    for wkey, backend in _short_ran(result):
        label, where = _row_label(WORKLOADS[wkey], backend)
        cells = []
        for a, b in pairs:
            ratio = _time_ratio(result, wkey, backend, a, b)
            cells.append("—" if ratio is None else f"{ratio:.2f}x")
        rows.append([label.split(" (")[0], where, *cells])
    return _table(header, rows, ["l", "l", *("r" for _ in pairs)])


_SNAPSHOT = "burr_async-snapshot"


def _step_labels(steps: int) -> tuple[str, str]:
    """What W4's two step-time figures stand for: the middle of its first and last windows."""
    window = min(LONG_WINDOW, steps // 2)
    return f"step {window // 2:,}", f"step {steps:,}"


_FIGURES = ("bytes", "logical_bytes", "rows", "step_first_us", "step_last_us", "load_us")


def _figures(result: RunResult, wkey: str, backend: str, key: str) -> dict[str, float | None]:
    return {name: result.figure(wkey, backend, key, name) for name in _FIGURES}


def _long(result: RunResult, wkey: str) -> list[str]:
    """The table of a long workload: one row per (backend, contender)."""
    steps = result.config.sizes.w4_steps
    first, last = _step_labels(steps)
    header = [
        "backend",
        "contender",
        "bytes stored",
        f"÷ {CONTENDERS[_SNAPSHOT].label}",
        "uncompressed",
        "rows",
        f"µs/step at {first}",
        f"at {last}",
        f"{last} ÷ {first}",
        "latest load (µs)",
        f"÷ {CONTENDERS[_SNAPSHOT].label}",
    ]
    rows = []
    for backend in [b for w, b in result.ran() if w == wkey]:
        base_bytes = result.figure(wkey, backend, _SNAPSHOT, "bytes")
        base_load = result.figure(wkey, backend, _SNAPSHOT, "load_us")
        for entry in result.config.contenders:
            fig = _figures(result, wkey, backend, entry.key)
            stored, load = fig["bytes"], fig["load_us"]
            step_first, step_last = fig["step_first_us"], fig["step_last_us"]
            if stored is None or load is None or step_first is None or step_last is None:
                continue
            rows.append(
                [
                    backend,
                    CONTENDERS[entry.key].label,
                    f"{stored:,.0f}",
                    f"{100 * stored / base_bytes:.1f}%" if base_bytes else "—",
                    f"{fig['logical_bytes'] or 0:,.0f}",
                    f"{fig['rows'] or 0:,.0f}",
                    _fmt(step_first),
                    _fmt(step_last),
                    f"{step_last / step_first:.2f}x" if step_first else "—",
                    _fmt(load),
                    f"{load / base_load:.2f}x" if base_load else "—",
                ]
            )
    return _table(header, rows, ["l", "l", *("r" for _ in header[2:])])


def _long_section(result: RunResult) -> list[str]:
    lines: list[str] = []
    sizes = result.config.sizes
    for wkey in dict.fromkeys(w for w, _b in result.ran() if WORKLOADS[w].long):
        workload = WORKLOADS[wkey]
        steps = sizes.w4_steps
        window = min(LONG_WINDOW, steps // 2)
        first, last = _step_labels(steps)
        lines += [
            f"{wkey} {workload.title}: one app of {steps:,} steps ({steps // 2:,} turns) from an "
            "empty history that keeps every message (the same graph, no window), its state "
            f"~{chat.encoded_long_state_size(steps) / 1024:.0f} KB at the last step; "
            f"{min(result.config.rounds, result.config.long_rounds)} round(s). *bytes stored*: "
            "the app's state payload as the database holds it after the run (Postgres: "
            "`sum(pg_column_size(...))`, after TOAST compression; SQLite: "
            "`sum(length(CAST(... AS BLOB)))`); *uncompressed*: the same payload's length "
            "before compression (Postgres: `octet_length` of JSONB as text, of BYTEA as is; "
            f"SQLite: the same figure); *µs/step at {first}* and *at {last}*: the median of "
            f"steps 1-{window} and {steps - window + 1:,}-{steps:,} (each turn's wall clock "
            f"halved); *latest load*: the median of {LONG_LOADS} loads of the latest state "
            "after the run, each checked to hold the whole history.",
            "",
            *_long(result, wkey),
            "",
        ]
    return lines


def _fanout(result: RunResult, wkey: str) -> list[str]:
    """The fan-out's table: one row per (backend, contender) that ran it."""
    header = [
        "backend",
        "contender",
        "parent step (ms)",
        "child steps/s",
        "÷ its W2 steps/s",
        "commits of the child steps",
        "child steps per commit",
    ]
    rows = []
    for backend in [b for w, b in result.ran() if w == wkey]:
        for entry in result.config.contenders:
            parent = result.figure(wkey, backend, entry.key, "parent_ms")
            rate = result.figure(wkey, backend, entry.key, "child_steps_per_s")
            if parent is None or rate is None:
                continue
            w2 = result.median("W2", backend, entry.key)
            commits = result.figure(wkey, backend, entry.key, "commits")
            per_commit = result.figure(wkey, backend, entry.key, "steps_per_commit")
            rows.append(
                [
                    backend,
                    CONTENDERS[entry.key].label,
                    _fmt(parent),
                    _fmt(rate),
                    f"{rate / w2:.2f}x" if w2 else "—",
                    "—" if commits is None else f"{commits:,.0f}",
                    "—" if per_commit is None else _fmt(per_commit),
                ]
            )
    return _table(header, rows, ["l", "l", *("r" for _ in header[2:])])


def _fanout_section(result: RunResult) -> list[str]:
    lines: list[str] = []
    sizes = result.config.sizes
    for wkey in dict.fromkeys(w for w, _b in result.ran() if WORKLOADS[w].fanout):
        children, steps = sizes.w5_children, sizes.w5_child_steps
        lines += [
            f"{wkey} {WORKLOADS[wkey].title}: one parent step fanning out to {children} children "
            f"of {steps} steps each ({children * steps:,} child steps, every one a stored row), "
            f"all children at once; a child's state is a small chat of ~"
            f"{chat.encoded_fanout_child_size(steps):,} bytes at its last step. *parent step*: "
            "the wall time of the parent's one step (building, loading and running every child, "
            "reduce, the parent's own row), median over rounds; *child steps/s*: the child steps "
            "over that time; *÷ its W2 steps/s*: against the same contender's W2 (independent "
            "apps, all at once, ~16 KB rows) in this run; *commits*: how many commits stored "
            "the child steps (burr_async: counted from the group writer's note of each row's "
            "commit size), and the child steps per commit. Medians over rounds, each figure "
            "on its own.",
            "",
            *_fanout(result, wkey),
            "",
        ]
    return lines


@dataclass(frozen=True, slots=True)
class _Target:
    workload: str
    backend: str
    against: str
    limit: float
    strict: bool
    text: str


_TARGETS = (
    _Target("W0", "memory", "burr", 1.0, True, "below Burr's per-step runtime cost"),
    _Target("W1", "sqlite", "raw", 1.3, False, "≤ 1.30x the raw driver per step"),
    _Target("W1", "postgres", "raw", 1.3, False, "≤ 1.30x the raw driver per step"),
    _Target("W2", "sqlite", "burr", 1.0, True, "ahead of Burr (more steps/s)"),
    _Target("W2", "postgres", "burr", 1.0, True, "ahead of Burr (more steps/s)"),
    _Target("W3", "sqlite", "raw", 1.25, False, "≥ 0.80x the raw driver's apps/s"),
    _Target("W3", "postgres", "raw", 1.25, False, "≥ 0.80x the raw driver's apps/s"),
)


def _targets(result: RunResult) -> list[str]:
    """The issue's targets for the (workload, backend) pairs that ran."""
    rows = []
    ran = set(result.ran())
    for t in _TARGETS:
        if (t.workload, t.backend) not in ran:
            continue
        ratio = _time_ratio(result, t.workload, t.backend, "burr_async", t.against)
        if ratio is None:
            measured, status = "—", f"not measured ({CONTENDERS[t.against].label} did not run)"
        else:
            if t.workload in ("W2", "W3"):
                measured = f"{1 / ratio:.2f}x {CONTENDERS[t.against].label}'s throughput"
            else:
                measured = f"{ratio:.2f}x {CONTENDERS[t.against].label}'s time"
            met = ratio < t.limit if t.strict else ratio <= t.limit
            status = "met" if met else "**missed**"
            if result.config.quick:
                status = "not judged (smoke sizes)"
        where = "—" if t.backend == "memory" else t.backend
        rows.append(
            [f"{t.workload} {WORKLOADS[t.workload].title}", where, t.text, measured, status]
        )
    rows += _long_targets(result)
    return _table(
        ["workload", "backend", "target for burr_async", "measured", "status"],
        rows,
        ["l", "l", "l", "r", "l"],
    )


def _long_targets(result: RunResult) -> list[list[str]]:
    """W4's targets for burr_async (default storage), per backend that ran it."""
    rows = []
    snapshot = CONTENDERS[_SNAPSHOT].label
    first, last = _step_labels(result.config.sizes.w4_steps)
    for wkey, backend in result.ran():
        if not WORKLOADS[wkey].long:
            continue
        ours = _figures(result, wkey, backend, "burr_async")
        theirs = _figures(result, wkey, backend, _SNAPSHOT)
        checks: list[tuple[str, float | None, float | None, float, str]] = [
            (
                f"bytes stored ≤ 5% of {snapshot}'s",
                ours["bytes"],
                theirs["bytes"],
                0.05,
                "{:.1%} of " + snapshot + "'s",
            ),
            (
                f"µs/step at {last} ≤ 1.5x at {first}",
                ours["step_last_us"],
                ours["step_first_us"],
                1.5,
                "{:.2f}x",
            ),
            (
                f"latest load ≤ 2x {snapshot}'s",
                ours["load_us"],
                theirs["load_us"],
                2.0,
                "{:.2f}x " + snapshot + "'s",
            ),
        ]
        for text, value, against, limit, shown in checks:
            if value is None or not against:
                measured, status = "—", "not measured"
            else:
                ratio = value / against
                measured = shown.format(ratio)
                status = "met" if ratio <= limit else "**missed**"
                if result.config.quick:
                    status = "not judged (smoke sizes)"
            rows.append([f"{wkey} {WORKLOADS[wkey].title}", backend, text, measured, status])
    return rows


def _durability(result: RunResult) -> list[str]:
    rows = [
        [CONTENDERS[c].label, b, s]
        for (c, b), s in sorted(
            result.durability.items(),
            key=lambda item: (list(CONTENDERS).index(item[0][0]), item[0][1]),
        )
        if b != "memory"
    ]
    unavailable = [
        [CONTENDERS[c].label, b, s]
        for (c, b), s in result.status.items()
        if s != "ok" and b != "memory" and not s.startswith("skipped")
    ]
    return _table(
        ["contender", "backend", "durability and connections"], rows + unavailable, ["l", "l", "l"]
    )


def _versions() -> str:
    found = []
    for name in _PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def render(result: RunResult) -> str:
    """The whole report as Markdown."""
    cfg = result.config
    sizes = cfg.sizes
    lines = [
        f"Run of {result.started}: {cfg.rounds} round(s), median shown"
        + (" with ± half the min-max spread" if cfg.rounds > 1 else "")
        + f"; {'QUICK smoke sizes, not comparable' if cfg.quick else 'full sizes'};"
        f" {result.wall_seconds:.0f} s wall.",
        "",
        f"State: ~{chat.encoded_state_size() / 1024:.1f} KB per step ({chat.WINDOW} messages "
        "in chat_history, a window: each step drops the oldest message and adds one; the raw "
        "driver and snapshot storage write the whole state every step; W4's grows instead). "
        "Workloads: " + "; ".join(f"{w.key} {w.describe(sizes)}" for w in cfg.workloads) + ".",
        "",
        *_results(result),
        "",
    ]
    cpus = os.cpu_count() or 1
    busy = [
        f"{load:.2f} {when}"
        for load, when in (
            (result.load_at_start, "before the run started"),
            (result.load_at_end, "when it ended"),
        )
        if load is not None and load > 0.5 * cpus
    ]
    if busy:
        lines += [
            f"**The machine was busy**: load average {' and '.join(busy)}, on {cpus} CPUs. "
            "Treat these figures as indicative and compare ratios within this run only.",
            "",
        ]
    if any(w == "W0" for w, _ in result.ran()):
        lines += [
            "W0's raw-driver column is the same state transitions in a plain Python loop (no "
            "framework, no database).",
            "",
        ]
    if ratios := _ratios(result):
        lines += [
            "burr_async's time per unit divided by each contender's (below 1.00x: burr_async "
            "is faster; for W2, W3 and W5 the inverse of the throughput ratio), and burr_async "
            'with `storage="snapshot"` against the raw driver:',
            "",
            *ratios,
            "",
        ]
    lines += _long_section(result)
    lines += _fanout_section(result)
    lines += [
        "Targets:",
        "",
        *_targets(result),
        "",
        "Durability as configured and read back from each contender's own connection:",
        "",
    ]
    lines += [*_durability(result), ""]
    facts = dict(result.facts)
    facts["Python"] = (
        f"{platform.python_version()} ({sys.implementation.name}), {platform.platform()}"
    )
    facts["packages"] = _versions()
    lines += [f"- {name}: {value}" for name, value in facts.items()]
    if result.skipped_backends:
        lines += [f"- skipped {b}: {reason}" for b, reason in result.skipped_backends.items()]
    if result.failures:
        lines += ["", "Failures:", "", *(f"- {f}" for f in result.failures)]
    return "\n".join(lines) + "\n"


def write_docs(markdown: str, path: Path = DOCS_PATH) -> None:
    """Replace the text between the bench markers of ``path`` with ``markdown``."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START_MARK) + r".*?" + re.escape(END_MARK), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{path} has no {START_MARK} ... {END_MARK} section to regenerate")
    note = "<!-- generated by `python -m benchmarks --write-docs`; edits here are overwritten -->"
    block = f"{START_MARK}\n{note}\n\n{markdown}\n{END_MARK}"
    path.write_text(pattern.sub(lambda _m: block, text, count=1), encoding="utf-8")
