"""The run list is paged and cheap per request on both brokers (issue 19, row 8).

20,000 runs, each with events: a page of the list must cost milliseconds (the summaries
are kept at ingest, no run's stream is read to list it), paging must visit every run
exactly once, and 40 concurrent listers asking for the largest page must leave the event
loop free: `/ready` answers 200 throughout. On Redis the runs are listed by a server
process started after they were written (the shared index, not a process's memory,
lists them). The figures are printed and saved as an artifact.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.redis import RunningRedis
from helpers.servers import RunningServer, start_server

RUNS = 20_000
LISTERS = 40
LOAD_S = 5.0
LIST_PATH = "/api/v1/zstream/runs"
PAGE_P95_MS = 100.0
READY_MAX_MS = 2000.0
"""`/ready` answers 503 when its broker probe takes 2 s: the loop must never be that busy."""
ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"


def _event(run_id: str, i: int) -> dict[str, Any]:
    return {
        "pipeline_run_id": run_id,
        "step_name": f"step-{i % 3}",
        "kind": "metric",
        "payload": {"pid": 100 + i % 4, "i": i},
    }


def _populate_over_http(url: str, run_ids: list[str]) -> None:
    def post(chunk: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for n, run_id in enumerate(chunk):
                body = {"events": [_event(run_id, n), _event(run_id, n + 1)]}
                key = {"Idempotency-Key": str(uuid.uuid4())}  # as the publisher sends it
                r = client.post(f"/api/v1/runs/{run_id}/events", json=body, headers=key)
                assert r.status_code == 200, r.text

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(post, [run_ids[i::4] for i in range(4)]))


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def _measure(url: str, run_ids: list[str]) -> dict[str, Any]:
    figures: dict[str, Any] = {"runs": len(run_ids)}
    with httpx.Client(base_url=url, timeout=30) as client:
        # correctness: newest first, and paging visits every run exactly once
        first = client.get(LIST_PATH, params={"order": "newest", "limit": 50}).json()
        assert [r["id"] for r in first["runs"]] == run_ids[::-1][:50]
        assert first["runs"][0]["events"] == 2 and first["runs"][0]["processes"] == 2
        assert first["runs"][0]["step_count"] == 2 and first["runs"][0]["started"] > 0
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = client.get(LIST_PATH, params={"cursor": cursor} if cursor else {}).json()
            seen += [r["id"] for r in page["runs"]]
            pages += 1
            cursor = page["next"]
            if cursor is None:
                break
        assert set(run_ids) <= set(seen) and len(seen) == len(set(seen)), "paging"
        figures["pages_of_1000"] = pages

        for label, params in (
            ("page_50", {"order": "newest", "limit": 50}),
            ("page_1000", {"order": "newest", "limit": 1000}),
            ("deep_page_50", {"order": "newest", "limit": 50, "cursor": page_cursor(client)}),
        ):
            samples = []
            for _ in range(30):
                t0 = time.perf_counter()
                assert client.get(LIST_PATH, params=params).status_code == 200
                samples.append(time.perf_counter() - t0)
            figures[label] = _ms(samples)

    stop = threading.Event()
    lists: list[float] = []
    ready: list[tuple[int, float]] = []

    def lister() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                t0 = time.perf_counter()
                assert client.get(LIST_PATH, params={"limit": 1000}).status_code == 200
                lists.append(time.perf_counter() - t0)

    def prober() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                t0 = time.perf_counter()
                status = client.get("/ready").status_code
                ready.append((status, time.perf_counter() - t0))
                time.sleep(0.1)

    threads = [threading.Thread(target=lister) for _ in range(LISTERS)]
    threads.append(threading.Thread(target=prober))
    for t in threads:
        t.start()
    time.sleep(LOAD_S)
    stop.set()
    for t in threads:
        t.join(30)
    figures["concurrent"] = {
        "listers": LISTERS,
        "lists_per_s": round(len(lists) / LOAD_S, 1),
        "list": _ms(lists),
        "ready_probes": len(ready),
        "ready_non_200": sum(1 for s, _ in ready if s != 200),
        "ready": _ms([d for _, d in ready]),
    }
    return figures


def page_cursor(client: httpx.Client) -> str:
    """A cursor 15,000 runs deep (a deep page costs what the first does)."""
    cursor = None
    for _ in range(15):
        params: dict[str, Any] = {"order": "newest", "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        cursor = client.get(LIST_PATH, params=params).json()["next"]
    assert cursor
    return str(cursor)


def _check(figures: dict[str, Any], name: str) -> None:
    print(f"\nrun list, {name}: {json.dumps(figures, indent=1)}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"run_list_cost_{name}.json").write_text(json.dumps(figures, indent=1))
    assert figures["page_50"]["p95_ms"] < PAGE_P95_MS, figures
    assert figures["deep_page_50"]["p95_ms"] < PAGE_P95_MS, figures
    concurrent = figures["concurrent"]
    assert concurrent["ready_non_200"] == 0, figures
    assert concurrent["ready_probes"] >= 3
    assert concurrent["ready"]["max_ms"] < READY_MAX_MS, figures


@pytest.mark.timeout(240)
def test_memory_run_list_is_paged_and_cheap() -> None:
    run_ids = [str(uuid.uuid4()) for _ in range(RUNS)]
    with start_server(heartbeat=1) as srv:
        t0 = time.perf_counter()
        _populate_over_http(srv.url, run_ids)
        populate = time.perf_counter() - t0
        ordered = _ingest_order(srv, run_ids)
        figures = _measure(srv.url, ordered)
        figures["populate_s"] = round(populate, 1)
    _check(figures, "memory")


def _ingest_order(srv: RunningServer, run_ids: list[str]) -> list[str]:
    """Four posting threads interleave: the server's own oldest-first order is the truth."""
    order: list[str] = []
    cursor = None
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        while True:
            params = {"cursor": cursor} if cursor else {}
            page = client.get(LIST_PATH, params=params).json()
            order += [r["id"] for r in page["runs"]]
            cursor = page["next"]
            if cursor is None:
                break
    wanted = set(run_ids)
    mine = [r for r in order if r in wanted]
    assert sorted(mine) == sorted(run_ids)
    return mine


@pytest.mark.redis
@pytest.mark.timeout(300)
def test_redis_run_list_is_paged_and_cheap(redis: RunningRedis) -> None:
    run_ids = [str(uuid.uuid4()) for _ in range(RUNS)]
    with start_server(broker=redis.url, heartbeat=1) as srv:
        t0 = time.perf_counter()
        _populate_over_http(srv.url, run_ids)
        populate = time.perf_counter() - t0
    with start_server(broker=redis.url, heartbeat=1) as srv:  # a new process: nothing in memory
        ordered = _ingest_order(srv, run_ids)
        figures = _measure(srv.url, ordered)
        figures["populate_s"] = round(populate, 1)
    _check(figures, "redis")
