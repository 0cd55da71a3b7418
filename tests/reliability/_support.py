"""What the trials share: the result counts, a chat-like application whose every state can be
checked against its predecessor, the checks themselves, and a watchdog that counts a hung call
instead of hanging with it.

Nothing here imports pytest: the crash and race children import this module too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from burr_async import (
    Application,
    ApplicationBuilder,
    AsyncBaseStatePersister,
    BurrAsyncError,
    State,
    action,
)
from burr_async.persistence import SQLAlchemyPersister, create_engine, migrate
from tests.databases import POSTGRES_URL, Database

REPO = Path(__file__).resolve().parents[2]
PARTITION = "rel"
KEEP = 8  # the chat keeps its last KEEP messages
FILLER = "·" * 120  # makes every row a few kB, so that a commit takes a little while

# Counts that are a broken contract whenever they are not zero (besides the named fields).
FAILURE_KEYS = frozenset(
    {
        "behind",  # the database holds a step the app did not advance to (and no error said so)
        "not_recovered",  # the next step after the fault did not succeed
        "resume_mismatch",  # a resumed app did not start at the latest committed step
        "partial",  # a refused input left something stored
        "altered",  # an accepted input came back different
        "loser_advanced",  # a race loser's app moved
        "no_winner",  # a race that nobody won (without an error to say why)
        "concurrent_step_error",  # where no other writer exists
        "slow_error",  # an error came, but later than the bound
        "fault_missed",  # the injected fault never happened: the run tested nothing
        "worker_died",  # a race worker stopped before the rounds were over
        "failed_while_waiting",  # a step failed under a lock shorter than the busy timeout
    }
)


@dataclass
class Counts:
    """One trial's results on one backend."""

    trial: str
    backend: str
    runs: int = 0
    committed: int = 0
    lost: int = 0
    double_advanced: int = 0
    mixed: int = 0
    hung: int = 0
    unclear: int = 0
    seconds: float = 0.0
    extra: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # bad input: case -> outcome

    def note(self, text: str) -> None:
        """Keep the first few examples of what went wrong, for the report."""
        if len(self.notes) < 12:
            self.notes.append(text[:400])

    def failures(self) -> dict[str, int]:
        """Every count that breaks the contract and is not zero."""
        found = {
            name: getattr(self, name)
            for name in ("lost", "double_advanced", "mixed", "hung", "unclear")
            if getattr(self, name)
        }
        found.update({k: v for k, v in self.extra.items() if k in FAILURE_KEYS and v})
        return found

    def merge(self, other: Counts) -> None:
        for name in ("runs", "committed", "lost", "double_advanced", "mixed", "hung", "unclear"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds += other.seconds
        self.extra.update(other.extra)
        for text in other.notes:
            self.note(text)
        self.outcomes.update(other.outcomes)


class TrialAborted(Exception):
    """A call hung and would not even be cancelled: the trial cannot go on."""


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def is_clear(exc: BaseException) -> bool:
    """burr_async's own error (an action's own exception never occurs in the trials); in a
    task group's ExceptionGroup, every error inside it is."""
    return all(
        isinstance(leaf, BurrAsyncError | asyncio.CancelledError) for leaf in leaves(exc)
    ) and not isinstance(exc, asyncio.CancelledError)


async def bounded(
    work: Coroutine[Any, Any, Any], seconds: float, counts: Counts, what: str
) -> asyncio.Task[Any]:
    """Run ``work`` in its own task and wait for it at most ``seconds``; the finished task is
    returned (read its result or exception). A call still running then counts as hung and is
    cancelled; one that will not even end after that aborts the trial. The wait itself cannot
    be held up by the shielding that the write path uses (it cancels nothing)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        counts.hung += 1
        counts.note(f"hung: {what} still running after {seconds} s")
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            raise TrialAborted(f"{what} hung and did not end when cancelled")
    if not task.cancelled():
        task.exception()  # retrieved: no "never retrieved" warning
    return task


def task_error(task: asyncio.Task[Any]) -> BaseException | None:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()


# -- the chat ---------------------------------------------------------------------------------
def digest(previous: str, text: str) -> str:
    return hashlib.sha256(f"{previous}|{text}".encode()).hexdigest()[:16]


def next_chat_state(state: Mapping[str, Any], role: str, who: str) -> dict[str, Any]:
    """The state after one turn: a hash chain over every message ever said, so that a stored
    step can be checked against its predecessor alone."""
    turn = state["turn"] + 1
    text = f"{role} {turn} from {who} {FILLER}"
    messages = [*state["messages"], {"role": role, "text": text}][-KEEP:]
    return {"turn": turn, "messages": messages, "digest": digest(state["digest"], text)}


INITIAL: dict[str, Any] = {"turn": 0, "messages": [], "digest": ""}


def _chat_actions(on_save: Any = None, pause: Any = None) -> tuple[Any, Any]:
    async def turn(state: State, role: str, who: str) -> State:
        if pause is not None:
            await pause()
        new = State(next_chat_state(state, role, who))
        if on_save is not None:
            on_save(new["turn"] - 1)  # about to save this sequence_id
        return new

    @action(reads=["turn", "messages", "digest"], writes=["turn", "messages", "digest"])
    async def user(state: State, who: str = "-") -> State:
        return await turn(state, "user", who)

    @action(reads=["turn", "messages", "digest"], writes=["turn", "messages", "digest"])
    async def assistant(state: State, who: str = "-") -> State:
        return await turn(state, "assistant", who)

    return user, assistant


async def build_chat(
    persister: AsyncBaseStatePersister,
    app_id: str,
    *,
    partition_key: str | None = PARTITION,
    on_save: Any = None,
    pause: Any = None,
    loader: AsyncBaseStatePersister | None = None,
) -> Application:
    """user -> assistant -> user ...; resumed from the stored steps of ``app_id``."""
    user, assistant = _chat_actions(on_save, pause)
    return await (
        ApplicationBuilder()
        .with_actions(user=user, assistant=assistant)
        .with_transitions(("user", "assistant"), ("assistant", "user"))
        .initialize_from(
            loader or persister,
            resume_at_next_action=True,
            default_state=dict(INITIAL),
            default_entrypoint="user",
        )
        .with_state_persister(persister)
        .with_identifiers(app_id=app_id, partition_key=partition_key)
        .abuild()
    )


def history_problems(history: Sequence[Any]) -> list[str]:
    """What is wrong with a chat's stored history: it must be steps 0..n-1, alternating
    user/assistant, each state the one its predecessor leads to (whoever wrote it)."""
    problems: list[str] = []
    seqs = [h.sequence_id for h in history]
    if seqs != list(range(len(seqs))):
        problems.append(f"sequence ids {seqs[:20]} are not 0..{len(seqs) - 1}")
        return problems
    previous: Mapping[str, Any] = INITIAL
    for step in history:
        state = step.state
        role = "user" if step.sequence_id % 2 == 0 else "assistant"
        if step.status != "completed" or step.position != role:
            problems.append(f"step {step.sequence_id}: {step.position}/{step.status}")
            break
        try:
            last = state["messages"][-1]
            who = last["text"].split(" from ", 1)[1].split(" ", 1)[0]
            expected = next_chat_state(previous, role, who)
        except (KeyError, IndexError, TypeError) as exc:
            problems.append(f"step {step.sequence_id}: malformed state ({exc!r})")
            break
        if state.get_all() != expected:
            problems.append(f"step {step.sequence_id} does not follow from step before it")
            break
        previous = state
    return problems


def writer_of(step: Any) -> str:
    """Who wrote a chat step (the ``who`` input of its action)."""
    text: str = step.state["messages"][-1]["text"]
    return text.split(" from ", 1)[1].split(" ", 1)[0]


async def check_agreement(
    app: Application,
    verifier: SQLAlchemyPersister,
    counts: Counts,
    *,
    pending_allowed: bool = False,
    what: str = "",
) -> bool:
    """Whether the app and the database agree on where the app is: the app's step is the
    latest stored one, with the same state. ``pending_allowed``: the last call raised
    CommitUnknownError, so the database may hold the one step the app will settle next."""
    stored = await verifier.load(app.partition_key, app.uid)
    db_seq = None if stored is None else stored.sequence_id
    if db_seq == app.sequence_id:
        if stored is not None and stored.state != app.state:
            counts.mixed += 1
            counts.note(f"{what}: app and database at step {db_seq} with different states")
            return False
        return True
    app_seq = -1 if app.sequence_id is None else app.sequence_id
    if db_seq is None or db_seq < app_seq:
        counts.lost += 1
        counts.note(f"{what}: app at step {app.sequence_id}, database at {db_seq}")
        return False
    if pending_allowed and db_seq == app_seq + 1:
        counts.extra["pending_after_commit_unknown"] += 1
        return True
    counts.extra["behind"] += 1
    counts.note(f"{what}: database at step {db_seq}, app at {app.sequence_id}")
    return False


def new_id(prefix: str = "app") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURR_REL_")}
    env["PYTHONPATH"] = str(REPO)
    return env


CHILD = [sys.executable, "-m", "tests.reliability._child"]


# -- databases for the runner (the test suite uses its own fixtures) -------------------------
@contextlib.asynccontextmanager
async def provisioned(backend: str, tmp: Path) -> AsyncIterator[Database]:
    """A migrated SQLite file under ``tmp``, or a new Postgres schema dropped afterwards."""
    if backend == "sqlite":
        db = Database("sqlite", f"sqlite+aiosqlite:///{tmp / 'reliability.db'}", None)
        engine = db.engine()
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()
        yield db
        return
    schema = f"burr_rel_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL)
    try:
        await migrate.upgrade(engine, schema=schema)
        yield Database("postgres", POSTGRES_URL, schema)
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
        await engine.dispose()


async def private_sqlite(tmp: Path) -> Database:
    """A migrated SQLite file of its own (for a trial that locks the whole file)."""
    path = tmp / f"private-{uuid.uuid4().hex[:8]}.db"
    db = Database("sqlite", f"sqlite+aiosqlite:///{path}", None)
    engine = db.engine()
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    return db


def sqlite_path(db: Database) -> Path:
    return Path(sa.make_url(db.url).database or "")
