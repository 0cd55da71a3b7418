"""Run the fault trials and write their results.

    python -m tests.reliability.runner                    # every trial, full size, both backends
    python -m tests.reliability.runner --trial crash --size 10 --backend sqlite --no-report

The full run (``make reliability``) writes ``docs/reliability.md``. The exit status is 1 when any
trial counted a broken contract (lost steps, double advances, mixed histories, hung calls,
unclear errors, ...), 0 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from tests.databases import Database
from tests.reliability import trials
from tests.reliability._support import REPO, Counts, provisioned


@dataclass(frozen=True)
class Trial:
    name: str
    run: Callable[..., Awaitable[Counts]]
    full: int
    small: int
    options: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    backends: tuple[str, ...] = ("sqlite", "postgres")
    known_bug: str = ""  # what it finds, until fixed (its test is xfail(strict=True))
    fixed: str = ""  # a bug it found that is fixed: what it did before


KNOWN_BUGS: tuple[str, ...] = ()
"""What the suite finds and is not fixed yet, one paragraph each."""
SILENT_FIXED = (
    "Until issue #9 was fixed, a step whose connection went silent did not return until the "
    "connection broke at the TCP level, and the caller could not bound it: the write is "
    "shielded from cancellation. Measured on the commit before the fix with this trial: 2 of 2 "
    "steps hung, each returning only at the proxy's cut, after 45.0 s (a real partition lasts "
    "as long as TCP keeps the socket: hours without keepalive); with `command_timeout=1` "
    "(3c), 2.0 s. Now every statement of the write path and of loads waits at most 30 s for "
    "the server by default (`STATEMENT_TIMEOUT`, or asyncpg's `command_timeout` when set), the "
    "silent connection is dropped at once, and the row is read back on another one (at most "
    "5 s): `seconds_until_the_step_returned (max)` below. Test: "
    "`test_a_silent_connection_cannot_hold_a_step_past_the_statement_timeout`."
)
TRIALS = {
    t.name: t
    for t in [
        Trial("crash", trials.crash, 80, 3, title="1. Crash: SIGKILL at random moments"),
        Trial("race2", trials.race, 250, 8, {"workers": 2}, "2a. Races: 2 processes"),
        Trial("race4", trials.race, 250, 8, {"workers": 4}, "2b. Races: 4 processes"),
        Trial("lost_ack", trials.lost_ack, 40, 8, title="3a. Lost acknowledgements"),
        Trial(
            "silent",
            trials.silent,
            2,
            1,
            title="3b. A connection that goes silent (default settings: 30 s statement timeout)",
            backends=("postgres",),
            fixed=SILENT_FIXED,
        ),
        Trial(
            "silent_timeout",
            trials.silent,
            3,
            1,
            {"command_timeout": 1.0},
            title="3c. A connection that goes silent, with asyncpg's command_timeout=1",
            backends=("postgres",),
        ),
        Trial("outage", trials.outage, 15, 3, title="4. Outage"),
        Trial("cancel", trials.cancellation, 2000, 40, title="5. Cancellation at random points"),
        Trial("bad_input", trials.bad_input, 100, 8, title="6. Bad input"),
    ]
}
BACKENDS = ("sqlite", "postgres")
ROWS = [
    ("runs", "runs"),
    ("committed", "steps committed"),
    ("lost", "steps lost"),
    ("double_advanced", "double-advanced apps"),
    ("mixed", "mixed histories"),
    ("hung", "hung calls"),
    ("unclear", "unclear errors"),
]


async def run_trial(trial: Trial, db: Database, size: int, seed: int | None) -> Counts:
    try:
        with anyio.fail_after(600):
            return await trial.run(db, size, seed=seed, **trial.options)
    except Exception as exc:  # the trial could not go on: that is a result too
        counts = Counts(trial.name, db.backend)
        counts.extra["aborted"] += 1
        counts.note(f"the trial aborted: {type(exc).__name__}: {exc}")
        return counts


async def run_all(
    names: list[str], backends: list[str], size: int | None, seed: int | None
) -> dict[str, dict[str, Counts]]:
    results: dict[str, dict[str, Counts]] = {name: {} for name in names}
    with tempfile.TemporaryDirectory(prefix="burr-rel-") as tmp:
        for backend in backends:
            async with provisioned(backend, Path(tmp)) as db:
                print(f"-- {backend}: {db.url} {db.schema or ''}", flush=True)
                for name in names:
                    trial = TRIALS[name]
                    if backend not in trial.backends:
                        continue
                    counts = await run_trial(trial, db, size or trial.full, seed)
                    counts.trial = name
                    results[name][backend] = counts
                    print(summary_line(counts), flush=True)
    return results


def summary_line(c: Counts) -> str:
    bad = c.failures() | ({"aborted": 1} if c.extra.get("aborted") else {})
    verdict = "OK" if not bad else f"BROKEN {bad}"
    return (
        f"{c.trial:<10} {c.backend:<8} runs={c.runs:<5} committed={c.committed:<6} "
        f"lost={c.lost} double={c.double_advanced} mixed={c.mixed} hung={c.hung} "
        f"unclear={c.unclear}  {c.seconds:6.1f}s  {verdict}"
    )


# -- the report ---------------------------------------------------------------------------------
def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


def _what(trial: Trial, runs: int) -> str:
    """The trial function's docstring as Markdown, with its size filled in."""
    doc = " ".join((inspect.getdoc(trial.run) or "").split())
    return doc.replace("``size``", str(runs)).replace("``", "`")


