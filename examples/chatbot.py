"""The chatbot from Burr's persistence docs, on burr_async.

Every step is stored (by default in the embedded SQLite file ``.burr_async.db``); run it again
with the same ``--app-id`` and ``--user`` and the conversation resumes where it stopped.

    printf 'hello\\nwhat can you do?\\n' | python examples/chatbot.py --app-id demo --user alice
    python examples/chatbot.py --app-id demo --user alice          # interactive; 'exit' ends it
    python examples/chatbot.py --db postgresql://postgres@127.0.0.1/test --user alice

The "AI" is a deterministic local responder: no API key, no network.
"""

from __future__ import annotations

import argparse
import sys
import uuid

import anyio
import anyio.to_thread

from burr_async import (
    Application,
    ApplicationBuilder,
    Result,
    SQLAlchemyPersister,
    State,
    action,
    default,
    expr,
)
from burr_async.persistence import DEFAULT_DATABASE_URL


@action(reads=[], writes=["question", "chat_history"])
def human_converse(state: State, question: str) -> tuple[dict[str, str], State]:
    """Take the user's question."""
    new_state = state.update(question=question).append(
        chat_history={"role": "user", "content": question}
    )
    return {"question": question}, new_state


def _respond(question: str, turn: int) -> str:
    q = question.lower()
    if "hello" in q or q.startswith("hi"):
        return "Hello! Ask me anything; type 'exit' to end the conversation."
    if "persist" in q or "remember" in q:
        return f"Every step is a row in the database; this is turn {turn} of our chat."
    if "?" in q:
        return f"Good question. You asked: {question.strip()!r} (turn {turn})."
    return f"Noted: {question.strip()!r} (turn {turn})."


@action(reads=["question", "chat_history"], writes=["response", "chat_history"])
async def ai_converse(state: State) -> tuple[dict[str, str], State]:
    """Answer the question (deterministically, locally)."""
    turn = sum(1 for m in state["chat_history"] if m["role"] == "user")
    response = _respond(state["question"], turn)
    new_state = state.update(response=response).append(
        chat_history={"role": "assistant", "content": response}
    )
    return {"response": response}, new_state


def chat_graph() -> ApplicationBuilder:
    """A builder with the chatbot's actions and transitions (and nothing else yet)."""
    return (
        ApplicationBuilder()
        .with_actions(human_converse, ai_converse, terminal=Result("chat_history"))
        .with_transitions(
            ("ai_converse", "human_converse", default),
            ("human_converse", "terminal", expr("'exit' in question")),
            ("human_converse", "ai_converse", default),
        )
    )


graph = chat_graph().with_entrypoint("human_converse")
"""For ``burr-async graph examples/chatbot.py:graph`` (prints the graph as Mermaid)."""


async def build_app(persister: SQLAlchemyPersister, app_id: str, user: str | None) -> Application:
    """The chatbot application, resumed from ``persister`` when it has stored steps."""
    return await (
        chat_graph()
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={"chat_history": []},
            default_entrypoint="human_converse",
        )
        .with_state_persister(persister)
        .with_identifiers(app_id=app_id, partition_key=user)
        .abuild()
    )


async def _read_line(prompt: str) -> str | None:
    def read() -> str | None:
        if sys.stdin.isatty():
            try:
                return input(prompt)
            except EOFError:
                return None
        line = sys.stdin.readline()
        return line.rstrip("\n") if line else None

    return await anyio.to_thread.run_sync(read)


async def chat(db_url: str, app_id: str, user: str | None, table_name: str) -> None:
    async with SQLAlchemyPersister.from_url(db_url, table_name=table_name) as persister:
        await persister.initialize()  # alembic upgrade head for the state table (idempotent)
        app = await build_app(persister, app_id, user)
        history = app.state["chat_history"]
        print(f"app_id={app.uid} user={app.partition_key} db={db_url}")
        if history:
            print(f"Resumed at step {app.sequence_id} with {len(history)} messages:")
            for message in history:
                print(f"  {message['role']:>9}: {message['content']}")
        while app.has_next_action():
            question = await _read_line("you> ")
            if question is None:
                print(f"(input ended; the chat is saved at step {app.sequence_id})")
                return
            if not question.strip():
                continue
            print(f"      you: {question}")
            last, result, _ = await app.arun(
                halt_after=["ai_converse", "terminal"], inputs={"question": question}
            )
            if last is not None and last.name == "terminal":
                print(f"Conversation over after {len(app.state['chat_history'])} messages.")
                return
            assert result is not None
            print(f"assistant: {result['response']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--app-id", default=None, help="conversation id (default: a new UUID)")
    parser.add_argument("--user", default=None, help="partition key, e.g. the user's name")
    parser.add_argument("--db", default=DEFAULT_DATABASE_URL, help="database URL")
    parser.add_argument("--table-name", default="burr_state", help="table of the steps")
    args = parser.parse_args(argv)
    anyio.run(chat, args.db, args.app_id or str(uuid.uuid4()), args.user, args.table_name)


if __name__ == "__main__":
    main()
