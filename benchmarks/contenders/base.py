"""What every contender implements, and the workloads written once on top of it."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from benchmarks import chat
from benchmarks.targets import Backend, Target
from benchmarks.workloads import LONG_LOADS, LONG_WINDOW, Sizes

__all__ = [
    "ChatApp",
    "Contender",
    "FanOut",
    "FanOutApp",
    "LongChat",
    "Options",
    "Stored",
    "Timed",
    "WorkloadError",
    "sqlite_pragmas",
]

LangGraphDurability = Literal["sync", "async", "exit"]


@dataclass(frozen=True, slots=True)
class Options:
    """Settings the CLI passes to every contender."""

    langgraph_durability: LangGraphDurability = "sync"


class WorkloadError(RuntimeError):
    """A contender produced a wrong result (the figure would be meaningless)."""


@dataclass(frozen=True, slots=True)
class Stored:
    """What a contender holds for one app: payload ``bytes`` as the database stores them
    (Postgres: ``pg_column_size``, after TOAST compression), over ``rows`` rows (of every table
    counted), and ``logical`` bytes: the same payload uncompressed (Postgres:
    ``octet_length`` of a JSONB column as text, of a BYTEA column as is; SQLite stores it
    uncompressed: ``logical == bytes``)."""

    bytes: int
    rows: int
    logical: int


@dataclass(frozen=True, slots=True)
class LongChat:
    """W4's figures for one run: the stored payload after the run, the seconds of each step
    (each turn's wall clock halved, so two equal entries per turn) and of each latest-state
    load after the run."""

    stored: Stored
    step_seconds: tuple[float, ...]
    load_seconds: tuple[float, ...]

    @property
    def seconds(self) -> float:
        """The whole run's timed steps."""
        return sum(self.step_seconds)

    def figures(self) -> dict[str, float]:
        """The reported figures: ``bytes``, ``logical_bytes``, ``rows``, ``step_first_us`` and
        ``step_last_us`` (median µs/step of the first and of the last :data:`LONG_WINDOW`
        steps) and ``load_us`` (median µs per load)."""
        steps = self.step_seconds
        window = min(LONG_WINDOW, len(steps) // 2)
        return {
            "bytes": float(self.stored.bytes),
            "logical_bytes": float(self.stored.logical),
            "rows": float(self.stored.rows),
            "step_first_us": 1e6 * statistics.median(steps[:window]),
            "step_last_us": 1e6 * statistics.median(steps[-window:]),
            "load_us": 1e6 * statistics.median(self.load_seconds),
        }


@dataclass(frozen=True, slots=True)
class FanOut:
    """W5's figures for one run: the parent step's wall time, its shape, and how many commits
    stored its children's steps (None when the contender cannot tell)."""

    seconds: float
    children: int
    child_steps: int
    commits: int | None

    def figures(self) -> dict[str, float]:
        """The reported figures: ``parent_ms`` (the parent step's wall time),
        ``child_steps_per_s``, and, when counted, ``commits`` (of the child steps) and
        ``steps_per_commit``."""
        steps = self.children * self.child_steps
        figures = {"parent_ms": 1e3 * self.seconds, "child_steps_per_s": steps / self.seconds}
        if self.commits is not None:
            figures |= {"commits": float(self.commits), "steps_per_commit": steps / self.commits}
        return figures


class FanOutApp(Protocol):
    """A W5 parent application, built and ready to run its fan-out step."""

    async def run(self) -> None:
        """Run the parent's one step: fan out to every child, wait for all, reduce, store."""
        ...


class ChatApp(Protocol):
    """One running chat application of a contender."""

    async def turn(self, n: int) -> None:
        """Run turn ``n``: ``human_converse`` with ``chat.question(n)``, then ``ai_converse``;
        with a persister, each of the two steps is committed before the next one starts."""
        ...


class HaltingChat:
    """A chat driven the way Burr and burr_async share: one ``arun`` per turn, halting after
    ``ai_converse``."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def turn(self, n: int) -> None:
        await self.app.arun(halt_after=["ai_converse"], inputs={"question": chat.question(n)})


class Contender(ABC):
    """A way to run (and persist) the chat applications of :mod:`benchmarks.chat`.

    Subclasses set up their connections in :meth:`open`, release them in :meth:`aclose`, and
    provide :meth:`new_app` and :meth:`load_app`; :meth:`run` times the workloads with them.
    """

    key: ClassVar[str]
    backends: ClassVar[frozenset[Backend]] = frozenset({"memory", "sqlite", "postgres"})
    long_chat: ClassVar[bool] = False
    """Whether it runs W4 (:meth:`new_long_app`, :meth:`load_latest`, :meth:`stored`)."""
    fan_out: ClassVar[bool] = False
    """Whether it runs W5 (:meth:`new_fan_out`, :meth:`load_fan_out`, and, when it can count
    them, :meth:`count_commits`)."""

    def __init__(self, target: Target, options: Options) -> None:
        self.target = target
        self.options = options

    @property
    def backend(self) -> Backend:
        return self.target.backend

    async def open(self) -> None:  # noqa: B027 (optional hook: most contenders connect)
        """Connect and provision tables (untimed)."""

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release what :meth:`open` acquired."""

    async def durability(self) -> str:
        """How this contender commits, and its SQLite journal/synchronous or Postgres
        ``synchronous_commit`` as read back from its own connection."""
        return "no persistence"

    @abstractmethod
    async def new_app(self, app_id: str, *, persist: bool, concurrent: bool) -> ChatApp:
        """A fresh application starting from ``chat.initial_state()``; ``persist`` says whether
        its steps are written; ``concurrent`` that it will run alongside many others (W2)."""

    async def load_app(self, app_id: str) -> str:
        """Resume a stored application the way a user would (W3) and return the ``question``
        of its loaded state."""
        raise NotImplementedError

    async def new_long_app(self, app_id: str) -> ChatApp:
        """A fresh, persisted long chat (W4): ``chat.long_initial_state()``, every message
        kept (``chat.push(..., window=None)``)."""
        raise NotImplementedError

    async def load_latest(self, app_id: str) -> Mapping[str, Any]:
        """The app's latest full state, loaded the way the framework offers it ("give me the
        latest state"), as a mapping of its values (W4, timed)."""
        raise NotImplementedError

    async def stored(self, app_id: str) -> Stored:
        """The state payload stored for the app, as the database holds it (W4, untimed)."""
        raise NotImplementedError

    async def new_fan_out(self, app_id: str, sizes: Sizes) -> FanOutApp:
        """A fresh, persisted W5 parent (``chat.fanout_parent_state(sizes.w5_children)``) whose
        entrypoint is the fan-out: one child per question, each a sub-application of
        ``sizes.w5_child_steps`` chained actions (``chat.fanout_step``) on the parent's
        persister, all children at once; its reduce stores every child's ``response`` in
        ``answers``, in order."""
        raise NotImplementedError

    async def load_fan_out(
        self, app_id: str, sizes: Sizes
    ) -> tuple[Sequence[str], Mapping[str, Any]]:
        """After the W5 run (untimed): the parent's stored ``answers``, and the stored latest
        state of its last child, both loaded from the database."""
        raise NotImplementedError

    @contextmanager
    def count_commits(self) -> Iterator[Callable[[], list[int] | None]]:
        """``with count_commits() as notes:`` around the fan-out step; ``notes()`` afterwards
        gives one entry per row written in the block, the number of rows of the commit that
        stored it (so ``sum(1 / n)`` counts commits), or None when the contender cannot tell."""
        yield lambda: None

    def supports(self, workload: str) -> bool:
        """Whether this contender runs ``workload`` on its backend."""
        if self.backend == "memory":
            return workload == "W0"
        if workload == "W4":
            return self.long_chat
        if workload == "W5":
            return self.fan_out
        return workload != "W0"

    # -- the workloads --------------------------------------------------------------------------
    async def run(
        self, workload: str, sizes: Sizes, tag: str, *, timed: Timed | None = None
    ) -> float:
        """Run ``workload`` once; the elapsed seconds of its timed part. ``tag`` makes the app
        ids of this run unique within the contender's table; ``timed`` (a profiler) is started
        and stopped around exactly the timed part."""
        timed = timed or _NoProfiler()
        if workload == "W0":
            return await self._sequential(f"{tag}-w0", sizes.w0_steps, timed, persist=False)
        if workload == "W1":
            return await self._sequential(f"{tag}-w1", sizes.w1_steps, timed, persist=True)
        if workload == "W2":
            ids = [f"{tag}-w2-{i}" for i in range(sizes.w2_apps)]
            return await self._concurrent(ids, sizes.w2_steps, timed)
        if workload == "W3":
            ids = [f"{tag}-w3-{i}" for i in range(sizes.w3_apps)]
            return await self._resume(ids, sizes.w3_seed_steps, timed)
        if workload == "W4":
            return (await self.run_long(sizes, tag, timed=timed)).seconds
        if workload == "W5":
            return (await self.run_fanout(sizes, tag, timed=timed)).seconds
        raise ValueError(f"unknown workload {workload!r}")

    async def run_long(self, sizes: Sizes, tag: str, *, timed: Timed | None = None) -> LongChat:
        """W4: one long chat of ``sizes.w4_steps`` steps, each turn timed on its own; then the
        stored payload, and :data:`LONG_LOADS` timed loads of the latest state, each checked
        to hold the whole history. ``timed`` runs around the steps."""
        timed = timed or _NoProfiler()
        app_id = f"{tag}-w4"
        steps = sizes.w4_steps
        app = await self.new_long_app(app_id)
        clock = time.perf_counter
        per_step: list[float] = []
        gc.collect()
        with _timing(timed):
            for n in range(steps // 2):
                began = clock()
                await app.turn(n)
                half = (clock() - began) / 2
                per_step += (half, half)
        stored = await self.stored(app_id)
        gc.collect()
        loads: list[float] = []
        for _ in range(LONG_LOADS):
            began = clock()
            state = await self.load_latest(app_id)
            loads.append(clock() - began)
            self._check_long(state, steps)
        return LongChat(stored, tuple(per_step), tuple(loads))

    async def run_fanout(self, sizes: Sizes, tag: str, *, timed: Timed | None = None) -> FanOut:
        """W5: build a fresh parent (untimed), time its one fan-out step, count the commits of
        its rows when the contender can, then check (untimed) that the parent stored every
        child's answer and that the last child's steps are stored. ``timed`` runs around the
        step."""
        timed = timed or _NoProfiler()
        app_id = f"{tag}-w5"
        app = await self.new_fan_out(app_id, sizes)
        gc.collect()
        with self.count_commits() as notes, _timing(timed) as elapsed:
            await app.run()
        answers, last_child = await self.load_fan_out(app_id, sizes)
        self._check_fan_out(answers, last_child, sizes)
        return FanOut(
            elapsed(),
            sizes.w5_children,
            sizes.w5_child_steps,
            self._child_commits(notes(), sizes),
        )

    def _child_commits(self, notes: list[int] | None, sizes: Sizes) -> int | None:
        """The commits of the child rows, from one note per row written during the step (the
        size of the commit that stored it): the parent's own row, written once every child
        has finished, is the last note and commits alone."""
        if notes is None:
            return None
        rows = sizes.w5_children * sizes.w5_child_steps
        if len(notes) != rows + 1 or notes[-1] != 1:
            raise WorkloadError(
                f"{self.key} on {self.backend}: expected {rows} child rows and the parent's, "
                f"the parent's committed alone, to be noted; got {len(notes)} notes ending "
                f"{notes[-3:]}"
            )
        return round(sum(1 / n for n in notes[:-1]))

    def _check_fan_out(
        self, answers: Sequence[str], last_child: Mapping[str, Any], sizes: Sizes
    ) -> None:
        children, steps = sizes.w5_children, sizes.w5_child_steps
        expected = [chat.fanout_answer(chat.question(i), steps) for i in range(children)]
        history = last_child.get("chat_history")
        if (
            list(answers) != expected
            or not isinstance(history, Sequence)
            or len(history) != steps + 1
            or last_child.get("response") != expected[-1]
        ):
            raise WorkloadError(
                f"{self.key} on {self.backend}: the fan-out's stored result is wrong (expected "
                f"{children} answers ending {expected[-1]!r} and a last child of {steps + 1} "
                f"messages; got {len(answers)} answers ending {list(answers)[-1:]!r}, a last "
                f"child with response {last_child.get('response')!r})"
            )

    def _check_long(self, state: Mapping[str, Any], steps: int) -> None:
        history = state.get("chat_history")
        last_question = chat.question(steps // 2 - 1)
        expected_last = {"role": "assistant", "content": chat.answer(last_question)}
        expected_first = {"role": "user", "content": chat.question(0)}
        if (
            not isinstance(history, Sequence)
            or len(history) != steps
            or dict(history[0]) != expected_first
            or dict(history[-1]) != expected_last
            or state.get("question") != last_question
        ):
            got = len(history) if isinstance(history, Sequence) else type(history).__name__
            raise WorkloadError(
                f"{self.key} on {self.backend}: the latest state of the long chat does not "
                f"hold the whole history (expected {steps} messages, from "
                f"{expected_first['content']!r} to {expected_last['content']!r}; got {got})"
            )

    async def _sequential(self, app_id: str, steps: int, timed: Timed, *, persist: bool) -> float:
        app = await self.new_app(app_id, persist=persist, concurrent=False)
        gc.collect()
        with _timing(timed) as elapsed:
            for n in range(steps // 2):
                await app.turn(n)
        if persist:
            await self._check_stored([app_id], steps)
        return elapsed()

    async def _concurrent(self, app_ids: Sequence[str], steps: int, timed: Timed) -> float:
        apps = [await self.new_app(i, persist=True, concurrent=True) for i in app_ids]
        gc.collect()
        with _timing(timed) as elapsed:
            await asyncio.gather(*(_run_turns(app, steps // 2) for app in apps))
        await self._check_stored([app_ids[0], app_ids[-1]], steps)
        return elapsed()

    async def _resume(self, app_ids: Sequence[str], seed_steps: int, timed: Timed) -> float:
        apps = [await self.new_app(i, persist=True, concurrent=True) for i in app_ids]
        await asyncio.gather(*(_run_turns(app, seed_steps // 2) for app in apps))
        del apps
        gc.collect()
        loaded: list[str] = []
        with _timing(timed) as took:
            for app_id in app_ids:
                loaded.append(await self.load_app(app_id))
        self._check(app_ids, loaded, seed_steps)
        return took()

    async def _check_stored(self, app_ids: Sequence[str], steps: int) -> None:
        """Untimed: the apps' last steps were stored (loading them gives their last state)."""
        self._check(app_ids, [await self.load_app(i) for i in app_ids], steps)

    def _check(self, app_ids: Sequence[str], loaded: Sequence[str], steps: int) -> None:
        expected = chat.question(steps // 2 - 1)
        wrong = [(i, q) for i, q in zip(app_ids, loaded, strict=True) if q != expected]
        if wrong:
            raise WorkloadError(
                f"{self.key} on {self.backend}: stored apps hold the wrong state "
                f"(expected question {expected!r} after {steps} steps): {wrong[:3]}"
            )


class Timed(Protocol):
    """Something started and stopped around a timed section (pyinstrument's Profiler is one)."""

    def start(self) -> None: ...

    def stop(self) -> object: ...


class _NoProfiler:
    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


@contextmanager
def _timing(timed: Timed) -> Iterator[Callable[[], float]]:
    """``with _timing(t) as elapsed:`` times the block (``elapsed()`` afterwards, in seconds),
    with ``t`` started and stopped around it."""
    times: list[float] = []
    timed.start()
    times.append(time.perf_counter())
    try:
        yield lambda: times[1] - times[0]
    finally:
        times.append(time.perf_counter())
        timed.stop()


async def _run_turns(app: ChatApp, turns: int) -> None:
    for n in range(turns):
        await app.turn(n)


_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def sqlite_pragmas(journal_mode: object, synchronous: object) -> str:
    """``journal_mode=wal, synchronous=FULL`` from the raw PRAGMA answers."""
    sync = _SYNCHRONOUS.get(int(str(synchronous)), str(synchronous))
    return f"journal_mode={str(journal_mode).lower()}, synchronous={sync}"
