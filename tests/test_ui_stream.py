"""The page's own stream carries each event's receive time; the ZenML API stream does not.

Over real servers (memory and Redis brokers): the same run read through
`/api/v1/runs/{id}/events/stream` and `/ui/api/runs/{id}/stream`. The API's frames are
ZenML's (no time anywhere); the page's are the same events, each JSON object with one more
key, `received_at`, within the seconds the test published, after a `clock` frame.
"""

from __future__ import annotations

import json
import time

import pytest
from helpers.servers import RunningServer
from helpers.sse import frames_of, sse_body

import zstream_mp
from zstream_mp.runs import create_run, end_run


def _publish(srv: RunningServer, n: int) -> tuple[str, float, float]:
    run_id = create_run(srv.url)
    before = time.time()
    with zstream_mp.bind(run_id, server=srv.url, step_name="s"):
        for i in range(n):
            zstream_mp.publish({"i": i, "text": "<b>x</b>"}, kind="custom", index=i)
        assert zstream_mp.flush(10)
    after = time.time()
    end_run(srv.url, run_id)
    return run_id, before, after


@pytest.mark.parametrize("which", ["server", "redis_server"])
def test_page_stream_adds_receive_times_and_the_api_stays_zenml(
    which: str, request: pytest.FixtureRequest
) -> None:
    srv: RunningServer = request.getfixturevalue(which)
    run_id, before, after = _publish(srv, 5)
    status, _, api = sse_body(f"{srv.url}/api/v1/runs/{run_id}/events/stream")
    assert status == 200
    status, _, page = sse_body(f"{srv.url}/ui/api/runs/{run_id}/stream")
    assert status == 200
    assert b"received_at" not in api and b"clock" not in api

    assert page.startswith(b"retry: 1000\n\nevent: clock\ndata: {")
    frames = frames_of(page)
    clock = json.loads(frames[1]["data"])["now"]
    assert before - 1 <= clock <= time.time() + 1
    api_events = [f for f in frames_of(api) if f.get("event") == "custom"]
    page_events = [f for f in frames if f.get("event") == "message"]
    assert [f["id"] for f in page_events] == [f["id"] for f in api_events] and len(api_events) == 5
    for api_frame, page_frame in zip(api_events, page_events, strict=True):
        data = page_frame["data"]
        head, _, _ = data.rpartition(',"received_at":')
        assert head + "}" == api_frame["data"]  # the API's JSON, one key added at the end
        received = json.loads(data)["received_at"]
        assert before - 1 <= received <= after + 1, (before, received, after)
    assert frames[-1]["event"] == "end"


def test_status_and_list_carry_the_run_summary(server: RunningServer) -> None:
    import httpx

    run_id, before, after = _publish(server, 4)
    info = httpx.get(f"{server.url}/api/v1/zstream/runs/{run_id}").json()
    assert info["ended"] is True and info["state"] == "ended"
    assert info["events"] == 4 and info["steps"] == ["s"] and info["step_count"] == 1
    assert before - 1 <= info["first_event"] <= info["last_event"] <= after + 1
    assert info["last_event_id"] is not None and info["processes"] == 0
    page = httpx.get(
        f"{server.url}/api/v1/zstream/runs", params={"order": "newest", "limit": 1}
    ).json()
    assert page["runs"][0]["id"] == run_id and page["next"]
    for bad in ({"limit": "0"}, {"limit": "x"}, {"order": "up"}, {"cursor": "nope"}):
        assert httpx.get(f"{server.url}/api/v1/zstream/runs", params=bad).status_code == 422
