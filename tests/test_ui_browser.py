"""The live page in a real headless Chromium: every event shown once, through server restarts.

Debian's `chromium` driven by Playwright (never a downloaded browser). A `Pool(4)`
publishes 500 `progress` events in three phases; between them the server is killed
(SIGKILL, the page's connection just dies) and stopped (SIGTERM: `gap: shutdown` then
`end`), each time restarted on the same port and Redis. The page must resume with
`Last-Event-ID` and end with exactly the 500 (worker, seq) pairs, none twice, and every
worker's bar at 100%. A screenshot lands in `tests/_artifacts/`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.redis import RunningRedis
from helpers.servers import RunningServer, free_port, start_server

import zstream_mp
from zstream_mp.runs import create_run, end_run

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"
WORKERS = 4
PER_WORKER = 125
PHASES = ((0, 63), (63, 94), (94, PER_WORKER))  # seq ranges per worker: 252, 124, 124 events

if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install -y chromium): "
        "browser tests of the live page NOT run",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")


def _publish(args: tuple[int, int, int]) -> int:
    worker, first, stop = args
    for seq in range(first, stop):
        zstream_mp.publish(
            {"worker": f"worker-{worker}", "seq": seq, "done": seq + 1, "total": PER_WORKER},
            kind="progress",
            correlation_id=f"worker-{worker}",
            index=seq,
        )
    return stop - first


def _phase(run_id: str, url: str, first: int, stop: int) -> None:
    zstream_mp.bind(run_id, server=url)
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        assert sum(pool.map(_publish, [(w, first, stop) for w in range(WORKERS)])) == WORKERS * (
            stop - first
        )
        pool.close()
        pool.join()


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _count(page: Any) -> int:
    return int(page.evaluate("() => document.body.dataset.count || '0'"))


def _wait_count(page: Any, n: int, timeout: float = 60_000) -> None:
    page.wait_for_function(
        f"() => Number(document.body.dataset.count || 0) >= {n}", timeout=timeout
    )


def test_page_shows_every_event_once_across_server_restarts(
    browser: Any, redis: RunningRedis
) -> None:
    port = free_port()
    srv: RunningServer = start_server(port=port, broker=redis.url, heartbeat=1)
    try:
        run_id = create_run(srv.url)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        streams: list[dict[str, str]] = []
        page.on(
            "request",
            lambda r: (
                streams.append({"url": r.url, **r.all_headers()}) if "/stream" in r.url else None
            ),
        )
        page.goto(f"{srv.url}/runs/{run_id}")
        page.wait_for_function("() => document.body.dataset.state === 'live'", timeout=20_000)

        expected = 0
        for phase, (first, stop) in enumerate(PHASES):
            _phase(run_id, srv.url, first, stop)
            expected += WORKERS * (stop - first)
            _wait_count(page, expected)
            assert _count(page) == expected
            if phase == 0:  # the connection dies with the server; a new one on the same port
                srv.proc.kill()
                srv.proc.wait(10)
                srv.stop()
            elif phase == 1:  # graceful: gap shutdown + end, which is not the run's end
                srv.stop()
            else:
                break
            srv = start_server(port=port, broker=redis.url, heartbeat=1)
            page.wait_for_function("() => document.body.dataset.state === 'live'", timeout=30_000)

        end_run(srv.url, run_id)
        page.wait_for_function("() => document.body.dataset.state === 'ended'", timeout=20_000)

        rows = page.eval_on_selector_all(
            "#events tr[data-id]",
            "rows => rows.map(r => [r.dataset.id, r.querySelector('.payload').textContent])",
        )
        ids = [row[0] for row in rows]
        pairs = [(p["worker"], p["seq"]) for p in (json.loads(row[1]) for row in rows)]
        want = {(f"worker-{w}", s) for w in range(WORKERS) for s in range(PER_WORKER)}
        assert len(rows) == WORKERS * PER_WORKER == 500
        assert len(set(ids)) == len(ids), "an event id is shown twice"
        assert len(set(pairs)) == len(pairs) and set(pairs) == want
        assert _count(page) == 500
        assert page.evaluate("() => document.body.dataset.dupes") == "0"
        bars = page.eval_on_selector_all(
            "#progress .bar-row", "rows => rows.map(r => [r.dataset.worker, r.dataset.pct])"
        )
        assert sorted(bars) == [[f"worker-{w}", "100"] for w in range(WORKERS)]
        assert page.is_hidden("#login")  # an open server asks for no token
        # the browser's own reconnect after the SIGKILL resumed with Last-Event-ID; the page
        # reopened after the graceful stop's `end` with ?since= (a new EventSource)
        assert any("last-event-id" in h for h in streams), streams
        assert any("since=" in h["url"] for h in streams), streams
        reconnects = int(page.inner_text("#reconnects"))
        assert reconnects >= 2, reconnects
        assert page.inner_text("#gaps") == "1"  # the graceful stop's `gap: shutdown`

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui_run_page.png"), full_page=False)

        index = browser.new_page()
        index.goto(srv.url + "/")
        index.wait_for_selector(f"tr[data-run='{run_id}']", timeout=10_000)
        assert "ended" in index.inner_text(f"tr[data-run='{run_id}']")
    finally:
        srv.stop()


def test_page_reads_with_a_token_that_never_appears_in_a_url(browser: Any) -> None:
    token = "read-token-" + os.urandom(6).hex()
    with start_server(token=token, heartbeat=1) as srv:
        run_id = create_run(srv.url, token=token)
        page = browser.new_page()
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))
        page.goto(f"{srv.url}/runs/{run_id}")
        page.wait_for_selector("#login", state="visible", timeout=10_000)
        page.fill("#token", "wrong-token")
        page.click("#login button")
        page.wait_for_function(
            "() => document.getElementById('login-error').textContent.length > 0", timeout=10_000
        )
        page.fill("#token", token)
        page.click("#login button")
        page.wait_for_function("() => document.body.dataset.state === 'live'", timeout=20_000)

        assert page.is_hidden("#login")
        zstream_mp.bind(run_id, server=srv.url, token=token)
        for i in range(20):
            zstream_mp.publish({"text": f"t{i} "}, kind="token", correlation_id="chat", index=i)
        assert zstream_mp.flush(10)
        _wait_count(page, 20)
        joined = page.inner_text(".token-stream[data-correlation='chat']")
        assert "".join(f"t{i} " for i in range(20)).strip() in joined

        cookies = page.context.cookies()
        session = [c for c in cookies if c["value"] == token]
        assert session and all(c["httpOnly"] for c in session), cookies
        assert all(c["sameSite"] == "Strict" for c in session)
        assert not any(token in url for url in urls), "the token appeared in a URL"
        end_run(srv.url, run_id, token=token)
        page.wait_for_function("() => document.body.dataset.state === 'ended'", timeout=20_000)


def test_filters_by_kind_step_and_correlation_id(browser: Any, server: RunningServer) -> None:
    run_id = create_run(server.url)
    page = browser.new_page()
    page.goto(f"{server.url}/runs/{run_id}")
    page.wait_for_function("() => document.body.dataset.state === 'live'", timeout=20_000)
    for step in ("train", "eval"):
        with zstream_mp.bind(run_id, server=server.url, step_name=step):
            for i in range(5):
                for corr in ("a", "b"):
                    zstream_mp.publish({"text": corr}, kind="token", correlation_id=corr, index=i)
            zstream_mp.publish({"state": step}, kind="status")
            assert zstream_mp.flush(10)
    _wait_count(page, 22)

    def shown() -> list[list[str]]:
        return list(
            page.eval_on_selector_all(
                "#events tr[data-id]",
                "rows => rows.map(r => [...r.children].slice(2, 5).map(c => c.textContent))",
            )
        )

    assert len(shown()) == 22
    page.select_option("#f-kind", "status")
    assert [r[0] for r in shown()] == ["status", "status"]
    page.select_option("#f-kind", "")
    page.select_option("#f-step", "eval")
    assert len(shown()) == 11 and {r[1] for r in shown()} == {"eval"}
    page.fill("#f-corr", "a")
    assert len(shown()) == 5 and {(r[1], r[2]) for r in shown()} == {("eval", "a")}
    assert "showing 5 of 22" in page.inner_text("#shown")
    page.fill("#f-corr", "")
    page.select_option("#f-step", "")
    assert len(shown()) == 22
    joined = page.inner_text(".token-stream[data-correlation='a']")
    assert "aaaaaaaaaa" in joined  # ten tokens of "a", joined in index order per stream
