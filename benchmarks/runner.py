"""Running the benchmark: open every contender once, warm up, then rounds in which the
contenders of each (workload, backend) run one after another in an order that rotates from
round to round; the report takes the median over rounds. A long workload (W4) runs only in the
first ``long_rounds`` rounds and records several figures per run; the fan-out (W5) records its
figures in every round."""

from __future__ import annotations

import datetime as dt
import gc
import os
import statistics
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import chat
from benchmarks.contenders import Entry
from benchmarks.contenders.base import Contender, Options
from benchmarks.targets import Backend, Environment, provision
from benchmarks.workloads import WARMUP, WORKLOADS, Sizes, Workload
from burr_async.persistence.engine import SQLiteSynchronous

__all__ = ["Measurement", "RunConfig", "RunResult", "run"]

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What to run (built by the CLI)."""

    workloads: list[Workload]
    backends: list[Backend]
    contenders: list[Entry]
    sizes: Sizes
    rounds: int
    quick: bool
    options: Options
    postgres_url: str
    require: set[Backend]
    sqlite_synchronous: SQLiteSynchronous = "FULL"
    sqlite_parent: Path | None = None
    warmup: bool = True
    long_rounds: int = 1
    """Rounds of the long workloads (W4): at most ``rounds``."""


@dataclass(frozen=True, slots=True)
class Measurement:
    workload: str
    backend: str
    contender: str
    round: int
    seconds: float
    value: float
    figures: dict[str, float] = field(default_factory=dict)
    """A long workload's figures (see ``LongChat.figures``) or the fan-out's
    (``FanOut.figures``); empty for the others."""


@dataclass(slots=True)
class RunResult:
    """Everything the report needs; :meth:`as_json` is what ``--json`` writes."""

    config: RunConfig
    measurements: list[Measurement] = field(default_factory=list)
    status: dict[tuple[str, str], str] = field(default_factory=dict)
    durability: dict[tuple[str, str], str] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    skipped_backends: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    started: str = ""
    wall_seconds: float = 0.0
    load_at_start: float | None = None
    """1-minute load average before the run (what else was running)."""
    load_at_end: float | None = None
    """1-minute load average after the run (something may have started meanwhile)."""

    def values(self, workload: str, backend: str, contender: str) -> list[float]:
        return [
            m.value
            for m in self.measurements
            if (m.workload, m.backend, m.contender) == (workload, backend, contender)
        ]

    def median(self, workload: str, backend: str, contender: str) -> float | None:
        values = self.values(workload, backend, contender)
        return statistics.median(values) if values else None

    def figure(self, workload: str, backend: str, contender: str, name: str) -> float | None:
        """The median over rounds of one figure of a long workload."""
        values = [
            m.figures[name]
            for m in self.measurements
            if (m.workload, m.backend, m.contender) == (workload, backend, contender)
            and name in m.figures
        ]
        return statistics.median(values) if values else None

    def ran(self) -> list[tuple[str, str]]:
        """The (workload, backend) pairs with at least one measurement, in run order."""
        seen: dict[tuple[str, str], None] = {}
        for m in self.measurements:
            seen.setdefault((m.workload, m.backend), None)
        return list(seen)

    def as_json(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "started": self.started,
            "wall_seconds": round(self.wall_seconds, 2),
            "load_at_start": self.load_at_start,
            "load_at_end": self.load_at_end,
            "quick": cfg.quick,
            "rounds": cfg.rounds,
            "sizes": asdict(cfg.sizes),
            "state_bytes": chat.encoded_state_size(),
            "workloads": [w.key for w in cfg.workloads],
            "backends": list(cfg.backends),
            "contenders": [e.key for e in cfg.contenders],
            "ran": [{"workload": w, "backend": b} for w, b in self.ran()],
            "medians": [
                {
                    "workload": w,
                    "backend": b,
                    "contender": e.key,
                    "median": self.median(w, b, e.key),
                    "values": self.values(w, b, e.key),
                }
                for w, b in self.ran()
                for e in cfg.contenders
                if self.values(w, b, e.key)
            ],
            "long": self._figures_json(long=True),
            "fanout": self._figures_json(long=False),
            "measurements": [asdict(m) for m in self.measurements],
            "status": [
                {"contender": c, "backend": b, "status": s} for (c, b), s in self.status.items()
            ],
            "durability": [
                {"contender": c, "backend": b, "settings": s}
                for (c, b), s in self.durability.items()
            ],
            "skipped_backends": self.skipped_backends,
            "failures": self.failures,
            "facts": self.facts,
        }

    def _figures_json(self, *, long: bool) -> list[dict[str, Any]]:
        """The median figures per (workload, backend, contender) of the long workloads
        (``long``) or of the fan-out."""
        return [
            {
                "workload": w,
                "backend": b,
                "contender": e.key,
                **{
                    name: self.figure(w, b, e.key, name) for name in self._figure_names(w, b, e.key)
                },
            }
            for w, b in self.ran()
            if (WORKLOADS[w].long if long else WORKLOADS[w].fanout)
            for e in self.config.contenders
            if self._figure_names(w, b, e.key)
        ]

    def _figure_names(self, workload: str, backend: str, contender: str) -> list[str]:
        names: dict[str, None] = {}
        for m in self.measurements:
            if (m.workload, m.backend, m.contender) == (workload, backend, contender):
                names.update(dict.fromkeys(m.figures))
        return list(names)


def _backends_of(workload: Workload, backends: list[Backend]) -> list[Backend]:
    if not workload.needs_database:
        return ["memory"]
    return [b for b in backends if b != "memory"]


async def _open_all(
    config: RunConfig, env: Environment, result: RunResult, say: Say
) -> dict[tuple[str, str], Contender]:
    needed: list[Backend] = []
    for w in config.workloads:
        for b in _backends_of(w, config.backends):
            if b not in needed:
                needed.append(b)
    opened: dict[tuple[str, str], Contender] = {}
    for entry in config.contenders:
        for backend in needed:
            if backend in env.skipped:
                result.status[(entry.key, backend)] = f"skipped: {env.skipped[backend]}"
                continue
            missing = entry.missing(backend)
            if missing:
                result.status[(entry.key, backend)] = (
                    f"not installed (pip install {' '.join(missing)}, or -e '.[bench]')"
                )
                continue
            contender = entry.factory()(env.targets[backend], config.options)
            if backend not in contender.backends or not any(
                contender.supports(w.key) for w in config.workloads
            ):
                continue
            try:
                await contender.open()
                result.durability[(entry.key, backend)] = await contender.durability()
            except Exception as exc:
                _fail(result, say, f"{entry.key} on {backend}: open failed", exc)
                result.status[(entry.key, backend)] = f"failed to open: {exc!r}"
                await _close(contender)
                continue
            result.status[(entry.key, backend)] = "ok"
            opened[(entry.key, backend)] = contender
    return opened


async def _close(contender: Contender) -> None:
    try:
        await contender.aclose()
    except Exception:
        traceback.print_exc()


def _fail(result: RunResult, say: Say, what: str, exc: BaseException) -> None:
    detail = "".join(traceback.format_exception_only(exc)).strip()
    result.failures.append(f"{what}: {detail}")
    say(f"  FAILED {what}: {detail}")


async def _measure(
    config: RunConfig,
    opened: dict[tuple[str, str], Contender],
    result: RunResult,
    say: Say,
    *,
    sizes: Sizes,
    round_index: int,
    record: bool,
) -> None:
    tag = f"r{round_index}" if record else "warm"
    for workload in config.workloads:
        if workload.long and record and round_index >= config.long_rounds:
            continue
        for backend in _backends_of(workload, config.backends):
            group = [
                (key, c)
                for (key, b), c in opened.items()
                if b == backend and c.supports(workload.key)
            ]
            if not group:
                continue
            shift = round_index % len(group)
            for key, contender in group[shift:] + group[:shift]:
                figures: dict[str, float] = {}
                try:
                    if workload.long:
                        long = await contender.run_long(sizes, tag)
                        seconds, figures = long.seconds, long.figures()
                    elif workload.fanout:
                        fan = await contender.run_fanout(sizes, tag)
                        seconds, figures = fan.seconds, fan.figures()
                    else:
                        seconds = await contender.run(workload.key, sizes, tag)
                except Exception as exc:
                    _fail(result, say, f"{workload.key} {backend} {key}", exc)
                    del opened[(key, backend)]
                    result.status[(key, backend)] = f"failed: {exc!r}"
                    await _close(contender)
                    continue
                if not record:
                    continue
                value = workload.metric(seconds, sizes)
                result.measurements.append(
                    Measurement(workload.key, backend, key, round_index, seconds, value, figures)
                )
                rounds = min(config.rounds, config.long_rounds) if workload.long else config.rounds
                line = (
                    f"  round {round_index + 1}/{rounds}  {workload.key} {backend:<8} "
                    f"{key:<19} {value:>12,.1f} {workload.unit}  ({seconds:.2f} s)"
                )
                if workload.fanout:
                    line += f"; parent step {figures['parent_ms']:,.0f} ms"
                    if "commits" in figures:
                        line += (
                            f", {figures['commits']:,.0f} commits "
                            f"({figures['steps_per_commit']:,.1f} child steps each)"
                        )
                elif figures:
                    line += (
                        f"; {figures['bytes']:,.0f} bytes in {figures['rows']:,.0f} rows, "
                        f"{figures['step_first_us']:,.0f} -> {figures['step_last_us']:,.0f} "
                        f"µs/step, latest load {figures['load_us']:,.0f} µs"
                    )
                say(line)


async def run(config: RunConfig, say: Say) -> RunResult:
    """Run the benchmark described by ``config``; progress goes to ``say``."""
    result = RunResult(config)
    result.started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    result.facts["load average at start"] = _loadavg()
    result.load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result.facts["burr_async source"] = _revision()
    wall = time.perf_counter()
    async with provision(
        list(config.backends),
        postgres_url=config.postgres_url,
        require=config.require,
        sqlite_synchronous=config.sqlite_synchronous,
        sqlite_parent=config.sqlite_parent,
    ) as env:
        result.facts.update(env.facts)
        result.skipped_backends = {str(b): reason for b, reason in env.skipped.items()}
        for backend, reason in env.skipped.items():
            say(f"{backend}: skipped ({reason})")
        opened = await _open_all(config, env, result, say)
        try:
            if config.warmup:
                say("warming up (untimed)...")
                await _measure(
                    config, opened, result, say, sizes=WARMUP, round_index=0, record=False
                )
            gc.collect()
            gc.freeze()
            for r in range(config.rounds):
                await _measure(
                    config, opened, result, say, sizes=config.sizes, round_index=r, record=True
                )
        finally:
            gc.unfreeze()
            for contender in opened.values():
                await _close(contender)
    result.facts["load average at end"] = _loadavg()
    result.load_at_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result.wall_seconds = time.perf_counter() - wall
    return result


def _revision() -> str:
    """The checkout's commit, and whether burr_async/ has uncommitted changes (what was
    measured when someone is editing it)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "burr_async"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"git {commit}" + (" + uncommitted changes in burr_async/" if dirty else "")


def _loadavg() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min; {os.cpu_count()} CPUs)"
