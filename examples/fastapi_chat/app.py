"""The chatbot of ``examples/chatbot.py`` as a FastAPI service: one durable conversation per
app id, partitioned by user, on SQLite or Postgres.

    uvicorn --factory examples.fastapi_chat.app:create_app                 # .burr_async.db
    BURR_ASYNC_DATABASE_URL=postgresql://postgres@127.0.0.1/test \\
        uvicorn --factory examples.fastapi_chat.app:create_app --port 8000

Endpoints (``user`` is the partition key; a user never sees another user's chats):

- ``POST /users/{user}/chats``: start a chat, 201 ``{"app_id": ...}``.
- ``GET /users/{user}/chats``: the user's chats, most recently active first.
- ``GET /users/{user}/chats/{app_id}``: the conversation so far and its last ``sequence_id``.
- ``POST /users/{user}/chats/{app_id}/messages`` ``{"text": ...}``: the assistant's reply.
- ``DELETE /users/{user}/chats/{app_id}``: delete the chat and every step of it, 204.

Every request loads the chat from the database, so any number of processes can serve the same
chats. Two messages racing on one chat cannot both be applied: both load the same step, both try
to store the next one, the database keeps exactly one, and the loser gets 409 (nothing of it is
stored; reload and resend). A message being answered while its chat is deleted is not stored
either: the chat's next step fails with ``AppDeletedError``, answered as 404, and the deleted
chat is not re-created.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.engine import make_url

from burr_async import (
    AppDeletedError,
    Application,
    ApplicationBuilder,
    ConcurrentStepError,
    Result,
    SQLAlchemyPersister,
    State,
    action,
    default,
    expr,
)
from burr_async.persistence import DEFAULT_DATABASE_URL, create_engine
from examples.chatbot import ai_converse, human_converse

__all__ = ["ChatService", "create_app"]

log = logging.getLogger(__name__)

DATABASE_URL_ENV = "BURR_ASYNC_DATABASE_URL"
START, HUMAN, AI, TERMINAL = "start_chat", "human_converse", "ai_converse", "terminal"
MAX_MESSAGE_LENGTH = 4000


# -- the graph -------------------------------------------------------------------------------
@action(reads=[], writes=["chat_history"])
def start_chat(state: State) -> State:
    """Open an empty conversation: step 0 of every chat, stored when the chat is created."""
    return state.update(chat_history=[])


async def build_chat(
    persister: SQLAlchemyPersister, user: str, app_id: str, hooks: Sequence[object] = ()
) -> Application:
    """The chat ``app_id`` of ``user``, resumed from its latest stored step when it has one
    (``sequence_id`` is None when it has none, that is, when the chat does not exist).

    ``start_chat -> human_converse -> ai_converse -> human_converse -> ...``, and
    ``human_converse -> terminal`` when the question contains 'exit' (the chatbot's rule).
    """
    return await (
        ApplicationBuilder()
        .with_actions(start_chat, human_converse, ai_converse, terminal=Result("chat_history"))
        .with_transitions(
            (START, HUMAN, default),
            (AI, HUMAN, default),
            (HUMAN, TERMINAL, expr("'exit' in question")),
            (HUMAN, AI, default),
        )
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={"chat_history": []},
            default_entrypoint=START,
        )
        .with_state_persister(persister)
        .with_identifiers(app_id=app_id, partition_key=user)
        .with_hooks(*hooks)
        .abuild()
    )


# -- request and response bodies ------------------------------------------------------------
class MessageIn(BaseModel):
    """A message from the user."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_MESSAGE_LENGTH, examples=["hello"])

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must contain a non-whitespace character")
        return value


class ChatCreated(BaseModel):
    app_id: str


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class ChatSummary(BaseModel):
    app_id: str
    sequence_id: int = Field(description="The chat's last stored step.")
    done: bool = Field(description="Whether the conversation has ended ('exit').")
    updated_at: dt.datetime = Field(description="When the last step was stored (UTC).")


class ChatList(BaseModel):
    user: str
    chats: list[ChatSummary] = Field(description="Most recently active first.")


class ChatHistory(BaseModel):
    app_id: str
    sequence_id: int = Field(description="The chat's last stored step.")
    done: bool
    messages: list[Message] = Field(description="Oldest first.")


class Reply(BaseModel):
    reply: str | None = Field(description="The assistant's answer; null when the chat ended.")
    sequence_id: int = Field(description="The step the answer was stored at.")
    done: bool = Field(description="Whether the conversation has ended; if so, no more messages.")


class ErrorOut(BaseModel):
    detail: str


# -- the service -----------------------------------------------------------------------------
class ChatNotFoundError(LookupError):
    """No chat ``app_id`` in the user's partition (it never existed, or is another user's)."""


class ChatFinishedError(RuntimeError):
    """The conversation has ended; it takes no more messages."""


class ChatService:
    """The chats of every user in one table, through one persister (one engine per process).

    A chat exists exactly when it has a stored step. Creating one runs its first action,
    ``start_chat``, which stores the empty conversation as step 0: "created" is a step of the
    state machine like any other, so existence, ownership (the partition key of that row) and
    listing all come from the step table, with no side table and no hand-written rows.
    """

    def __init__(self, persister: SQLAlchemyPersister, hooks: Sequence[object] = ()) -> None:
        self.persister = persister
        self.hooks = tuple(hooks)

    async def _load(self, user: str, app_id: str) -> Application:
        chat = await build_chat(self.persister, user, app_id, self.hooks)
        if chat.sequence_id is None:
            raise ChatNotFoundError(app_id)
        return chat

    async def create(self, user: str) -> str:
        chat = await build_chat(self.persister, user, str(uuid.uuid4()), self.hooks)
        await chat.astep()  # start_chat, stored as step 0
        return chat.uid

    async def send(self, user: str, app_id: str, text: str) -> Reply:
        chat = await self._load(user, app_id)
        # A request that died between the user's step and the assistant's (or whose
        # ai_converse failed) left that answer pending: give it first, so that this message is
        # not taken for the old question's answer. Normally this runs nothing.
        await chat.arun(halt_before=[HUMAN])
        if not chat.has_next_action():
            raise ChatFinishedError(app_id)
        last, result, _ = await chat.arun(halt_after=[AI, TERMINAL], inputs={"question": text})
        reply = result["response"] if last is not None and last.name == AI and result else None
        assert chat.sequence_id is not None  # it was loaded from a stored step
        return Reply(reply=reply, sequence_id=chat.sequence_id, done=not chat.has_next_action())

    async def history(self, user: str, app_id: str) -> ChatHistory:
        step = await self.persister.load(user, app_id)
        if step is None:
            raise ChatNotFoundError(app_id)
        return ChatHistory(
            app_id=app_id,
            sequence_id=step.sequence_id,
            done=step.position == TERMINAL,
            messages=[Message.model_validate(m) for m in step.state["chat_history"]],
        )

    async def delete(self, user: str, app_id: str) -> None:
        """Delete the chat and all its steps (one transaction); ChatNotFoundError when the user
        has no such chat. A request answering it meanwhile fails with AppDeletedError."""
        if await self.persister.delete_app(user, app_id) == 0:
            raise ChatNotFoundError(app_id)

    async def chats(self, user: str, limit: int) -> ChatList:
        apps = await self.persister.list_apps(user, limit=limit)
        return ChatList(
            user=user,
            chats=[
                ChatSummary(
                    app_id=a.app_id,
                    sequence_id=a.sequence_id,
                    done=a.position == TERMINAL,
                    updated_at=a.updated_at,
                )
                for a in apps
            ],
        )


def _service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chats
    return service


Service = Annotated[ChatService, Depends(_service)]
User = Annotated[str, Path(min_length=1, max_length=200, description="The partition key.")]
AppId = Annotated[str, Path(min_length=1, max_length=200)]

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such chat for this user."}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorOut,
        "description": "Another message to the chat won the race, or the chat has ended.",
    }
}


