"""After one sweep, nothing of a dead process remains; a recycled PID never passes for its owner.

1,000 short-lived publishing processes, each with its own bind (a ctx file and a token file),
900 leaving through os._exit without any exit hook and 100 SIGKILLed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

DRIVER = r"""
import os, signal, sys, time, uuid
import zstream_mp

def child(i, stay):
    zstream_mp.bind(str(uuid.uuid4()), server="http://127.0.0.1:9", token=f"token-of-{i}")
    zstream_mp.publish({"worker": str(i), "seq": 0})
    if stay:
        time.sleep(60)
    os._exit(0)

killed = []
for batch in range(20):
    pids = []
    for j in range(50):
        i = batch * 50 + j
        pid = os.fork()
        if pid == 0:
            child(i, stay=i % 10 == 0)
        pids.append((pid, i % 10 == 0))
    for pid, stay in pids:
        if stay:
            killed.append(pid)
            continue
        os.waitpid(pid, 0)
time.sleep(1.0)  # the staying ones have registered
for pid in killed:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print(len(killed))
"""


def test_one_sweep_leaves_nothing_of_dead_processes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = dict(os.environ, ZSTREAM_STATE_DIR=str(state), PYTHONPATH=str(REPO))
    env.pop("ZSTREAM_CONTEXT", None)
    out = subprocess.run(
        [sys.executable, "-c", DRIVER], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "100"
    procs = state / "procs"
    # later publishers' own scans may have swept some already; many are left
    assert len([n for n in os.listdir(procs) if n.endswith(".ctr")]) >= 100
    assert len([n for n in os.listdir(state) if n.startswith("ctx-")]) >= 100

    sweep = subprocess.run(
        [
            sys.executable,
            "-c",
            "from zstream_mp._recovery import registry; print(registry.sweep(0.0))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sweep.returncode == 0, sweep.stderr
    assert int(sweep.stdout) > 0
    assert os.listdir(procs) == []
    assert os.listdir(state / "spool") == []
    left = [n for n in os.listdir(state) if n.startswith(("ctx-", "token-"))]
    assert left == []


def test_a_recycled_pid_is_not_its_old_owner(tmp_path: Path) -> None:
    from zstream_mp._recovery import liveness as _liveness

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        start = _liveness.start_of(live.pid)
        assert start is not None
        assert _liveness.is_alive(live.pid, start)
        # an owner with the same PID but another start time is dead: the PID was reused
        assert not _liveness.is_alive(live.pid, start - 1)
        assert not _liveness.is_alive(live.pid, start + 1)
        state = tmp_path / "state"
        (state / "procs").mkdir(parents=True, mode=0o700)
        state.chmod(0o700)
        for iid, owner_start in (("0000dead", start - 5), ("0000live", start)):
            name = f"p{live.pid}-{iid}"
            (state / "procs" / f"{name}.ctr").write_bytes(bytes(4096))
            identity = {"pid": live.pid, "iid": iid, "start": owner_start, "ancestors": []}
            (state / "procs" / f"{name}.json").write_text(json.dumps(identity))
            for suffix in (".ctr", ".json"):
                (state / "procs" / f"{name}{suffix}").chmod(0o600)
        env = dict(os.environ, ZSTREAM_STATE_DIR=str(state), PYTHONPATH=str(REPO))
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from zstream_mp._recovery import registry; registry.sweep(0.0)",
            ],
            env=env,
            check=True,
            timeout=120,
        )
        left = sorted(os.listdir(state / "procs"))
        assert left == [f"p{live.pid}-0000live.ctr", f"p{live.pid}-0000live.json"]
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
