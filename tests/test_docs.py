"""The documentation's examples, run, so that they cannot rot.

Convention: a fenced ``python`` block in ``docs/**/*.md`` that is immediately preceded by the line
``<!-- runnable -->`` (invisible in the rendered site) is executed by this test. Unmarked blocks
are illustrations (Postgres URLs, FastAPI servers, shell sessions) and are not run.

The runnable blocks of one page run in order in one namespace, so a later block may use what an
earlier one defined, as a reader following the page would. Each page runs in a fresh temporary
working directory (relative ``sqlite:///x.db`` URLs land there), with ``BURR_ASYNC_DATABASE_URL``
pointing at a SQLite file in it. The namespace is the ``__main__`` module:

- a block with top-level ``await`` runs on the test's event loop, as in ``python -m asyncio``;
- any other block runs in a worker thread, so a complete script ending in
  ``if __name__ == "__main__": asyncio.run(main())`` runs exactly as from the command line.

Tracebacks point at the page and line in ``docs/``.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
MARKER = "<!-- runnable -->"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,})\s*(?P<lang>[\w-]*)")

# Pages whose examples must stay runnable (at least one runnable block each).
REQUIRED = [
    "quickstart.md",
    "persistence/index.md",
    "persistence/resume.md",
    "persistence/concurrency.md",
    "persistence/serialization.md",
]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the first line of code
    source: str  # the code, dedented, preceded by blank lines so line numbers match the page


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        opening = FENCE.match(lines[index + 1]) if index + 1 < len(lines) else None
        if opening is None or opening["lang"] not in ("python", "py"):
            raise AssertionError(
                f"{page.relative_to(DOCS)}:{index + 1}: {MARKER} must be directly followed by "
                "a ```python block"
            )
        fence = opening["fence"]
        body: list[str] = []
        for candidate in lines[index + 2 :]:
            if candidate.strip().startswith(fence) and candidate.strip().strip("`") == "":
                break
            body.append(candidate)
        else:
            raise AssertionError(f"{page.relative_to(DOCS)}:{index + 2}: unclosed code block")
        first = index + 3  # 1-based number of the first line of code
        code = textwrap.dedent("\n".join(body))
        blocks.append(Block(page, first, "\n" * (first - 1) + code + "\n"))
    return blocks


def _runnable_pages() -> list[Path]:
    return [page for page in _pages() if _blocks(page)]


def test_required_pages_have_runnable_examples() -> None:
    runnable = {page.relative_to(DOCS).as_posix() for page in _runnable_pages()}
    assert [page for page in REQUIRED if page not in runnable] == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "page", _runnable_pages(), ids=lambda page: page.relative_to(DOCS).as_posix()
)
async def test_runnable_examples(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BURR_ASYNC_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    # The snippets run as __main__, so that what they define (pydantic models stored in state,
    # for example) is importable under the name it gets when the page is run as a script.
    module = types.ModuleType("__main__")
    module.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", module)
    for block in _blocks(page):
        code = compile(
            block.source, str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        if code.co_flags & inspect.CO_COROUTINE:
            await eval(code, module.__dict__)
        else:
            await anyio.to_thread.run_sync(exec, code, module.__dict__)
