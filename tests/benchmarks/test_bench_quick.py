"""The benchmark harness's smoke run (``make bench-quick``): it completes and reports every
workload it ran. Nothing about timing is asserted; the figures of a smoke run mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.databases import POSTGRES_URL, REQUIRE_POSTGRES

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ("W0", "W1", "W2", "W3")
QUICK_CONTENDERS = ("raw", "burr_async")

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

    measured = {(m["workload"], m["backend"], m["contender"]) for m in report["medians"]}
    missing = [
        (w, b, c) for w, b in expected for c in QUICK_CONTENDERS if (w, b, c) not in measured
    ]
    assert missing == []

    # The printed table has a row for every workload and backend that ran.
    for workload, backend in expected:
        where = "—" if backend == "memory" else backend
        assert any(
            line.startswith(f"| {workload} ") and f"| {where} |" in line
            for line in proc.stdout.splitlines()
        ), f"no table row for {workload} on {backend}:\n{proc.stdout}"
