"""Fuzzed requests against our running server never get a 5xx and never corrupt a stream.

Bodies (structured events and raw bytes), headers, query parameters and cursors come from
hypothesis, bounded in count, including values at the server's limits: bodies around the
request-body cap (by Content-Length and chunked), cursors around the longest valid one,
`Idempotency-Key`s around their length cap, kinds with line breaks. Afterwards a subscriber
replays the fuzzed run from the start and every frame must parse and equal, in order, what
was accepted with 200 (a replayed idempotent retry adds nothing). Runs on both brokers.
"""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from helpers.redis import RunningRedis
from helpers.servers import RunningServer, start_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TOKEN = "fuzz-token-0123456789"
EXAMPLES = 100
BODY_CAP = 200_000  # the fuzzed server's --max-request-body, so bodies at the cap stay cheap
FIELDS = [
    "pipeline_run_id",
    "step_run_id",
    "step_name",
    "kind",
    "correlation_id",
    "index",
    "payload",
]
RESERVED = {"end", "gap", "error", "cursor", "system"}
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@dataclass
class Model:
    """What the server accepted on the fuzzed run, in order (None: not predictable)."""

    run_id: str
    accepted: list[dict[str, Any] | None] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)  # Idempotency-Keys that stored "hdr" on the run

    def seen(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        assert status < 500, f"server answered {status}"


@pytest.fixture(scope="module", params=["memory", "redis"])
def fuzz_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    if request.param == "memory":
        with start_server(token=TOKEN, heartbeat=2, max_request_body=BODY_CAP) as srv:
            yield srv
    else:
        redis: RunningRedis = request.getfixturevalue("redis")
        with start_server(
            broker=redis.url, token=TOKEN, heartbeat=2, max_request_body=BODY_CAP
        ) as srv:
            yield srv


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
kinds = st.one_of(
    st.sampled_from([*sorted(RESERVED), "event", "token", "a\nb", "x\ry", ""]), st.text(max_size=12)
)
opt_text = st.none() | st.text(max_size=16)


@st.composite
def events(draw: st.DrawFn, run_id: str) -> dict[str, Any]:
    ev: dict[str, Any] = {"pipeline_run_id": run_id, "kind": draw(kinds)}
    if draw(st.booleans()):
        ev["step_run_id"] = draw(st.none() | st.uuids().map(str))
    for name in ("step_name", "correlation_id"):
        if draw(st.booleans()):
            ev[name] = draw(opt_text)
    if draw(st.booleans()):
        ev["index"] = draw(st.none() | st.integers(-(2**63), 2**63))
    if draw(st.booleans()):
        ev["payload"] = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
    return ev


def _line_break(kind: str) -> bool:
    return "\n" in kind or "\r" in kind


def expected(ev: dict[str, Any]) -> dict[str, Any]:
    full = {k: ev.get(k, {} if k == "payload" else None) for k in FIELDS}
    return full


def post(
    client: httpx.Client,
    model: Model,
    run_id: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    r = client.post(
        f"/api/v1/runs/{quote(run_id, safe='')}/events",
        content=body,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    model.seen(r.status_code)
    return r


def fuzz(server: RunningServer, model: Model) -> None:
    client = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    run = model.run_id

    @SETTINGS
    @given(st.lists(events(run), max_size=5))
    def structured(batch: list[dict[str, Any]]) -> None:
        body = json.dumps({"events": batch}).encode()
        r = post(client, model, run, body)
        ok = all(e["kind"] not in RESERVED and not _line_break(e["kind"]) for e in batch)
        assert (r.status_code == 200) == ok, (r.status_code, r.text[:200])
        if r.status_code == 200:
            assert r.json()["count"] == len(batch)
            model.accepted.extend(expected(e) for e in batch)

    @SETTINGS
    @given(
        st.binary(max_size=300) | st.text(max_size=200).map(str.encode),
        st.sampled_from(
            [
                "application/json",
                "text/plain",
                "",
                "application/json; charset=latin-1",
                "multipart/form-data; boundary=x",
            ]
        ),
    )
    def raw_bodies(body: bytes, ctype: str) -> None:
        r = post(client, model, run, body, {"Content-Type": ctype})
        if r.status_code == 200:
            model.accepted.extend([None] * int(r.json()["count"]))

    @SETTINGS
    @given(st.lists(events(run), min_size=1, max_size=3), st.data())
    def mutated(batch: list[dict[str, Any]], data: st.DataObject) -> None:
        body = bytearray(json.dumps({"events": batch}).encode())
        for _ in range(data.draw(st.integers(1, 4))):
            op = data.draw(st.sampled_from(["flip", "cut", "dup"]))
            i = data.draw(st.integers(0, len(body) - 1))
            if op == "flip":
                body[i] = data.draw(st.integers(0, 255))
            elif op == "cut":
                del body[i:]
            else:
                body[i:i] = body[i : i + data.draw(st.integers(1, 10))]
            if not body:
                break
        r = post(client, model, run, bytes(body))
        if r.status_code == 200:
            model.accepted.extend([None] * int(r.json()["count"]))

    auth_values = st.sampled_from(
        [
            None,
            "",
            "Bearer",
            "Bearer ",
            f"Bearer {TOKEN}x",
            f"bearer {TOKEN}",
            f"Basic {TOKEN}",
            f"Bearer  {TOKEN}",
        ]
    ) | st.text(alphabet=string.printable.strip(), max_size=40)

    @SETTINGS
    @given(
        auth_values,
        st.text(alphabet=string.printable.strip(), max_size=40)
        | st.integers(250, 260).map(lambda n: "k" * n)
        | st.sampled_from(["k" * 255, "k" * 256, "k\x7f", "k\tk"]),
        st.sampled_from(
            [run, str(uuid.uuid4()), "not-a-uuid", run.upper(), "", "../../health", run + "x"]
        ),
    )
    def headers_and_paths(auth: str | None, idem: str, path_run: str) -> None:
        h = {"Idempotency-Key": idem, "X-Request-ID": idem[:40]}
        if auth is not None:
            h["Authorization"] = auth
        body = json.dumps({"events": [{"pipeline_run_id": path_run, "kind": "hdr"}]}).encode()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as bare:
                r = bare.post(
                    f"/api/v1/runs/{quote(path_run, safe='')}/events",
                    content=body,
                    headers={"Content-Type": "application/json", **h},
                )
        except httpx.LocalProtocolError:
            return  # a header value httpx itself refuses to send (e.g. trailing space)
        model.seen(r.status_code)
        if r.status_code == 200 and path_run.lower() == run:
            if idem in model.keys:
                return  # the same batch again: answered from the record, nothing appended
            if idem:
                model.keys.add(idem)
            model.accepted.append(expected({"pipeline_run_id": run, "kind": "hdr"}))

    cursor_text = (
        st.text(max_size=24)
        | st.sampled_from(
            [
                "0",
                "1",
                "0-0",
                "1-0",
                "99999999999999999999-0",
                "18446744073709551615-1",
                "-1",
                "$",
                "+",
                "-",
                ">",
                "1-",
                "00",
                " 1",
                "1 ",
                "1" * 20,
                "1" * 21,
                "9" * 20 + "-" + "9" * 20,
                "9" * 21 + "-0",
                "1" * 5000,
                "1" * 5000 + "-0",
            ]
        )
        | st.text(alphabet="0123456789-", min_size=18, max_size=6000)
    )

    @SETTINGS
    @given(
        cursor_text,
        st.booleans(),
        st.lists(
            st.sampled_from(["kinds", "step_names", "correlation_ids", "since", "junk"]), max_size=3
        ),
        st.text(max_size=10),
    )
    def subscribe_params(cursor: str, as_header: bool, names: list[str], value: str) -> None:
        params = [(n, value) for n in names]
        headers: dict[str, bytes] = {}
        if as_header:  # raw UTF-8 bytes: non-ASCII header values reach the server as-is
            headers["Last-Event-ID"] = cursor.replace("\n", "").replace("\r", "").encode()
        else:
            params.append(("since", cursor))
        try:
            with client.stream(
                "GET",
                f"/api/v1/runs/{run}/events/stream",
                params=params,
                headers=headers,
                timeout=5,
            ) as r:
                model.seen(r.status_code)
                if r.status_code == 200:
                    assert r.headers["content-type"].startswith("text/event-stream")
        except httpx.LocalProtocolError:
            pass  # a header value httpx itself refuses to send

    @SETTINGS
    @given(st.integers(BODY_CAP - 64, BODY_CAP + 64), st.booleans())
    def bodies_at_the_cap(size: int, chunked: bool) -> None:
        event = {"pipeline_run_id": run, "kind": "cap", "payload": {"s": "x" * 1000}}
        body = json.dumps({"events": [event] * 100}).encode()
        assert len(body) < BODY_CAP - 64
        body = body[:-1] + b" " * (size - len(body)) + b"}"
        assert len(body) == size
        content: Any = body
        if chunked:  # no Content-Length: refused while streaming
            content = iter([body[i : i + 8192] for i in range(0, len(body), 8192)])
        r = post(client, model, run, content)
        assert r.status_code == (200 if size <= BODY_CAP else 413), (size, chunked)
        if r.status_code == 200:
            model.accepted.extend([expected(event)] * 100)

    structured()
    bodies_at_the_cap()
    raw_bodies()
    mutated()
    headers_and_paths()
    subscribe_params()
    client.close()


def replay(server: RunningServer, run_id: str) -> list[bytes]:
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        body = client.get(f"/api/v1/runs/{run_id}/events/stream").content
    assert body.endswith(b"event: end\ndata: {}\n\n"), body[-200:]
    return [f for f in body.split(b"\n\n")[:-1] if not f.startswith(b":")]


def test_fuzz_never_5xx_and_stream_intact(fuzz_server: RunningServer) -> None:
    run_id = httpx.post(
        f"{fuzz_server.url}/api/v1/zstream/runs",
        json={},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    ).json()["id"]
    model = Model(run_id)
    fuzz(fuzz_server, model)
    assert model.accepted, "nothing was accepted: the fuzzing did not reach the happy path"
    r = httpx.post(
        f"{fuzz_server.url}/api/v1/zstream/runs/{run_id}/end",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 200
    frames = replay(fuzz_server, run_id)
    assert frames[-1] == b"event: end\ndata: {}"
    frames = frames[:-1]
    assert len(frames) == len(model.accepted), (len(frames), len(model.accepted))
    last = (-1,)
    for frame, want in zip(frames, model.accepted, strict=True):
        lines = frame.decode("utf-8").split("\n")
        assert len(lines) == 3 and lines[0].startswith("id: ") and lines[1].startswith("event: ")
        assert lines[2].startswith("data: ")
        key = tuple(int(p) for p in lines[0][4:].split("-"))
        assert key > last
        last = key
        kind, data = lines[1][7:], json.loads(lines[2][6:])
        assert kind != "cursor", "a kind an SSE event cannot carry must be refused at ingest"
        assert list(data) == FIELDS
        assert data["pipeline_run_id"] == run_id
        assert data["kind"] == kind
        if want is not None:
            assert data == want