def _not_found(user: str, app_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"User {user!r} has no chat {app_id!r}.")


# -- the application -------------------------------------------------------------------------
def create_app(
    database_url: str | None = None,
    *,
    schema: str | None = None,
    table_name: str = "burr_state",
    hooks: Sequence[object] = (),
) -> FastAPI:
    """The chat service.

    The database is ``database_url``, else ``$BURR_ASYNC_DATABASE_URL``, else the SQLite file
    ``.burr_async.db``. Nothing touches it until startup: the lifespan then creates the
    process's one engine, provisions the table (``persister.initialize()``, idempotent), and on
    shutdown closes the persister (the requests under way finish their writes) and then disposes
    the engine. ``hooks`` (burr_async lifecycle hooks) are added to every
    chat application, for example for tracing.
    """
    url = database_url or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(url)
        persister = SQLAlchemyPersister(engine, table_name=table_name, schema=schema)
        try:
            await persister.initialize()
            log.info(
                "chat service on %s (table %s)",
                make_url(url).render_as_string(hide_password=True),
                table_name if schema is None else f"{schema}.{table_name}",
            )
            app.state.chats = ChatService(persister, hooks)
            yield
        finally:
            await persister.aclose()  # its held writer and reader go back to the pool first
            await engine.dispose()

    app = FastAPI(
        title="burr_async chat",
        summary="The burr_async chatbot as a service: durable chats, one per app id, per user.",
        lifespan=lifespan,
    )

    @app.exception_handler(ConcurrentStepError)
    async def _concurrent_step(_request: Request, exc: Exception) -> JSONResponse:
        """Two requests raced on the same step of a chat: the other one was applied."""
        log.info("concurrent step refused: %s", exc)
        return JSONResponse(
            status_code=status.HTTP_409_CONFLICT,
            content={
                "detail": "Another message to this chat was being answered at the same time and "
                "won; this one was not applied. Reload the chat and send it again."
            },
        )

    @app.exception_handler(AppDeletedError)
    async def _deleted(_request: Request, exc: Exception) -> JSONResponse:
        """The chat was deleted while this request was answering it: nothing was stored, and
        the chat is gone, as for any unknown chat."""
        assert isinstance(exc, AppDeletedError)
        log.info("step of a deleted chat refused: %s", exc)
        user, app_id = exc.partition_key or "", exc.app_id or ""
        return JSONResponse(
            status_code=status.HTTP_404_NOT_FOUND,
            content={"detail": _not_found(user, app_id).detail},
        )

    @app.post(
        "/users/{user}/chats",
        status_code=status.HTTP_201_CREATED,
        response_model=ChatCreated,
        name="create_chat",
    )
    async def create_chat(user: User, service: Service, response: Response) -> ChatCreated:
        """Start an empty chat (stored as its step 0)."""
        app_id = await service.create(user)
        response.headers["Location"] = app.url_path_for("get_chat", user=user, app_id=app_id)
        return ChatCreated(app_id=app_id)

    @app.get("/users/{user}/chats", response_model=ChatList, name="list_chats")
    async def list_chats(
        user: User, service: Service, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> ChatList:
        """The user's chats, most recently active first (an unknown user has none)."""
        return await service.chats(user, limit)

    @app.get(
        "/users/{user}/chats/{app_id}",
        response_model=ChatHistory,
        responses=NOT_FOUND,
        name="get_chat",
    )
    async def get_chat(user: User, app_id: AppId, service: Service) -> ChatHistory:
        """The conversation so far (empty for a new chat) and its last step."""
        try:
            return await service.history(user, app_id)
        except ChatNotFoundError:
            raise _not_found(user, app_id) from None

    @app.post(
        "/users/{user}/chats/{app_id}/messages",
        response_model=Reply,
        responses={**NOT_FOUND, **CONFLICT},
        name="send_message",
    )
    async def send_message(
        user: User, app_id: AppId, message: MessageIn, service: Service
    ) -> Reply:
        """Send a message and get the assistant's reply; a message containing 'exit' ends the
        chat (``done``). Two messages racing on the chat: one is answered, the other gets 409."""
        try:
            return await service.send(user, app_id, message.text)
        except ChatNotFoundError:
            raise _not_found(user, app_id) from None
        except ChatFinishedError:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"Chat {app_id!r} has ended ('exit'); it takes no more messages. Start a new chat.",
            ) from None

    @app.delete(
        "/users/{user}/chats/{app_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=NOT_FOUND,
        name="delete_chat",
    )
    async def delete_chat(user: User, app_id: AppId, service: Service) -> Response:
        """Delete the chat and every step of it. Another user's chat is not found (404), and
        left as it is."""
        try:
            await service.delete(user, app_id)
        except ChatNotFoundError:
            raise _not_found(user, app_id) from None
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return app
