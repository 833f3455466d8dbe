"""The sender thread exits when idle: a process that forks between bursts is single-threaded.

Python 3.12+ warns (DeprecationWarning) when a multi-threaded process forks; the script
turns that warning into an error, so on those interpreters a sender left running fails it.
"""

from __future__ import annotations

import subprocess
import uuid

import httpx
import pytest
from helpers.targets import child_env, interpreters, python_version

SCRIPT = r"""
import os, sys, threading, time, warnings
warnings.simplefilter("error", DeprecationWarning)
import zstream_mp as z
z.bind(sys.argv[1], server=sys.argv[2])
for i in range(100):
    z.publish({"who": "parent", "i": i})
assert z.flush(10)
deadline = time.monotonic() + 5
while threading.active_count() > 1 and time.monotonic() < deadline:
    time.sleep(0.02)
assert threading.active_count() == 1, threading.enumerate()
pid = os.fork()
if pid == 0:
    z.publish({"who": "child", "i": 0})
    os._exit(0 if z.flush(10) else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
z.publish({"who": "parent", "i": 100})  # the sender starts again on demand
assert z.flush(10)
print(z.stats().sent)
"""


@pytest.mark.parametrize("python", interpreters(), ids=lambda p: "py" + python_version(p))
def test_fork_between_bursts_has_no_sender_thread(python: str, server: object) -> None:
    url = server.url  # type: ignore[attr-defined]
    run_id = str(uuid.uuid4())
    env = child_env(python, {"ZSTREAM_IDLE_EXIT": "0.2"})
    out = subprocess.run(
        [python, "-c", SCRIPT, run_id, url], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "101"
    httpx.post(f"{url}/api/v1/zstream/runs/{run_id}/end").raise_for_status()
    import zstream_mp

    seen = sorted(
        (e.payload["who"], e.payload["i"])
        for e in zstream_mp.subscribe(url, run_id)
        if isinstance(e, zstream_mp.Event)
    )
    assert seen == sorted([("parent", i) for i in range(101)] + [("child", 0)])
