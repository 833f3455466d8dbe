"""The CLI as a new user meets it: descriptions, one --json, completion, a tail that says it
waits, a serve that explains a busy port, a demo whose page outlives it (--keep).

Each behaviour runs the real `python -m zstream_mp` against real servers on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO

import httpx
import pytest
from helpers.servers import RunningServer

import zstream_mp
from zstream_mp.cli import build_parser
from zstream_mp.cli.tail import WAITING_AFTER

CLI = [sys.executable, "-m", "zstream_mp"]


def cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ZSTREAM_")}
    environ["ZSTREAM_STATE_DIR"] = os.environ["ZSTREAM_STATE_DIR"]
    environ.update(env)
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=environ
    )


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    todo = [build_parser()]
    while todo:
        parser = todo.pop()
        yield parser.prog, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += list(action.choices.values())


def test_every_command_has_a_description() -> None:
    for prog, parser in parsers():
        assert parser.description and len(parser.description) > 30, f"{prog}: no description"
        assert parser.description.split()[0] in parser.format_help(), prog


def test_json_means_one_object_per_line_everywhere(server: RunningServer) -> None:
    for prog, parser in parsers():
        for action in parser._actions:
            if "--json" in action.option_strings:
                assert action.help and action.help.startswith("one JSON object per line"), prog
    run_id = server.create_run()
    # a publisher of its own (this test process's registry entry may live in the state dir
    # of an earlier test), alive while the CLI reads its row
    publisher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, zstream_mp\n"
            "zstream_mp.bind(sys.argv[1], server=sys.argv[2])\n"
            "zstream_mp.publish({'n': 1}, kind='x')\n"
            "assert zstream_mp.flush(10)\n"
            "print('published', flush=True)\n"
            "sys.stdin.read()\n",
            run_id,
            server.url,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert publisher.stdout is not None and publisher.stdout.readline().strip() == "published"
        for argv in (
            ["runs", "list", "--json", "--server", server.url],
            ["stats", "--json"],
            ["stats", "--tree", str(publisher.pid), "--json"],
            ["spool", "ls", "--json"],
            ["tail", run_id, "--json", "--server", server.url],
        ):
            if argv[0] == "tail":
                server.end_run(run_id)
            done = cli(*argv)
            assert done.returncode == 0, (argv, done.stderr)
            lines = done.stdout.splitlines()
            assert all(isinstance(json.loads(line), dict) for line in lines), (argv, done.stdout)
            if argv[0] in ("runs", "tail") or "--tree" in argv:
                assert lines, argv
    finally:
        publisher.communicate("", timeout=30)


def _complete(script: str, *words: str) -> list[str]:
    """What bash offers after `zstream-mp WORDS` (the last word is being typed)."""
    line = " ".join(f"'{w}'" for w in ("zstream-mp", *words))
    probe = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n"
        '_zstream_mp; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completion_completes_commands_actions_options_and_choices() -> None:
    done = cli("completion", "bash")
    assert done.returncode == 0, done.stderr
    script = done.stdout
    assert subprocess.run(["bash", "-n"], input=script, text=True, timeout=30).returncode == 0
    assert "complete -o default -F _zstream_mp zstream-mp" in script
    assert set(_complete(script, "")) >= {"serve", "tail", "runs", "stats", "spool", "demo"}
    assert _complete(script, "ru") == ["runs"]
    assert set(_complete(script, "runs", "")) >= {"create", "end", "status", "list"}
    assert _complete(script, "serve", "--br") == ["--broker"]
    assert "--strict-runs" in _complete(script, "serve", "--s")
    assert _complete(script, "runs", "create", "--se") == ["--server"]
    assert set(_complete(script, "completion", "")) >= {"bash", "zsh"}
    assert _complete(script, "tail", "--server", "") == []  # a URL: no word to offer
    assert "--live" in _complete(script, "tail", "RUN", "--l")


def test_zsh_completion_is_a_compdef_script() -> None:
    done = cli("completion", "zsh")
    assert done.returncode == 0, done.stderr
    script = done.stdout
    assert script.startswith("#compdef zstream-mp\n")
    assert "compdef _zstream_mp zstream-mp" in script and "_files" in script
    for command in ("serve", "tail", "runs", "stats", "spool", "demo", "completion"):
        assert f":{command}" in script, command
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip(
            "zsh is not installed: the zsh script's syntax NOT checked (apt-get install zsh)"
        )
    checked = subprocess.run([zsh, "-n"], input=script, text=True, timeout=30)
    assert checked.returncode == 0


def test_completion_usage_errors() -> None:
    done = cli("completion", "fish")
    assert done.returncode == 2 and "invalid choice" in done.stderr


def _read_line(stream: IO[str], timeout: float) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0] if got else ""


def test_tail_says_within_a_second_that_it_waits(server: RunningServer) -> None:
    run_id = str(uuid.uuid4())
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSTREAM_")}
    proc = subprocess.Popen(
        [*CLI, "tail", run_id, "--server", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        t0 = time.monotonic()
        line = _read_line(proc.stderr, 10)
        took = time.monotonic() - t0
        assert f"waiting for run {run_id}" in line and "no event yet" in line, line
        # WAITING_AFTER after subscribing; the bound leaves room for the interpreter's start
        # on a loaded machine
        assert WAITING_AFTER <= 1.0 and took < 6.0, f"said it after {took:.2f} s"
        server.end_run(run_id)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_tail_of_a_run_with_events_does_not_say_it_waits(server: RunningServer) -> None:
    run_id = server.create_run()
    zstream_mp.bind(run_id, server=server.url)
    try:
        zstream_mp.publish({"n": 1}, kind="x")
        assert zstream_mp.flush(10)
    finally:
        zstream_mp.unbind()
    proc = subprocess.Popen(
        [*CLI, "tail", run_id, "--server", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    server.end_run(run_id)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "waiting" not in err and '"n": 1' in out, (out, err)


def test_serve_on_a_port_held_by_another_serve_hints_port_0(server: RunningServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    done = cli("serve", "--port", port, timeout=60)
    assert done.returncode == 1
    assert "Address already in use" in done.stderr, done.stderr
    assert "another zstream-mp serve is listening there" in done.stderr
    assert "hint: pass --port 0" in done.stderr
    assert "Traceback" not in done.stderr


class _ZenMLInfo(BaseHTTPRequestHandler):
    """Answers like a ZenML server's `/api/v1/info` (the fields the detection reads)."""

    def do_GET(self) -> None:
        if self.path == "/api/v1/info":
            body = json.dumps({"version": "0.98.0", "deployment_type": "other"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        elif self.path.startswith("/api/v1/runs/"):  # ZenML wants its own token
            body = b'{"detail":["AuthorizationException","Authentication error: no token"]}'
            self.send_response(401)
        else:
            body = b'{"detail":"Not Found"}'
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_serve_on_a_port_held_by_zenml_says_so_and_tail_asks_for_a_zenml_token() -> None:
    fake = ThreadingHTTPServer(("127.0.0.1", 0), _ZenMLInfo)
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    port = str(fake.server_address[1])
    try:
        done = cli("serve", "--port", port, timeout=60)
        tail = cli("tail", str(uuid.uuid4()), "--server", f"http://127.0.0.1:{port}")
    finally:
        fake.shutdown()
        fake.server_close()
    assert done.returncode == 1
    assert "a ZenML 0.98.0 server is listening there" in done.stderr, done.stderr
    assert "hint: pass --port 0" in done.stderr
    assert tail.returncode == 3, tail.stderr
    assert "this is a ZenML 0.98.0 server: pass a ZenML API token" in tail.stderr, tail.stderr


def test_demo_keep_keeps_the_page_alive_until_interrupted() -> None:
    pytest.importorskip("joblib")
    proc = subprocess.Popen(
        [
            *CLI,
            "demo",
            "--keep",
            "--plain",
            "--tokens",
            "10",
            "--delay",
            "0",
            "--pool-workers",
            "2",
            "--joblib-workers",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        page = ""
        lines_seen: list[str] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not page:
            line = _read_line(proc.stdout, deadline - time.monotonic())
            assert line, "the demo ended without saying the server stays up"
            if line.strip().startswith("live page:") and "stays up" in "".join(lines_seen):
                page = line.split("live page:", 1)[1].strip()
            lines_seen.append(line)
        assert "every event delivered exactly once" in "".join(lines_seen), lines_seen
        time.sleep(1.5)  # after the tally, the server is still there
        assert proc.poll() is None
        answer = httpx.get(page, timeout=10)
        assert answer.status_code == 200 and "<html" in answer.text.lower()
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        assert proc.returncode == 0
        with pytest.raises(httpx.HTTPError):
            httpx.get(page, timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
