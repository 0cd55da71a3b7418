"""``python -m benchmarks.ui``: how fast the web UI's pages render on a big SQLite table.

Fills a fresh SQLite file with one app of ``--steps`` steps (default 10,000) and ``--apps``
other apps (default 1,000, two steps each), then requests each page ``--rounds`` times through
the ASGI app in-process (httpx's ASGI transport: the UI and the database, no socket) and prints
the median and worst milliseconds per page. The target: under 200 ms for the app list and for
a page of a 10,000-step history. Nothing is asserted (tests/benchmarks runs it small).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from burr_async import State
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister
from burr_async.ui import create_app

__all__ = ["main"]

BIG = "big-app"


async def fill(persister: SQLAlchemyPersister, steps: int, apps: int) -> None:
    """One app of ``steps`` steps (a growing chat), and ``apps`` apps of two steps each."""
    history: list[str] = []
    for seq in range(steps):
        history = [*history[-20:], f"message {seq}"]
        position = ("ask", "answer", "tool")[seq % 3]
        await persister.save(
            None, BIG, seq, position, State({"turn": seq, "history": history}), "completed"
        )

    async def small(i: int) -> None:
        for seq in range(2):
            status = "failed" if i % 10 == 0 and seq == 1 else "completed"
            await persister.save(
                f"user-{i % 50}", f"app-{i:05d}", seq, "ask", State({"i": i}), status
            )

    for start in range(0, apps, 100):  # concurrent apps share the persister's group commits
        await asyncio.gather(*(small(i) for i in range(start, min(start + 100, apps))))


async def measure(path: Path, steps: int, apps: int, rounds: int) -> dict[str, list[float]]:
    """Milliseconds of each request of each page, after one warm-up request."""
    url = f"sqlite+aiosqlite:///{path}"
    async with SQLAlchemyPersister.from_url(url, sqlite_synchronous="OFF") as persister:
        await persister.initialize()
        started = time.perf_counter()
        await fill(persister, steps, apps)
        print(f"filled {steps} steps + {apps} apps in {time.perf_counter() - started:.1f} s")
    pages = {
        "app list (all partitions, 50)": "/",
        "app list, page 2 (cursor)": None,
        "app list, prefix search": "/?q=app-001",
        "app list, one partition, failed": "/?partition=user-7&status=failed",
        f"{steps}-step app, first page (100)": f"/app?id={BIG}",
        f"{steps}-step app, newest page (100)": f"/app?id={BIG}&after={steps - 101}",
        f"{steps}-step app, step {steps // 2}": f"/step?id={BIG}&seq={steps // 2}",
        f"{steps}-step app, latest step": f"/step?id={BIG}&seq={steps - 1}",
    }
    times: dict[str, list[float]] = {}
    async with SQLAlchemyPersister.from_url(url) as persister:
        transport = httpx.ASGITransport(app=create_app(persister))
        async with httpx.AsyncClient(transport=transport, base_url="http://ui") as client:
            first = await client.get("/")
            marker = 'rel="next" href="'
            start = first.text.index(marker) + len(marker)
            pages["app list, page 2 (cursor)"] = (
                first.text[start:].split('"')[0].replace("&amp;", "&")
            )
            for name, page in pages.items():
                assert page is not None
                response = await client.get(page)  # warm-up
                response.raise_for_status()
                times[name] = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    response = await client.get(page)
                    times[name].append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
    return times


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print a table of milliseconds per page."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ui", description=__doc__)
    parser.add_argument("--steps", type=int, default=10_000, help="steps of the big app")
    parser.add_argument("--apps", type=int, default=1_000, help="other apps")
    parser.add_argument("--rounds", type=int, default=20, help="requests per page")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        times = asyncio.run(measure(Path(tmp) / "ui.db", args.steps, args.apps, args.rounds))
    print(f"{'page':<42} {'median ms':>10} {'max ms':>8}")
    for name, values in times.items():
        print(f"{name:<42} {statistics.median(values):>10.1f} {max(values):>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
