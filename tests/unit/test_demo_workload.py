"""`cli/_demo_workload.generate`: what each demo worker publishes (tokens, progress every
ten, a final status with its drops) and reports back. `run()` starts a real server and
pool: it is tested end to end in tests/test_demo.py."""

from __future__ import annotations

import os
import uuid

from helpers.mock_server import SERVER, StoringServer

import zstream_mp
from zstream_mp.cli._demo_workload import generate

RUN = str(uuid.uuid4())


def test_a_worker_publishes_tokens_progress_and_a_final_status(publisher: StoringServer) -> None:
    zstream_mp.bind(RUN, server=SERVER)
    result = generate("pool-0", 25, 0.0)
    assert zstream_mp.flush(10)
    kinds = [e["kind"] for e in publisher.stored]
    assert kinds.count("token") == 25 and kinds[-1] == "status"
    tokens = [e for e in publisher.stored if e["kind"] == "token"]
    assert [e["index"] for e in tokens] == list(range(25))
    assert {e["correlation_id"] for e in publisher.stored} == {"pool-0"}
    progress = [e["payload"] for e in publisher.stored if e["kind"] == "progress"]
    assert [(p["done"], p["total"]) for p in progress] == [(10, 25), (20, 25), (25, 25)]
    status = publisher.stored[-1]["payload"]
    assert status["state"] == "finished" and status["dropped"] == 0
    assert all(e["payload"]["pid"] == os.getpid() for e in publisher.stored)
    assert result["worker"] == "pool-0" and result["pid"] == os.getpid()
    assert result["published"] == len(publisher.stored) == 25 + 3 + 1
    assert sum(result["dropped"].values()) == 0


def test_the_report_counts_what_this_process_published_in_total(
    publisher: StoringServer,
) -> None:
    """A pool process runs several workers: its count is cumulative (the tally keeps the max)."""
    zstream_mp.bind(RUN, server=SERVER)
    first = generate("a", 5, 0.0)
    second = generate("b", 5, 0.0)
    assert second["published"] == first["published"] * 2


def test_a_worker_outside_any_run_reports_its_drops(publisher: StoringServer) -> None:
    result = generate("lonely", 3, 0.0)
    assert result["published"] == 0 and result["dropped"]["no_context"] == 3 + 1 + 1
    assert publisher.posts == []
