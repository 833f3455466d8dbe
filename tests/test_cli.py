"""`zstream-mp serve`, `runs`, `tail` used the way the README tells a new user to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from helpers.servers import PREFIX, start_server

CLI = [sys.executable, "-m", "zstream_mp"]
TOKEN = "s3cret-" + uuid.uuid4().hex[:8]


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, list[str]]]:
    with start_server(token=TOKEN) as srv:
        banner = srv.served.read_banner(3)  # url, auth, broker
        assert banner[0].startswith(PREFIX), banner
        yield srv.url, [line + "\n" for line in banner]


def test_serve_prints_url_and_how_to_authenticate(served: tuple[str, list[str]]) -> None:
    url, banner = served
    assert url.startswith("http://127.0.0.1:")
    text = "".join(banner)
    assert "Bearer" in text or "token" in text.lower(), text
    assert TOKEN not in text  # the token itself is never printed in full


def test_runs_publish_tail_end(served: tuple[str, list[str]]) -> None:
    url, _ = served
    created = cli("runs", "create", "--server", url, "--token", TOKEN)
    assert created.returncode == 0, created.stderr
    run_id = created.stdout.strip()
    uuid.UUID(run_id)

    tail = subprocess.Popen(
        [*CLI, "tail", run_id, "--server", url, "--token", TOKEN, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    human = subprocess.Popen(
        [*CLI, "tail", run_id, "--kind", "token"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ZSTREAM_SERVER": url, "ZSTREAM_TOKEN": TOKEN},
    )
    code = (
        "import zstream_mp as z, sys\n"
        "z.bind(sys.argv[1], server=sys.argv[2], token=sys.argv[3])\n"
        "for i in range(5): z.publish({'i': i, 'text': 'héllo'}, kind='token', index=i)\n"
        "z.publish({'done': True}, kind='status')\n"
        "assert z.flush(10)\n"
    )
    pub = subprocess.run(
        [sys.executable, "-c", code, run_id, url, TOKEN], capture_output=True, text=True, timeout=60
    )
    assert pub.returncode == 0, pub.stderr
    ended = cli("runs", "end", run_id, "--server", url, "--token", TOKEN)
    assert ended.returncode == 0, ended.stderr

    out, err = tail.communicate(timeout=30)
    assert tail.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [e["kind"] for e in events] == ["token"] * 5 + ["status"]
    assert [e["payload"].get("i") for e in events[:5]] == list(range(5))
    assert all(e["pipeline_run_id"] == run_id for e in events)
    assert events[0]["payload"]["text"] == "héllo"

    out, err = human.communicate(timeout=30)
    assert human.returncode == 0, err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 5 and all("token" in line for line in lines), out
    assert "status" not in out


def test_tail_errors_are_one_line_and_a_hint(served: tuple[str, list[str]]) -> None:
    url, _ = served
    run_id = str(uuid.uuid4())
    unauth = cli("tail", run_id, "--server", url)
    assert unauth.returncode == 3  # auth
    assert "Traceback" not in unauth.stderr
    assert "401" in unauth.stderr and "--token" in unauth.stderr, unauth.stderr

    refused = cli("tail", run_id, "--server", "http://127.0.0.1:9", "--no-reconnect")
    assert refused.returncode == 4  # server gone
    assert "Traceback" not in refused.stderr
    message, *hint = refused.stderr.strip().splitlines()
    assert message.startswith("zstream-mp: ") and len(hint) <= 1, refused.stderr
