"""Burr's documented chatbot (examples/burr_port): the burr_async copy differs from Burr's only in
its imports, runs and resumes on SQLite and Postgres, and does what Burr itself does with it."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from burr_async import SQLAlchemyPersister
from examples.burr_port import chatbot
from tests.databases import POSTGRES_URL, Database

pytestmark = pytest.mark.anyio

PORT = Path(__file__).resolve().parents[2] / "examples" / "burr_port"
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


async def _burr_persister(db: Database, table: str) -> Any:
    if db.backend == "sqlite":
        from burr.integrations.persisters.b_aiosqlite import AsyncSQLitePersister

        path = sa.make_url(db.url).database
        assert path is not None
        return await AsyncSQLitePersister.from_values(
            db_path=str(Path(path).with_name(f"{table}.db")), table_name=table
        )
    from burr.integrations.persisters.b_asyncpg import AsyncPostgreSQLPersister

    url = sa.make_url(POSTGRES_URL)
    return await AsyncPostgreSQLPersister.from_values(
        db_name=url.database or "postgres",
        user=url.username or "postgres",
        password=url.password,  # type: ignore[arg-type]
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        table_name=table,
    )


async def test_burr_runs_the_same_program_with_the_same_outcome(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    """Burr's own copy, on Burr's own async persister for the same backend: same answers, same
    steps, same output, as the burr_async copy gives."""
    pytest.importorskip("burr.integrations.persisters.b_aiosqlite")
    pytest.importorskip("burr.integrations.persisters.b_asyncpg")
    from examples.burr_port import burr_chatbot

    table = f"burr_port_{uuid.uuid4().hex[:10]}"
    burr_persister = await _burr_persister(db, table)
    try:
        await burr_persister.initialize()
        theirs = await _conversation(burr_chatbot, burr_persister, "same-app")
        burr_printed = capsys.readouterr().out
    finally:
        if db.backend == "postgres":
            await burr_persister.connection.execute(f"DROP TABLE IF EXISTS {table}")
        await burr_persister.cleanup()
    _check(theirs)
    async with db.persister() as persister:
        ours = await _conversation(chatbot, persister, str(uuid.uuid4()))
    assert ours == theirs
    assert capsys.readouterr().out == burr_printed
