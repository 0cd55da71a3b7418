"""The wheel ships the migrations: an installed package provisions its table without a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from burr_async.persistence.models import HEAD_REVISION

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("burr_async-*.whl")
    return built


def test_wheel_contains_the_package_migrations_and_marker(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "burr_async/py.typed" in names
    assert "burr_async/_migrations/env.py" in names
    assert "burr_async/_migrations/script.py.mako" in names
    for asset in (
        "templates/base.html",
        "templates/apps.html",
        "templates/app.html",
        "templates/step.html",
        "templates/error.html",
        "templates/_macros.html",
        "static/ui.css",
        "static/ui.js",
        "static/mermaid.min.js",
        "static/mermaid.LICENSE",
    ):
        assert f"burr_async/ui/{asset}" in names  # the web UI's pages and assets ship inside
    for script in (
        "0001_create_state_table.py",
        "0002_0001_add_delta_column.py",
        "0003_delta_rows.py",
        "0004_0003_spawning_parent.py",
        "0005_trim_deltas.py",
    ):
        assert f"burr_async/_migrations/versions/{script}" in names


def test_installed_wheel_migrates_from_its_own_scripts(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    program = (
        "import anyio\n"
        "from burr_async.persistence import create_engine, migrate\n"
        "print(migrate.script_location())\n"
        "async def main():\n"
        f"    engine = create_engine('sqlite+aiosqlite:///{tmp_path}/w.db')\n"
        "    await migrate.upgrade(engine)\n"
        "    print(await migrate.current(engine))\n"
        "    await engine.dispose()\n"
        "anyio.run(main)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path,  # not the checkout: only the unpacked wheel is importable as burr_async
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    location, revision = done.stdout.split()
    assert location == str(site / "burr_async" / "_migrations")
    assert revision == HEAD_REVISION
