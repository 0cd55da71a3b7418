"""Shared actions and graph builders for the unit tests."""

from __future__ import annotations

from typing import Any

from burr_async import (
    Action,
    Application,
    ApplicationBuilder,
    Result,
    State,
    action,
    default,
    expr,
)

# -- a small chatbot ---------------------------------------------------------------------------


@action(reads=[], writes=["prompt", "chat_history"])
def user_input(state: State, prompt: str) -> tuple[dict[str, Any], State]:
    """Sync action: store the prompt the user typed."""
    new = state.update(prompt=prompt).append(chat_history={"role": "user", "content": prompt})
    return {"prompt": prompt}, new


@action(reads=["prompt"], writes=["response", "chat_history"])
async def respond(state: State) -> tuple[dict[str, Any], State]:
    """Async action: echo the prompt back."""
    reply = f"echo: {state['prompt']}"
    new = state.update(response=reply).append(chat_history={"role": "bot", "content": reply})
    return {"response": reply}, new


@action(reads=["chat_history"], writes=[])
async def goodbye(state: State) -> tuple[dict[str, Any], State]:
    return {"turns": len(state["chat_history"])}, state


def chatbot_builder() -> ApplicationBuilder:
    """user_input -> respond -> user_input ..., or user_input -> goodbye on 'exit' in prompt.

    No state, entrypoint or identifiers are set, so the builder can be finished either with
    with_state/with_entrypoint or with initialize_from.
    """
    return (
        ApplicationBuilder()
        .with_actions(user_input, respond, goodbye)
        .with_transitions(
            ("user_input", "goodbye", expr("'exit' in prompt")),
            ("user_input", "respond", default),
            ("respond", "user_input"),
        )
    )


async def chatbot_app(**identifiers: Any) -> Application:
    return (
        await chatbot_builder()
        .with_state(chat_history=[])
        .with_entrypoint("user_input")
        .with_identifiers(**identifiers)
        .abuild()
    )


# -- a counter ---------------------------------------------------------------------------------


@action(reads=["count"], writes=["count"])
async def increment(state: State, by: int = 1) -> tuple[dict[str, Any], State]:
    new = state.increment(count=by)
    return {"count": new["count"]}, new


def counter_builder(limit: int = 3) -> ApplicationBuilder:
    """increment loops until count >= limit, then ``done`` returns the count and the graph ends."""
    return (
        ApplicationBuilder()
        .with_actions(increment, done=Result("count"))
        .with_transitions(
            ("increment", "done", expr(f"count >= {limit}")),
            ("increment", "increment"),
        )
    )


async def counter_app(limit: int = 3, count: int = 0, **identifiers: Any) -> Application:
    return (
        await counter_builder(limit)
        .with_state(count=count)
        .with_entrypoint("increment")
        .with_identifiers(**identifiers)
        .abuild()
    )


async def single_action_app(act: Action, name: str | None = None, **state: Any) -> Application:
    """An application whose only action is ``act`` (named ``name`` when given)."""
    builder = ApplicationBuilder()
    if name is None:
        builder.with_actions(act)
        name = act.name
    else:
        builder.with_actions(**{name: act})
    return await builder.with_state(**state).with_entrypoint(name).abuild()


class FlakyError(RuntimeError):
    """Raised by test actions that are told to fail."""
