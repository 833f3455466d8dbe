"""The child programs of the suites (`tests/programs/<topic>/`) and the environment they need.

    cmd = [sys.executable, str(program("fork/driver.py")), ...]
    subprocess.run(cmd, env=env({"ZSTREAM_DURABLE": "1"}))

pytest puts the checkout and `tests/` on the test process's `sys.path` (`pythonpath` in
`pyproject.toml`); a program runs in its own interpreter, so `env()` passes the same two
entries in `PYTHONPATH`: `zstream_mp`, `helpers.*` and `programs.*` import there as here,
whichever interpreter runs it (the fork matrix uses several). Nothing edits `sys.path`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
PROGRAMS = TESTS / "programs"


def program(name: str) -> Path:
    """The path of `tests/programs/<name>` (e.g. `fork/driver.py`); fails if it is missing."""
    path = PROGRAMS / name
    if not path.is_file():
        raise FileNotFoundError(f"no child program {path}")
    return path


def pythonpath(inherited: str | None = None) -> str:
    """The checkout and `tests/`, then whatever `PYTHONPATH` already held."""
    entries = [str(REPO), str(TESTS)]
    entries += [p for p in (inherited or "").split(os.pathsep) if p and p not in entries]
    return os.pathsep.join(entries)


def env(
    extra: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`base` (default: this process's environment) plus `extra`, with `PYTHONPATH` set."""
    out = dict(os.environ if base is None else base)
    out["PYTHONPATH"] = pythonpath(out.get("PYTHONPATH"))
    out.update(extra or {})
    return out
