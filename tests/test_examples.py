"""Every file in `examples/` runs as a user runs it and its events all reach the server.

Each example is started as `python examples/NAME.py` with `ZSTREAM_SERVER` pointing at
a real server on loopback; it must exit 0, print its run's live page, and end its run. The
test then replays the ended run and counts its events. One example also runs without
`ZSTREAM_SERVER` (its own embedded server) and one against a server requiring a token.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import re
import subprocess
import sys

import pytest
from helpers import programs
from helpers.frameworks import driver_env
from helpers.servers import REPO, RunningServer

import zstream_mp

EXAMPLES = REPO / "examples"
LIVE_URL = re.compile(r"live page: (\S+)/runs/([0-9a-f-]{36})")

# name -> events the run must hold once the example has ended it
EXPECTED = {
    "pool_fanout": 2 + 200 * 4 * len(multiprocessing.get_all_start_methods()),
    "process_pool_executor": 41,
    "joblib_parallel": 40,
    "threads": 50,
    "asyncio_tasks": 3,
    "web_service": 4,
    "llm_tokens": 3
    + sum(
        len(f"an answer to '{p}' streamed one token at a time".split())
        for p in ("why is the sky blue", "what is a fork", "name a prime")
    ),
    "log_handler": 11,
    "ray_tasks": 200,
    "dask_cluster": 30,
}
NEEDS = {"joblib_parallel": "joblib", "ray_tasks": "ray", "dask_cluster": "distributed"}
MARKS = {"ray_tasks": [pytest.mark.ray], "dask_cluster": [pytest.mark.dask]}


def run_example(name: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = driver_env(**env)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        capture_output=True,
        text=True,
        timeout=240,
        env=environ,
        cwd=REPO,
    )


def count_events(url: str, run_id: str, token: str | None = None) -> int:
    items = list(zstream_mp.subscribe(url, run_id, token=token, timeout=30, retry_for=10))
    assert not [i for i in items if isinstance(i, zstream_mp.Gap)], items
    return len(items)


def test_every_example_is_listed() -> None:
    found = {p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")}
    assert found == set(EXPECTED) | {"zenml_step"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=MARKS.get(n, [])) for n in EXPECTED])
def test_example_delivers_every_event(name: str, server: RunningServer) -> None:
    if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
        done = run_example(name, ZSTREAM_SERVER=server.url)
        assert done.returncode == 0 and "pip install" in done.stdout, done.stdout + done.stderr
        pytest.skip(f"{NEEDS[name]} is not installed: checked only its install hint")
    done = run_example(name, ZSTREAM_SERVER=server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    found = LIVE_URL.search(done.stdout)
    assert found and found.group(1) == server.url, done.stdout
    assert f"zstream-mp tail {found.group(2)}" in done.stdout
    assert count_events(server.url, found.group(2)) == EXPECTED[name], done.stdout


def test_example_starts_its_own_server_when_none_is_configured() -> None:
    done = subprocess.run(  # driver_env() drops every ZSTREAM_ variable
        [sys.executable, str(EXAMPLES / "threads.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=driver_env(),
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = LIVE_URL.search(done.stdout)
    assert found and found.group(1).startswith("http://127.0.0.1:"), done.stdout


def test_example_uses_the_token_from_the_environment(auth_server: RunningServer) -> None:
    assert auth_server.token
    done = run_example(
        "pool_fanout", ZSTREAM_SERVER=auth_server.url, ZSTREAM_TOKEN=auth_server.token
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = LIVE_URL.search(done.stdout)
    assert found, done.stdout
    got = count_events(auth_server.url, found.group(2), token=auth_server.token)
    assert got == EXPECTED["pool_fanout"]


def test_zenml_example_explains_itself_without_zenml() -> None:
    if importlib.util.find_spec("zenml") is not None:
        pytest.skip("ZenML is installed here: the example would start a real pipeline")
    done = run_example("zenml_step")
    assert done.returncode == 0, done.stderr
    assert "pip install 'zenml" in done.stdout


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_example_without_its_framework_says_how_to_install_it(name: str) -> None:
    blocked = NEEDS[name]
    code = (
        "import runpy, sys\n"
        f"sys.modules[{blocked!r}] = None  # as if it were not installed\n"
        f"runpy.run_path({str(EXAMPLES / f'{name}.py')!r}, run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=driver_env(  # the example imports its neighbour `_server`; the server is never reached
            ZSTREAM_SERVER="http://127.0.0.1:9",
            PYTHONPATH=os.pathsep.join((str(EXAMPLES), programs.pythonpath())),
        ),
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'zstream-mp[" in done.stdout, done.stdout
