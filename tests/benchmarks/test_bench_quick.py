"""The benchmark harness's smoke run (``make bench-quick``): it completes and reports every
workload it ran. Nothing about timing is asserted; the figures of a smoke run mean nothing,
except W4's stored bytes, which are deterministic: deltas must store less than snapshots, and
W5's commit count, which is bounded by its child steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.databases import POSTGRES_URL, REQUIRE_POSTGRES

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ("W0", "W1", "W2", "W3", "W4", "W5")
QUICK_CONTENDERS = ("raw", "burr_async", "burr_async-snapshot")
BURR_ASYNC = ("burr_async", "burr_async-snapshot")
W4_STEPS = 40  # benchmarks.workloads.QUICK
W5_CHILD_STEPS = 5 * 5  # benchmarks.workloads.QUICK: 5 children x 5 steps

# Quick mode must need nothing from the bench extra: run it with those packages unimportable,
# whether or not they are installed here.
OPTIONAL = ("burr", "langgraph", "psycopg", "psycopg_pool", "pyinstrument")
RUN_WITHOUT_BENCH_EXTRA = (
    "import runpy, sys\n"
    f"for name in {OPTIONAL!r}:\n"
    "    sys.modules[name] = None  # import raises ImportError\n"
    "sys.argv[0] = 'benchmarks'\n"
    "runpy.run_module('benchmarks', run_name='__main__', alter_sys=True)\n"
)


def test_quick_run_completes_and_reports_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    args = ["--quick", "--json", str(out), "--postgres-url", POSTGRES_URL]
    if REQUIRE_POSTGRES:
        args += ["--backends", "sqlite,postgres"]  # named backends must run, not be skipped
    proc = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_BENCH_EXTRA, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"

    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["quick"] is True
    assert report["failures"] == []
    assert report["workloads"] == list(WORKLOADS)
    assert report["contenders"] == list(QUICK_CONTENDERS)

    backends = ["sqlite"] + ([] if "postgres" in report["skipped_backends"] else ["postgres"])
    expected = [("W0", "memory")] + [(w, b) for w in WORKLOADS[1:] for b in backends]
    assert sorted((r["workload"], r["backend"]) for r in report["ran"]) == sorted(expected)

    # W0 has no persister (burr_async's storage modes are the same there); W4 is burr_async's;
    # W5 burr_async's default storage.
    runs = {
        "W0": ("raw", "burr_async"),
        "W1": QUICK_CONTENDERS,
        "W2": QUICK_CONTENDERS,
        "W3": QUICK_CONTENDERS,
        "W4": BURR_ASYNC,
        "W5": ("burr_async",),
    }
    measured = {(m["workload"], m["backend"], m["contender"]) for m in report["medians"]}
    wanted = {(w, b, c) for w, b in expected for c in runs[w]}
    assert measured == wanted

    # The printed table has a row for every workload and backend that ran (W4 its own table).
    for workload, backend in expected:
        where = "—" if backend == "memory" else backend
        if workload == "W4":
            continue
        assert any(
            line.startswith(f"| {workload} ") and f"| {where} |" in line
            for line in proc.stdout.splitlines()
        ), f"no table row for {workload} on {backend}:\n{proc.stdout}"

    # W4: every figure of both storage modes, per backend, in the JSON and in its table.
    long = {(r["backend"], r["contender"]): r for r in report["long"]}
    assert sorted(long) == sorted((b, c) for b in backends for c in BURR_ASYNC)
    for backend in backends:
        delta, snapshot = long[(backend, "burr_async")], long[(backend, "burr_async-snapshot")]
        for figures in (delta, snapshot):
            assert figures["workload"] == "W4"
            assert figures["rows"] == W4_STEPS  # one row per step
            for name in ("bytes", "logical_bytes", "step_first_us", "step_last_us", "load_us"):
                assert figures[name] > 0, (backend, figures)
        assert delta["bytes"] < snapshot["bytes"], (backend, delta, snapshot)
        assert delta["logical_bytes"] < snapshot["logical_bytes"], (backend, delta, snapshot)
        if backend == "sqlite":  # stored uncompressed
            assert delta["bytes"] == delta["logical_bytes"]
        labels = {"burr_async": "burr_async", "burr_async-snapshot": "burr_async (snapshot)"}
        for contender, label in labels.items():
            assert any(
                line.startswith(f"| {backend} | {label} |") for line in proc.stdout.splitlines()
            ), f"no W4 row for {contender} on {backend}:\n{proc.stdout}"
    assert "| W4 long chat |" in proc.stdout  # its targets

    # W5: burr_async's fan-out figures per backend, with its commits counted, and its table.
    fanout = {(r["backend"], r["contender"]): r for r in report["fanout"]}
    assert sorted(fanout) == sorted((b, "burr_async") for b in backends)
    for backend in backends:
        figures = fanout[(backend, "burr_async")]
        assert figures["workload"] == "W5"
        assert figures["parent_ms"] > 0 and figures["child_steps_per_s"] > 0, figures
        assert 1 <= figures["commits"] <= W5_CHILD_STEPS, figures
        assert figures["steps_per_commit"] == pytest.approx(W5_CHILD_STEPS / figures["commits"])
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "| parent step (ms) |" in line)
    table = lines[header : header + 2 + len(backends)]
    for backend in backends:
        assert any(line.startswith(f"| {backend} | burr_async | ") for line in table), (
            f"no W5 row for burr_async on {backend}:\n{proc.stdout}"
        )
