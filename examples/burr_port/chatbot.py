# Derived from Apache Burr's documentation and examples (Apache License 2.0): the chatbot of
# docs/concepts/state-persistence.rst ("An example"), with the actions and hook of
# examples/conversational-rag/simple_example/application.py and its main(), in their async form
# (async actions, Burr's async persisters, abuild, arun). The RAG pipeline is replaced by a
# deterministic stand-in for the LLM, so it runs without a model or network.
#
# burr_chatbot.py runs on Apache Burr; chatbot.py is the same program on burr_async: only
# the import lines differ (tests/examples/test_burr_port.py runs both, and compares them).
"""The chatbot of Burr's persistence docs, with a stand-in for the LLM.

    python examples/burr_port/chatbot.py          # on burr_async (burr_chatbot.py: on Burr)

Every step is stored in .sqllite.db; run it again and the conversation resumes.
"""

import asyncio
import pprint
from typing import List, Optional, Tuple

from burr_async import (
    Action,
    Application,
    ApplicationBuilder,
    AsyncPostgreSQLPersister,
    AsyncSQLitePersister,
    GraphBuilder,
    PostRunStepHook,
    PreRunStepHook,
    Result,
    State,
    action,
    default,
    expr,
)


class StandInLLM:
    """Answers like an LLM would, deterministically: what it was asked and what it remembers."""

    async def answer(self, question: str, chat_history: List[str]) -> str:
        asked = sum(1 for line in chat_history if line.startswith("Human: "))
        return f"You asked {question!r}; that is question {asked} of this chat."


class PrintStepHook(PostRunStepHook, PreRunStepHook):
    """Custom hook to print the action/result after each step."""

    def pre_run_step(self, action: Action, **future_kwargs):
        if action.name == "ai_converse":
            print("🤔 AI is thinking...")
        if action.name == "human_converse":
            print("⏳Processing input from user...")

    def post_run_step(self, *, state: "State", action: Action, result: dict, **future_kwargs):
        if action.name == "human_converse":
            print("🎙💬", result["question"], "\n")
        if action.name == "ai_converse":
            print("🤖💬", result["conversational_rag_response"], "\n")


@action(
    reads=["question", "chat_history"],
    writes=["chat_history"],
)
async def ai_converse(state: State, llm: StandInLLM) -> Tuple[dict, State]:
    """AI conversing step. Asks the (stand-in) LLM."""
    response = await llm.answer(state["question"], state["chat_history"])
    result = {"conversational_rag_response": response}
    new_history = f"AI: {result['conversational_rag_response']}"
    return result, state.append(chat_history=new_history)


@action(
    reads=[],
    writes=["question", "chat_history"],
)
async def human_converse(state: State, user_question: str) -> Tuple[dict, State]:
    """Human converse step -- make sure we get input, and store it as state."""
    state = state.update(question=user_question).append(chat_history=f"Human: {user_question}")
    return {"question": user_question}, state


def graph():
    return (
        GraphBuilder()
        .with_actions(
            # bind the LLM to the AI conversational step
            ai_converse=ai_converse.bind(llm=StandInLLM()),
            human_converse=human_converse,
            terminal=Result("chat_history"),
        )
        .with_transitions(
            ("ai_converse", "human_converse", default),
            ("human_converse", "terminal", expr("'exit' in question")),
            ("human_converse", "ai_converse", default),
        )
        .build()
    )


async def application(
    state_persister,
    app_id: Optional[str] = None,
    hooks: Optional[list] = None,
) -> Application:
    app = await (
        ApplicationBuilder()
        .with_graph(graph())
        .initialize_from(
            state_persister,
            resume_at_next_action=True,
            default_state={"chat_history": []},
            default_entrypoint="human_converse",
        )
        .with_state_persister(state_persister)
        .with_identifiers(app_id=app_id, partition_key="sample_user")
        .with_hooks(*hooks if hooks else [])
        .abuild()
    )
    return app


async def converse(app: Application, questions: List[str]) -> Optional[dict]:
    """Asks each question in turn; the chat history when a question ends the chat, else None."""
    for user_question in questions:
        previous_action, result, state = await app.arun(
            halt_after=["ai_converse", "terminal"],
            inputs={"user_question": user_question},
        )
        if previous_action.name == "terminal":
            # reached the end
            return result
    return None


async def sqlite_persister(db_path: str, table_name: str = "burr_state") -> AsyncSQLitePersister:
    state_persister = await AsyncSQLitePersister.from_values(db_path=db_path, table_name=table_name)
    await state_persister.initialize()
    return state_persister


async def postgres_persister(
    db_name: str, user: str, password: Optional[str], host: str, port: int, table_name: str
) -> AsyncPostgreSQLPersister:
    state_persister = await AsyncPostgreSQLPersister.from_values(
        db_name=db_name, user=user, password=password, host=host, port=port, table_name=table_name
    )
    await state_persister.initialize()
    return state_persister


async def main():
    """This is one way -- you provide input via the control flow"""
    state_persister = await sqlite_persister(db_path=".sqllite.db", table_name="burr_state")
    try:
        app = await application(state_persister, app_id="burr-port-demo", hooks=[PrintStepHook()])
        print(f"Running with initial state:\n {pprint.pformat(app.state.get_all())}")
        if not app.has_next_action():
            print("This chat is over: delete .sqllite.db to start a new one.")
            return
        while True:
            try:
                user_question = await asyncio.to_thread(
                    input, "Ask something (or type exit to quit): "
                )
            except EOFError:
                return  # the chat stays open: the next run resumes it
            result = await converse(app, [user_question])
            if result is not None:
                # reached the end
                pprint.pprint(result)
                return
    finally:
        await state_persister.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
