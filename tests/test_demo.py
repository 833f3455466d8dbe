"""`zstream-mp demo`, the README's first command, run as a user would run it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytest.importorskip("joblib")


def test_demo_delivers_every_event_and_prints_a_tally() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zstream_mp", "demo", "--tokens", "40", "--delay", "0.002"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "every event delivered exactly once" in out
    rows = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(none|\{.*\})$", out, re.M)
    roles = [role for _pid, role, _pub, _dlv, _drop in rows]
    assert "parent" in roles
    assert sum(r.startswith("pool-") for r in roles) == 4
    assert sum(r.startswith("joblib-") for r in roles) == 2
    for _pid, role, published, delivered, dropped in rows:
        assert published == delivered, role
        assert dropped == "none", role
    workers = [r for r in rows if r[1] != "parent"]
    # 40 tokens + 4 progress + 1 status per task
    assert all(int(r[2]) == 45 for r in workers), workers
    total = re.search(r"^\s+total\s+(\d+)\s+(\d+)$", out, re.M)
    assert total and total.group(1) == total.group(2) == str(45 * 6 + 2)
