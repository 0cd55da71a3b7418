"""The chat-like state every contender runs: same shape, same size, same transitions.

An application is the two-node chat loop of ``examples/chatbot.py``: ``human_converse`` takes a
question (an input) and appends it to ``chat_history``; ``ai_converse`` appends a deterministic
answer. One *turn* is those two steps.

``chat_history`` is a window of the last :data:`WINDOW` messages and starts full (seeded), so the
state is the same ~16 KB at every step whatever the workload's length: a 20-step app in W2
holds the same state as step 500 of W1. A contender that writes the whole state every step (the
raw driver, Burr, burr_async's snapshot storage) writes rows of that size; burr_async's delta
storage writes the message that left the window and the one that came in. Contenders share
these functions so that the work inside an action is identical; only the framework and the
write path around it differ.

The long chat (W4) is the same graph with no window: it starts from an empty history
(:func:`long_initial_state`) and keeps every message (``push(..., window=None)``), so the state
grows by one message per step and a full snapshot per step costs O(n) bytes, O(n²) in all.

The fan-out (W5) is a parent whose state holds one question per child
(:func:`fanout_parent_state`); each child is a small chat (:func:`fanout_child_state`: the
question as its only message) through a chain of actions, each appending one assistant
message (:func:`fanout_step`); the parent keeps every child's last ``response``
(:func:`fanout_answer`).
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypedDict

import orjson

__all__ = [
    "PARTITION_KEY",
    "WINDOW",
    "Message",
    "answer",
    "encoded_fanout_child_size",
    "encoded_long_state_size",
    "encoded_state_size",
    "fanout_answer",
    "fanout_child_state",
    "fanout_parent_state",
    "fanout_step",
    "initial_state",
    "long_initial_state",
    "push",
    "question",
    "seed_history",
]

WINDOW = 250
"""Messages kept in ``chat_history``."""

PARTITION_KEY = "bench"
"""The partition key (user) of every benchmark application."""

_FILLER = "how would you store every step of this chat durably?"


class Message(TypedDict):
    role: str
    content: str


def question(turn: int) -> str:
    """The user's question at ``turn`` (~32 characters)."""
    return f"q{turn:06d} {_FILLER[:25]}"


def answer(text: str) -> str:
    """The assistant's deterministic answer to the question ``text`` (~32 characters)."""
    return f"a{text[1:7]} re: {text[8:26]}"


def push(history: list[Message], message: Message, window: int | None = WINDOW) -> list[Message]:
    """A new list: ``history`` plus ``message``, keeping the last ``window`` messages (every
    message when ``window`` is None: the long chat)."""
    if window is not None and len(history) >= window:
        return [*history[len(history) - window + 1 :], message]
    return [*history, message]


@cache
def _seed() -> tuple[Message, ...]:
    messages: list[Message] = []
    for turn in range(-(WINDOW // 2), 0):
        q = question(turn)
        messages.append({"role": "user", "content": q})
        messages.append({"role": "assistant", "content": answer(q)})
    return tuple(messages[-WINDOW:])


def seed_history() -> list[Message]:
    """A full window of earlier messages (a new list; the dicts are shared, never mutated)."""
    return list(_seed())


def initial_state() -> dict[str, Any]:
    """The state an application starts from: a full history, no question or response yet."""
    return {"question": "", "response": "", "chat_history": seed_history()}


def long_initial_state() -> dict[str, Any]:
    """The state a long chat (W4) starts from: no history, no question or response yet."""
    return {"question": "", "response": "", "chat_history": []}


def encoded_state_size() -> int:
    """Bytes of one step's encoded state (orjson), as written by every step."""
    state = initial_state()
    q = question(0)
    state["question"] = q
    state["response"] = answer(q)
    return len(orjson.dumps(state))


def encoded_long_state_size(steps: int) -> int:
    """Bytes of the long chat's encoded state (orjson) after ``steps`` steps (W4's last)."""
    history: list[Message] = []
    for turn in range(steps // 2):
        q = question(turn)
        history += [{"role": "user", "content": q}, {"role": "assistant", "content": answer(q)}]
    q = question(steps // 2 - 1)
    return len(orjson.dumps({"question": q, "response": answer(q), "chat_history": history}))


def fanout_parent_state(children: int) -> dict[str, Any]:
    """W5's parent state before its fan-out step: one question per child, no answers yet."""
    return {"questions": [question(i) for i in range(children)], "answers": []}


def fanout_child_state(text: str) -> dict[str, Any]:
    """The state a W5 child starts from: its question as the only message."""
    return {"question": text, "response": "", "chat_history": [{"role": "user", "content": text}]}


def fanout_step(history: list[Message], text: str, step: int) -> tuple[list[Message], str]:
    """Child step ``step`` (from 0) on the question ``text``: the new history (one assistant
    message appended) and that message, which becomes the child's ``response``."""
    reply = f"{answer(text)} #{step}"
    return [*history, {"role": "assistant", "content": reply}], reply


def fanout_answer(text: str, steps: int) -> str:
    """The ``response`` a W5 child ends with after ``steps`` steps on the question ``text``."""
    return fanout_step([], text, steps - 1)[1]


def encoded_fanout_child_size(steps: int) -> int:
    """Bytes of a W5 child's encoded state (orjson) after its last step."""
    text = question(0)
    state = fanout_child_state(text)
    for step in range(steps):
        state["chat_history"], state["response"] = fanout_step(state["chat_history"], text, step)
    return len(orjson.dumps(state))
