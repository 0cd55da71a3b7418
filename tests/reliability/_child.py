"""The processes the trials start: ``python -m tests.reliability._child KIND ARGS...``.

- ``crash URL SCHEMA APP_ID MAX_STEPS SEED``: resumes the chat ``APP_ID`` and steps it, printing
  ``resumed N`` once built, ``saving N`` when step N's action has returned (its row is about to
  be written) and ``committed N`` once ``astep`` returned. The parent SIGKILLs it at some moment.
- ``race URL SCHEMA PORT WORKER APP_IDS ROUNDS``: for each round, loads the round's app, says
  ``ready`` to the barrier at 127.0.0.1:PORT, waits for ``go``, steps, and reports the outcome.
- ``lock PATH MAX_HOLD``: holds ``BEGIN EXCLUSIVE`` on a SQLite file until a line arrives on
  stdin (or MAX_HOLD seconds pass), then commits.

``BURR_REL_FAULT`` breaks the child on purpose, so that the suite can show its checks catch a
broken contract: ``skip_save`` (every second save is silently dropped), ``swallow_conflict``
(a ConcurrentStepError is ignored, so the loser advances as if it had won).
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import sqlite3
import sys
import time
from typing import Any

import anyio

from burr_async import BurrAsyncError, ConcurrentStepError
from burr_async.persistence import SQLAlchemyPersister
from tests.reliability._support import build_chat

FAULT = os.environ.get("BURR_REL_FAULT", "")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def break_on_purpose(persister: SQLAlchemyPersister) -> None:
    original = persister.save
    calls = 0

    async def skipping(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls % 2 == 0:
            return  # reported durable, never written
        await original(*args, **kwargs)

    async def swallowing(*args: Any, **kwargs: Any) -> None:
        try:
            await original(*args, **kwargs)
        except ConcurrentStepError:
            return

    if FAULT == "skip_save":
        persister.save = skipping  # type: ignore[method-assign]
    elif FAULT == "swallow_conflict":
        persister.save = swallowing  # type: ignore[method-assign]


async def crash(url: str, schema: str, app_id: str, max_steps: int, seed: int) -> None:
    rng = random.Random(seed)

    async def pause() -> None:
        if rng.random() < 0.5:
            await anyio.sleep(rng.uniform(0, 0.002))

    with anyio.fail_after(60):
        async with SQLAlchemyPersister.from_url(url, schema=schema or None) as persister:
            break_on_purpose(persister)
            app = await build_chat(
                persister, app_id, on_save=lambda seq: say(f"saving {seq}"), pause=pause
            )
            say(f"resumed {-1 if app.sequence_id is None else app.sequence_id}")
            for _ in range(max_steps):
                try:
                    await app.astep(inputs={"who": f"c{seed}"})
                except BurrAsyncError as exc:
                    say(f"error clear {type(exc).__name__}")
                    raise SystemExit(3) from exc
                except Exception as exc:
                    say(f"error unclear {type(exc).__name__}: {exc}")
                    raise SystemExit(4) from exc
                say(f"committed {app.sequence_id}")
    say("done")


async def race(url: str, schema: str, port: int, worker: str, app_ids: str, rounds: int) -> None:
    apps = app_ids.split(",")
    with anyio.fail_after(60 + rounds):
        async with SQLAlchemyPersister.from_url(url, schema=schema or None) as persister:
            break_on_purpose(persister)
            await persister.load("rel", apps[0])  # connect and check the schema first
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for r in range(rounds):
                    app = await build_chat(persister, apps[r % len(apps)])
                    before = -1 if app.sequence_id is None else app.sequence_id
                    writer.write(f"ready {r} {before}\n".encode())
                    await writer.drain()
                    line = (await reader.readline()).decode().split()
                    if line != ["go", str(r)]:
                        raise RuntimeError(f"barrier said {line!r} in round {r}")
                    try:
                        await app.astep(inputs={"who": worker})
                        outcome = "won"
                    except ConcurrentStepError:
                        outcome = "conflict"
                    except BurrAsyncError as exc:
                        outcome = f"error:{type(exc).__name__}"
                    except Exception as exc:
                        outcome = f"unclear:{type(exc).__name__}"
                    after = -1 if app.sequence_id is None else app.sequence_id
                    writer.write(f"done {r} {outcome} {before} {after} {worker}\n".encode())
                    await writer.drain()
            finally:
                writer.close()


def lock(path: str, max_hold: float) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        say("locked")
        deadline = time.monotonic() + max_hold
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sys.stdin], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                sys.stdin.readline()
                break
        conn.execute("COMMIT")
        say("released")
    finally:
        conn.close()


def main(argv: list[str]) -> None:
    kind, *args = argv
    if kind == "crash":
        url, schema, app_id, max_steps, seed = args
        anyio.run(crash, url, schema, app_id, int(max_steps), int(seed))
    elif kind == "race":
        url, schema, port, worker, app_ids, rounds = args
        anyio.run(race, url, schema, int(port), worker, app_ids, int(rounds))
    elif kind == "lock":
        lock(args[0], float(args[1]))
    else:
        raise SystemExit(f"unknown child {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
