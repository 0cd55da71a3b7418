"""The web UI (``burr_async.ui``), served by uvicorn on a loopback port over a database each test
fills, on both backends: every page's status and content, paging, filters, unknown apps,
escaping of hostile ids and states, the fork and spawning parent links, the given and observed
graphs, read-only-ness, the ``burr-async ui`` command (password hidden, persister closed on
shutdown), mounting in FastAPI, and headless Chromium drawing the graph.

Each test stores its apps under a partition key of its own: the session's table is shared.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
import sqlalchemy as sa

from burr_async import ApplicationBuilder, Result, State, action, default, expr
from burr_async.persistence.base import ParentPointer
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister
from burr_async.ui import create_app
from tests.databases import Database
from tests.hostile_values import TAG
from tests.integration._ui_server import links, serve

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_ID = "<script>alert(1)</script>"
HOSTILE_STRINGS = [
    "<script>alert('state')</script>",
    "\"'><svg onload=alert(1)>",
    "</pre></details><img src=x onerror=alert(2)>",
    "{{ 7 * 7 }}{% raw %}",
    "\u202eevil\u200f",
    "\x1b[2J\x07bell",
    "&lt;already-escaped&gt;",
]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def fill(
    persister: Any,
    partition: str | None,
    app_id: str,
    positions: list[str],
    *,
    failed_last: bool = False,
    parent: ParentPointer | None = None,
    start: int = 0,
) -> None:
    """Store one step per position; the state counts the steps and logs the positions."""
    for offset, position in enumerate(positions):
        seq = start + offset
        failed = failed_last and offset == len(positions) - 1
        await persister.save(
            partition,
            app_id,
            seq,
            position,
            State({"count": seq, "log": positions[: offset + 1], "nested": {"seq": [seq, None]}}),
            "failed" if failed else "completed",
            error=f"ValueError: step {seq} broke\nTraceback line" if failed else None,
            parent=parent,
        )


async def get(client: httpx.AsyncClient, url: str, **params: Any) -> str:
    response = await client.get(url, params=params) if params else await client.get(url)
    assert response.status_code == 200, (url, params, response.text)
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    return response.text


def app_ids_on(page: str) -> list[str]:
    """The app ids listed on an app-list page, in order."""
    return [
        html.unescape(m) for m in re.findall(r'<a class="app-id" href="[^"]*">([^<]*)</a>', page)
    ]


# -- pages ------------------------------------------------------------------------------------
async def test_list_filters_app_and_step_pages(persister: SQLAlchemyPersister) -> None:
    pk = unique("ui")
    await fill(persister, pk, "chat-1", ["ask", "answer", "ask", "answer", "ask"], failed_last=True)
    await fill(persister, pk, "chat-2", ["ask", "answer"])
    await fill(persister, pk, "other", ["ask"])
    async with serve(create_app(persister)) as base, httpx.AsyncClient(base_url=base) as client:
        page = await get(client, "/", partition=pk)
        assert app_ids_on(page) == ["other", "chat-2", "chat-1"]  # most recently updated first
        assert app_ids_on(await get(client, "/", partition=pk, status="failed")) == ["chat-1"]
        assert app_ids_on(await get(client, "/", partition=pk, status="completed")) == [
            "other",
            "chat-2",
        ]
        assert app_ids_on(await get(client, "/", partition=pk, q="chat")) == ["chat-2", "chat-1"]
        assert app_ids_on(await get(client, "/", partition=pk, q="chat-1", match="exact")) == [
            "chat-1"
        ]
        assert app_ids_on(await get(client, "/", partition=pk, q="chat", match="exact")) == []
        assert app_ids_on(await get(client, "/", partition=pk, q="CHAT")) == []  # case-sensitive
        everywhere = app_ids_on(await get(client, "/", q="chat-1", match="exact", limit=1000))
        assert "chat-1" in everywhere  # all partitions (the default scope)
        assert "No applications match" in await get(client, "/", scope="default", q=pk)

        page = await get(client, "/app", id="chat-1", partition=pk)
        assert "ValueError: step 4 broke" in page and "Traceback line" not in page
        for seq in range(5):
            assert f"seq={seq}" in page
        assert "observed graph" in page
        assert re.search(r'\["ask"\]|&#34;ask&#34;', page)

        step = await get(client, "/step", id="chat-1", partition=pk, seq=4)
        assert "Traceback line" in step  # the whole error
        assert "Changes from step 3" in step
        assert "count: 3 -&gt; 4" in step
        assert '<details open><summary><span class="j-title">state</span>' in step
        first = await get(client, "/step", id="chat-1", partition=pk, seq=0)
        assert "every key is shown as added" in first

        for url, params in [
            ("/app", {"id": "nope", "partition": pk}),
            ("/app", {"id": "chat-1"}),  # the partition is part of the identity
            ("/step", {"id": "chat-1", "partition": pk, "seq": 99}),
            ("/step", {"id": "nope", "partition": pk, "seq": 0}),
        ]:
            response = await client.get(url, params=params)
            assert response.status_code == 404, (url, params)
            assert "Error 404" in response.text
        for url, params in [
            ("/step", {"id": "chat-1", "partition": pk, "seq": "x"}),
            ("/step", {"id": "chat-1", "partition": pk}),
            ("/app", {}),
            ("/", {"status": "running"}),
            ("/", {"limit": "0"}),
            ("/app", {"id": "a" * 300}),  # longer than an app id may be
        ]:
            assert (await client.get(url, params=params)).status_code == 400, (url, params)


async def test_app_list_pages_by_the_keyset_cursor(persister: SQLAlchemyPersister) -> None:
    pk = unique("ui-page")
    names = [f"app-{i}" for i in range(7)]
    for name in names:
        await fill(persister, pk, name, ["ask"])
    async with serve(create_app(persister)) as base, httpx.AsyncClient(base_url=base) as client:
        seen: list[str] = []
        page = await get(client, "/", partition=pk, limit=3)
        pages = 1
        while True:
            seen += app_ids_on(page)
            nxt = links(page).get("next")
            if nxt is None:
                break
            assert "first" in links(await get(client, nxt))
            page = await get(client, nxt)
            pages += 1
        assert seen == list(reversed(names)) and pages == 3
        # the search pages too
        page = await get(client, "/", partition=pk, q="app-", limit=4)
        second = await get(client, links(page)["next"])
        assert app_ids_on(page) + app_ids_on(second) == list(reversed(names))
        bad = await client.get("/", params={"after_app": "x", "after_seq": 1, "after_time": "no"})
        assert bad.status_code == 400


async def test_timeline_pages_with_after_and_limit(persister: SQLAlchemyPersister) -> None:
    pk = unique("ui-steps")
    await fill(persister, pk, "long", ["a", "b"] * 12 + ["c"])  # steps 0..24
    async with serve(create_app(persister)) as base, httpx.AsyncClient(base_url=base) as client:

        def seqs(page: str) -> list[int]:
            return [int(s) for s in re.findall(r'<td class="num"><a href="[^"]*">(\d+)</a>', page)]

        page = await get(client, "/app", id="long", partition=pk, limit=10)
        assert seqs(page) == list(range(10))
        assert set(links(page)) == {"next", "last"}
        page = await get(client, links(page)["next"])
        assert seqs(page) == list(range(10, 20))
        assert set(links(page)) == {"first", "prev", "next", "last"}
        assert seqs(await get(client, links(page)["prev"])) == list(range(10))
        page = await get(client, links(page)["next"])
        assert seqs(page) == list(range(20, 25)) and "next" not in links(page)
        newest = await get(client, "/app", id="long", partition=pk, limit=10)
        assert seqs(await get(client, links(newest)["last"])) == list(range(15, 25))
        assert "No stored steps after step 30" in await get(
            client, "/app", id="long", partition=pk, after=30
        )


async def test_hostile_ids_and_state_are_escaped(persister: SQLAlchemyPersister) -> None:
    partition = f'{unique("ui")}"><img src=x onerror=alert(3)>'
    state = {s: s for s in HOSTILE_STRINGS}
    state["tagged"] = {TAG: "pydantic", "value": {"cls": "os:system", "data": HOSTILE_STRINGS}}
    await persister.save(partition, HOSTILE_ID, 0, HOSTILE_STRINGS[2], State(state), "completed")
    await persister.save(
        partition,
        HOSTILE_ID,
        1,
        HOSTILE_STRINGS[1],
        State({**state, "new": HOSTILE_STRINGS[0]}),
        "failed",
        error=HOSTILE_STRINGS[0],
    )
    async with serve(create_app(persister)) as base, httpx.AsyncClient(base_url=base) as client:
        pages = [
            await get(client, "/", partition=partition),
            await get(client, "/", q=HOSTILE_ID, partition=partition),
            await get(client, "/app", id=HOSTILE_ID, partition=partition),
            await get(client, "/step", id=HOSTILE_ID, partition=partition, seq=0),
            await get(client, "/step", id=HOSTILE_ID, partition=partition, seq=1),
        ]
        missing = await client.get("/app", params={"id": HOSTILE_ID, "partition": "nope"})
        pages.append(missing.text)
        assert missing.status_code == 404
    for page in pages:
        assert HOSTILE_ID not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        for raw in (
            "<svg",
            "<img",
            "alert(3)>",
            "alert(2)>",
            "\u202e",
            "\x1b",
            "\x07",
            "alert('state')<",
        ):
            assert raw not in page
    assert "{{ 7 * 7 }}{% raw %}" in pages[3]  # shown as it is, never evaluated
    assert "\\u202eevil\\u200f" in pages[3]  # bidi controls shown as escapes
    assert "&amp;lt;already-escaped&amp;gt;" in pages[3]
    assert "os:system" in pages[3]  # a pydantic-shaped dict is data: nothing is imported
    assert "#60;svg onload=alert(1)#62;" in pages[4]  # the Mermaid label, entity-encoded


async def test_fork_parent_links(persister: SQLAlchemyPersister) -> None:
    pk = unique("ui-fork")
    await fill(persister, pk, "origin", ["ask", "answer", "ask"])
    parent = ParentPointer("origin", pk, 1)
    await fill(persister, None, unique("fork"), ["answer", "ask"], parent=parent, start=1)
    forks = [a for a in await persister.list_apps(limit=20) if a.app_id.startswith("fork-")]
    fork = forks[0].app_id
    async with serve(create_app(persister)) as base, httpx.AsyncClient(base_url=base) as client:
        for page in (
            await get(client, "/app", id=fork),
            await get(client, "/step", id=fork, seq=2),
        ):
            assert "forked from" in page
            assert f'href="/app?id=origin&amp;partition={pk}"' in page
            assert f'href="/step?id=origin&amp;partition={pk}&amp;seq=1"' in page
        first = await get(client, "/step", id=fork, seq=1)
        assert "Step 0 is not stored in this application (it may be in its parent)" in first


async def test_spawning_parent_link(persister: SQLAlchemyPersister) -> None:
    pk = unique("ui-spawn")
    spawner = ParentPointer("<b>spawner</b>", pk, 3)
    child = unique("child")
    for seq, position in enumerate(["ask", "answer"]):
        await persister.save(
            pk, child, seq, position, State({"n": seq}), "completed", spawning_parent=spawner
        )
    async with serve(create_app(persister)) as base, httpx.AsyncClient(base_url=base) as client:
        for page in (
            await get(client, "/app", id=child, partition=pk),
            await get(client, "/step", id=child, partition=pk, seq=1),
        ):
            assert "spawned by" in page and "forked from" not in page
            assert f'href="/app?id=%3Cb%3Espawner%3C%2Fb%3E&amp;partition={pk}"' in page
            assert "&lt;b&gt;spawner&lt;/b&gt;" in page and "<b>spawner" not in page
            assert "seq=3" in page
        listed = await get(client, "/", partition=pk, scope="named")
        assert "<th>spawned by</th>" in listed
        assert f'href="/step?id=%3Cb%3Espawner%3C%2Fb%3E&amp;partition={pk}&amp;seq=3"' in listed
        searched = await get(client, "/", q=child, match="prefix")  # the search query
        assert "<th>spawned by</th>" in searched and "&lt;b&gt;spawner&lt;/b&gt;" in searched


def chat_builder() -> ApplicationBuilder:
    """A chatbot's graph (the example's shape), for the given-graph pages and the screenshot."""

    @action(reads=[], writes=["question"])
    def human_converse(state: State, question: str) -> tuple[dict[str, str], State]:
        return {}, state.update(question=question)

    @action(reads=["question"], writes=["response"])
    def ai_converse(state: State) -> tuple[dict[str, str], State]:
        return {}, state.update(response="ok")

    return (
        ApplicationBuilder()
        .with_actions(human_converse, ai_converse, terminal=Result("chat_history"))
        .with_transitions(
            ("ai_converse", "human_converse", default),
            ("human_converse", "terminal", expr("'exit' in question")),
            ("human_converse", "ai_converse", default),
        )
        .with_entrypoint("human_converse")
    )


async def test_given_graph_and_observed_fallback(persister: SQLAlchemyPersister) -> None:
    pk = unique("ui-graph")
    await fill(persister, pk, "chat", ["human_converse", "ai_converse", "human_converse"])
    await fill(persister, pk, "stranger", ["elsewhere", "<other>"])
    app = create_app(persister, graph=chat_builder())
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
        page = await get(client, "/app", id="chat", partition=pk)
        assert "The application's graph" in page and "observed graph" not in page
        assert "-- &#34;&#39;exit&#39; in question&#34; --&gt;" in page  # the condition, escaped
        assert re.search(r"style n0_human_converse fill:", page)  # the latest position
        step = await get(client, "/step", id="chat", partition=pk, seq=1)
        assert re.search(r"style n1_ai_converse fill:", step)
        stranger = await get(client, "/app", id="stranger", partition=pk)
        assert "observed graph" in stranger and "not an action of the graph" in stranger
        assert "#60;other#62;" in stranger


# -- read-only ----------------------------------------------------------------------------------
async def table_facts(persister: SQLAlchemyPersister) -> tuple[int, dt.datetime | None]:
    t = persister.table
    async with persister.engine.connect() as conn:
        row = (await conn.execute(sa.select(sa.func.count(), sa.func.max(t.c.created_at)))).one()
    return row[0], row[1]


async def test_read_only_crawl_changes_nothing_and_writes_are_refused(
    persister: SQLAlchemyPersister,
) -> None:
    pk = unique("ui-ro")
    for i in range(3):
        await fill(persister, pk, f"ro-{i}", ["ask", "answer"], failed_last=i == 1)
    before = await table_facts(persister)
    async with serve(create_app(persister)) as base, httpx.AsyncClient(base_url=base) as client:
        todo = [f"/?partition={pk}&limit=1"]
        seen: set[str] = set()
        while todo:
            url = todo.pop()
            if url in seen:
                continue
            seen.add(url)
            page = await get(client, url)
            for found in re.findall(r'href="(/[^"]*)"', page):
                href = html.unescape(found)
                if href.startswith("/static/"):
                    assert (await client.get(href)).status_code == 200
                elif pk in href or href.startswith(("/step", "/app")):
                    todo.append(href)
        assert len(seen) > 12
        for url in (
            "/",
            f"/app?id=ro-0&partition={pk}",
            f"/step?id=ro-0&partition={pk}&seq=0",
            "/static/ui.css",
            "/nowhere",
        ):
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                response = await client.request(method, url, content=b"x")
                assert response.status_code in (405, 404), (method, url)
                if url != "/nowhere":
                    assert response.status_code == 405, (method, url)
    assert await table_facts(persister) == before


# -- serving ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_cli_serves_hides_the_password_and_stops_cleanly(
    db: Database, persister: SQLAlchemyPersister
) -> None:
    pk = unique("ui-cli")
    await fill(persister, pk, "cli-app", ["ask", "answer"])
    url = db.url.replace("postgres@", "postgres:s3cret-pw@") if db.backend == "postgres" else db.url
    port = free_port()
    args = [sys.executable, "-m", "burr_async.cli", "ui", "--url", url, "--port", str(port)]
    args += ["--graph", "examples/chatbot.py:graph"]  # imported from the command line
    if db.schema is not None:
        args += ["--schema", db.schema]
    proc = subprocess.Popen(  # noqa: ASYNC220  # a server process, stopped below
        args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            with anyio.fail_after(30):
                while True:
                    try:
                        page = await get(client, "/", partition=pk)
                        break
                    except httpx.TransportError:
                        assert proc.poll() is None, proc.communicate()
                        await anyio.sleep(0.1)
            assert app_ids_on(page) == ["cli-app"]
            chat = await get(client, "/app", id="cli-app", partition=pk)
            assert "observed graph" in chat and "not an action of the graph" in chat
            assert "s3cret-pw" not in page
            if db.backend == "postgres":
                assert "postgres:***@" in page
            assert "s3cret-pw" not in await get(client, "/app", id="cli-app", partition=pk)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=30))
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in out
    assert "s3cret-pw" not in out + err


async def test_cli_refuses_an_unprovisioned_table(db: Database) -> None:
    args = [
        sys.executable,
        "-m",
        "burr_async.cli",
        "ui",
        "--url",
        db.url,
        "--table-name",
        "nothing_here",
    ]
    if db.schema is not None:
        args += ["--schema", db.schema]
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    )
    assert done.returncode == 1
    assert "not provisioned" in done.stderr and "burr-async" in done.stderr
    bad_graph = [*args[:4], "--graph", "no/such/file.py:graph"]
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(bad_graph, cwd=ROOT, capture_output=True, text=True, timeout=60)
    )
    assert done.returncode == 1 and done.stderr == "error: no such file: no/such/file.py\n"


async def test_lifespan_closes_an_owned_persister(db: Database) -> None:
    owned = db.persister()
    kept = db.persister()
    try:
        for persister in (owned, kept):
            app = create_app(persister, close_persister=persister is owned)
            async with serve(app) as base, httpx.AsyncClient(base_url=base) as client:
                await get(client, "/", limit=1)
        assert owned.closed and not kept.closed
    finally:
        await owned.aclose()
        await kept.aclose()


async def test_mounted_in_fastapi_links_keep_the_prefix(persister: SQLAlchemyPersister) -> None:
    from fastapi import FastAPI

    pk = unique("ui-mount")
    await fill(persister, pk, "mounted", ["ask"])
    host = FastAPI()
    host.mount("/burr", create_app(persister))
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        page = await get(client, "/burr/", partition=pk)
        assert f'href="/burr/app?id=mounted&amp;partition={pk}"' in page
        assert 'href="/burr/static/ui.css"' in page
        assert (await client.get("/burr/static/mermaid.min.js")).status_code == 200
        app_page = await get(client, "/burr/app", id="mounted", partition=pk)
        assert 'src="/burr/static/mermaid.min.js"' in app_page


# -- the browser ------------------------------------------------------------------------------
def chrome() -> Any:
    """Headless Chromium under selenium (Debian's chromium and chromedriver). Skipped when
    they are missing, except under CI, where the browser test must run."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; under CI the browser test must run")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1500",
        "--force-prefers-reduced-motion",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def browse(base: str, pk: str, shots: Path) -> None:
    """List, open the chat app, open a step and the hostile app; each time the graph must be
    drawn (an <svg> inside #graph), with no script of the data run and no CSP violation."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome()
    try:
        driver.set_page_load_timeout(30)

        def graph_drawn() -> None:
            WebDriverWait(driver, 30).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, "#graph[data-rendered]")
            )
            assert driver.find_element(By.ID, "graph").get_attribute("data-rendered") == "true"
            assert driver.find_elements(By.CSS_SELECTOR, "#graph svg")

        def no_alert() -> None:
            try:
                driver.switch_to.alert  # noqa: B018  # raises when there is none
            except NoAlertPresentException:
                return
            raise AssertionError("a script from the stored data ran")

        driver.get(f"{base}/?partition={pk}")
        assert driver.title.startswith("Applications")
        driver.save_screenshot(str(shots / "list.png"))
        driver.find_element(By.LINK_TEXT, "chat-7").click()
        graph_drawn()
        highlighted = driver.find_elements(By.CSS_SELECTOR, "#graph svg .node")
        assert len(highlighted) == 3  # human_converse, ai_converse, terminal
        driver.save_screenshot(str(shots / "app.png"))
        if target := os.environ.get("BURR_ASYNC_DOCS_SCREENSHOT"):
            driver.save_screenshot(target)
        driver.find_element(By.LINK_TEXT, "3").click()
        graph_drawn()
        assert "Step 3 of chat-7" in driver.find_element(By.TAG_NAME, "h1").text
        driver.save_screenshot(str(shots / "step.png"))

        driver.get(f"{base}/?partition={pk}")
        driver.find_element(By.LINK_TEXT, HOSTILE_ID).click()
        graph_drawn()
        no_alert()
        labels = driver.find_element(By.CSS_SELECTOR, "#graph svg").text
        assert "<img src=x onerror=alert(2)>" in labels  # drawn as text
        assert not driver.find_elements(By.CSS_SELECTOR, "#graph svg img, main img, main script")
        driver.save_screenshot(str(shots / "hostile.png"))
        logs = [entry["message"] for entry in driver.get_log("browser")]
        assert not [m for m in logs if "Content Security Policy" in m or "SEVERE" in m], logs
    finally:
        driver.quit()


async def test_browser_draws_the_graph(persister: SQLAlchemyPersister, tmp_path: Path) -> None:
    pk = unique("ui-browser")
    turns = ["human_converse", "ai_converse"] * 4
    history: list[dict[str, str]] = []
    for seq, position in enumerate(turns):
        role = "user" if position == "human_converse" else "assistant"
        history = [*history, {"role": role, "content": f"message {seq} from the {role}"}]
        await persister.save(
            pk,
            "chat-7",
            seq,
            position,
            State({"chat_history": history, "question": history[-1]["content"]}),
            "completed",
        )
    await fill(persister, pk, HOSTILE_ID, ["<img src=x onerror=alert(2)>", "after"])
    app = create_app(persister, graph=chat_builder())
    async with serve(app) as base:
        await anyio.to_thread.run_sync(browse, base, pk, tmp_path)
    assert (tmp_path / "app.png").stat().st_size > 10_000