def report(results: dict[str, dict[str, Counts]], seconds: float, seed: int | None) -> str:
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = (
        " (with uncommitted changes)" if _git("status", "--porcelain", "--", "burr_async") else ""
    )
    lines = [
        "# Reliability",
        "",
        "The fault suite (`tests/reliability/`) tries to break the persistence contract: a step",
        "counts once its row is committed, and the application only advances then. Each trial",
        "below says what it does; the tables give what one full run counted on each backend.",
        "A broken contract shows as a non-zero count in the first table's last five rows (or in",
        "a count marked **broken** below it). Run it with `make reliability` (about 5 minutes);",
        "a smaller version runs with the test suite (`tests/reliability/test_reliability.py`).",
        "",
        f"- Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit `{commit}`{dirty}",
        f"- Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {_sqlite_version()}, Postgres {_postgres_version()}",
        f"- Duration: {seconds / 60:.1f} minutes" + (f", seed {seed}" if seed is not None else ""),
        "",
        "## Known bugs",
        "",
        "Found by this suite, not fixed yet; each has a test marked `xfail(strict=True)` in",
        "`tests/reliability/test_reliability.py` that starts passing (and so failing) once it is.",
        "",
        *(f"- {textwrap.fill(bug, 98, subsequent_indent='  ')}" for bug in KNOWN_BUGS),
        *([] if KNOWN_BUGS else ["None open."]),
        "",
    ]
    for name, by_backend in results.items():
        trial = TRIALS[name]
        backends = [b for b in BACKENDS if b in by_backend]
        if not backends:
            continue
        runs = max(by_backend[b].runs for b in backends)
        lines += [f"## {trial.title or name}", "", textwrap.fill(_what(trial, runs), 100), ""]
        if trial.known_bug:
            lines += [
                '!!! bug "Known bug"',
                "",
                textwrap.indent(textwrap.fill(trial.known_bug, 96), "    "),
                "",
            ]
        if trial.fixed:
            lines += [
                '!!! success "Fixed"',
                "",
                textwrap.indent(textwrap.fill(trial.fixed, 96), "    "),
                "",
            ]
        lines += ["| | " + " | ".join(backends) + " |", "|---|" + "---:|" * len(backends)]
        for attr, label in ROWS:
            lines.append(
                f"| {label} | "
                + " | ".join(str(getattr(by_backend[b], attr)) for b in backends)
                + " |"
            )
        lines.append(
            "| seconds | " + " | ".join(f"{by_backend[b].seconds:.1f}" for b in backends) + " |"
        )
        lines.append("")
        extra_keys = sorted(
            {
                k
                for b in backends
                for k in by_backend[b].extra
                if not k.startswith(("stored", "refused"))
            }
        )
        if extra_keys:
            lines += ["What happened along the way:", ""]
            lines += ["| | " + " | ".join(backends) + " |", "|---|" + "---:|" * len(backends)]
            for key in extra_keys:
                broken = " (**broken**)" if key in _failure_keys() or key == "aborted" else ""
                lines.append(
                    f"| `{key}`{broken} | "
                    + " | ".join(str(by_backend[b].extra.get(key, 0)) for b in backends)
                    + " |"
                )
            lines.append("")
        if name == "bad_input":
            lines += _bad_input_section(by_backend, backends)
        notes = [(b, n) for b in backends for n in by_backend[b].notes]
        if notes:
            lines += ["Notes (first examples):", ""]
            lines += [f"- {b}: {_md(n)}" for b, n in notes]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _failure_keys() -> frozenset[str]:
    from tests.reliability._support import FAILURE_KEYS

    return FAILURE_KEYS


