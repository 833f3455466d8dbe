"""`zstream_mp.runs` against a real server: typed results and typed errors."""

from __future__ import annotations

import uuid

import httpx
import pytest
from helpers.servers import TEST_TOKEN, RunningServer, start_server

import zstream_mp
from zstream_mp._wire import runs_url
from zstream_mp.errors import (
    AuthenticationError,
    InvalidContextError,
    PermissionDeniedError,
    RunNotFoundError,
    ServerUnavailableError,
)
from zstream_mp.runs import RunInfo, create_run, end_run, list_runs, run_status


def test_lifecycle(server: RunningServer) -> None:
    run_id = create_run(server.url)
    assert uuid.UUID(run_id)
    assert run_status(server.url, run_id) == RunInfo(run_id, ended=False)
    chosen = str(uuid.uuid4())
    assert create_run(server.url, chosen) == chosen
    assert create_run(server.url, chosen) == chosen  # creating twice is fine

    with zstream_mp.bind(run_id, server=server.url):
        for i in range(3):
            zstream_mp.publish({"i": i}, kind="status")
        assert zstream_mp.flush(10)
    info = run_status(server.url, run_id)
    assert info.last_event_id is not None and not info.ended

    assert end_run(server.url, run_id).ended
    assert end_run(server.url, run_id).ended  # ending twice is fine
    listed = {r.id: r for r in list_runs(server.url)}
    assert listed[run_id].ended and listed[run_id].last_event_id is not None
    assert chosen in listed and not listed[chosen].ended
    order = [r.id for r in list_runs(server.url)]
    assert order.index(run_id) < order.index(chosen)  # oldest first


def test_unknown_run_is_not_found(server: RunningServer) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(RunNotFoundError) as caught:
        run_status(server.url, unknown)
    assert caught.value.status == 404
    assert unknown not in {r.id for r in list_runs(server.url)}
    response = httpx.get(f"{server.url}/api/v1/zstream/runs/{unknown}")
    assert response.status_code == 404


def test_runs_published_to_are_listed(server: RunningServer) -> None:
    run_id = str(uuid.uuid4())
    with zstream_mp.bind(run_id, server=server.url):
        zstream_mp.publish({"x": 1}, kind="status")
        assert zstream_mp.flush(10)
    assert run_id in {r.id for r in list_runs(server.url)}
    assert run_status(server.url, run_id).last_event_id is not None


def test_list_answers_get_not_405(server: RunningServer) -> None:
    response = httpx.get(f"{server.url}/api/v1/zstream/runs")
    assert response.status_code == 200
    assert isinstance(response.json()["runs"], list)


def test_bad_run_id_is_refused_before_any_request() -> None:
    with pytest.raises(InvalidContextError):
        run_status("http://127.0.0.1:9", "not-a-uuid")


def test_auth_errors(auth_server: RunningServer, tmp_path: object) -> None:
    with pytest.raises(AuthenticationError):
        list_runs(auth_server.url)
    with pytest.raises(AuthenticationError):
        create_run(auth_server.url, token="wrong-token-000")
    run_id = create_run(auth_server.url, token=TEST_TOKEN)
    assert run_status(auth_server.url, run_id, token=TEST_TOKEN).id == run_id
    from pathlib import Path

    tokens = Path(str(tmp_path)) / "tokens"
    tokens.write_text("only-reads-0001 read\n")
    with start_server(tokens_file=str(tokens)) as srv:
        assert list_runs(srv.url, token="only-reads-0001") == []
        with pytest.raises(PermissionDeniedError):
            create_run(srv.url, token="only-reads-0001")


def test_unreachable() -> None:
    with pytest.raises(ServerUnavailableError):
        list_runs("http://127.0.0.1:9", timeout=5)


def test_strict_server_refuses_uncreated_runs() -> None:
    with start_server(strict_runs=True) as srv:
        with pytest.raises(RunNotFoundError):
            end_run(srv.url, str(uuid.uuid4()))
        run_id = create_run(srv.url)
        assert run_status(srv.url, run_id).id == run_id


def _made(answer: httpx.Response) -> str:
    answer.raise_for_status()
    return RunInfo.from_json(answer.json()).id


def test_list_runs_follows_the_servers_pages() -> None:
    """The server answers 1,000 runs a page; `list_runs()` follows `next` to the end."""
    with start_server() as srv:
        # the runs are made over one kept-alive connection (a new one each, as `create_run`
        # opens, costs the test half a minute); `create_run` itself is `test_lifecycle`'s
        with httpx.Client(timeout=30) as client:
            made = [_made(client.post(runs_url(srv.url), json={})) for _ in range(1_100)]
        listed = [info.id for info in list_runs(srv.url)]
    assert len(listed) == len(set(listed)) == 1_100
    assert set(made) == set(listed)
