"""`benchmarks/report.py` writes its page with at least four plots (tiny counts here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.redis import redis_binary
from helpers.servers import REPO

pytest.importorskip("matplotlib", reason="the bench extra (matplotlib) is not installed")


def test_report_writes_a_page_with_four_plots(tmp_path: Path) -> None:
    if redis_binary() is None:
        pytest.skip("redis-server binary not installed: the report's Redis column needs it")
    page = tmp_path / "REPORT.md"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "report.py"), "--smoke", "--out", str(page)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = page.read_text()
    images = re.findall(r"!\[[^\]]*\]\((report/[\w.-]+\.png)\)", text)
    assert len(set(images)) >= 4, text
    for image in images:
        data = (tmp_path / image).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000, image
    for heading in ("payload size", "workers and batch size", "Latency", "ZenML"):
        assert heading in text, heading