def _bad_input_section(by_backend: dict[str, Counts], backends: list[str]) -> list[str]:
    outcomes = {b: by_backend[b].outcomes for b in backends}
    named = [n for n in by_backend[backends[0]].outcomes if not n.startswith("hypothesis")]
    hyp = {
        b: (
            sum(v == "stored" for k, v in o.items() if k.startswith("hypothesis")),
            sum(v != "stored" for k, v in o.items() if k.startswith("hypothesis")),
        )
        for b, o in outcomes.items()
    }
    differing = trials.inconsistent(outcomes)
    lines = ["Each input, refused (with the error) or stored (and read back equal):", ""]
    lines += ["| input | " + " | ".join(backends) + " |", "|---|" + "---|" * len(backends)]
    for name in named:
        lines.append(
            f"| {_md(name)} | "
            + " | ".join(_md(outcomes[b].get(name, "")) for b in backends)
            + " |"
        )
    lines.append(
        "| adversarial states (hypothesis) | "
        + " | ".join(f"{hyp[b][0]} stored, {hyp[b][1]} refused" for b in backends)
        + " |"
    )
    lines += [
        "",
        f"**Inconsistent between the backends: {len(differing)}** (refused on one, stored on "
        "the other; not yet a failure: validation of ids is being added separately)"
        + (": " + "; ".join(_md(n) for n, _ in differing) if differing else "."),
        "",
    ]
    return lines


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def _postgres_version() -> str:
    from tests.databases import POSTGRES_URL

    try:
        done = subprocess.run(
            ["psql", POSTGRES_URL.replace("+asyncpg", ""), "-Atc", "show server_version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip().split()[0]


def _postgres_reachable() -> bool:
    from burr_async.persistence import create_engine
    from tests.databases import POSTGRES_URL

    async def probe() -> bool:
        engine = create_engine(POSTGRES_URL)
        try:
            with anyio.fail_after(10):
                async with engine.connect():
                    return True
        except Exception:
            return False
        finally:
            await engine.dispose()

    return anyio.run(probe)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial", action="append", choices=sorted(TRIALS), help="repeatable")
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="repeatable")
    parser.add_argument("--size", type=int, help="runs per trial (default: its full size)")
    parser.add_argument("--seed", type=int, help="for the random choices (default: random)")
    parser.add_argument("--report", default=str(REPO / "docs" / "reliability.md"))
    parser.add_argument("--no-report", action="store_true", help="print only")
    parser.add_argument("--json", help="also write the counts as JSON here")
    args = parser.parse_args(argv)
    names = args.trial or list(TRIALS)
    backends = args.backend or list(BACKENDS)
    if "postgres" in backends and not _postgres_reachable():
        from tests.databases import POSTGRES_URL

        print(
            f"Postgres is unreachable at {POSTGRES_URL} (set BURR_ASYNC_TEST_POSTGRES_URL, or "
            "pass --backend sqlite)",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    results = anyio.run(run_all, names, backends, args.size, args.seed)
    seconds = time.monotonic() - started
    print(f"total {seconds:.0f} s")
    if not args.no_report:
        Path(args.report).write_text(report(results, seconds, args.seed), encoding="utf-8")
        print(f"wrote {args.report}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    n: {b: {**vars(c), "extra": dict(c.extra)} for b, c in r.items()}
                    for n, r in results.items()
                },
                indent=1,
                default=str,
            ),
            encoding="utf-8",
        )
    broken = [
        c
        for name, r in results.items()
        for c in r.values()
        if (c.failures() and not TRIALS[name].known_bug) or c.extra["aborted"]
    ]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
