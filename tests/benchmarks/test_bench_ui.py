"""The web UI's page-time measurement (``python -m benchmarks.ui``) runs, small; nothing about
timing is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ui_measurement_runs_and_reports_every_page() -> None:
    args = ["-m", "benchmarks.ui", "--steps", "120", "--apps", "60", "--rounds", "1"]
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    for page in ("app list (all partitions, 50)", "app list, page 2 (cursor)", "120-step app"):
        assert page in proc.stdout
