"""The CLI's manners: --version, help and defaults, error reports, exit codes, serve's warnings.

Each behaviour runs the real `python -m zstream_mp` against real servers on loopback.
Exit codes (README): 0 done / run ended, 1 refused, 2 usage, 3 auth, 4 server gone.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from helpers.servers import RunningServer, start_server

import zstream_mp
from zstream_mp.cli import build_parser
from zstream_mp.cli._common import resolve
from zstream_mp.runs import create_run

CLI = [sys.executable, "-m", "zstream_mp"]


def cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ZSTREAM_")}
    environ.update(env)
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=environ
    )


def _assert_clean(stderr: str) -> None:
    """One `zstream-mp: ...` line and at most a hint: no traceback, JSON or source path."""
    lines = stderr.strip().splitlines()
    assert lines and lines[0].startswith("zstream-mp: "), stderr
    assert len(lines) <= 2 and all(line.startswith("  hint: ") for line in lines[1:]), stderr
    for bad in ("Traceback", 'File "', ".py", '{"', '["', "detail"):
        assert bad not in stderr, (bad, stderr)


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"zstream-mp {zstream_mp.__version__}"


def _parsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_every_option_has_help_and_shows_its_default() -> None:
    for prog, parser in _parsers(build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            assert action.help, f"{prog} {action.dest} has no help"
            default = action.default
            if action.option_strings and default not in (None, False, argparse.SUPPRESS):
                assert f"(default: {default})" in " ".join(text.split()), (prog, action.dest)
    serve_help = cli("serve", "--help").stdout
    assert "(default: 8237)" in serve_help and "(default: 127.0.0.1)" in serve_help


def test_tail_and_runs_default_to_the_server_serve_listens_on() -> None:
    parser = build_parser()
    for argv in (["tail", str(uuid.uuid4())], ["runs", "list"], ["runs", "create"]):
        args = parser.parse_args(argv)
        saved = {
            k: os.environ.pop(k) for k in ("ZSTREAM_SERVER", "ZSTREAM_TOKEN") if k in os.environ
        }
        try:
            assert resolve(args) == ("http://127.0.0.1:8237", None)
        finally:
            os.environ.update(saved)
    assert "http://127.0.0.1:8237" in " ".join(cli("tail", "--help").stdout.split())
    assert "http://127.0.0.1:8237" in " ".join(cli("runs", "list", "--help").stdout.split())


def test_usage_errors_exit_2() -> None:
    assert cli("tail").returncode == 2
    assert cli("runs", "status", "not-a-uuid", "--server", "http://127.0.0.1:9").returncode == 2
    assert cli("serve", "--port", "70000").returncode == 2


def test_401_hints_at_token_and_exits_3(auth_server: RunningServer) -> None:
    for argv in (["tail", str(uuid.uuid4())], ["runs", "list"], ["runs", "create"]):
        done = cli(*argv, "--server", auth_server.url)
        assert done.returncode == 3, (argv, done.stderr)
        _assert_clean(done.stderr)
        assert "401" in done.stderr and "--token" in done.stderr


def test_403_exits_3(tmp_path: object) -> None:
    from pathlib import Path

    tokens = Path(str(tmp_path)) / "tokens"
    tokens.write_text("reader-token-123 read\nwriter-token-456 write\n")
    with start_server(tokens_file=str(tokens)) as srv:
        done = cli("runs", "create", "--server", srv.url, "--token", "reader-token-123")
        assert done.returncode == 3, done.stderr
        _assert_clean(done.stderr)
        assert "403" in done.stderr and "'write'" in done.stderr


def test_validation_error_is_short_and_has_no_server_paths(server: RunningServer) -> None:
    done = cli("tail", "not-a-uuid", "--server", server.url, "--no-reconnect")
    assert done.returncode == 1, done.stderr
    _assert_clean(done.stderr)
    assert "422" in done.stderr and "UUID" in done.stderr


def test_unknown_run_is_reported_as_such(server: RunningServer) -> None:
    run_id = str(uuid.uuid4())
    done = cli("runs", "status", run_id, "--server", server.url)
    assert done.returncode == 1, done.stderr
    _assert_clean(done.stderr)
    assert f"run {run_id} not found" in done.stderr and "runs list" in done.stderr
    known = create_run(server.url)
    status = cli("runs", "status", known, "--server", server.url)
    assert status.returncode == 0 and f'"id": "{known}"' in status.stdout


def test_runs_list(server: RunningServer) -> None:
    created = create_run(server.url)
    published = str(uuid.uuid4())
    with zstream_mp.bind(published, server=server.url):
        zstream_mp.publish({"n": 1}, kind="status")
        assert zstream_mp.flush(10)
    done = cli("runs", "list", "--server", server.url)
    assert done.returncode == 0, done.stderr
    assert created in done.stdout and published in done.stdout
    as_json = cli("runs", "list", "--json", "--server", server.url)
    assert f'"id": "{published}"' in as_json.stdout


def test_unreachable_server_exits_4() -> None:
    for argv in (["tail", str(uuid.uuid4()), "--no-reconnect"], ["runs", "list"]):
        done = cli(*argv, "--server", "http://127.0.0.1:9")
        assert done.returncode == 4, done.stderr
        _assert_clean(done.stderr)
        assert "zstream-mp serve" in done.stderr  # the hint


def _tail_until_server_goes(stop: signal.Signals) -> subprocess.CompletedProcess[str]:
    srv = start_server(heartbeat=1)
    try:
        run_id = create_run(srv.url)
        tail = subprocess.Popen(
            [*CLI, "tail", run_id, "--server", srv.url, "--retry-for", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with zstream_mp.bind(run_id, server=srv.url):
            zstream_mp.publish({"n": 1}, kind="status")
            assert zstream_mp.flush(10)
        deadline = time.monotonic() + 20
        while zstream_mp.runs.run_status(srv.url, run_id).subscribers < 1:
            assert time.monotonic() < deadline, "tail never subscribed"
            time.sleep(0.05)
        srv.proc.send_signal(stop)
        out, err = tail.communicate(timeout=60)
        return subprocess.CompletedProcess(tail.args, tail.returncode, out, err)
    finally:
        srv.stop()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "killed"])
def test_tail_exits_4_when_the_server_goes_away_mid_stream(stop: signal.Signals) -> None:
    done = _tail_until_server_goes(stop)
    assert done.returncode == 4, (done.stdout, done.stderr)
    _assert_clean(done.stderr)
    assert "status" in done.stdout  # the event before the server went away was printed


def test_tail_exits_0_when_the_run_ends(server: RunningServer) -> None:
    run_id = create_run(server.url)
    zstream_mp.runs.end_run(server.url, run_id)
    done = cli("tail", run_id, "--server", server.url)
    assert done.returncode == 0, done.stderr


def test_serve_redis_broker_without_the_extra_names_it() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from zstream_mp.cli import main\n"
        "sys.exit(main(['serve', '--port', '0', '--broker', 'redis://127.0.0.1:9/0']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "pip install 'zstream-mp[redis]'" in done.stderr
    assert "Traceback" not in done.stderr and "ModuleNotFoundError" not in done.stderr


def test_serve_on_all_interfaces_without_a_token_warns() -> None:
    # Something already holds the port, so the server never actually listens beyond loopback.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        done = cli("serve", "--host", "0.0.0.0", "--port", str(port), timeout=60)
    assert done.returncode == 1
    assert "warning: listening on 0.0.0.0 with no token" in done.stderr
    assert "--token" in done.stderr
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        quiet = cli("serve", "--host", "0.0.0.0", "--port", str(port), "--token", "t0ken-123456")
    assert "warning" not in quiet.stderr


def test_tail_live_prints_plain_summary_lines_when_not_a_terminal(server: RunningServer) -> None:
    run_id = create_run(server.url)
    with zstream_mp.bind(run_id, server=server.url):
        for i in range(30):
            zstream_mp.publish({"worker": "w1", "done": i + 1, "total": 30}, kind="progress")
        assert zstream_mp.flush(10)
    zstream_mp.runs.end_run(server.url, run_id)
    done = cli("tail", run_id, "--server", server.url, "--live")
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("progress: w1 30/30 (30 events) | events 30") and "run ended" in last
    assert "\x1b[" not in done.stdout  # no terminal control sequences in a pipe
