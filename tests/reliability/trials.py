"""The trials. Each is ``async def trial(db, size, ...) -> Counts``: ``size`` is how many runs
it makes (kills, races, faults, cancellations, inputs), every call and process is bounded in
time, and whatever a run finds wrong is counted (see ``_support.Counts``), never raised, so that
one trial reports all of it. A trial raises only when it cannot go on (TrialAborted).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa

import burr_async.persistence._writer as _writer
from burr_async import (
    Application,
    ApplicationBuilder,
    BurrAsyncError,
    CommitUnknownError,
    ConcurrentStepError,
    InvalidIdentifierError,
    State,
    action,
)
from burr_async.persistence import SQLAlchemyPersister, _postgres, create_engine
from tests.databases import Database
from tests.reliability._proxy import PgProxy
from tests.reliability._support import (
    CHILD,
    PARTITION,
    REPO,
    Counts,
    TrialAborted,
    bounded,
    build_chat,
    check_agreement,
    child_env,
    describe,
    history_problems,
    is_clear,
    new_id,
    private_sqlite,
    sqlite_path,
    task_error,
    writer_of,
)

STEP_BOUND = 20.0  # no single step may take longer, whatever the fault
ERROR_BOUND = 10.0  # an error caused by a fault must arrive within this


def _rng(seed: int | None) -> random.Random:
    return random.Random(seed if seed is not None else int.from_bytes(os.urandom(4)))


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with anyio.move_on_after(10):
            await proc.wait()


# == 1. crash ==================================================================================
CRASH_STEPS = 12  # steps a child takes when it is not killed first


async def crash(
    db: Database,
    size: int,
    *,
    seed: int | None = None,
    fault: str = "",
    strategies: tuple[str, ...] = ("saving", "random", "none"),
) -> Counts:
    """``size`` child processes, each resuming one of a few chats and stepping it, SIGKILLed at
    a random moment: right after it says it is about to save step N (plus 0-3 or 0-15 ms), at
    a random time from its start (during start-up, the resume or any step), or not at all. The
    child's steps alternate user and assistant turns of a chat, persisted each. After each,
    the stored history must be a contiguous prefix whose every state follows from the one
    before it, hold every step the child reported committed (and at most the one it was
    saving), and the next child must resume at the latest stored step."""
    counts = Counts("crash", db.backend)
    rng = _rng(seed)
    apps = [new_id("chat") for _ in range(max(1, min(4, size // 12 + 1)))]
    env = child_env()
    if fault:
        env["BURR_REL_FAULT"] = fault
    started = time.monotonic()
    async with db.persister() as verifier:
        for run in range(size):
            app_id = apps[run % len(apps)]
            before = await verifier.history(PARTITION, app_id)
            latest = before[-1].sequence_id if before else -1
            weights = {"saving": 6, "random": 3, "none": 1}
            strategy = rng.choices(strategies, [weights[s] for s in strategies])[0]
            counts.extra[f"kill_{strategy}"] += 1
            lines = await _crash_child(db, app_id, rng, strategy, env, counts)
            counts.runs += 1
            _judge_crash(lines, before, latest, await verifier.history(PARTITION, app_id), counts)
        for app_id in apps:  # this process resumes each chat and carries on
            try:
                app = await build_chat(verifier, app_id)
                stored = await verifier.load(PARTITION, app_id)
                if (stored.sequence_id if stored else None) != app.sequence_id:
                    counts.extra["resume_mismatch"] += 1
                task = await bounded(app.astep(inputs={"who": "final"}), STEP_BOUND, counts, "step")
                if task_error(task) is not None:
                    counts.extra["not_recovered"] += 1
                    counts.note(f"final step: {describe(task_error(task))}")  # type: ignore[arg-type]
                else:
                    counts.committed += 1
                    await check_agreement(app, verifier, counts, what="after the crashes")
            except BurrAsyncError as exc:
                counts.extra["not_recovered"] += 1
                counts.note(f"resuming {app_id}: {describe(exc)}")
            if problems := history_problems(await verifier.history(PARTITION, app_id)):
                counts.mixed += 1
                counts.note(f"{app_id}: {problems[0]}")
    counts.seconds = time.monotonic() - started
    return counts


async def _crash_child(
    db: Database,
    app_id: str,
    rng: random.Random,
    strategy: str,
    env: dict[str, str],
    counts: Counts,
) -> list[str]:
    seed = rng.randrange(1_000_000)
    proc = await asyncio.create_subprocess_exec(
        *CHILD,
        "crash",
        db.url,
        db.schema or "",
        app_id,
        str(CRASH_STEPS),
        str(seed),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    target = rng.randint(1, CRASH_STEPS - 2)
    seen = 0
    timer = None
    if strategy == "random":
        timer = asyncio.get_running_loop().call_later(
            rng.uniform(0.2, 1.2), lambda: proc.returncode is None and proc.kill()
        )
    try:
        with anyio.fail_after(40):
            while raw := await proc.stdout.readline():
                line = raw.decode().strip()
                lines.append(line)
                if strategy == "saving" and line.startswith("saving "):
                    seen += 1
                    if seen == target:
                        await asyncio.sleep(rng.uniform(0, rng.choice([0.003, 0.015])))
                        if proc.returncode is None:
                            proc.kill()
            await proc.wait()
            stderr = (await proc.stderr.read()).decode()
    except TimeoutError:
        counts.hung += 1
        counts.note(f"crash child for {app_id} ran past 40 s: {lines[-3:]}")
        stderr = ""
    finally:
        if timer is not None:
            timer.cancel()
        await _kill(proc)
    if proc.returncode not in (0, -9):
        if not any(line.startswith("error clear") for line in lines):
            counts.unclear += 1
        counts.note(f"crash child exited {proc.returncode}: {lines[-2:]} {stderr[-300:]}")
    return lines


def _judge_crash(
    lines: list[str], before: list[Any], latest: int, after: list[Any], counts: Counts
) -> None:
    for line in lines:
        if line.startswith("error "):
            counts.extra[line.split(":")[0].replace(" ", "_")] += 1
    resumed = [int(line.split()[1]) for line in lines if line.startswith("resumed ")]
    committed = [int(line.split()[1]) for line in lines if line.startswith("committed ")]
    saving = [int(line.split()[1]) for line in lines if line.startswith("saving ")]
    if resumed and resumed[0] != latest:
        counts.extra["resume_mismatch"] += 1
        counts.note(f"child resumed at {resumed[0]}, database was at {latest}")
    if committed and committed != list(range(latest + 1, latest + 1 + len(committed))):
        counts.mixed += 1
        counts.note(f"child committed {committed} after resuming at {latest}")
    if problems := history_problems(after):
        counts.mixed += 1
        counts.note(problems[0])
    if [h.state for h in after[: len(before)]] != [h.state for h in before]:
        counts.mixed += 1
        counts.note("an earlier step changed")
    now = after[-1].sequence_id if after else -1
    claimed = max(committed, default=latest)
    if claimed > now:
        counts.lost += claimed - now
        counts.note(f"child reported step {claimed} committed, database at {now}")
    if now > claimed + 1:
        counts.mixed += 1
        counts.note(f"database at {now}, the child only reported up to {claimed} (+1 in flight)")
    counts.committed += max(0, now - latest)
    if saving and saving[-1] > claimed:  # killed between "saving N" and "committed N"
        counts.extra["killed_while_saving"] += 1
        counts.extra["in_flight_step_landed" if now == saving[-1] else "in_flight_step_gone"] += 1


# == 2. races ==================================================================================
async def race(
    db: Database, size: int, *, workers: int = 2, seed: int | None = None, fault: str = ""
) -> Counts:
    """``workers`` processes step the same three chats, ``size`` rounds: in each, every process
    loads the round's chat, waits at a socket barrier, then steps it. Exactly one may commit
    each (app, sequence_id); every other gets ConcurrentStepError and stays where it was."""
    counts = Counts(f"race{workers}", db.backend)
    apps = [new_id("race") for _ in range(3)]
    env = child_env()
    if fault:
        env["BURR_REL_FAULT"] = fault
    started = time.monotonic()
    links: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    connected = asyncio.Event()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        links.append((reader, writer))
        if len(links) == workers:
            connected.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    procs: list[asyncio.subprocess.Process] = []
    winners: dict[tuple[str, int], str] = {}
    try:
        for w in range(workers):
            procs.append(
                await asyncio.create_subprocess_exec(
                    *CHILD,
                    "race",
                    db.url,
                    db.schema or "",
                    str(port),
                    f"w{w}",
                    ",".join(apps),
                    str(size),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                    cwd=REPO,
                    env=env,
                )
            )
        with anyio.fail_after(60):
            await connected.wait()
        for r in range(size):
            with anyio.fail_after(60 if r == 0 else 30):
                readies = [(await reader.readline()).decode().split() for reader, _ in links]
                if any(line[:2] != ["ready", str(r)] for line in readies):
                    raise RuntimeError(f"round {r}: {readies}")
                for _, writer in links:  # release them all at once
                    writer.write(f"go {r}\n".encode())
                await asyncio.gather(*(writer.drain() for _, writer in links))
                dones = [(await reader.readline()).decode().split() for reader, _ in links]
            _judge_race(r, apps[r % len(apps)], readies, dones, winners, counts)
    except TimeoutError:
        counts.hung += 1
        counts.note(f"a race worker stopped answering after {counts.runs} races")
    except (RuntimeError, ValueError) as exc:  # a worker's line was cut short: it died
        counts.extra["worker_died"] += 1
        counts.note(f"after {counts.runs} races: {exc!r}")
    finally:
        for _, writer in links:
            writer.close()
        server.close()
        for proc in procs:
            with anyio.move_on_after(15):
                await proc.wait()
            await _kill(proc)
            if proc.returncode != 0:
                assert proc.stderr is not None
                counts.note(
                    f"race worker exited {proc.returncode}: {(await proc.stderr.read())[-300:]!r}"
                )
    async with db.persister() as verifier:
        for app_id in apps:
            history = await verifier.history(PARTITION, app_id)
            counts.committed += len(history)
            if problems := history_problems(history):
                counts.mixed += 1
                counts.note(f"{app_id}: {problems[0]}")
            won = {seq: who for (a, seq), who in winners.items() if a == app_id}
            stored = {h.sequence_id: writer_of(h) for h in history}
            for seq, who in won.items():
                if stored.get(seq) != who:
                    counts.lost += 1
                    counts.note(
                        f"{who} won step {seq} of {app_id}, database holds {stored.get(seq)}"
                    )
            if set(stored) - set(won):
                counts.mixed += 1
                counts.note(f"{app_id}: steps {sorted(set(stored) - set(won))} that nobody won")
    counts.seconds = time.monotonic() - started
    return counts


def _judge_race(
    r: int,
    app_id: str,
    readies: list[list[str]],
    dones: list[list[str]],
    winners: dict[tuple[str, int], str],
    counts: Counts,
) -> None:
    counts.runs += 1
    starts = {int(line[2]) for line in readies}
    if len(starts) != 1:
        counts.extra["unequal_start"] += 1  # a load saw a step the others did not
    won = []
    for line in dones:
        if len(line) != 6 or line[:2] != ["done", str(r)]:
            raise RuntimeError(f"round {r}: a worker said {line!r}")
        _, _, outcome, before, after, w = line
        b, a = int(before), int(after)
        if outcome == "won":
            won.append(w)
            if a != b + 1:
                counts.mixed += 1
                counts.note(f"round {r}: {w} won but moved from {b} to {a}")
            else:
                winners.setdefault((app_id, a), w)
        elif outcome == "conflict":
            counts.extra["conflicts"] += 1
            if a != b:
                counts.extra["loser_advanced"] += 1
        elif outcome.startswith("unclear:"):
            counts.unclear += 1
            counts.note(f"round {r}: {w} {outcome}")
        else:
            counts.extra[outcome] += 1
            counts.note(f"round {r}: {w} {outcome}")
    if len(won) > 1:
        counts.double_advanced += 1
        counts.note(f"round {r} on {app_id}: {won} all advanced")
    if not won and not any(line[2].startswith("error:") for line in dones):
        counts.extra["no_winner"] += 1


# == 3. lost acknowledgements ===================================================================
LOST_ACK_MODES = (
    "alone",
    "cancel",
    "batch",
    "down_short",
    "request_lost",
    "down_long",
    "cancel_down",
    "batch_down",
)
# How long every connection stays down, as a share of the read-back's retry window (the sum of
# the writer's SETTLE_DELAYS, about 1.85 s): a short outage ends within it, a long one outlasts it.
OUTAGES = {"down_short": 0.54, "down_long": 1.35, "cancel_down": 1.35, "batch_down": 1.35}


def outage_seconds(mode: str) -> float:
    return OUTAGES.get(mode, 0.0) * sum(_writer.SETTLE_DELAYS)


async def lost_ack(db: Database, size: int, *, seed: int | None = None) -> Counts:
    """``size`` writes whose answer is lost, cycling through the modes: the answer to a
    committed INSERT lost, alone; the same while the calling task is cancelled; the answer to
    a multi-row batch lost; every connection down for ~1 s (the read-back gets through late) or
    ~2.5 s (it cannot: CommitUnknownError), alone, cancelled meanwhile, or for a batch; the
    INSERT itself lost before the server saw it (the outages are those shares of the writer's
    read-back window, 1.85 s).
    Postgres: through a TCP proxy that drops the server's reply and cuts the connection.
    SQLite: the dialect's insert commits, then raises ConnectionResetError (and its read-back
    fails for the outage). After each, the same app objects step again: every step stored
    once, each app where the database is, no ConcurrentStepError."""
    counts = Counts("lost_ack", db.backend)
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        verifier = await stack.enter_async_context(db.persister())
        if db.backend == "postgres":
            url = sa.make_url(db.url)
            proxy = await stack.enter_async_context(
                PgProxy(url.host or "127.0.0.1", url.port or 5432)
            )
            proxied = url.set(host="127.0.0.1", port=proxy.port)
            persister = SQLAlchemyPersister.from_url(proxied, schema=db.schema)
            fault: _Fault = _ProxyFault(proxy)
        else:
            persister = db.persister()
            fault = _SQLiteFault(persister)
        stack.push_async_callback(persister.aclose)
        apps = [await build_chat(persister, new_id("ack"), loader=verifier) for _ in range(4)]
        for app in apps:  # warm: the schema is checked, the connections are open
            await app.astep(inputs={"who": "warm"})
        for run in range(size):
            mode = LOST_ACK_MODES[run % len(LOST_ACK_MODES)]
            await _lost_ack_run(
                mode, apps if mode.startswith("batch") else apps[:1], fault, verifier, counts
            )
            counts.runs += 1
        for app in apps:  # what is stored in the end, every step once
            history = await verifier.history(PARTITION, app.uid)
            counts.committed += len(history)
            if problems := history_problems(history):
                counts.mixed += 1
                counts.note(f"{app.uid}: {problems[0]}")
    counts.seconds = time.monotonic() - started
    return counts


class _Fault:
    async def arm(self, mode: str) -> None: ...
    async def wait_fired(self) -> bool:
        return True

    def fired(self) -> bool:
        return True

    async def recovered(self) -> None: ...
    def disarm(self) -> None: ...


class _ProxyFault(_Fault):
    def __init__(self, proxy: PgProxy) -> None:
        self.proxy = proxy
        self._before = 0

    async def arm(self, mode: str) -> None:
        self._before = self.proxy.swallowed + self.proxy.dropped
        self.proxy.arm(
            outage=outage_seconds(mode),
            drop_request=mode == "request_lost",
            skip=1 if mode.startswith("batch") else 0,  # the batch's leader is written alone first
        )

    async def wait_fired(self) -> bool:
        with anyio.move_on_after(10):
            await self.proxy.triggered.wait()
            return True
        return False

    def fired(self) -> bool:
        return self.proxy.swallowed + self.proxy.dropped > self._before

    async def recovered(self) -> None:
        await asyncio.sleep(max(0.0, self.proxy.refuse_until - time.monotonic()))

    def disarm(self) -> None:
        self.proxy.disarm()


class _SQLiteFault(_Fault):
    """The same faults on SQLite, one layer down: the dialect's insert commits and then
    raises as a broken connection would; during an outage the read-back raises too."""

    def __init__(self, persister: SQLAlchemyPersister) -> None:
        self.dialect = persister._writer.dialect
        self.one, self.many, self.stored = (
            self.dialect.insert_one,
            self.dialect.insert_many,
            self.dialect.is_stored,
        )
        self.triggered = asyncio.Event()
        self.down_until = 0.0
        self.count = 0
        self._before = 0

    async def arm(self, mode: str) -> None:
        self.triggered = asyncio.Event()
        self._before = self.count
        outage = outage_seconds(mode)
        armed = True
        skip = 1 if mode.startswith("batch") else 0  # the batch's leader is written alone first

        async def lose(write: Callable[..., Any], driver: Any, rows: Any) -> Any:
            nonlocal armed, skip
            if not armed:
                return await write(driver, rows)
            if skip:
                skip -= 1
                return await write(driver, rows)
            armed = False
            self.count += 1
            if mode != "request_lost":
                await write(driver, rows)
            if outage:
                self.down_until = time.monotonic() + outage
            self.triggered.set()
            await asyncio.sleep(0.01)  # the reply "on its way": a cancellation may land here
            raise ConnectionResetError("the connection was lost before the reply (injected)")

        async def one(driver: Any, row: Any) -> Any:
            return await lose(self.one, driver, row)

        async def many(driver: Any, rows: Any) -> Any:
            return await lose(self.many, driver, rows)

        async def stored(driver: Any, row: Any) -> Any:
            if time.monotonic() < self.down_until:
                raise ConnectionResetError("the database is unreachable (injected)")
            return await self.stored(driver, row)

        self.dialect.insert_one = one  # type: ignore[method-assign]
        self.dialect.insert_many = many  # type: ignore[method-assign]
        self.dialect.is_stored = stored  # type: ignore[method-assign]

    async def wait_fired(self) -> bool:
        with anyio.move_on_after(10):
            await self.triggered.wait()
            return True
        return False

    def fired(self) -> bool:
        return self.count > self._before

    async def recovered(self) -> None:
        await asyncio.sleep(max(0.0, self.down_until - time.monotonic()))

    def disarm(self) -> None:
        self.dialect.insert_one = self.one  # type: ignore[method-assign]
        self.dialect.insert_many = self.many  # type: ignore[method-assign]
        self.dialect.is_stored = self.stored  # type: ignore[method-assign]


async def _lost_ack_run(
    mode: str,
    apps: list[Application],
    fault: _Fault,
    verifier: SQLAlchemyPersister,
    counts: Counts,
) -> None:
    await fault.arm(mode)
    try:
        if mode.startswith("cancel"):
            inner = asyncio.ensure_future(apps[0].astep(inputs={"who": "ack"}))

            async def cancel_when_fired() -> None:
                await fault.wait_fired()
                inner.cancel()
                with contextlib.suppress(BaseException):
                    await inner

            await bounded(cancel_when_fired(), STEP_BOUND, counts, "cancelled step")
            tasks = [inner]
        elif mode.startswith("batch"):
            # the first is written alone, the others queue behind it: their answer is lost
            tasks = [asyncio.ensure_future(app.astep(inputs={"who": "ack"})) for app in apps]
            await bounded(asyncio.wait(tasks), STEP_BOUND, counts, "batch")
        else:
            tasks = [await bounded(apps[0].astep(inputs={"who": "ack"}), STEP_BOUND, counts, mode)]
    finally:
        fault.disarm()
    if not all(t.done() for t in tasks):
        return  # counted as hung; the app cannot be judged
    if not fault.fired():
        counts.extra["fault_missed"] += 1
        counts.note(f"{mode}: the fault never fired")
    for app, task in zip(apps, tasks, strict=True):
        error = task_error(task)
        kind = "ok" if error is None else type(error).__name__
        counts.extra[f"{mode}:{kind}"] += 1
        if error is not None and not isinstance(error, asyncio.CancelledError | BurrAsyncError):
            counts.unclear += 1
            counts.note(f"{mode}: {describe(error)}")
        if isinstance(error, ConcurrentStepError):
            counts.extra["concurrent_step_error"] += 1
        unknown = isinstance(error, CommitUnknownError) or (
            isinstance(error, asyncio.CancelledError) and mode in OUTAGES
        )
        await check_agreement(app, verifier, counts, pending_allowed=unknown, what=mode)
    await fault.recovered()
    for app in apps:  # the next step of the same object settles whatever was left open
        task = await bounded(app.astep(inputs={"who": "next"}), STEP_BOUND, counts, "next step")
        error = task_error(task)
        if error is not None:
            counts.extra["not_recovered"] += 1
            if isinstance(error, ConcurrentStepError):
                counts.extra["concurrent_step_error"] += 1
            counts.note(f"{mode}, the step after: {describe(error)}")
        await check_agreement(app, verifier, counts, what=f"{mode}, the step after")


SILENCE = 45.0  # how long the proxy keeps a silent connection open before cutting it
CALLER_TIMEOUT = 0.5  # the caller's own asyncio.timeout around the step
SILENT_GRACE = 2.0  # past the statement timeout, what a step may take to settle and return


async def silent(
    db: Database, size: int, *, seed: int | None = None, command_timeout: float | None = None
) -> Counts:
    """Postgres only. ``size`` steps whose INSERT reaches the server and commits, but whose
    connection then goes silent (a network partition: nothing arrives, nothing is closed, for
    45 s, then the proxy cuts it). The caller bounds each step with ``asyncio.timeout(0.5)``,
    which cannot end a write (it is shielded from cancellation); the statement timeout does:
    the persister's default (30 s), or asyncpg's ``command_timeout`` when the engine is created
    with ``connect_args={"command_timeout": ...}``. The step must be over (returned or raised)
    within that timeout plus 2 s, agree with the database, and the next step must succeed."""
    counts = Counts("silent" if command_timeout is None else "silent_timeout", db.backend)
    started = time.monotonic()
    if db.backend != "postgres":
        counts.note("Postgres only: an embedded database has no connection to go silent")
        return counts
    url = sa.make_url(db.url)
    options: dict[str, Any] = {}
    if command_timeout is not None:
        options["connect_args"] = {"command_timeout": command_timeout}
    limit = (command_timeout or _postgres.STATEMENT_TIMEOUT) + SILENT_GRACE
    async with (
        db.persister() as verifier,
        PgProxy(url.host or "127.0.0.1", url.port or 5432) as proxy,
        SQLAlchemyPersister.from_url(
            url.set(host="127.0.0.1", port=proxy.port), schema=db.schema, **options
        ) as persister,
    ):
        app = await build_chat(persister, new_id("silent"), loader=verifier)
        await app.astep(inputs={"who": "warm"})

        async def bounded_by_the_caller() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CALLER_TIMEOUT):
                    await app.astep(inputs={"who": "silent"})

        for _ in range(size):
            proxy.arm(silence=SILENCE)
            began = time.monotonic()
            task = asyncio.ensure_future(bounded_by_the_caller())
            done, _ = await asyncio.wait({task}, timeout=limit)
            if not done:  # cancelling it would change nothing: it is already cancelled
                counts.hung += 1
                counts.note(f"hung: silent step still running after {limit:g} s")
                done, _ = await asyncio.wait({task}, timeout=SILENCE + 10)  # until the cut
                if not done:
                    raise TrialAborted("a silent step outlived the proxy's cut")
            took = time.monotonic() - began
            counts.extra["seconds_until_the_step_returned (max)"] = max(
                counts.extra["seconds_until_the_step_returned (max)"], round(took, 1)
            )
            proxy.disarm()
            if proxy.swallowed == 0:
                counts.extra["fault_missed"] += 1
            error = task_error(task)
            counts.extra[f"silent_step:{'ok' if error is None else type(error).__name__}"] += 1
            if error is not None and not isinstance(error, BurrAsyncError):
                counts.unclear += 1
                counts.note(f"silent step: {describe(error)}")
            await check_agreement(
                app,
                verifier,
                counts,
                pending_allowed=isinstance(error, CommitUnknownError),
                what="silent step",
            )
            task = await bounded(app.astep(inputs={"who": "next"}), STEP_BOUND, counts, "next")
            if task_error(task) is not None:
                counts.extra["not_recovered"] += 1
                counts.note(f"the step after: {describe(task_error(task))}")  # type: ignore[arg-type]
            await check_agreement(app, verifier, counts, what="the step after")
            counts.runs += 1
        history = await verifier.history(PARTITION, app.uid)
        counts.committed = len(history)
        if problems := history_problems(history):
            counts.mixed += 1
            counts.note(problems[0])
    counts.seconds = time.monotonic() - started
    return counts


# == 4. outage =================================================================================
async def outage(db: Database, size: int, *, seed: int | None = None) -> Counts:
    """Postgres: ``size`` runs where the persister's connections are killed with
    pg_terminate_backend (found by application_name): from inside the action (after the load,
    before the write), at random moments during a burst of steps, or while idle. SQLite:
    ``size`` runs where another process holds ``BEGIN EXCLUSIVE`` on the file: for less than
    the 30 s busy timeout (the step waits, then succeeds; also under the caller's
    ``asyncio.timeout(0.1)``, which the write holds off), or against a persister whose engine
    sets a 250 ms busy timeout (the step fails, clearly and soon). Either way: a
    burr_async error within a bound or success, the app unadvanced on error, and the next step
    after recovery succeeds on the same persister."""
    if db.backend == "postgres":
        return await _outage_postgres(db, size, _rng(seed))
    return await _outage_sqlite(db, size, _rng(seed))


async def _step_judged(
    app: Application,
    verifier: SQLAlchemyPersister,
    counts: Counts,
    what: str,
    *,
    must_succeed: bool = False,
    caller_timeout: float | None = None,
) -> BaseException | None:
    """One step under a fault: it succeeds, or fails with burr_async's error within
    ERROR_BOUND; either way the app agrees with the database afterwards. With
    ``caller_timeout`` the step runs under ``asyncio.timeout`` (its TimeoutError is expected)."""

    async def step() -> None:
        if caller_timeout is None:
            await app.astep(inputs={"who": "out"})
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(caller_timeout):
                await app.astep(inputs={"who": "out"})

    began = time.monotonic()
    task = await bounded(step(), STEP_BOUND, counts, what)
    error = task_error(task)
    counts.extra[f"{what}:{'ok' if error is None else type(error).__name__}"] += 1
    if error is None:
        counts.committed += 1
    elif must_succeed:
        counts.extra["not_recovered"] += 1
        counts.note(f"{what}: {describe(error)}")
    if error is not None and not is_clear(error):
        counts.unclear += 1
        counts.note(f"{what}: {describe(error)}")
    elif error is not None and time.monotonic() - began > ERROR_BOUND:
        counts.extra["slow_error"] += 1
    if isinstance(error, ConcurrentStepError):
        counts.extra["concurrent_step_error"] += 1
    await check_agreement(
        app,
        verifier,
        counts,
        pending_allowed=isinstance(error, CommitUnknownError),
        what=what,
    )
    return error


async def _outage_postgres(db: Database, size: int, rng: random.Random) -> Counts:
    counts = Counts("outage", db.backend)
    started = time.monotonic()
    name = f"burr_rel_{uuid.uuid4().hex[:10]}"
    admin = create_engine(db.url)

    async def terminate() -> int:
        async with admin.connect() as conn:
            killed = await conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            return int(killed.scalar_one())

    async def killer() -> None:
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            counts.extra["backends_terminated"] += await terminate()

    kill_in_action = False

    async def pause() -> None:
        nonlocal kill_in_action
        if kill_in_action:
            kill_in_action = False
            counts.extra["backends_terminated"] += await terminate()

    try:
        async with (
            db.persister() as verifier,
            db.persister(connect_args={"server_settings": {"application_name": name}}) as persister,
        ):
            app = await build_chat(persister, new_id("outage"), pause=pause, loader=verifier)
            await _step_judged(app, verifier, counts, "warm", must_succeed=True)
            for run in range(size):
                mode = ("in_action", "burst", "idle")[run % 3]
                if mode == "in_action":
                    kill_in_action = True
                    await _step_judged(app, verifier, counts, mode)
                elif mode == "idle":
                    counts.extra["backends_terminated"] += await terminate()
                    await _step_judged(app, verifier, counts, mode)
                else:
                    killing = asyncio.ensure_future(killer())
                    with anyio.fail_after(120):
                        while not killing.done():  # steps, back to back, while it kills
                            await _step_judged(app, verifier, counts, mode)
                    await killing
                counts.runs += 1
                # recovered: the next step on the same persister succeeds
                await _step_judged(app, verifier, counts, "after", must_succeed=True)
            if problems := history_problems(await verifier.history(PARTITION, app.uid)):
                counts.mixed += 1
                counts.note(problems[0])
    finally:
        await admin.dispose()
    counts.seconds = time.monotonic() - started
    return counts


async def _outage_sqlite(db: Database, size: int, rng: random.Random) -> Counts:
    counts = Counts("outage", db.backend)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="burr-rel-") as tmp:
        private = await private_sqlite(Path(tmp))
        short = create_engine(private.url)

        @sa.event.listens_for(short.sync_engine, "connect")
        def _short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA busy_timeout=250")  # after burr_async's own 30 s
            finally:
                cursor.close()

        try:
            async with (
                private.persister() as verifier,
                private.persister() as waiting,
                SQLAlchemyPersister(short) as refusing,
            ):
                apps = {
                    "wait": await build_chat(waiting, new_id("wait"), loader=verifier),
                    "refuse": await build_chat(refusing, new_id("refuse"), loader=verifier),
                }
                for app in apps.values():
                    await _step_judged(app, verifier, counts, "warm", must_succeed=True)
                for run in range(size):
                    mode = ("wait", "refuse", "wait_cancelled")[run % 3]
                    hold = 0.8 if mode == "refuse" else rng.uniform(0.2, 1.0)
                    app = apps["refuse" if mode == "refuse" else "wait"]
                    await _locked_step(private, app, hold, mode, verifier, counts)
                    counts.runs += 1
                    await _step_judged(app, verifier, counts, "after", must_succeed=True)
                for app in apps.values():
                    if problems := history_problems(await verifier.history(PARTITION, app.uid)):
                        counts.mixed += 1
                        counts.note(problems[0])
        finally:
            await short.dispose()
    counts.seconds = time.monotonic() - started
    return counts


async def _locked_step(
    db: Database,
    app: Application,
    hold: float,
    mode: str,
    verifier: SQLAlchemyPersister,
    counts: Counts,
) -> None:
    holder = await asyncio.create_subprocess_exec(
        *CHILD,
        "lock",
        str(sqlite_path(db)),
        str(hold + 20),  # the holder lets go by itself at the latest then
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=child_env(),
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        with anyio.fail_after(20):
            if (await holder.stdout.readline()).strip() != b"locked":
                raise RuntimeError("the lock holder did not take the lock")
        began = time.monotonic()
        step = asyncio.ensure_future(
            _step_judged(
                app,
                verifier,
                counts,
                f"locked_{mode}",
                caller_timeout=0.1 if mode == "wait_cancelled" else None,
            )
        )
        await asyncio.sleep(hold)
        holder.stdin.write(b"release\n")
        await holder.stdin.drain()
        with anyio.fail_after(STEP_BOUND + 10):
            error = await step
            took = time.monotonic() - began
            await holder.wait()
        if mode != "refuse" and error is None and took < hold * 0.8:
            counts.extra["fault_missed"] += 1  # the step did not wait: the lock was not held
            counts.note(f"the step took {took:.2f} s under a {hold:.2f} s lock")
        if mode == "wait_cancelled" and error is None and took >= hold * 0.8:
            # by design: a write under way holds the cancellation off until it is over
            counts.extra["wait_cancelled: timed out at 0.1 s, returned once the lock went"] += 1
        if mode != "refuse" and error is not None:
            counts.extra["failed_while_waiting"] += 1
            counts.note(f"waiting for a {hold:.2f} s lock: {describe(error)}")
        if mode == "refuse" and error is None:
            counts.extra["fault_missed"] += 1
    finally:
        await _kill(holder)


# == 5. cancellation ===========================================================================
CANCEL_MODES = ("task_cancel", "asyncio_timeout", "anyio_move_on", "anyio_scope", "group")


async def cancellation(db: Database, size: int, *, seed: int | None = None) -> Counts:
    """``size`` steps cancelled at a random point (after 0-15 event-loop turns, or 0-1 ms, or
    0-4 ms): by ``Task.cancel()``, ``asyncio.timeout``, ``anyio.move_on_after``, an anyio
    cancel scope cancelled from a sibling task, or a task group of four apps stepping at once
    (their rows share commits) cancelled as a whole. After each, every app is where the
    database is: never advanced-but-unsaved, never saved-but-unadvanced."""
    counts = Counts("cancel", db.backend)
    rng = _rng(seed)
    started = time.monotonic()

    async def pause() -> None:
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)

    async def at_random_point() -> None:
        how = rng.randrange(3)
        if how == 0:
            for _ in range(rng.randrange(16)):
                await asyncio.sleep(0)
        else:
            await asyncio.sleep(rng.uniform(0, 0.001 if how == 1 else 0.004))

    async with db.persister() as verifier, db.persister() as persister:
        apps = [
            await build_chat(persister, new_id("cancel"), pause=pause, loader=verifier)
            for _ in range(4)
        ]
        for app in apps:
            await app.astep(inputs={"who": "warm"})
        for run in range(size):
            mode = CANCEL_MODES[run % len(CANCEL_MODES)]
            chosen = apps if mode == "group" else [apps[run % len(apps)]]
            before = [app.sequence_id for app in chosen]
            cancelled: dict[str, bool] = {}
            outcome = await bounded(
                _cancelled_step(mode, chosen, at_random_point, rng, cancelled),
                STEP_BOUND,
                counts,
                mode,
            )
            error = task_error(outcome)
            if error is not None:
                if not is_clear(error):
                    counts.unclear += 1
                counts.extra[f"error:{type(error).__name__}"] += 1
                counts.note(f"{mode}: {describe(error)}")
            for app, was in zip(chosen, before, strict=True):
                moved = "advanced" if app.sequence_id != was else "unadvanced"
                hit = "cancelled mid-step" if cancelled.get(app.uid) else "cancelled after it"
                counts.extra[f"{mode}: {hit}, {moved}"] += 1
                await check_agreement(app, verifier, counts, what=mode)
            counts.runs += 1
        for app in apps:
            history = await verifier.history(PARTITION, app.uid)
            counts.committed += len(history)
            if problems := history_problems(history):
                counts.mixed += 1
                counts.note(problems[0])
    counts.seconds = time.monotonic() - started
    return counts


async def _cancelled_step(
    mode: str,
    apps: list[Application],
    at_random_point: Any,
    rng: random.Random,
    cancelled: dict[str, bool],
) -> None:
    """One step of each app, cancelled meanwhile; ``cancelled[app_id]`` says whether the
    cancellation was requested before the step ended (rather than after). A cancellation is
    the expected outcome and stays here; any other error propagates."""
    loop = asyncio.get_running_loop()
    ended: dict[str, float] = {}

    async def step(app: Application) -> None:
        try:
            await app.astep(inputs={"who": "c"})
        finally:
            ended[app.uid] = loop.time()

    app = apps[0]
    if mode == "task_cancel":
        task = asyncio.ensure_future(step(app))
        await at_random_point()
        at = loop.time()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    elif mode == "asyncio_timeout":
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(rng.uniform(0, 0.002)) as timeout:
                await step(app)
        at = timeout.when() or 0.0
    elif mode == "anyio_move_on":
        with anyio.move_on_after(rng.uniform(0, 0.002)) as scope:
            await step(app)
        at = scope.deadline
    else:  # anyio_scope (one app), group (all of them)
        async with anyio.create_task_group() as tg:
            for each in apps:
                tg.start_soon(step, each)
            await at_random_point()
            at = loop.time()
            tg.cancel_scope.cancel()
    for each in apps:
        cancelled[each.uid] = ended.get(each.uid, at) >= at


# == 6. bad input ==============================================================================
COUNTER = "__rel_n__"


class _Opaque:
    pass


def _circular() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def bad_input_cases() -> list[tuple[str, str, Any]]:
    """(name, where, value): ``where`` is ``value`` (a state value), ``key`` (a state key),
    ``app_id`` or ``partition_key``."""
    random_text = os.urandom(5_000).hex()  # 10 kB that compresses poorly
    return [
        ("unserializable: object()", "value", _Opaque()),
        ("unserializable: a lambda", "value", lambda: None),
        ("unserializable: dict with int keys", "value", {1: "a"}),
        ("unserializable: dict with tuple keys", "value", {(1, 2): "a"}),
        ("unserializable: int beyond 64 bits", "value", 2**70),
        ("unserializable: a circular list", "value", _circular()),
        ("unserializable: lists nested 1000 deep", "value", _deep(1000)),
        ("unserializable: a set holding an object", "value", {_Opaque()}),
        ("NUL in a state string", "value", "a\x00b"),
        ("NUL in a state key", "key", "k\x00"),
        ("NUL in app_id", "app_id", "app\x00id"),
        ("NUL in partition_key", "partition_key", "part\x00key"),
        ("lone surrogate in a state string", "value", "x\ud800y"),
        ("lone surrogate as a state key", "key", "\udfff"),
        ("lone surrogate in app_id", "app_id", "app\ud800"),
        ("lone surrogate in partition_key", "partition_key", "part\udc00"),
        ("10 kB app_id (repetitive)", "app_id", "a" * 10_000),
        ("10 kB app_id (random)", "app_id", random_text),
        ("10 kB partition_key (random)", "partition_key", random_text),
        ("10 kB state key", "key", random_text),
        ("astral and bidi characters", "value", "😀\u2028\u202e\ufeff\U0010ffff"),
        ("astral and bidi characters in app_id", "app_id", "app-😀-\u202e"),
        ("the serde's tag key as a state key", "key", "__burr_async__"),
        ("a float of 1e300", "value", 1e300),
        ("huge: a 3 MB string", "value", "x" * 3_000_000),
        (
            "huge: 60k small dicts (~4 MB)",
            "value",
            [{"i": i, "s": "y" * 50} for i in range(60_000)],
        ),
        ("huge: 2 MB of bytes", "value", os.urandom(2_000_000)),
    ]


def _value_app(
    persister: SQLAlchemyPersister,
    app_id: str,
    partition_key: str | None,
    loader: SQLAlchemyPersister,
    bad: dict[str, Any] | None = None,
) -> Any:
    """An app whose ``put`` action counts, and writes ``v`` (a good value) or, given ``bad``,
    those keys and values too."""
    keys = [k for k in (bad or {}) if k != "v"]

    @action(reads=[COUNTER], writes=[COUNTER, "v", *keys])
    async def put(state: State) -> State:
        n = state[COUNTER] + 1
        return state.merge({COUNTER: n, "v": f"ok {n}", **(bad or {})})

    return (
        ApplicationBuilder()
        .with_actions(put)
        .with_transitions(("put", "put"))
        .initialize_from(
            loader,
            resume_at_next_action=True,
            default_state={COUNTER: 0},
            default_entrypoint="put",
        )
        .with_state_persister(persister)
        .with_identifiers(app_id=app_id, partition_key=partition_key)
        .abuild()
    )


def hostile_examples(count: int, *, for_postgres: bool) -> list[dict[str, Any]]:
    """``count`` adversarial states from tests/hostile_values.py, drawn deterministically."""
    from hypothesis import HealthCheck, Phase, given, settings

    from tests.hostile_values import hostile_states

    drawn: list[dict[str, Any]] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(hostile_states(for_postgres=for_postgres))
    def collect(state: dict[str, Any]) -> None:
        drawn.append(state)

    collect()
    return [s for s in drawn if COUNTER not in s][:count]


async def bad_input(db: Database, size: int, *, seed: int | None = None) -> Counts:
    """Every named case of ``bad_input_cases`` once, plus ``size`` adversarial states from the
    hypothesis strategies: each is refused up front with burr_async's error (the app
    unadvanced, nothing stored, earlier steps intact, the next good step succeeds) or stored
    and read back equal. ``counts.outcomes`` records which (for the comparison of backends)."""
    counts = Counts("bad_input", db.backend)
    started = time.monotonic()
    async with db.persister() as verifier, db.persister() as persister:
        sentinel = await _value_app(persister, new_id("sentinel"), PARTITION, verifier)
        await sentinel.astep()
        sentinel_history = await verifier.history(PARTITION, sentinel.uid)
        cases: list[tuple[str, str, Any]] = bad_input_cases()
        cases += [
            (f"hypothesis state #{i}", "state", state)
            for i, state in enumerate(hostile_examples(size, for_postgres=db.backend == "postgres"))
        ]
        for name, where, value in cases:
            try:
                outcome = await _one_bad_input(persister, verifier, where, value, counts, name)
            except BurrAsyncError as exc:  # the checks themselves failed on a stored row
                counts.extra["altered"] += 1
                counts.note(f"{name}: checking it raised {describe(exc)}")
                outcome = "unreadable"
            counts.outcomes[name] = outcome
            counts.extra[f"{outcome.split(':')[0]}"] += 1
            counts.runs += 1
        if [h.state for h in await verifier.history(PARTITION, sentinel.uid)] != [
            h.state for h in sentinel_history
        ]:
            counts.mixed += 1
            counts.note("the sentinel app's history changed")
        counts.extra["collateral"] += await _bad_row_in_a_batch(persister, verifier, counts)
    counts.seconds = time.monotonic() - started
    return counts


async def _one_bad_input(
    persister: SQLAlchemyPersister,
    verifier: SQLAlchemyPersister,
    where: str,
    value: Any,
    counts: Counts,
    name: str,
) -> str:
    """A bad value or key goes into the third step of an app (two good steps first); a bad id
    is the app's own, from its first step on."""
    app_id, partition_key = new_id("bad"), PARTITION
    bad: dict[str, Any] = {}
    if where == "value":
        bad = {"v": value}
    elif where == "key":
        bad = {value: "x"}
    elif where == "state":
        bad = dict(value)
    elif where == "app_id":
        app_id = f"{app_id}-{value}"
    else:
        partition_key = f"{PARTITION}-{value}"
    in_state = where in ("value", "key", "state")
    before: list[Any] = []
    if in_state:
        good = await _value_app(persister, app_id, partition_key, verifier)
        await good.astep()
        await good.astep()
        before = await verifier.history(partition_key, app_id)
    try:
        app = await _value_app(persister, app_id, partition_key, verifier, bad)
    except BurrAsyncError as exc:
        return f"refused:{type(exc).__name__} (building)"
    except Exception as exc:
        counts.unclear += 1
        counts.note(f"{name}: building the app raised {describe(exc)}")
        return f"unclear:{type(exc).__name__}"
    was = app.sequence_id
    task = await bounded(app.astep(), 120, counts, name)
    error = task_error(task)
    if error is not None and not is_clear(error):
        counts.unclear += 1
        counts.note(f"{name}: {describe(error)}")
        return f"unclear:{type(error).__name__}"
    if error is None:
        counts.committed += 1
        stored = await verifier.load(partition_key, app_id)
        n = len(before) + 1
        expected = {COUNTER: n, "v": f"ok {n}", **bad}
        if stored is None or stored.sequence_id != app.sequence_id:
            counts.lost += 1
            counts.note(f"{name}: stored {stored and stored.sequence_id}, app {app.sequence_id}")
        elif stored.state.get_all() != expected:
            counts.extra["altered"] += 1
            counts.note(f"{name}: came back different")
        history = await verifier.history(partition_key, app_id)
        if [h.state for h in history[: len(before)]] != [h.state for h in before]:
            counts.mixed += 1
            counts.note(f"{name}: earlier steps changed")
    else:  # refused: the app where it was, nothing stored
        if app.sequence_id != was:
            counts.extra["behind"] += 1
        if in_state:
            after = await verifier.history(partition_key, app_id)
            if [h.state for h in after] != [h.state for h in before]:
                counts.extra["partial"] += 1
                counts.note(f"{name}: refused, yet the history changed")
        else:
            listed = await verifier.list_apps(all_partitions=True, limit=100_000)
            if any(s.app_id == app_id and s.partition_key == partition_key for s in listed):
                counts.extra["partial"] += 1
                counts.note(f"{name}: refused, yet a row is stored")
    if in_state:  # and the app goes on: resumed from what is stored, a good step succeeds
        try:
            resumed = await _value_app(persister, app_id, partition_key, verifier)
            task = await bounded(resumed.astep(), STEP_BOUND, counts, name)
            if task_error(task) is not None:
                raise task_error(task)  # type: ignore[misc]
        except BurrAsyncError as exc:
            counts.extra["not_recovered"] += 1
            counts.note(f"{name}: the good step after: {describe(exc)}")
    return "stored" if error is None else f"refused:{type(error).__name__}"


