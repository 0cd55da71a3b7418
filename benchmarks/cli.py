"""The command line of ``python -m benchmarks``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import cast

from benchmarks.contenders import parse_contenders
from benchmarks.contenders.base import LangGraphDurability, Options
from benchmarks.targets import DEFAULT_POSTGRES_URL, Backend, BackendUnavailableError
from benchmarks.workloads import FULL, QUICK, parse_workloads
from burr_async.persistence.engine import SQLiteSynchronous

__all__ = ["main"]

_BACKENDS: tuple[Backend, ...] = ("sqlite", "postgres")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "burr_async's per-step write path against the raw drivers, SQLAlchemy Core, "
            "Apache Burr and LangGraph, on SQLite and Postgres (see docs/performance.md)."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny sizes, 1 round, burr_async (both storage modes) and the raw "
        "drivers only",
    )
    p.add_argument("--only", metavar="W1,W2", help="workloads to run (default: W0,W1,W2,W3,W4,W5)")
    p.add_argument(
        "--backends",
        metavar="sqlite,postgres",
        help="backends to run (default: both; Postgres is skipped when unreachable unless "
        "named here)",
    )
    p.add_argument(
        "--contenders",
        metavar="raw,burr_async",
        help="contenders to run (default: raw,core,burr_async,burr_async-snapshot,burr,"
        "langgraph; --quick: raw,burr_async,burr_async-snapshot)",
    )
    p.add_argument("--rounds", type=int, help="rounds; the report shows medians (default: 3)")
    p.add_argument(
        "--long-rounds",
        type=int,
        default=1,
        help="rounds of the long workload W4, at most --rounds (default: 1; each of its figures "
        "is already a median within the run)",
    )
    p.add_argument(
        "--write-docs",
        action="store_true",
        help="rewrite the generated section of docs/performance.md with this run",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every measurement here")
    p.add_argument(
        "--profile",
        metavar="W1:sqlite",
        help="profile burr_async on one workload and backend with pyinstrument instead of "
        "benchmarking",
    )
    p.add_argument("--profile-lines", type=int, default=80, help="lines of the call tree shown")
    p.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="Postgres database (a fresh schema is created in it and dropped); default "
        "$BURR_ASYNC_BENCH_POSTGRES_URL or the local server",
    )
    p.add_argument(
        "--sqlite-synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="PRAGMA synchronous for every SQLite contender (journal_mode is WAL for all)",
    )
    p.add_argument(
        "--sqlite-dir", type=Path, help="where the temporary SQLite directory is created"
    )
    p.add_argument(
        "--langgraph-durability",
        choices=["sync", "async", "exit"],
        default="sync",
        help="LangGraph's durability mode (sync: each checkpoint is written before the next "
        "node runs, like every other contender)",
    )
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up pass")
    return p


def _backends(spec: str | None) -> tuple[list[Backend], set[Backend]]:
    if not spec:
        return list(_BACKENDS), set()
    wanted = [part.strip().lower() for part in spec.split(",") if part.strip()]
    unknown = [b for b in wanted if b not in _BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; choose from {list(_BACKENDS)}")
    chosen = [b for b in _BACKENDS if b in wanted]
    return chosen, set(chosen)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    try:
        workloads = parse_workloads(args.only)
        backends, required = _backends(args.backends)
        contenders = parse_contenders(args.contenders, quick=args.quick)
    except ValueError as exc:
        parser.error(str(exc))
    if args.quick and args.write_docs:
        parser.error("--write-docs records a full run; drop --quick")
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.long_rounds < 1:
        parser.error("--long-rounds must be at least 1")
    sizes = QUICK if args.quick else FULL

    if args.profile:
        from benchmarks.profiling import parse_profile, profile

        try:
            workload, backend = parse_profile(args.profile)
        except ValueError as exc:
            parser.error(str(exc))
        coroutine = profile(
            workload,
            backend,
            sizes=sizes,
            postgres_url=args.postgres_url,
            sqlite_synchronous=cast(SQLiteSynchronous, args.sqlite_synchronous),
            lines=args.profile_lines,
            say=say,
        )
        try:
            asyncio.run(coroutine)
        except BackendUnavailableError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    from benchmarks.report import render, write_docs
    from benchmarks.runner import RunConfig, run

    config = RunConfig(
        workloads=workloads,
        backends=[*backends, "memory"]
        if any(not w.needs_database for w in workloads)
        else backends,
        contenders=contenders,
        sizes=sizes,
        rounds=rounds,
        quick=args.quick,
        options=Options(langgraph_durability=cast(LangGraphDurability, args.langgraph_durability)),
        postgres_url=args.postgres_url,
        require=required,
        sqlite_synchronous=cast(SQLiteSynchronous, args.sqlite_synchronous),
        sqlite_parent=args.sqlite_dir,
        warmup=not (args.quick or args.no_warmup),
        long_rounds=args.long_rounds,
    )
    say(
        f"burr_async benchmarks: {', '.join(w.key for w in workloads)} on "
        f"{', '.join(backends)}; contenders {', '.join(e.key for e in contenders)}; "
        f"{rounds} round(s){' (quick)' if args.quick else ''}"
        + (f", W4 {min(rounds, args.long_rounds)}" if any(w.long for w in workloads) else "")
    )
    try:
        result = asyncio.run(run(config, say))
    except BackendUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    markdown = render(result)
    say("")
    say(markdown)
    if args.json:
        args.json.write_text(json.dumps(result.as_json(), indent=2), encoding="utf-8")
        say(f"measurements written to {args.json}")
    if args.write_docs:
        write_docs(markdown)
        say("docs/performance.md updated")
    if result.failures:
        print(f"{len(result.failures)} failure(s); see above", file=sys.stderr)
        return 1
    return 0
