"""The chatbot example, run as a user runs it: twice, in subprocesses, resuming its history."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from burr_async.persistence import create_engine, migrate
from tests.databases import Database

REPO = Path(__file__).resolve().parents[2]


def chat(db: Database, table: str, app_id: str, questions: list[str]) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "examples/chatbot.py",
            "--db",
            db.url,
            "--table-name",
            table,
            "--app-id",
            app_id,
            "--user",
            "alice",
        ],
        input="".join(f"{q}\n" for q in questions),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.anyio
async def test_chatbot_resumes_its_history_across_runs(db: Database) -> None:
    table = f"chat_{uuid.uuid4().hex[:10]}"
    app_id = str(uuid.uuid4())
    try:
        first = chat(db, table, app_id, ["hello", "do you persist?"])
        assert "Resumed" not in first
        assert "assistant: Hello!" in first
        assert "saved at step 3" in first

        second = chat(db, table, app_id, ["one more?", "exit"])
        assert "Resumed at step 3 with 4 messages:" in second
        assert "user: hello" in second and "user: do you persist?" in second
        assert "Good question. You asked: 'one more?' (turn 3)." in second
        assert "Conversation over after 7 messages." in second
    finally:
        engine = create_engine(db.url)
        await migrate.downgrade(engine, "base", table_name=table)
        async with engine.begin() as conn:  # downgrading leaves the (empty) version table
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}_alembic_version"))
        await engine.dispose()


def test_the_chatbot_graph_prints_as_mermaid() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "burr_async.cli", "graph", "examples/chatbot.py:graph"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("flowchart TD")
    assert "-- \"'exit' in question\" -->" in done.stdout