async def _bad_row_in_a_batch(
    persister: SQLAlchemyPersister, verifier: SQLAlchemyPersister, counts: Counts
) -> int:
    """Good steps that failed because a bad row (a 10 kB random app_id) shared their batch:
    reported, not a broken contract (they fail cleanly and are not stored)."""
    good = [await _value_app(persister, new_id("good"), PARTITION, verifier) for _ in range(5)]
    try:
        bad = await _value_app(
            persister, f"{new_id('bad')}-{os.urandom(5_000).hex()}", PARTITION, verifier
        )
    except InvalidIdentifierError:  # refused up front: it can never reach a batch
        counts.extra["bad_row_refused_up_front"] += 1
        for app in good:
            await app.astep()
            await check_agreement(app, verifier, counts, what="batch with a bad row")
        return 0
    tasks = [asyncio.ensure_future(app.astep()) for app in [good[0], bad, *good[1:]]]
    await bounded(asyncio.wait(tasks), STEP_BOUND, counts, "batch with a bad row")
    failed = 0
    for app, task in zip([good[0], bad, *good[1:]], tasks, strict=True):
        error = task_error(task)
        if error is not None and not is_clear(error):
            counts.unclear += 1
        if app is not bad and error is not None:
            failed += 1
            counts.note(f"a good step sharing a batch with a bad row failed: {describe(error)}")
        await check_agreement(app, verifier, counts, what="batch with a bad row")
    return failed


def inconsistent(by_backend: dict[str, dict[str, str]]) -> list[tuple[str, dict[str, str]]]:
    """The named cases refused on one backend and stored on another."""
    if len(by_backend) < 2:
        return []
    names = set.intersection(*(set(o) for o in by_backend.values()))
    found = []
    for name in sorted(names):
        if name.startswith("hypothesis"):
            continue
        kinds = {backend: outcomes[name] for backend, outcomes in by_backend.items()}
        if len({k.split(":")[0] for k in kinds.values()}) > 1:
            found.append((name, kinds))
    return found
