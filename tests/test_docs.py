"""The README and the docs work as pasted: every Python and bash block runs here.

Each page gets a fresh working directory (with `.venv` pointing at this interpreter's
environment, as the README's commands expect) and its own `zstream-mp serve` on a free
loopback port, named to every block by `ZSTREAM_SERVER`; the blocks run in page order as
a reader would run them, each in a new process, and must exit 0. A Python block runs as
`python block.py`; a bash block with `bash -e -o pipefail`. An HTML comment right above
a fence changes that:

- `<!-- docs-test: skip: REASON -->`: not run (it needs ZenML, Ray, Redis, root, or runs
  forever); the reason is required.
- `<!-- docs-test: server -->`: the block is the page's `zstream-mp serve` command, to
  leave running in its own terminal. The test starts exactly that command with
  `--port 0` appended (8237 may be taken) and uses it as the page's server.
- `<!-- docs-test: file NAME -->`: the block is saved as NAME for a later block to run.
- `<!-- docs-test: needs MODULE -->`: run like any block where MODULE is installed (an
  optional extra, e.g. `distributed`); skipped, and said so in the report, where not.
- `<!-- docs-test: as-notebook -->`: run as `python -c CODE`, so `__main__` has no
  file, as in a notebook kernel.

Also here: the configuration page names every environment variable and `serve` option,
every page is in the nav, the README stays short, and `mkdocs build --strict` passes.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers.servers import REPO

import zstream_mp
from zstream_mp.cli import build_parser
from zstream_mp.cli._serve_process import start_serve

PAGES = [
    REPO / "README.md",
    REPO / "CONTRIBUTING.md",
    REPO / "CHANGELOG.md",
    *sorted((REPO / "docs").rglob("*.md")),
]
LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
MARKER = re.compile(r"^<!-- docs-test: (?P<kind>[\w-]+)(?::?\s*(?P<arg>.*?))? -->$")
KINDS = ("skip", "server", "file", "as-notebook", "needs")
BLOCK_TIMEOUT = 180.0


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    kind: str | None = None
    arg: str = ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of `page` with their markers; a marker must precede a fence."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    marker: re.Match[str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^```(\S*)", line)
        if fence:
            start = i + 1
            end = start
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            lang = fence.group(1).lower()
            if marker is not None:
                assert lang in LANGS, f"{page}:{start}: a docs-test marker above a {lang} block"
            found.append(
                Block(
                    page,
                    start,
                    LANGS.get(lang, lang),
                    "\n".join(lines[start:end]) + "\n",
                    marker.group("kind") if marker else None,
                    (marker.group("arg") or "") if marker else "",
                )
            )
            marker = None
            i = end + 1
            continue
        got = MARKER.match(line.strip())
        if got:
            assert marker is None, f"{page}:{i + 1}: two docs-test markers in a row"
            marker = got
        elif line.strip() and marker is not None:
            raise AssertionError(f"{page}:{i + 1}: a docs-test marker not followed by a fence")
        i += 1
    assert marker is None, f"{page}: a docs-test marker at the end of the page"
    return found


def code_blocks(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in ("python", "bash")]


def runnable_pages() -> list[Path]:
    return [p for p in PAGES if any(b.kind != "skip" for b in code_blocks(p))]


def test_markers_are_well_formed() -> None:
    for page in PAGES:
        for block in blocks(page):
            if block.kind is None:
                continue
            assert block.kind in KINDS, f"{block.where}: unknown marker {block.kind!r}"
            if block.kind == "skip":
                assert len(block.arg) > 10, f"{block.where}: a skip needs its reason"
            if block.kind == "file":
                assert re.fullmatch(r"[\w.-]+\.py", block.arg), f"{block.where}: file NAME.py"
            if block.kind == "server":
                assert serve_args(block) is not None, f"{block.where}: no `zstream-mp serve`"
            if block.kind == "needs":
                assert re.fullmatch(r"[\w.]+", block.arg), f"{block.where}: needs MODULE"
            if block.kind in ("file", "as-notebook"):
                assert block.lang == "python", block.where


def serve_args(block: Block) -> list[str] | None:
    """The flags of the one `zstream-mp serve` command in `block`."""
    for line in block.code.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) >= 2 and words[0].endswith("zstream-mp") and words[1] == "serve":
            return words[2:]
    return None


def _env(server: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSTREAM_")}
    env["ZSTREAM_STATE_DIR"] = os.environ["ZSTREAM_STATE_DIR"]  # this test's private one
    env["ZSTREAM_SERVER"] = server
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _run(block: Block, number: int, cwd: Path, env: dict[str, str]) -> tuple[str, str]:
    """Run one block; (a line for the report, its stdout)."""
    if block.kind == "needs" and importlib.util.find_spec(block.arg) is None:
        return f"{block.where}: SKIPPED, {block.arg} is not installed", ""
    if block.lang == "python" and block.kind == "file":
        (cwd / block.arg).write_text(block.code)
        return f"{block.where}: saved as {block.arg}", ""
    if block.lang == "python" and block.kind == "as-notebook":
        argv = [sys.executable, "-c", block.code]
    elif block.lang == "python":
        script = cwd / f"block_{number}.py"
        script.write_text(block.code)
        argv = [sys.executable, script.name]
    else:
        script = cwd / f"block_{number}.sh"
        script.write_text(block.code)
        argv = ["bash", "-e", "-o", "pipefail", script.name]
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{block.where} ran over {BLOCK_TIMEOUT:.0f} s: {exc}") from exc
    took = time.monotonic() - t0
    assert done.returncode == 0, (
        f"{block.where} exited {done.returncode}\n--- block\n{block.code}"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )
    return f"{block.where}: ok in {took:.1f} s", done.stdout


@pytest.mark.parametrize(
    "page", runnable_pages(), ids=lambda p: str(p.relative_to(REPO)).replace("/", "-")
)
def test_every_block_runs_as_pasted(page: Path, tmp_path: Path) -> None:
    todo = [b for b in code_blocks(page) if b.kind != "skip"]
    servers = [b for b in todo if b.kind == "server"]
    assert len(servers) <= 1, f"{page}: one server block per page"
    args = serve_args(servers[0]) if servers else []
    assert args is not None
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    with start_serve([*args, "--port", "0"], env=_env("")) as served:
        env = _env(served.url)
        ran = [_run(b, n, tmp_path, env) for n, b in enumerate(todo) if b.kind != "server"]
        for _, stdout in ran:
            _check_published_run(stdout, served.url)
    print("\n".join(line for line, _ in ran))


LIVE_PAGE = re.compile(r"live page: (\S+)/runs/([0-9a-f-]{36})")
PUBLISHED = re.compile(r"published (\d+) events")


def _check_published_run(stdout: str, server: str) -> None:
    """A block that prints its run's page and how many events it published (the README's
    quickstart): the page answers and the server holds exactly that many events."""
    page, published = LIVE_PAGE.search(stdout), PUBLISHED.search(stdout)
    if page is None or published is None:
        return
    assert page.group(1) == server, stdout
    answer = httpx.get(f"{server}/runs/{page.group(2)}", timeout=10)
    assert answer.status_code == 200, answer.status_code
    events = list(zstream_mp.subscribe(server, page.group(2), timeout=30, retry_for=10))
    assert len(events) == int(published.group(1)) > 0, (len(events), stdout)


def test_configuration_names_every_variable_and_serve_option() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    wire = (REPO / "zstream_mp" / "_wire.py").read_text()
    names = re.findall(r'^ENV_\w+ = "(\w+)"', wire, re.M)
    assert len(names) >= 10, names
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"docs/configuration.md does not document {missing}"
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    serve = commands.choices["serve"]
    options = [
        o for a in serve._actions for o in a.option_strings if o.startswith("--") and o != "--help"
    ]
    missing = [o for o in options if f"`{o}`" not in text and f"`{o} " not in text]
    assert not missing, f"docs/configuration.md does not document serve {missing}"


def test_every_page_is_in_the_nav_and_the_readme_is_short() -> None:
    nav = (REPO / "mkdocs.yml").read_text()
    for page in (REPO / "docs").rglob("*.md"):
        name = str(page.relative_to(REPO / "docs"))
        assert re.search(rf":\s*{re.escape(name)}\s*$", nav, re.M), f"{name} is not in the nav"
    assert (REPO / "docs" / "fault-model.md").exists()
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= 200, f"README.md has {lines} lines; keep it to 200 and move the rest to docs/"


def test_mkdocs_build_is_strict_clean(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("the docs extra is not installed: mkdocs build NOT checked here")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "reference" / "api" / "index.html").read_text()
    missing = [
        n for n in zstream_mp.__all__ if n != "__version__" and f'id="zstream_mp.{n}"' not in api
    ]
    assert not missing, f"the API reference lacks {missing}"


def test_relative_links_outside_docs_resolve() -> None:
    """mkdocs --strict checks links inside docs/; these files are read on GitHub instead."""
    for page in (REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "examples" / "README.md"):
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in link or link.startswith("#"):
                continue
            target = (page.parent / link.split("#", 1)[0]).resolve()
            assert target.exists(), f"{page.relative_to(REPO)} links to missing {link}"
