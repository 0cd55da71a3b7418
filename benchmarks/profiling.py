"""``--profile W1:sqlite``: burr_async's run of one workload under pyinstrument, to see where a
step's time goes."""

from __future__ import annotations

from benchmarks.contenders.base import Options
from benchmarks.contenders.burr_async_ import BurrAsyncContender
from benchmarks.runner import Say
from benchmarks.targets import Backend, provision
from benchmarks.workloads import WARMUP, WORKLOADS, Sizes
from burr_async.persistence.engine import SQLiteSynchronous

__all__ = ["parse_profile", "profile"]


def parse_profile(spec: str) -> tuple[str, Backend]:
    """``"W1:sqlite"`` as (workload, backend); W0 needs no backend (``"W0"``)."""
    workload, _, backend = spec.partition(":")
    workload = workload.strip().upper()
    if workload not in WORKLOADS:
        raise ValueError(f"--profile: unknown workload {workload!r}; choose from {list(WORKLOADS)}")
    if workload == "W0":
        return workload, "memory"
    backend = backend.strip().lower()
    if backend not in ("sqlite", "postgres"):
        raise ValueError("--profile: give the backend, e.g. W1:sqlite or W1:postgres")
    return workload, backend  # type: ignore[return-value]


async def profile(
    workload: str,
    backend: Backend,
    *,
    sizes: Sizes,
    postgres_url: str,
    sqlite_synchronous: SQLiteSynchronous,
    lines: int,
    say: Say,
) -> None:
    """Warm up, then run ``workload`` once under pyinstrument and print the top of the tree."""
    try:
        from pyinstrument import Profiler
    except ImportError as exc:
        raise SystemExit(
            "--profile needs pyinstrument: pip install -e '.[bench]' (or pip install pyinstrument)"
        ) from exc
    async with provision(
        [backend],
        postgres_url=postgres_url,
        require={backend},
        sqlite_synchronous=sqlite_synchronous,
        sqlite_parent=None,
    ) as env:
        contender = BurrAsyncContender(env.targets[backend], Options())
        await contender.open()
        try:
            say(f"burr_async {workload} on {backend}: {await contender.durability()}")
            await contender.run(workload, WARMUP, "warm")
            profiler = Profiler(interval=0.0001, async_mode="enabled")
            seconds = await contender.run(workload, sizes, "profiled", timed=profiler)
        finally:
            await contender.aclose()
    w = WORKLOADS[workload]
    say(
        f"{workload} ({w.describe(sizes)}): {w.metric(seconds, sizes):,.1f} {w.unit} under the "
        "profiler (slower than unprofiled)"
    )
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    shown = text.splitlines()
    say("\n".join(shown[:lines]))
    if len(shown) > lines:
        say(f"... ({len(shown) - lines} more lines; --profile-lines N shows more)")
