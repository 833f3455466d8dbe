"""The live page as a person sees it, in Debian's headless Chromium (never a downloaded one).

A run with what a real one carries (per-worker progress with a `loss` from a forked
pool, `LogHandler` records with an exception, token streams, statuses) is watched live;
each view is asserted in the DOM (a time on every row, a log line's level and message as
text, the newest-first and follow controls, both charts, a rate and ETA per worker), and
screenshots are saved at 1280 px and 390 px under the test's tmp dir and copied to
`docs/img/` for the page guide. A page opened after a burst must show 0 events/s a few
seconds later (the replay is not a rate); the index lists runs newest first with their
start time and event count, and never has two requests in flight.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.servers import REPO, RunningServer

import zstream_mp
from zstream_mp.logs import LogHandler
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
DOCS_IMG = REPO / "docs" / "img"
HMS = re.compile(r"^\d\d:\d\d:\d\d$")
WORKERS = 3
WORDS = ("the", "loss", "falls", "as", "every", "worker", "streams", "its", "tokens", "back")
STEPS = 40

if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install -y chromium): "
        "browser tests of the live page NOT run",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _shoot(page: Any, tmp_path: Path, name: str, full_page: bool = True) -> Path:
    """A screenshot as a test artifact, copied to docs/img/ for the page guide."""
    path = tmp_path / name
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=full_page)
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, DOCS_IMG / name)
    return path


# -- the workload ---------------------------------------------------------------------------
def _train(worker: int) -> int:
    """One pool process: progress with a falling loss, and a log line now and then."""
    log = logging.getLogger(f"train.worker{worker}")
    log.setLevel(logging.INFO)
    log.addHandler(LogHandler())
    pid = os.getpid()
    for step in range(STEPS):
        loss = round(2.0 * 0.93**step + 0.05 * worker + 0.03 * ((step * 7 + worker) % 5), 4)
        zstream_mp.publish(
            {
                "worker": f"worker-{worker}",
                "pid": pid,
                "done": step + 1,
                "total": STEPS,
                "loss": loss,
            },
            kind="progress",
            correlation_id=f"worker-{worker}",
            index=step,
        )
        if step % 10 == 0:
            log.info("epoch %d: loss %.3f", step // 10, loss)
        time.sleep(0.06 + 0.02 * worker)
    zstream_mp.flush(10)
    return STEPS


def _workload(url: str, run_id: str) -> None:
    """Everything a watched run carries: a forked pool, logs with levels, token streams."""
    log = logging.getLogger("pipeline")
    log.setLevel(logging.DEBUG)
    handler = LogHandler()
    log.addHandler(handler)
    try:
        with zstream_mp.bind(run_id, server=url, step_name="train"):
            zstream_mp.publish({"state": "fan-out starting", "pid": os.getpid()}, kind="status")
            log.debug("loading 3 shards from the cache")
            log.info("training on %d workers", WORKERS)
            with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
                pending = pool.map_async(_train, range(WORKERS))
                words = WORDS
                for i in range(36):
                    for corr in ("summary-a", "summary-b"):
                        zstream_mp.publish(
                            {"text": words[(i + len(corr)) % len(words)] + " "},
                            kind="token",
                            correlation_id=corr,
                            index=i,
                        )
                    time.sleep(0.05)
                log.warning("worker-2 is slower than the others (shared GPU)")
                try:
                    raise ValueError("shard 7 has 3 rows with a NaN label")
                except ValueError:
                    log.exception("validation failed for shard 7; skipping it")
                assert pending.get(60) == [STEPS] * WORKERS
            log.info("all %d workers done", WORKERS)
            zstream_mp.publish({"state": "fan-out finished"}, kind="status")
            assert zstream_mp.flush(10)
    finally:
        log.removeHandler(handler)


def _rows(page: Any) -> list[list[str]]:
    return list(
        page.eval_on_selector_all(
            "#events tr[data-id]",
            "rows => rows.map(r => [...r.children].map(c => c.textContent))",
        )
    )


# -- the run page ---------------------------------------------------------------------------
def test_run_page_views_live_at_1280_and_390(
    browser: Any, server: RunningServer, tmp_path: Path
) -> None:
    run_id = create_run(server.url)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    page.goto(f"{server.url}/runs/{run_id}")
    page.wait_for_function("() => document.body.dataset.state === 'live'", timeout=20_000)

    worker = multiprocessing.get_context("fork").Process(
        target=_workload, args=(server.url, run_id)
    )
    worker.start()
    # mid-run: a live rate, per-worker pace, a chart with bars
    page.wait_for_function("() => Number(document.body.dataset.rate || 0) > 0", timeout=30_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#progress .bar-row')]"
        ".some(r => Number(r.dataset.pct) >= 45 && /ETA/.test(r.textContent))",
        timeout=30_000,
    )
    assert page.eval_on_selector_all("#rate-svg rect", "r => r.length") >= 1
    _shoot(page, tmp_path, "page-run-live-1280.png", full_page=False)
    worker.join(90)
    assert worker.exitcode == 0
    expected = 2 + 5 + WORKERS * (STEPS + STEPS // 10) + 72  # statuses, logs, pool, tokens
    page.wait_for_function(
        f"() => Number(document.body.dataset.count || 0) >= {expected}", timeout=30_000
    )

    # a time on every row, newest first by default
    rows = _rows(page)
    assert len(rows) == expected
    assert all(HMS.match(r[0]) for r in rows), rows[:3]
    ids = [int(r[1]) for r in rows]
    assert ids == sorted(ids, reverse=True)
    assert HMS.match(page.inner_text("#started")) and HMS.match(page.inner_text("#last-event"))
    assert re.match(r"^\d+s$|^\dm \d\ds$", page.inner_text("#elapsed"))
    status = httpx.get(f"{server.url}/ui/api/runs/{run_id}").json()
    assert status["events"] == expected and status["steps"] == ["train"]
    assert int(page.inner_text("#processes")) == status["processes"] >= 2
    # the newest-first control flips the order; follow off holds new rows back
    page.uncheck("#newest-first")
    ids = [int(r[1]) for r in _rows(page)]
    assert ids == sorted(ids)
    page.check("#newest-first")
    assert page.is_checked("#follow")

    # logs: level and message as text, the exception folded
    error = page.locator(".log-line[data-level='ERROR']")
    assert error.count() == 1
    assert error.locator(".lvl").inner_text() == "ERROR"
    assert "validation failed for shard 7" in error.locator(".msg").inner_text()
    assert HMS.match(error.locator("time").inner_text())
    assert not error.locator("details.exc").evaluate("d => d.open")
    assert "ValueError: shard 7" in error.locator("details.exc summary").inner_text()
    assert page.locator(".log-line[data-level='WARNING'] .msg").inner_text().startswith("worker-2")
    page.select_option("#log-level", "30")
    assert page.locator(".log-line").count() == 2  # the warning and the error
    page.select_option("#log-level", "0")

    # progress: every worker done with a pace; token cards fold and are height-capped
    bars = page.eval_on_selector_all(
        "#progress .bar-row", "rows => rows.map(r => [r.dataset.worker, r.dataset.pct])"
    )
    assert sorted(bars) == [[f"worker-{w}", "100"] for w in range(WORKERS)]
    paces = page.eval_on_selector_all("#progress .pace", "p => p.map(x => x.textContent)")
    assert all(p.startswith("done in") for p in paces), paces
    card = page.locator(".token-stream[data-correlation='summary-a']")
    assert card.evaluate("d => d.tagName") == "DETAILS" and card.evaluate("d => d.open")
    box = card.locator(".token-text").bounding_box()
    assert box is not None and box["height"] <= 8.5 * 14 + 2

    # charts: the events/s bars and the loss plot, one line per worker
    assert page.eval_on_selector_all("#rate-svg rect", "r => r.length") >= 1
    assert page.input_value("#plot-field") == "loss"
    series = page.eval_on_selector_all("#field-svg path", "p => p.map(x => x.dataset.series)")
    assert sorted(series) == [f"worker-{w}" for w in range(WORKERS)]

    # filters visibly apply: the pill says how many rows of how many
    page.fill("#f-search", "NaN label")
    assert len(_rows(page)) == 1
    assert page.is_visible("#shown") and "showing 1 of" in page.inner_text("#shown")
    assert page.is_visible("#f-clear")
    page.click("#f-clear")
    assert len(_rows(page)) == expected and page.is_hidden("#shown")
    page.select_option("#f-kind", "log")
    assert {r[2] for r in _rows(page)} == {"log"}
    page.select_option("#f-kind", "")

    # the table scrolls in its own box: the page is not as tall as its events
    assert page.evaluate("() => document.documentElement.scrollHeight") < 2600

    end_run(server.url, run_id)
    page.wait_for_function("() => document.body.dataset.state === 'ended'", timeout=20_000)
    page.wait_for_timeout(1200)  # a tick of the clock: the ended run's pace and elapsed
    _shoot(page, tmp_path, "page-run-1280.png")
    page.locator("#logs-section").screenshot(path=str(tmp_path / "page-logs-1280.png"))
    shutil.copy(tmp_path / "page-logs-1280.png", DOCS_IMG / "page-logs-1280.png")

    # a phone: progress bars stay, nothing wider than the screen but the table's own box
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    widths = page.eval_on_selector_all(
        "#progress .bar", "bars => bars.map(b => b.getBoundingClientRect().width)"
    )
    assert len(widths) == WORKERS and all(w > 200 for w in widths), widths
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    _shoot(page, tmp_path, "page-run-390.png")

    assert not missing, missing  # the favicon too
    icon = httpx.get(f"{server.url}/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert page.get_attribute("link[rel=icon]", "href") == "/favicon.svg"


def test_rate_is_zero_on_a_page_opened_after_a_burst(browser: Any, server: RunningServer) -> None:
    run_id = create_run(server.url)
    before = time.time()
    with zstream_mp.bind(run_id, server=server.url):
        for i in range(400):
            zstream_mp.publish({"i": i}, kind="metric")
        assert zstream_mp.flush(10)
    after = time.time()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{server.url}/runs/{run_id}")
    page.wait_for_function("() => Number(document.body.dataset.count || 0) === 400")
    page.wait_for_timeout(3000)
    assert page.inner_text("#rate") == "0"
    assert page.evaluate("() => document.body.dataset.rate") == "0"
    assert page.eval_on_selector_all("#rate-svg rect", "r => r.length") == 0  # replay: no bars
    rows = _rows(page)
    assert len(rows) == 400 and all(HMS.match(r[0]) for r in rows)
    # the rows show when the server received the events, not when the page did
    stamps = page.eval_on_selector_all(
        "#events td.time", "cells => cells.map(c => c.getAttribute('title'))"
    )
    assert all(s for s in stamps)
    seconds = {time.strftime("%H:%M:%S", time.localtime(t)) for t in (before, after)}
    assert page.inner_text("#started") in seconds | {
        time.strftime("%H:%M:%S", time.localtime(t)) for t in range(int(before), int(after) + 1)
    }


# -- the index ------------------------------------------------------------------------------
def test_index_newest_first_with_count_and_start_never_stacking(
    browser: Any, server: RunningServer, tmp_path: Path
) -> None:
    made: list[tuple[str, int]] = []
    for n in (3, 12, 7):
        run_id = create_run(server.url)
        with zstream_mp.bind(run_id, server=server.url, step_name=f"step-{n}"):
            for i in range(n):
                zstream_mp.publish({"i": i, "pid": 1000 + i % 2}, kind="metric")
            assert zstream_mp.flush(10)
        made.append((run_id, n))
        time.sleep(0.05)
    end_run(server.url, made[0][0])

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    # every fetch takes 2.5 s more: a page that polls on a timer would stack requests
    page.add_init_script(
        """(() => {
          const real = window.fetch.bind(window);
          window.__inflight = 0; window.__maxInflight = 0; window.__fetches = 0;
          window.fetch = async (...args) => {
            window.__inflight += 1; window.__fetches += 1;
            window.__maxInflight = Math.max(window.__maxInflight, window.__inflight);
            try {
              const r = await real(...args);
              await new Promise(ok => setTimeout(ok, 2500));
              return r;
            } finally { window.__inflight -= 1; }
          };
        })()"""
    )
    page.goto(server.url + "/")
    page.wait_for_selector(f"tr[data-run='{made[-1][0]}']", timeout=15_000)
    listed = page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.run)")
    mine = [r for r in listed if r in {m[0] for m in made}]
    assert mine == [m[0] for m in reversed(made)], "not newest first"
    for run_id, n in made:
        row = page.locator(f"tr[data-run='{run_id}']")
        assert row.locator("td.events").inner_text() == str(n)
        assert HMS.match(row.locator("td.started time").inner_text())
        assert row.locator("td.steps").inner_text() == f"step-{n}"
        assert row.locator("td.processes").inner_text() == "2"
    assert page.locator(f"tr[data-run='{made[0][0]}'] .badge").inner_text() == "ended"
    page.wait_for_timeout(7000)
    assert page.evaluate("() => window.__fetches") >= 2
    assert page.evaluate("() => window.__maxInflight") == 1
    _shoot(page, tmp_path, "page-index-1280.png", full_page=False)
    page.set_viewport_size({"width": 390, "height": 700})
    page.wait_for_timeout(300)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    _shoot(page, tmp_path, "page-index-390.png", full_page=False)


def test_index_pages_through_runs(browser: Any, server: RunningServer) -> None:
    for _ in range(55):
        create_run(server.url)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server.url + "/")
    page.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 50")
    first = page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.run)")
    assert page.is_disabled("#newer") and page.is_enabled("#older")
    page.click("#older")
    page.wait_for_function("() => document.getElementById('page-label').textContent === 'page 2'")
    page.wait_for_function(
        f"() => !document.querySelector(\"tr[data-run='{first[0]}']\")", timeout=10_000
    )
    second = page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.run)")
    assert second and not set(first) & set(second)
    page.click("#newer")
    page.wait_for_selector(f"tr[data-run='{first[0]}']", timeout=10_000)


# -- hostile events -------------------------------------------------------------------------
HOSTILE = [
    "<img src=x onerror=\"window.__xss='img'\">",
    "<script>window.__xss='script'</script>",
    "<svg onload=\"window.__xss='svg'\"></svg>",
    '"><iframe src="javascript:window.__xss=1">',
    "javascript:window.__xss='href'",
    "</title><script>window.__xss='title'</script>",
    "{{constructor.constructor('window.__xss=1')()}}",
    "\u202e\u0000<b>bidi</b>",
]


def test_no_xss_from_hostile_events_in_any_view(browser: Any, server: RunningServer) -> None:
    run_id = create_run(server.url)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{server.url}/runs/{run_id}")
    page.wait_for_function("() => document.body.dataset.state === 'live'", timeout=20_000)
    published = 0
    for n, bad in enumerate(HOSTILE):
        with zstream_mp.bind(run_id, server=server.url, step_name=bad):
            zstream_mp.publish({"text": bad}, kind="token", correlation_id=bad, index=n)
            zstream_mp.publish(
                {"worker": bad, "done": n + 1, "total": len(HOSTILE), bad: n + 0.5, "pid": n},
                kind="progress",
                correlation_id=bad,
            )
            zstream_mp.publish(
                {"level": bad, "logger": bad, "message": bad, "exception": bad, "where": bad},
                kind="log",
            )
            zstream_mp.publish({bad: bad, "nested": [bad, {bad: bad}]}, kind=bad[:60].strip())
            published += 4
            assert zstream_mp.flush(10)
    page.wait_for_function(f"() => Number(document.body.dataset.count) === {published}")
    for field in HOSTILE[:3]:  # plot the hostile field names too
        page.select_option("#plot-field", field)
        page.wait_for_timeout(50)
    page.fill("#f-search", "<img")
    page.fill("#f-search", "")
    page.wait_for_timeout(1200)
    assert page.evaluate("() => window.__xss") is None
    assert not dialogs
    assert page.locator("main img, main iframe, main script, #tokens svg, #logs svg").count() == 0
    assert page.locator(".token-stream").count() == len(HOSTILE)
    assert HOSTILE[0] in page.locator(".log-line .msg").first.inner_text()
    index = browser.new_page()
    index.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    index.goto(server.url + "/")
    index.wait_for_selector(f"tr[data-run='{run_id}']", timeout=10_000)
    assert HOSTILE[0][:40] in index.locator(f"tr[data-run='{run_id}'] td.steps").inner_text()
    assert index.evaluate("() => window.__xss") is None and not dialogs
