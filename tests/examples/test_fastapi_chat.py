"""The FastAPI chat service (examples/fastapi_chat), over HTTP, on SQLite and Postgres.

Each test serves a fresh app on its own table through httpx's ASGI transport, with the app's
lifespan running (so the engine, the provisioning and the disposal are the real ones), and
drops the table afterwards. The last test serves the factory with uvicorn in a subprocess.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from burr_async import Action, PreRunStepHookAsync, SQLAlchemyPersister, State
from burr_async.persistence import create_engine, migrate
from examples.fastapi_chat.app import build_chat, create_app
from tests.databases import Database, stored_rows

REPO = Path(__file__).resolve().parents[2]

HELLO = "Hello! Ask me anything; type 'exit' to end the conversation."


@dataclass
class Served:
    client: httpx.AsyncClient
    db: Database
    table: str

    @asynccontextmanager
    async def persister(self) -> AsyncIterator[SQLAlchemyPersister]:
        """A second, independent view of the service's table."""
        async with self.db.persister(table_name=self.table) as persister:
            yield persister

    async def create(self, user: str) -> str:
        response = await self.client.post(f"/users/{user}/chats")
        assert response.status_code == 201, response.text
        app_id: str = response.json()["app_id"]
        return app_id

    async def send(self, user: str, app_id: str, text: str) -> dict[str, Any]:
        response = await self.client.post(
            f"/users/{user}/chats/{app_id}/messages", json={"text": text}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def chat(self, user: str, app_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/users/{user}/chats/{app_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def serve(db: Database, hooks: Sequence[object] = ()) -> AsyncIterator[Served]:
    table = f"chat_{uuid.uuid4().hex[:10]}"
    app = create_app(db.url, schema=db.schema, table_name=table, hooks=hooks)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://chat.test") as c:
                yield Served(c, db, table)
    finally:
        engine = create_engine(db.url)
        try:
            await migrate.downgrade(engine, "base", table_name=table, schema=db.schema)
        finally:
            await engine.dispose()


@pytest.fixture
async def served(db: Database) -> AsyncIterator[Served]:
    async with serve(db) as s:
        yield s


def user_msg(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot_msg(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


@pytest.mark.anyio
async def test_create_list_send_and_read_a_chat(served: Served) -> None:
    client = served.client
    assert (await client.get("/users/alice/chats")).json() == {"user": "alice", "chats": []}

    created = await client.post("/users/alice/chats")
    assert created.status_code == 201
    first = created.json()["app_id"]
    assert created.headers["location"] == f"/users/alice/chats/{first}"
    # Created but not yet spoken to: it exists, with an empty conversation at step 0.
    assert await served.chat("alice", first) == {
        "app_id": first,
        "sequence_id": 0,
        "done": False,
        "messages": [],
    }
    second = await served.create("alice")
    listed = (await client.get("/users/alice/chats")).json()["chats"]
    assert [c["app_id"] for c in listed] == [second, first]
    assert [(c["sequence_id"], c["done"]) for c in listed] == [(0, False), (0, False)]

    assert await served.send("alice", first, "hello") == {
        "reply": HELLO,
        "sequence_id": 2,
        "done": False,
    }
    assert await served.send("alice", first, "do you remember me?") == {
        "reply": "Every step is a row in the database; this is turn 2 of our chat.",
        "sequence_id": 4,
        "done": False,
    }
    assert await served.send("alice", first, "what is burr?") == {
        "reply": "Good question. You asked: 'what is burr?' (turn 3).",
        "sequence_id": 6,
        "done": False,
    }
    # The chat just written to is now the most recently active one.
    listed = (await client.get("/users/alice/chats")).json()["chats"]
    assert [(c["app_id"], c["sequence_id"]) for c in listed] == [(first, 6), (second, 0)]
    assert (await client.get("/users/alice/chats", params={"limit": 1})).json()["chats"][0][
        "app_id"
    ] == first

    expected = [
        user_msg("hello"),
        bot_msg(HELLO),
        user_msg("do you remember me?"),
        bot_msg("Every step is a row in the database; this is turn 2 of our chat."),
        user_msg("what is burr?"),
        bot_msg("Good question. You asked: 'what is burr?' (turn 3)."),
    ]
    assert await served.chat("alice", first) == {
        "app_id": first,
        "sequence_id": 6,
        "done": False,
        "messages": expected,
    }
    assert (await served.chat("alice", second))["messages"] == []

    # 'exit' ends the chat: no reply, done, and it takes no more messages.
    assert await served.send("alice", first, "exit") == {
        "reply": None,
        "sequence_id": 8,
        "done": True,
    }
    ended = await served.chat("alice", first)
    assert ended["done"] is True
    assert ended["messages"] == [*expected, user_msg("exit")]
    refused = await client.post(f"/users/alice/chats/{first}/messages", json={"text": "hi?"})
    assert refused.status_code == 409
    assert "has ended" in refused.json()["detail"]
    listed = (await client.get("/users/alice/chats")).json()["chats"]
    assert [(c["app_id"], c["done"]) for c in listed] == [(first, True), (second, False)]

    async with served.persister() as persister:
        steps = await persister.history("alice", first)
        stored = await stored_rows(persister, first)
    # the reads above rebuilt states from delta rows: the latest step and others stored only
    # what they changed (a full row again whenever the deltas would outweigh one)
    deltas = [seq for seq, delta, _text in stored if delta]
    assert deltas[-1] == 8 and len(deltas) >= 3
    assert [s.sequence_id for s in steps] == list(range(9))
    assert [s.position for s in steps] == [
        "start_chat",
        *["human_converse", "ai_converse"] * 3,
        "human_converse",
        "terminal",
    ]


@pytest.mark.anyio
async def test_unknown_chats_are_404(served: Served) -> None:
    client = served.client
    for app_id in (str(uuid.uuid4()), "not-a-uuid"):
        got = await client.get(f"/users/alice/chats/{app_id}")
        assert got.status_code == 404
        assert app_id in got.json()["detail"]
        sent = await client.post(f"/users/alice/chats/{app_id}/messages", json={"text": "hello"})
        assert sent.status_code == 404
    # Nothing was created by asking.
    assert (await client.get("/users/alice/chats")).json()["chats"] == []
    assert (await client.get("/users/nobody/chats")).status_code == 200


@pytest.mark.anyio
async def test_a_user_never_sees_another_users_chat(served: Served) -> None:
    client = served.client
    app_id = await served.create("alice")
    await served.send("alice", app_id, "hello")

    got = await client.get(f"/users/bob/chats/{app_id}")
    assert got.status_code == 404
    sent = await client.post(f"/users/bob/chats/{app_id}/messages", json={"text": "hijack"})
    assert sent.status_code == 404
    # The same answer as for an id that never existed: nothing tells bob the chat is there.
    other = str(uuid.uuid4())
    missing = await client.get(f"/users/bob/chats/{other}")
    assert got.json() == {"detail": f"User 'bob' has no chat {app_id!r}."}
    assert missing.json() == {"detail": f"User 'bob' has no chat {other!r}."}
    assert (await client.get("/users/bob/chats")).json()["chats"] == []
    assert (await served.chat("alice", app_id))["messages"] == [
        user_msg("hello"),
        bot_msg(HELLO),
    ]
    async with served.persister() as persister:
        assert await persister.list_app_ids("bob") == []
        assert [s.sequence_id for s in await persister.history("alice", app_id)] == [0, 1, 2]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({}, "text"),
        ({"text": ""}, "text"),
        ({"text": "   \n\t"}, "text"),
        ({"text": None}, "text"),
        ({"text": 42}, "text"),
        ({"text": ["hello"]}, "text"),
        ({"text": "x" * 4001}, "text"),
        ({"text": "hello", "role": "system"}, "role"),
        ([{"text": "hello"}], None),
        ("hello", None),
    ],
)
async def test_malformed_messages_are_422(served: Served, body: object, where: str | None) -> None:
    app_id = await served.create("alice")
    response = await served.client.post(f"/users/alice/chats/{app_id}/messages", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert errors
    if where is not None:
        assert errors[0]["loc"][:2] == ["body", where]
    # Not JSON at all.
    response = await served.client.post(
        f"/users/alice/chats/{app_id}/messages",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    # Nothing was stored by the rejected requests.
    assert (await served.chat("alice", app_id))["sequence_id"] == 0


@pytest.mark.anyio
async def test_an_interrupted_answer_is_given_before_the_next_message(served: Served) -> None:
    app_id = await served.create("alice")
    await served.send("alice", app_id, "hello")
    # A request that stored the user's step and died before the assistant's.
    async with served.persister() as persister:
        chat = await build_chat(persister, "alice", app_id)
        await chat.astep(inputs={"question": "are you there?"})
    assert (await served.chat("alice", app_id))["sequence_id"] == 3

    assert await served.send("alice", app_id, "still there?") == {
        "reply": "Good question. You asked: 'still there?' (turn 3).",
        "sequence_id": 6,
        "done": False,
    }
    assert (await served.chat("alice", app_id))["messages"][2:] == [
        user_msg("are you there?"),
        bot_msg("Good question. You asked: 'are you there?' (turn 2)."),
        user_msg("still there?"),
        bot_msg("Good question. You asked: 'still there?' (turn 3)."),
    ]


@pytest.mark.anyio
async def test_deleting_a_chat_removes_its_steps(served: Served) -> None:
    client = served.client
    gone, kept = await served.create("alice"), await served.create("alice")
    await served.send("alice", gone, "hello")
    deleted = await client.delete(f"/users/alice/chats/{gone}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    got = await client.get(f"/users/alice/chats/{gone}")
    assert got.status_code == 404
    assert got.json() == {"detail": f"User 'alice' has no chat {gone!r}."}
    sent = await client.post(f"/users/alice/chats/{gone}/messages", json={"text": "hi"})
    assert sent.status_code == 404  # not re-created by a message
    assert [c["app_id"] for c in (await client.get("/users/alice/chats")).json()["chats"]] == [kept]
    async with served.persister() as persister:
        assert await persister.history("alice", gone) == []
        assert [s.sequence_id for s in await persister.history("alice", kept)] == [0]
    again = await client.delete(f"/users/alice/chats/{gone}")  # already gone
    assert again.status_code == 404


@pytest.mark.anyio
async def test_deleting_another_users_or_an_unknown_chat_is_404_and_removes_nothing(
    served: Served,
) -> None:
    client = served.client
    app_id = await served.create("alice")
    await served.send("alice", app_id, "hello")
    for user, chat in (("bob", app_id), ("alice", str(uuid.uuid4())), ("alice", "not-a-uuid")):
        response = await client.delete(f"/users/{user}/chats/{chat}")
        assert response.status_code == 404
        assert response.json() == {"detail": f"User {user!r} has no chat {chat!r}."}
    assert (await served.chat("alice", app_id))["sequence_id"] == 2
    async with served.persister() as persister:
        assert [s.sequence_id for s in await persister.history("alice", app_id)] == [0, 1, 2]


class DeleteWhileAnswering(PreRunStepHookAsync):
    """Once armed, deletes the chat (through another persister) just before its next
    ``ai_converse`` step runs: the request already loaded it and stored the user's step."""

    def __init__(self) -> None:
        self.served: Served | None = None
        self.removed: int | None = None

    async def pre_run_step(
        self,
        *,
        app_id: str,
        partition_key: str | None,
        sequence_id: int,
        state: State,
        action: Action,
        inputs: dict[str, Any],
        **future_kwargs: Any,
    ) -> None:
        if self.served is None or action.name != "ai_converse":
            return
        served, self.served = self.served, None
        async with served.persister() as persister:
            self.removed = await persister.delete_app(partition_key, app_id)


@pytest.mark.anyio
async def test_a_chat_deleted_while_a_message_is_answered_is_404_and_stays_deleted(
    db: Database,
) -> None:
    hook = DeleteWhileAnswering()
    async with serve(db, hooks=[hook]) as served:
        app_id = await served.create("alice")
        await served.send("alice", app_id, "hello")
        hook.served = served
        response = await served.client.post(
            f"/users/alice/chats/{app_id}/messages", json={"text": "still there?"}
        )
        assert hook.removed == 4  # steps 0-2 and the user's step 3
        assert response.status_code == 404
        assert response.json() == {"detail": f"User 'alice' has no chat {app_id!r}."}
        assert (await served.client.get(f"/users/alice/chats/{app_id}")).status_code == 404
        async with served.persister() as persister:
            assert await persister.history("alice", app_id) == []  # the answer was not stored
            assert await persister.list_app_ids("alice") == []


class Rendezvous(PreRunStepHookAsync):
    """Holds ``human_converse`` steps until ``parties`` of them are waiting (once armed).

    Each request loads the chat before its first step, so when all parties are here they have
    all loaded the same latest step and all will try to store the same next ``sequence_id``.
    """

    def __init__(self) -> None:
        self.parties = 0
        self.sequence_ids: list[int] = []
        self.everyone_here = anyio.Event()

    def arm(self, parties: int) -> None:
        self.parties = parties
        self.sequence_ids = []
        self.everyone_here = anyio.Event()

    async def pre_run_step(
        self,
        *,
        app_id: str,
        partition_key: str | None,
        sequence_id: int,
        state: State,
        action: Action,
        inputs: dict[str, Any],
        **future_kwargs: Any,
    ) -> None:
        if self.parties == 0 or action.name != "human_converse":
            return
        self.sequence_ids.append(sequence_id)
        if len(self.sequence_ids) == self.parties:
            self.parties = 0
            self.everyone_here.set()
        with anyio.fail_after(10):
            await self.everyone_here.wait()


@pytest.mark.anyio
async def test_two_messages_racing_on_one_chat_one_wins_the_other_is_409(db: Database) -> None:
    rendezvous = Rendezvous()
    async with serve(db, hooks=[rendezvous]) as served:
        app_id = await served.create("alice")
        await served.send("alice", app_id, "hello")

        responses: dict[str, httpx.Response] = {}

        async def send(text: str) -> None:
            responses[text] = await served.client.post(
                f"/users/alice/chats/{app_id}/messages", json={"text": text}
            )

        rendezvous.arm(2)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "first?")
                tg.start_soon(send, "second?")
        # Both loaded step 2 and both tried to store step 3: the race was real.
        assert rendezvous.sequence_ids == [3, 3]
        assert sorted(r.status_code for r in responses.values()) == [200, 409]
        (winner,) = [text for text, r in responses.items() if r.status_code == 200]
        (loser,) = [text for text, r in responses.items() if r.status_code == 409]
        answer = f"Good question. You asked: {winner!r} (turn 2)."
        assert responses[winner].json() == {"reply": answer, "sequence_id": 4, "done": False}
        assert "Reload the chat and send it again" in responses[loser].json()["detail"]

        # Exactly one new user+assistant pair; nothing of the loser was stored.
        chat = await served.chat("alice", app_id)
        assert chat["sequence_id"] == 4
        assert chat["messages"] == [
            user_msg("hello"),
            bot_msg(HELLO),
            user_msg(winner),
            bot_msg(answer),
        ]
        async with served.persister() as persister:
            steps = await persister.history("alice", app_id)
        assert [(s.sequence_id, s.status) for s in steps] == [(i, "completed") for i in range(5)]

        # The loser resends, as told, and is answered after the winner.
        assert await served.send("alice", app_id, loser) == {
            "reply": f"Good question. You asked: {loser!r} (turn 3).",
            "sequence_id": 6,
            "done": False,
        }


@pytest.mark.anyio
async def test_many_chats_at_once(served: Served) -> None:
    chats, turns = 20, 3
    replies: dict[str, list[dict[str, Any]]] = {}

    async def converse(n: int) -> None:
        user = f"user{n % 5}"
        app_id = await served.create(user)
        replies[app_id] = [await served.send(user, app_id, f"c{n} m{t}") for t in range(turns)]

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for n in range(chats):
                tg.start_soon(converse, n)

    assert len(replies) == chats
    for answers in replies.values():
        assert [a["sequence_id"] for a in answers] == [2, 4, 6]
        assert all(a["reply"].endswith(f"(turn {t + 1}).") for t, a in enumerate(answers))
    per_user: dict[str, set[str]] = {}
    for n in range(5):
        listed = (await served.client.get(f"/users/user{n}/chats")).json()["chats"]
        assert all(c["sequence_id"] == 6 for c in listed)
        per_user[f"user{n}"] = {c["app_id"] for c in listed}
    assert sorted(len(ids) for ids in per_user.values()) == [4] * 5
    assert set().union(*per_user.values()) == set(replies)
    for user, ids in per_user.items():
        for app_id in ids:
            chat = await served.chat(user, app_id)
            texts = [m["content"] for m in chat["messages"][::2]]
            n = int(texts[0].split()[0][1:])
            assert texts == [f"c{n} m{t}" for t in range(turns)]
            assert [m["role"] for m in chat["messages"]] == ["user", "assistant"] * turns
            assert [m["content"] for m in chat["messages"][1::2]] == [
                f"Noted: 'c{n} m{t}' (turn {t + 1})." for t in range(turns)
            ]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_uvicorn_serves_the_factory(tmp_path: Path) -> None:
    database = tmp_path / "chat.db"
    port = _free_port()
    log_path = tmp_path / "uvicorn.log"
    env = {**os.environ, "BURR_ASYNC_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "examples.fastapi_chat.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
        try:
            with httpx.Client(base_url=base, trust_env=False, timeout=10) as client:
                deadline = time.monotonic() + 30
                while True:
                    assert process.poll() is None, log_path.read_text()
                    assert time.monotonic() < deadline, log_path.read_text()
                    try:
                        listed = client.get("/users/alice/chats")
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                assert listed.status_code == 200
                assert listed.json() == {"user": "alice", "chats": []}
                created = client.post("/users/alice/chats")
                assert created.status_code == 201
                app_id = created.json()["app_id"]
                sent = client.post(f"/users/alice/chats/{app_id}/messages", json={"text": "hello"})
                assert sent.json() == {"reply": HELLO, "sequence_id": 2, "done": False}
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    output = log_path.read_text()
    # A graceful stop: uvicorn runs the lifespan's shutdown (the engine is disposed), then
    # exits 0 or, in recent versions, re-raises the SIGTERM it got.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application startup complete" in output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output
    assert database.exists()


@pytest.mark.anyio
async def test_shutdown_closes_the_persister_before_the_engine(db: Database) -> None:
    """The held writer and reader connections go back to the pool before it is disposed."""
    async with serve(db) as served:
        chat = await served.create("alice")
        await served.send("alice", chat, "hello")
        transport = served.client._transport
        assert isinstance(transport, httpx.ASGITransport)
        persister = transport.app.state.chats.persister  # type: ignore[attr-defined]
        assert not persister.closed
    assert persister.closed
    assert persister.engine.pool.checkedout() == 0
