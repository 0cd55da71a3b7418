"""Burr's documented chatbot (examples/burr_port): the burr_async copy differs from Burr's only in
its imports, runs and resumes on SQLite and Postgres, and does what Burr itself does with it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from burr_async import SQLAlchemyPersister
from burr_async.persistence import create_engine, migrate
from examples.burr_port import chatbot
from tests.databases import POSTGRES_URL, Database

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
PORT = REPO / "examples" / "burr_port"
QUESTIONS = ["hello", "what is persisted?"]


def _without_imports(path: Path) -> tuple[str, list[str]]:
    """The module's code with its imports removed, and the names the imports bind."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bound: list[str] = []
    body = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound.extend(alias.asname or alias.name for alias in node.names)
        else:
            body.append(node)
    tree.body = body
    return ast.dump(tree), sorted(bound)


def test_the_port_differs_from_burrs_only_in_its_imports() -> None:
    ours, our_names = _without_imports(PORT / "chatbot.py")
    theirs, their_names = _without_imports(PORT / "burr_chatbot.py")
    assert ours == theirs
    assert our_names == their_names
    for line in (PORT / "chatbot.py").read_text(encoding="utf-8").splitlines():
        assert "burr." not in line or line.startswith("#")


async def _talk(module: Any, persister: Any, app_id: str, questions: list[str]) -> Any:
    app = await module.application(persister, app_id=app_id, hooks=[module.PrintStepHook()])
    result = await module.converse(app, questions)
    return app, result


async def _conversation(module: Any, persister: Any, app_id: str) -> dict[str, Any]:
    """Two questions, a restart (a new application on the same storage), then 'exit'."""
    first, ended = await _talk(module, persister, app_id, QUESTIONS)
    assert ended is None
    second, result = await _talk(module, persister, app_id, ["and now exit"])
    return {
        "first": (first.sequence_id, first.state["chat_history"]),
        "resumed_at": second.sequence_id,
        "result": result,
    }


def _check(outcome: dict[str, Any]) -> None:
    history = [
        "Human: hello",
        "AI: You asked 'hello'; that is question 1 of this chat.",
        "Human: what is persisted?",
        "AI: You asked 'what is persisted?'; that is question 2 of this chat.",
    ]
    assert outcome["first"] == (3, history)
    assert outcome["resumed_at"] == 5  # after human_converse (4) and terminal (5)
    assert outcome["result"] == {"chat_history": [*history, "Human: and now exit"]}


async def test_the_port_runs_and_resumes(
    persister: SQLAlchemyPersister, capsys: pytest.CaptureFixture[str]
) -> None:
    app_id = str(uuid.uuid4())
    outcome = await _conversation(chatbot, persister, app_id)
    _check(outcome)
    printed = capsys.readouterr().out
    assert printed.count("🤔 AI is thinking...") == 2
    assert "🎙💬 and now exit" in printed
    rows = await persister.history("sample_user", app_id)
    assert [r.position for r in rows] == [
        "human_converse",
        "ai_converse",
        "human_converse",
        "ai_converse",
        "human_converse",
        "terminal",
    ]


@asynccontextmanager
async def _opened(module: Any, db: Database, folder: Path) -> AsyncIterator[Any]:
    """A persister on ``db``'s backend, opened by the example's own code (Burr's persister
    calls), in a table of its own that is dropped afterwards."""
    table = f"burr_port_{uuid.uuid4().hex[:10]}"
    if db.backend == "sqlite":
        persister = await module.sqlite_persister(str(folder / f"{table}.db"), table_name=table)
    else:
        url = sa.make_url(POSTGRES_URL)
        persister = await module.postgres_persister(
            url.database, url.username, url.password, url.host, url.port or 5432, table
        )
    try:
        yield persister
    finally:
        if db.backend == "postgres" and module is chatbot:
            await persister.cleanup()
            engine = create_engine(POSTGRES_URL)
            try:
                await migrate.downgrade(engine, "base", table_name=table)
            finally:
                await engine.dispose()
        else:
            if db.backend == "postgres":  # Burr's: one asyncpg connection
                await persister.connection.execute(f"DROP TABLE IF EXISTS {table}")
            await persister.cleanup()


async def test_the_examples_own_persister_code_runs_on_burr_async(
    db: Database, tmp_path: Path
) -> None:
    async with _opened(chatbot, db, tmp_path) as persister:
        outcome = await _conversation(chatbot, persister, str(uuid.uuid4()))
    _check(outcome)


async def test_burr_runs_the_same_program_with_the_same_outcome(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Burr's own copy, on Burr's own async persister for the same backend: same answers, same
    steps, same output, as the burr_async copy gives."""
    pytest.importorskip("burr.integrations.persisters.b_aiosqlite")
    pytest.importorskip("burr.integrations.persisters.b_asyncpg")
    from examples.burr_port import burr_chatbot

    async with _opened(burr_chatbot, db, tmp_path) as persister:
        theirs = await _conversation(burr_chatbot, persister, "same-app")
    burr_printed = capsys.readouterr().out
    _check(theirs)
    async with _opened(chatbot, db, tmp_path) as persister:
        ours = await _conversation(chatbot, persister, "same-app")
    assert ours == theirs
    assert capsys.readouterr().out == burr_printed


@pytest.mark.parametrize("script", ["chatbot.py", "burr_chatbot.py"])
def test_main_runs_as_a_script_and_resumes(script: str, tmp_path: Path) -> None:
    """``python examples/burr_port/<script>``, as a user runs it: twice in the same directory,
    the second run resuming the first one's chat from .sqllite.db."""
    if script == "burr_chatbot.py":
        pytest.importorskip("burr.integrations.persisters.b_aiosqlite")

    def run(questions: list[str]) -> str:
        done = subprocess.run(
            [sys.executable, str(PORT / script)],
            input="".join(f"{q}\n" for q in questions),
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = run(["hello"])  # then end of input: the chat stays open
    assert "🤖💬 You asked 'hello'; that is question 1 of this chat." in first
    second = run(["and again?", "exit"])
    assert "'Human: hello'" in second.split("Ask something")[0]  # loaded from the first run
    assert "You asked 'and again?'; that is question 2 of this chat." in second
    assert "'Human: exit'" in second
    assert "This chat is over" in run([])
