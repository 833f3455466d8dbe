"""Status codes, error bodies and limits of our server, in ZenML's dependency order."""
# ruff: noqa: E501

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers.servers import TEST_TOKEN, RunningServer, start_server
from helpers.sse import sse_body

ENVELOPE_MAX = 69_632


def _url(srv: RunningServer, run: str, stream: bool = False) -> str:
    return f"{srv.url}/api/v1/runs/{run}/events" + ("/stream" if stream else "")


def _post(
    srv: RunningServer, run: str, body: Any, token: str | None = "", **kw: Any
) -> httpx.Response:
    headers = dict(kw.pop("headers", {}))
    tok = srv.token if token == "" else token
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    if isinstance(body, (bytes, str)):
        headers.setdefault("content-type", "application/json")
        return httpx.post(_url(srv, run), content=body, headers=headers, timeout=10, **kw)
    return httpx.post(_url(srv, run), json=body, headers=headers, timeout=10, **kw)


def _ev(run: str, **kw: Any) -> dict[str, Any]:
    return {"pipeline_run_id": run, "kind": "k", **kw}


def _envelope(event: dict[str, Any]) -> int:
    fields = (
        "pipeline_run_id",
        "step_run_id",
        "step_name",
        "kind",
        "correlation_id",
        "index",
        "payload",
    )
    full = {f: event.get(f, {} if f == "payload" else None) for f in fields}
    return len(
        json.dumps(
            {"type": "event", "event": full}, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )


@pytest.fixture(scope="module")
def disabled() -> Iterator[RunningServer]:
    with start_server(token=TEST_TOKEN, disabled=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tokens = tmp_path_factory.mktemp("tok") / "tokens"
    tokens.write_text(
        "# comment\nreader-token-123 read\nwriter-token-123 write  # ingest\n"
        f"{TEST_TOKEN} read,write\n"
    )
    with start_server(
        token=None, tokens_file=tokens, strict_runs=True, max_request_body=200_000
    ) as srv:
        srv.token = TEST_TOKEN
        yield srv


def test_publish_ok_empty_and_extra_fields(auth_server: RunningServer) -> None:
    run = str(uuid.uuid4())
    r = _post(auth_server, run, {"events": [_ev(run, index=0), _ev(run, extra=1)], "more": True})
    assert r.status_code == 200 and r.json()["count"] == 2  # ids count up from a clock base
    assert r.text == f'{{"count":2,"last_id":"{r.json()["last_id"]}"}}'
    assert r.headers["content-type"] == "application/json"
    r = _post(auth_server, run, {"events": []})
    assert r.status_code == 200 and r.text == '{"count":0,"last_id":null}'
    assert httpx.get(auth_server.url + "/health").status_code == 200


def test_handler_errors_400(auth_server: RunningServer) -> None:
    run, other = str(uuid.uuid4()), str(uuid.uuid4())
    r = _post(auth_server, run, {"events": [_ev(other)]})
    assert r.status_code == 400
    assert r.json() == {
        "detail": ["ValueError", f"Event pipeline_run_id {other} does not match URL run id {run}."]
    }
    for kind in ("end", "gap", "error", "cursor", "system"):
        r = _post(auth_server, run, {"events": [_ev(run), _ev(run, kind=kind)]})
        assert r.status_code == 400
        assert r.json() == {
            "detail": [
                "ValueError",
                f"Event kind '{kind}' collides with a reserved SSE control name (['cursor', 'end', 'error', 'gap', 'system'])",
            ]
        }
    status, _, _ = sse_body(
        _url(auth_server, run, True), headers=auth_server.headers, params={"since": "1-0"}
    )
    assert status == 400
    r = httpx.get(
        _url(auth_server, run, True), headers={**auth_server.headers, "Last-Event-ID": "abc"}
    )
    assert r.json() == {"detail": ["ValueError", "cursor 'abc' is not a non-negative integer"]}


def test_validation_422_is_a_top_level_list(auth_server: RunningServer) -> None:
    run = str(uuid.uuid4())
    cases = [
        ("not-a-uuid", {"events": []}, "uuid_parsing"),
        (run, {"events": [{"pipeline_run_id": run}]}, "'loc': ('body', 'events', 0, 'kind')"),
        (run, {"events": [_ev(run, payload=[1, 2])]}, "dict_type"),
        (run, {"events": {}}, "list_type"),
        (run, {"events": [_ev(run)] * 1001}, "too_long"),
        (run, [1], "model_attributes_type"),
        (run, b"{not json", "json_invalid"),
    ]
    for path_run, body, needle in cases:
        r = _post(auth_server, path_run, body)
        assert r.status_code == 422, (needle, r.text)
        data = r.json()
        assert isinstance(data, list) and data[0] == "ValueError" and needle in data[1], data
        assert data[1].startswith("1 validation error:\n  {")
    r = httpx.post(_url(auth_server, run), content=b"", headers=auth_server.headers)
    assert r.status_code == 422 and "'type': 'missing', 'loc': ('body',)" in r.json()[1]
    r = httpx.post(
        _url(auth_server, run),
        content=b"events=1",
        headers={**auth_server.headers, "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 422 and "model_attributes_type" in r.json()[1]
    r = _post(auth_server, run, b'{"events": [{"kind": "\xff"}]}')
    assert r.status_code == 400 and r.json() == {"detail": "There was an error parsing the body"}
    r = httpx.get(_url(auth_server, "nope", True), headers=auth_server.headers)
    assert r.status_code == 422 and r.json()[0] == "ValueError"
    assert _post(auth_server, run, {"events": [_ev(run)] * 1000}).json()["count"] == 1000


def test_envelope_limit_413_all_or_nothing(auth_server: RunningServer) -> None:
    run = str(uuid.uuid4())
    small = _ev(run, payload={"blob": ""})
    fit = _ev(run, payload={"blob": "x" * (ENVELOPE_MAX - _envelope(small))})
    assert _envelope(fit) == ENVELOPE_MAX
    over = _ev(run, payload={"blob": "é" * 40_000})
    assert _post(auth_server, run, {"events": [fit]}).status_code == 200
    r = _post(auth_server, run, {"events": [_ev(run, kind="valid"), over]})
    assert r.status_code == 413
    assert r.json() == {"detail": f"Event exceeds {ENVELOPE_MAX} bytes (was {_envelope(over)})."}
    httpx.post(f"{auth_server.url}/api/v1/zstream/runs/{run}/end", headers=auth_server.headers)
    _, _, body = sse_body(_url(auth_server, run, True), headers=auth_server.headers)
    assert body.count(b"\nevent: k\n") == 1 and b"event: valid" not in body


def test_auth_401_403(auth_server: RunningServer, strict: RunningServer) -> None:
    run = str(uuid.uuid4())
    for srv in (auth_server, strict):
        for method, url in (("POST", _url(srv, run)), ("GET", _url(srv, run, True))):
            r = httpx.request(method, url, json={"events": []})
            assert r.status_code == 401 and r.json() == {"detail": "Not authenticated"}
            assert r.headers["www-authenticate"] == "Bearer"
            r = httpx.request(
                method, url, json={"events": []}, headers={"Authorization": "Bearer nope"}
            )
            assert r.status_code == 401 and r.json()["detail"][0] == "CredentialsNotValid"
            r = httpx.request(
                method, url, json={"events": []}, headers={"Authorization": "Basic abc"}
            )
            assert r.status_code == 401
    # auth comes before the body is read (ZenML decodes it first): no pre-auth parsing
    assert _post(auth_server, run, b"{", token=None).status_code == 401
    assert _post(auth_server, run, b"{", token=auth_server.token).status_code == 422
    created = httpx.post(f"{strict.url}/api/v1/zstream/runs", headers=strict.headers).json()["id"]
    read = {"Authorization": "Bearer reader-token-123"}
    write = {"Authorization": "Bearer writer-token-123"}
    r = httpx.post(_url(strict, created), json={"events": [_ev(created)]}, headers=read)
    assert r.status_code == 403 and r.json()["detail"][0] == "IllegalOperationError"
    assert (
        httpx.post(
            _url(strict, created), json={"events": [_ev(created)]}, headers=write
        ).status_code
        == 200
    )
    r = httpx.get(_url(strict, created, True), headers=write)
    assert r.status_code == 403
    assert (
        httpx.post(f"{strict.url}/api/v1/zstream/runs/{created}/end", headers=read).status_code
        == 403
    )
    assert (
        httpx.post(f"{strict.url}/api/v1/zstream/runs/{created}/end", headers=write).status_code
        == 200
    )
    status, _, body = sse_body(_url(strict, created, True), headers=read)
    assert status == 200 and body.endswith(b"event: end\ndata: {}\n\n")


def test_strict_runs_404_and_bare_413(strict: RunningServer) -> None:
    run = str(uuid.uuid4())
    expected = {
        "detail": [
            "KeyError",
            f"\"Unable to get pipeline run with ID '{run}': No pipeline run with this ID found\"",
        ]
    }
    r = _post(strict, run, {"events": [_ev(run)]})
    assert r.status_code == 404 and r.json() == expected
    r = httpx.get(_url(strict, run, True), headers=strict.headers)
    assert r.status_code == 404 and r.json() == expected
    r = httpx.post(f"{strict.url}/api/v1/zstream/runs", json={"id": run}, headers=strict.headers)
    assert r.status_code == 201 and r.json() == {"id": run}
    assert _post(strict, run, {"events": [_ev(run)]}).status_code == 200
    r = _post(strict, run, {"events": [_ev(run, payload={"b": "x" * 250_000})]})
    assert r.status_code == 413 and r.content == b""

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed body is capped too
        for _ in range(30):
            yield b" " * 10_000

    r = httpx.post(
        _url(strict, run),
        content=chunks(),
        headers={**strict.headers, "content-type": "application/json"},
    )
    assert r.status_code == 413


def test_disabled_501_after_auth_before_validation(disabled: RunningServer) -> None:
    run = str(uuid.uuid4())
    msg = {"detail": "Live event streaming is not enabled on this server."}
    r = _post(disabled, run, {"events": [{"bad": 1}]})
    assert r.status_code == 501 and r.json() == msg
    r = httpx.get(_url(disabled, "not-a-uuid", True), headers=disabled.headers)
    assert r.status_code == 501 and r.json() == msg
    assert _post(disabled, run, {"events": []}, token=None).status_code == 401


def test_idempotency_key_dedupes_retries(server: RunningServer) -> None:
    run = str(uuid.uuid4())
    body = {"events": [_ev(run, index=1), _ev(run, index=2)]}
    first = _post(server, run, body, headers={"Idempotency-Key": "k-1"})
    again = _post(server, run, body, headers={"Idempotency-Key": "k-1"})
    other = _post(server, run, body, headers={"Idempotency-Key": "k-2"})
    assert first.json() == again.json() and first.json()["count"] == 2
    last = int(first.json()["last_id"])  # ids count up from a clock base
    assert other.json() == {"count": 2, "last_id": str(last + 2)}
    httpx.post(f"{server.url}/api/v1/zstream/runs/{run}/end")
    _, _, body_bytes = sse_body(_url(server, run, True))
    assert body_bytes.count(b"\nevent: k\n") == 4


def test_no_500_for_junk(server: RunningServer) -> None:
    run = str(uuid.uuid4())
    junk: list[bytes] = [
        b"null",
        b"0",
        b'"x"',
        b"[]",
        b"{}",
        b'{"events": null}',
        b'{"events": [null]}',
        b'{"events": [{"pipeline_run_id": "'
        + run.encode()
        + b'", "kind": "k", "payload": {"x": NaN}}]}',
        b'{"events": [{"pipeline_run_id": "'
        + run.encode()
        + b'", "kind": "k", "payload": {"x": "\\ud800"}}]}',
        b'{"events": [{"pipeline_run_id": "' + run.encode() + b'", "kind": "k", "index": 1e400}]}',
        b'{"events": [{"pipeline_run_id": "' + run.encode() + b'", "kind": 5}]}',
        b"[" * 100_000,
        b'{"events": [' + b"[" * 5000 + b"]}",
    ]
    for body in junk:
        r = _post(server, run, body)
        assert r.status_code < 500, (body[:80], r.status_code, r.text[:200])
    for path in ("%00", "..", "x" * 5000, "00000000-0000-0000-0000-00000000000g"):
        assert httpx.get(_url(server, path, True)).status_code < 500
    for since in ("", "-1", "9" * 40, "١٢", "1\n"):
        url = _url(server, str(uuid.uuid4()), True)
        with httpx.stream("GET", url, params={"since": since}, timeout=5) as r:
            assert r.status_code < 500
