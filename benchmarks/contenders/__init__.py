"""The contenders, imported lazily: a contender whose packages are missing is reported as
"not installed" instead of failing the run."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.contenders.base import Contender, Options
from benchmarks.targets import Target

__all__ = ["CONTENDERS", "QUICK_CONTENDERS", "Entry", "parse_contenders"]


@dataclass(frozen=True, slots=True)
class Entry:
    """A contender: its column ``label``, its module (and the name of the module's
    ``create(target, options)`` function), and the imports it needs (with the pip names to
    suggest when they are missing)."""

    key: str
    label: str
    module: str
    requires: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    create: str = "create"

    def missing(self, backend: str) -> list[str]:
        """The pip names of what this contender lacks on ``backend`` (empty: runnable)."""
        needed = list(self.requires)
        if self.key in ("raw", "burr") and backend == "postgres":
            needed.append("asyncpg")
        if self.key == "langgraph" and backend == "postgres":
            needed += ["psycopg", "psycopg_pool"]
        names = dict(zip(self.requires, self.pip, strict=True)) | {
            "asyncpg": "asyncpg",
            "psycopg": "psycopg[binary]",
            "psycopg_pool": "psycopg-pool",
        }
        return [names[m] for m in needed if not _installed(m)]

    def factory(self) -> Callable[[Target, Options], Contender]:
        """The module's ``create(target, options)`` (imports the module)."""
        module = importlib.import_module(self.module)
        create: Callable[[Target, Options], Contender] = getattr(module, self.create)
        return create


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


CONTENDERS: dict[str, Entry] = {
    e.key: e
    for e in (
        Entry("raw", "raw driver", "benchmarks.contenders.raw"),
        Entry("core", "SQLAlchemy Core naive", "benchmarks.contenders.core"),
        Entry("burr_async", "burr_async", "benchmarks.contenders.burr_async_"),
        Entry(
            "burr_async-snapshot",
            "burr_async (snapshot)",
            "benchmarks.contenders.burr_async_",
            create="create_snapshot",
        ),
        Entry("burr", "Burr", "benchmarks.contenders.burr_", ("burr",), ("apache-burr",)),
        Entry(
            "langgraph",
            "LangGraph",
            "benchmarks.contenders.langgraph_",
            ("langgraph", "langgraph.checkpoint.sqlite", "langgraph.checkpoint.postgres"),
            ("langgraph", "langgraph-checkpoint-sqlite", "langgraph-checkpoint-postgres"),
        ),
    )
}
"""Every contender, in table column order."""

QUICK_CONTENDERS = ("raw", "burr_async", "burr_async-snapshot")
"""What ``--quick`` runs: the raw drivers and burr_async's two storage modes, base
dependencies (and asyncpg) only."""


def parse_contenders(spec: str | None, *, quick: bool) -> list[Entry]:
    """``"raw,burr_async"`` as entries in column order; every contender (``--quick``: the
    quick ones) for None. ``burr_async-snapshot`` may be spelled ``burr_async_snapshot``."""
    if not spec:
        keys: set[str] = set(QUICK_CONTENDERS if quick else CONTENDERS)
    else:
        keys = {
            part.strip().lower().replace("burr_async_snapshot", "burr_async-snapshot")
            for part in spec.split(",")
            if part.strip()
        }
        unknown = keys - CONTENDERS.keys()
        if unknown:
            raise ValueError(
                f"unknown contender(s) {sorted(unknown)}; choose from {list(CONTENDERS)}"
            )
    return [e for key, e in CONTENDERS.items() if key in keys]
