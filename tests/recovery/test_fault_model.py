"""The fault model, one test per row: nothing lost on the way out, exactly once, with a token.

Every event is `{"w": <producer>, "seq": <n>}`. Each test reads the server's stored
history and checks it by identity: every expected event present, exactly once, in
per-producer order, nothing unexpected (a parent's events re-sent by a child would be).

Every row runs against two servers that both require a token:

* `ours`: our server (`zstream-mp serve --token`, which deduplicates on the
  Idempotency-Key), behind a fault front (tests/helpers/faultserver.py `--upstream`) that plays
  the row's fault (refused: the front is stopped; hung, slow, 5xx: its script) and relays
  everything else, the stream included. The history is our server's, replayed after the
  run is ended.
* `store_all`: tests/helpers/faultserver.py itself, which stores every POST it accepts (no
  deduplication, like ZenML's server) and replays them as ZenML's SSE stream, the one the
  adopter reads to see whether a batch in flight at a sender's death landed.

The publisher always has a token; the exit budget is the default (2 s). The adopter is
the one the row names: a later process (`zstream-mp spool drain`), `flush_tree()` of a
live parent, or the binding parent's exit. Pool rows also run with forkserver as the
default start method (Python 3.14's default on Linux).

Run: `pytest -m recovery tests/recovery`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from helpers.faultserver import FaultProcess
from helpers.programs import program
from helpers.servers import RunningServer, start_server
from helpers.targets import child_env, replay

from zstream_mp._wire import run_end_url

pytestmark = [
    pytest.mark.recovery,
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, forks"),
    pytest.mark.timeout(180),
]

TOKEN = "recovery-token-0123456789"
READ_TOKEN = "recovery-read-only-0123456"  # authenticates, may not publish: 403
WRONG_TOKEN = "recovery-wrong-token-01234"  # unknown to both servers: 401
BUDGET = 2.0  # the default ZSTREAM_EXIT_TIMEOUT, never raised here
EXIT_BOUND = BUDGET + 6.0  # interpreter start and imports included: a hang, not a timing
MODES = ["default", "durable"]
CLIENT = program("faults/fault_client.py")
FAULTCASE = program("faults/faultcase.py")


# --------------------------------------------------------------------------- the servers


@pytest.fixture(scope="module")
def ours_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tokens = tmp_path_factory.mktemp("ours") / "tokens"
    tokens.write_text(f"{READ_TOKEN} read\n")
    with start_server(token=TOKEN, tokens_file=str(tokens), max_stream_length=200_000) as srv:
        yield srv


class Backend:
    """One server of the row, as the publishers see it (`url`) and as the test reads it."""

    def __init__(self, name: str, front: FaultProcess, upstream: RunningServer | None) -> None:
        self.name = name
        self.front = front
        self.upstream = upstream
        self.token = TOKEN
        self._ended: dict[str, list[dict[str, Any]]] = {}
        self._logged_before = 0  # requests recorded by the server's earlier incarnations

    @property
    def url(self) -> str:
        return self.front.url

    def new_run(self) -> str:
        run = str(uuid.uuid4())
        if self.upstream is not None:
            self.upstream.create_run(run)
        return run

    def down(self) -> None:
        """From now on connections are refused (nothing listens on the port)."""
        self.front.stop()

    def up(self, script: list[dict[str, Any]] | None = None) -> None:
        """Listening again, on the same port."""
        self._logged_before = len(self.front.requests())
        self.front.start(script)

    def script(self, rules: list[dict[str, Any]]) -> None:
        self.front.set_script(rules)

    def requests(self, run: str) -> list[dict[str, Any]]:
        return [r for r in self.front.requests() if r["run"] == run]

    def wait_settled(self, timeout: float = 15.0) -> None:
        """Until every publish request the server received is answered (or given up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                logged = len(self.front.requests()) - self._logged_before
                if self.front.state()["requests"] == logged:
                    return
            except OSError:
                return  # not running: nothing is pending on it
            time.sleep(0.05)

    def history(self, run: str) -> list[dict[str, Any]]:
        """Every payload the server stored for `run`, in arrival order (read once)."""
        if run in self._ended:
            return self._ended[run]
        self.wait_settled()
        if self.upstream is None:
            out = [e["event"]["payload"] for e in self.front.accepted() if e["run"] == run]
        else:
            srv = self.upstream
            r = httpx.post(run_end_url(srv.url, run), headers=srv.headers, timeout=30)
            assert r.status_code == 200, f"ending run {run}: {r.status_code} {r.text[:200]}"
            out = replay(srv.url, run, srv.token)
        self._ended[run] = out
        return out


@pytest.fixture(params=["ours", "store_all"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "ours":
        srv: RunningServer = request.getfixturevalue("ours_server")
        front = FaultProcess(tmp_path / "front", upstream=srv.url)
        b = Backend("ours", front, srv)
    else:
        front = FaultProcess(tmp_path / "store_all", token=TOKEN, read_tokens=[READ_TOKEN])
        b = Backend("store_all", front, None)
    try:
        yield b
    finally:
        front.stop()


# --------------------------------------------------------------------------- the processes


@dataclass
class Result:
    returncode: int | None
    report: dict[str, Any]
    stdout: str
    stderr: str
    elapsed: float

    @property
    def warnings(self) -> list[str]:
        return [
            ln
            for ln in self.stderr.splitlines()
            if ln.startswith("ZSLOG|") and ln.split("|")[1] in ("WARNING", "ERROR", "CRITICAL")
        ]

    def tail(self) -> str:
        return f"rc={self.returncode}\n--- stderr ---\n{self.stderr[-4000:]}"


class Procs:
    """Processes started by a test: output to files (orphans may hold them open), killed
    (their whole session) at the end of the test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[tuple[subprocess.Popen[bytes], Path, Path, float]] = []

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return child_env(sys.executable, extra)

    def start(
        self, cmd: list[str], extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        n = len(self.started)
        out, err = self.tmp / f"proc{n}.out", self.tmp / f"proc{n}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(
                cmd, stdout=fo, stderr=fe, env=self.env(extra_env), start_new_session=True
            )
        self.started.append((proc, out, err, time.monotonic()))
        return proc

    def finish(self, proc: subprocess.Popen[bytes], deadline: float = 90.0) -> Result:
        _, out, err, started = next(s for s in self.started if s[0] is proc)
        try:
            proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(
                f"{proc.args!r} hung past {deadline}s:\n{err.read_text(errors='replace')[-4000:]}"
            ) from None
        elapsed = time.monotonic() - started
        stdout = out.read_text(errors="replace")
        report: dict[str, Any] = {}
        lines = stdout.strip().splitlines()
        if lines:
            with contextlib.suppress(ValueError):
                report = json.loads(lines[-1])
        return Result(proc.returncode, report, stdout, err.read_text(errors="replace"), elapsed)

    def run(self, cmd: list[str], deadline: float = 90.0, **kw: Any) -> Result:
        return self.finish(self.start(cmd, **kw), deadline)

    def close(self) -> None:
        for proc, *_ in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def turns(tmp_path: Path) -> Path:
    """Where the test and its programs take turns through files."""
    path = tmp_path / "turns"
    path.mkdir()
    return path


def client(
    backend: Backend,
    run: str,
    steps: list[dict[str, Any]],
    *,
    worker: str = "solo",
    mode: str = "default",
    token: str | None = TOKEN,
) -> list[str]:
    """A publisher process (tests/programs/faults/fault_client.py)."""
    cmd = [sys.executable, str(CLIENT), backend.url, run, json.dumps(steps), "--worker", worker]
    if token is not None:
        cmd += ["--token", token]
    return cmd + (["--durable"] if mode == "durable" else [])


def faultcase(
    case: str, backend: Backend, run: str, turns: Path, *, mode: str = "default", **opts: Any
) -> list[str]:
    """A parent program (tests/programs/faults/faultcase.py)."""
    cmd = [sys.executable, str(FAULTCASE), case, "--server", backend.url, "--run", run]
    cmd += ["--token", TOKEN, "--dir", str(turns)]
    if mode == "durable":
        cmd.append("--durable")
    for name, value in opts.items():
        flag = "--" + name.replace("_", "-")
        cmd += [flag] if value is True else [flag, str(value)]
    return cmd


def drain(procs: Procs, *args: str, deadline: float = 60.0) -> Result:
    """`zstream-mp spool drain`: a later process on this host, without ZSTREAM_TOKEN."""
    cmd = [sys.executable, "-m", "zstream_mp", "spool", "drain", "--timeout", "30", *args]
    return procs.run(cmd, deadline)


def after_the_exit(backend: Backend, procs: Procs) -> str:
    """The fault model's deliverers after a binding parent's exit. The exit delivers what
    its 2 s budget allows (on a quiet machine and our server, everything); what is left
    waits for the next deliverer, here `zstream-mp spool drain`, which must complete it,
    still exactly once. On a server that stores every POST (ZenML's, store_all) a batch in
    flight at a child's death is believed missing only 5 s after it was sent, so the exit
    always leaves such a spool to the next deliverer."""
    listed = procs.run([sys.executable, "-m", "zstream_mp", "spool", "ls", "--json"], 60.0)
    left = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    if not left:
        return "\nthe exit delivered everything"
    done = drain(procs)
    assert done.returncode == 0, done.tail()
    kept = sum(int(row["unsettled"]) for row in left)
    return f"\nthe exit left {kept} events; drain after it: {done.stdout.strip()}"


def wait_for(path: Path, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} ended (rc {proc.returncode}) before {path.name}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear in {timeout}s")
        time.sleep(0.01)


# --------------------------------------------------------------------------- the check


def problems_of(
    payloads: list[dict[str, Any]],
    want: dict[str, int],
    *,
    maybe: dict[str, set[int]] | None = None,
    subset: bool = False,
) -> list[str]:
    """What is wrong with a history against `want` (producer -> events 0..n-1).

    `maybe`: identities that may or may not be there (the event being published when a
    SIGKILL landed). `subset`: missing events are allowed (a documented loss)."""
    maybe = maybe or {}
    got = Counter((str(p.get("w")), int(p.get("seq", -1))) for p in payloads)
    wanted = {(w, s) for w, n in want.items() for s in range(n)}
    allowed = wanted | {(w, s) for w, seqs in maybe.items() for s in seqs}
    out = []
    missing = sorted(wanted - set(got))
    if missing and not subset:
        per = Counter(w for w, _ in missing)
        out.append(f"{len(missing)} missing, per producer {dict(per)}; first {missing[:6]}")
    dups = sorted(k for k, n in got.items() if n > 1)
    if dups:
        per = Counter(w for w, _ in dups)
        out.append(f"{len(dups)} delivered more than once, per producer {dict(per)}: {dups[:6]}")
    extra = sorted(set(got) - allowed)
    if extra:
        out.append(f"{len(extra)} unexpected (never published, or a re-send): {extra[:6]}")
    order: dict[str, list[int]] = {}
    seen: set[tuple[str, int]] = set()
    for p in payloads:
        ident = (str(p.get("w")), int(p.get("seq", -1)))
        if ident not in seen:
            seen.add(ident)
            order.setdefault(ident[0], []).append(ident[1])
    for w, seqs in sorted(order.items()):
        bad = [(a, b) for a, b in itertools.pairwise(seqs) if b < a]
        if bad:
            out.append(f"producer {w} out of order at {len(bad)} places, first {bad[:3]}")
    return out


def history_summary(backend: Backend, run: str, payloads: list[dict[str, Any]]) -> str:
    per = Counter(str(p.get("w")) for p in payloads)
    reqs = backend.requests(run)
    statuses = Counter(str(r["status"] if r["status"] is not None else r["action"]) for r in reqs)
    details = {json.dumps(r["detail"])[:160] for r in reqs if r.get("detail") is not None}
    return (
        f"server {backend.name}: {len(payloads)} events stored, per producer {dict(per)}; "
        f"{len(reqs)} publish requests, answers {dict(statuses)}"
        + (f"; refusals said {sorted(details)[:3]}" if details else "")
    )


def assert_history(
    backend: Backend,
    run: str,
    want: dict[str, int],
    row: str,
    *,
    maybe: dict[str, set[int]] | None = None,
    subset: bool = False,
    context: str = "",
) -> None:
    payloads = backend.history(run)
    problems = problems_of(payloads, want, maybe=maybe, subset=subset)
    print(f"row {row}: {history_summary(backend, run, payloads)}")
    assert not problems, (
        f"row {row} on {backend.name}: " + "; ".join(problems) + "\n"
        f"{history_summary(backend, run, payloads)}\n{spools_left()}\n{context}"
    )


def spools_left() -> str:
    """`zstream-mp spool ls` of the test's state dir: what is still waiting, and why."""
    out = subprocess.run(
        [sys.executable, "-m", "zstream_mp", "spool", "ls"],
        env=child_env(sys.executable),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return f"spool ls: {out.stdout.strip()} {out.stderr.strip()}".strip()


def returned_want(returned: dict[str, int]) -> tuple[dict[str, int], dict[str, set[int]]]:
    """Every seq publish() returned for, and the one being published at the kill."""
    return {w: last + 1 for w, last in returned.items()}, {
        w: {last + 1} for w, last in returned.items()
    }


def assert_drained(res: Result, row: str) -> None:
    assert res.returncode == 0, f"row {row}: spool drain failed: {res.stdout}\n{res.tail()}"


def assert_exited(res: Result, row: str, bound: float = EXIT_BOUND) -> None:
    assert res.returncode == 0, f"row {row}: the publisher failed: {res.tail()}"
    assert res.elapsed <= bound, f"row {row}: the publisher took {res.elapsed:.1f}s to exit"


# =========================================================================== rows 1-5: exit


@pytest.mark.parametrize("mode", MODES)
def test_row01_refused_at_exit_later_process_drains(
    backend: Backend, mode: str, procs: Procs
) -> None:
    """Row 1, refused at exit (nothing listens), adopter a later process (`spool drain`):
    the process keeps all its events in its spool; drained once the server is up."""
    run = backend.new_run()
    backend.down()
    res = procs.run(client(backend, run, [{"publish": 50}], mode=mode))
    assert_exited(res, "1")
    backend.up()
    drained = drain(procs)
    context = f"publisher: {res.tail()}\ndrain: {drained.stdout}"
    assert_history(backend, run, {"solo": 50}, "1", context=context)
    assert_drained(drained, "1")


@pytest.mark.parametrize("mode", MODES)
def test_row01_refused_at_exit_live_parent_flush_tree(
    backend: Backend, mode: str, procs: Procs, turns: Path
) -> None:
    """Row 1, refused at exit, adopter `flush_tree()` of a live parent whose children
    exited normally while nothing listened (the parent's own events, queued when it
    forked, are its own: no child sends them)."""
    run = backend.new_run()
    backend.down()
    cmd = faultcase("forks", backend, run, turns, mode=mode, children=2, events=50)
    proc = procs.start([*cmd, "--parent-before", "30", "--wait-go", "--adopter", "flush_tree"])
    wait_for(turns / "children-done", proc)
    backend.up()
    (turns / "go").touch()
    res = procs.finish(proc)
    assert res.returncode == 0, res.tail()
    assert_history(backend, run, {"parent": 30, "c0": 50, "c1": 50}, "1", context=res.tail())
    assert res.report.get("flush_tree") is True, f"flush_tree() returned False: {res.report}"


@pytest.mark.parametrize("mode", MODES)
def test_row02_hung_server_at_exit(backend: Backend, mode: str, procs: Procs) -> None:
    """Row 2, the server hangs (accepts, never answers) at exit: the batch in flight is
    kept with its Idempotency-Key; everything is delivered once after the server is healthy
    (on store_all this takes the "did the in-flight batch land?" stream check)."""
    run = backend.new_run()
    backend.script([{"action": "stall"}])
    res = procs.run(client(backend, run, [{"publish": 50}], mode=mode))
    assert_exited(res, "2")
    stalled = [r for r in backend.requests(run) if r["action"] == "stall"]
    assert stalled, "no publish request reached the hung server"
    backend.script([])
    drained = drain(procs)
    context = f"publisher: {res.tail()}\ndrain: {drained.stdout}"
    assert_history(backend, run, {"solo": 50}, "2", context=context)
    assert_drained(drained, "2")
    first = stalled[0]
    seqs = {int(ev["payload"]["seq"]) for ev in first["events"]}
    keys = {
        r["key"]
        for r in backend.requests(run)
        if r["status"] == 200 and seqs & {int(ev["payload"]["seq"]) for ev in r["events"]}
    }
    assert keys == {first["key"]}, (
        f"row 2: the batch in flight ({len(seqs)} events, key {first['key']}) was delivered "
        f"under the keys {keys}"
    )


@pytest.mark.parametrize("mode", MODES)
def test_row02_hung_server_at_exit_live_parent_flush_tree(
    backend: Backend, mode: str, procs: Procs, turns: Path
) -> None:
    """Row 2, the server hangs while forked children exit normally; adopter `flush_tree()`
    of their live parent once the server is healthy: every event once."""
    run = backend.new_run()
    backend.script([{"action": "stall"}])
    cmd = faultcase("forks", backend, run, turns, mode=mode, children=2, events=50)
    proc = procs.start([*cmd, "--wait-go", "--adopter", "flush_tree"])
    wait_for(turns / "children-done", proc)
    backend.script([])
    (turns / "go").touch()
    res = procs.finish(proc)
    assert res.returncode == 0, res.tail()
    assert_history(backend, run, {"c0": 50, "c1": 50}, "2", context=res.tail())
    assert res.report.get("flush_tree") is True, f"flush_tree() returned False: {res.report}"


@pytest.mark.parametrize("mode", MODES)
def test_row03_slow_answer_lands_after_exit(backend: Backend, mode: str, procs: Procs) -> None:
    """Row 3, the server answers after the exit budget: the batch lands after its process
    is gone; the adopter (`spool drain`) must see that it landed and not send it again."""
    run = backend.new_run()
    backend.script([{"action": "accept", "delay": BUDGET + 1.5}])
    res = procs.run(client(backend, run, [{"publish": 50}], mode=mode))
    assert_exited(res, "3")
    backend.script([])
    backend.wait_settled()  # the slow answers have landed; their process is gone
    drained = drain(procs)
    context = f"publisher: {res.tail()}\ndrain: {drained.stdout}"
    assert_history(backend, run, {"solo": 50}, "3", context=context)
    assert_drained(drained, "3")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [401, 403])
def test_row04_refused_credentials_kept_for_drain_with_token(
    backend: Backend, status: int, mode: str, procs: Procs
) -> None:
    """Row 4, 401 (a wrong token) or 403 (a token that may not publish) at exit: the
    events stay in the spool; `spool drain` without the right token exits 3 with a hint
    naming --token/ZSTREAM_TOKEN; `spool drain --token <right token>` delivers them all."""
    run = backend.new_run()
    token = WRONG_TOKEN if status == 401 else READ_TOKEN
    res = procs.run(client(backend, run, [{"publish": 50}], mode=mode, token=token))
    assert_exited(res, "4")
    assert any(r["status"] == status for r in backend.requests(run)), history_summary(
        backend, run, []
    )
    refused = drain(procs)
    said = refused.stdout + refused.stderr
    assert refused.returncode == 3, f"row 4: drain without the token: {refused.tail()}\n{said}"
    assert "--token" in said or "ZSTREAM_TOKEN" in said, f"row 4: no hint in {said!r}"
    drained = drain(procs, "--token", TOKEN)
    context = f"publisher: {res.tail()}\ndrain --token: {drained.stdout}{drained.stderr}"
    assert_history(backend, run, {"solo": 50}, "4", context=context)
    assert_drained(drained, "4")


@pytest.mark.parametrize("mode", MODES)
def test_row05_server_error_at_exit(backend: Backend, mode: str, procs: Procs) -> None:
    """Row 5, the server answers 500 at exit: kept, delivered later (`spool drain`)."""
    run = backend.new_run()
    backend.script([{"status": 500}])
    res = procs.run(client(backend, run, [{"publish": 50}], mode=mode))
    assert_exited(res, "5")
    backend.script([])
    drained = drain(procs)
    context = f"publisher: {res.tail()}\ndrain: {drained.stdout}"
    assert_history(backend, run, {"solo": 50}, "5", context=context)
    assert_drained(drained, "5")


# =========================================================================== rows 6-9: leaving


@pytest.mark.parametrize("adopter", ["flush_tree", "exit"])
def test_row06_flush_timeout_then_os_exit(
    backend: Backend, adopter: str, procs: Procs, turns: Path
) -> None:
    """Row 6, `flush(0.2)` times out, then `os._exit`: 20 forked children, 10 events each,
    0.3 s per POST, the parent's own queue not empty when it forks. What flush waited for
    is kept; the parent's flush_tree() or exit delivers it; none lost, none twice."""
    run = backend.new_run()
    backend.script([{"action": "accept", "delay": 0.3}])
    cmd = faultcase("forks", backend, run, turns, children=20, events=10, child_flush=0.2)
    cmd += ["--parent-before", "20", "--child-exit", "os_exit"]
    proc = procs.start([*cmd, "--wait-go", "--adopter", adopter])
    wait_for(turns / "children-done", proc)
    backend.script([])
    (turns / "go").touch()
    res = procs.finish(proc)
    assert res.returncode == 0, res.tail()
    later = after_the_exit(backend, procs) if adopter == "exit" else ""
    want = {"parent": 20, **{f"c{i}": 10 for i in range(20)}}
    assert_history(backend, run, want, "6", context=res.tail() + later)
    if adopter == "flush_tree":
        assert res.report.get("flush_tree") is True, res.report


def test_row07_os_exit_without_flush_default_mode_is_not_claimed(
    backend: Backend, procs: Procs, turns: Path
) -> None:
    """Row 7, `os._exit` without flush in default mode: the queue is lost (documented), and
    the parent's `flush_tree()` must say so (False); what did arrive, arrived once."""
    run = backend.new_run()
    backend.script([{"action": "accept", "delay": 0.5}])
    cmd = faultcase("forks", backend, run, turns, children=2, events=550)
    res = procs.run(
        [*cmd, "--child-exit", "os_exit", "--adopter", "flush_tree", "--tree-timeout", "5"]
    )
    assert res.returncode == 0, res.tail()
    assert res.report.get("flush_tree") is False, f"flush_tree() claimed success: {res.report}"
    assert_history(backend, run, {"c0": 550, "c1": 550}, "7", subset=True, context=res.tail())


@pytest.mark.parametrize("adopter", ["flush_tree", "exit"])
def test_row07_os_exit_without_flush_durable_loses_nothing(
    backend: Backend, adopter: str, procs: Procs, turns: Path
) -> None:
    """Row 7, `os._exit` without flush in durable mode: 2 forked children, 1,100 events,
    a batch in flight at each death (0.2 s per POST); all delivered exactly once by the
    parent's exit or its flush_tree() (the parent published 20 events before forking)."""
    run = backend.new_run()
    backend.script([{"action": "accept", "delay": 0.2}])
    cmd = faultcase("forks", backend, run, turns, mode="durable", children=2, events=550)
    cmd += ["--parent-before", "20", "--child-exit", "os_exit"]
    proc = procs.start([*cmd, "--wait-go", "--adopter", adopter])
    wait_for(turns / "children-done", proc)
    backend.script([])
    (turns / "go").touch()
    res = procs.finish(proc)
    assert res.returncode == 0, res.tail()
    later = after_the_exit(backend, procs) if adopter == "exit" else ""
    want = {"parent": 20, "c0": 550, "c1": 550}
    assert_history(backend, run, want, "7", context=res.tail() + later)
    if adopter == "flush_tree":
        assert res.report.get("flush_tree") is True, res.report


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_row08_sigterm_pool_terminate_mid_burst(
    backend: Backend, method: str, procs: Procs, turns: Path
) -> None:
    """Row 8, SIGTERM of pool workers (`Pool.terminate()` mid-burst), 50 ms per POST:
    every event publish() returned for is flushed or spooled, and delivered exactly once
    (the parent's flush_tree() adopts the spools)."""
    run = backend.new_run()
    backend.script([{"action": "accept", "delay": 0.05}])
    cmd = faultcase("terminate", backend, run, turns, method=method, cap=3000, kill_at=2000)
    res = procs.run([*cmd, "--adopter", "flush_tree"])
    assert res.returncode == 0, res.tail()
    want, maybe = returned_want(res.report["returned"])
    assert_history(backend, run, want, "8", maybe=maybe, context=res.tail())
    assert res.report.get("flush_tree") is True, res.report


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_row09_sigkill_mid_burst_durable(
    backend: Backend, method: str, procs: Procs, turns: Path
) -> None:
    """Row 9, SIGKILL (the OOM killer's signal) mid-burst in durable mode: every event
    publish() returned for is delivered exactly once by the parent's flush_tree()."""
    run = backend.new_run()
    cmd = faultcase("kill", backend, run, turns, mode="durable", method=method)
    res = procs.run([*cmd, "--cap", "2000", "--kill-at", "2000", "--adopter", "flush_tree"])
    assert res.returncode == 0, res.tail()
    want, maybe = returned_want(res.report["returned"])
    assert_history(backend, run, want, "9", maybe=maybe, context=res.tail())
    assert res.report.get("flush_tree") is True, res.report


def test_row09_sigkill_mid_burst_default_mode_is_not_claimed(
    backend: Backend, procs: Procs, turns: Path
) -> None:
    """Row 9, SIGKILL mid-burst in default mode (0.3 s per POST, so queues are full): the
    killed queues are lost, and `flush_tree()` must return False."""
    run = backend.new_run()
    backend.script([{"action": "accept", "delay": 0.3}])
    cmd = faultcase("kill", backend, run, turns, workers=2, cap=1000, kill_at=600)
    res = procs.run([*cmd, "--adopter", "flush_tree", "--tree-timeout", "5"])
    assert res.returncode == 0, res.tail()
    assert res.report.get("flush_tree") is False, f"flush_tree() claimed success: {res.report}"
    want, maybe = returned_want(res.report["returned"])
    assert_history(backend, run, want, "9", maybe=maybe, subset=True, context=res.tail())


# =========================================================================== rows 10-12: the host


def _squat_pid(pid: int, attempts: int = 200) -> subprocess.Popen[bytes] | None:
    """Start an unrelated process that gets `pid` (a real PID reuse, through the kernel's
    ns_last_pid); None when another process on the machine keeps taking it first."""
    for _ in range(attempts):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
                fh.write(str(pid - 1))
        except OSError:
            return None
        squatter = subprocess.Popen(["sleep", "120"])
        if squatter.pid == pid:
            return squatter
        squatter.kill()
        squatter.wait()
    return None


def test_row10_pid_reuse_spool_is_adopted(backend: Backend, procs: Procs) -> None:
    """Row 10, PID reuse: a dead durable publisher's PID now belongs to an unrelated live
    process (other start time); its spool is adopted (`spool drain`) and delivered once."""
    run = backend.new_run()
    backend.down()
    res = procs.run(client(backend, run, [{"publish": 100}], mode="durable"))
    assert_exited(res, "10")
    owner = int(res.report["pid"])
    squatter = _squat_pid(owner)
    if squatter is None:
        pytest.skip(f"could not start a process with PID {owner} (ns_last_pid)")
    try:
        assert psutil.Process(owner).name() == "sleep"
        backend.up()
        drained = drain(procs)
        context = f"publisher: {res.tail()}\ndrain: {drained.stdout}"
        assert_history(backend, run, {"solo": 100}, "10", context=context)
        assert_drained(drained, "10")
    finally:
        squatter.kill()
        squatter.wait()


DOWN_FOR = 10.0


def test_row11_server_down_for_long_process_alive(
    backend: Backend, procs: Procs, turns: Path
) -> None:
    """Row 11, the server is down for a long while (~10 s; retry deadline at its default)
    while the processes stay alive, and they exit after it returns: the default-mode
    producer's queue is delivered or spooled (then drained), the durable one loses nothing."""
    run = backend.new_run()
    backend.down()
    started = {}
    for mode in MODES:
        steps = [
            {"publish": 100},
            {"touch": str(turns / f"published-{mode}")},
            {"wait_file": str(turns / "back")},
        ]
        started[mode] = procs.start(client(backend, run, steps, worker=mode, mode=mode))
    for mode, proc in started.items():
        wait_for(turns / f"published-{mode}", proc)
    time.sleep(DOWN_FOR)
    backend.up()
    (turns / "back").touch()
    results = {mode: procs.finish(proc) for mode, proc in started.items()}
    for res in results.values():
        assert res.returncode == 0, res.tail()
    drained = drain(procs)
    context = "\n".join(f"{m}: {r.tail()}" for m, r in results.items())
    context += f"\ndrain: {drained.stdout}{drained.stderr}"
    assert_history(backend, run, {m: 100 for m in MODES}, "11", context=context)
    assert_drained(drained, "11")


def _mount(args: list[str]) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"ROW 12 NOT RUN: mount {' '.join(args)}: {r.stderr.strip()}")


@pytest.fixture(params=["full", "read_only"])
def bad_state_dir(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A state dir on a 1 MiB tmpfs that is full, or on a read-only mount (root writes
    through a read-only mode, not through a read-only mount)."""
    mount = tmp_path / request.param
    mount.mkdir(mode=0o700)
    state = mount / "state"
    try:
        if request.param == "full":
            _mount(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)])
            state.mkdir(mode=0o700)
            with open(mount / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 4096)
        else:
            state.mkdir(mode=0o700)
            _mount(["--bind", str(mount), str(mount)])
            _mount(["-o", "remount,ro,bind", str(mount)])
        monkeypatch.setenv("ZSTREAM_STATE_DIR", str(state))
        yield state
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("mode", MODES)
def test_row12_bad_state_dir_healthy_server(
    backend: Backend, mode: str, procs: Procs, bad_state_dir: Path
) -> None:
    """Row 12, the state dir's filesystem is full (or read-only): no crash (no SIGBUS), no
    hang; a warning (nothing can be kept there), and publishing to a healthy server still
    delivers every event once."""
    run = backend.new_run()
    res = procs.run(client(backend, run, [{"publish": 200}, {"flush": 10}], mode=mode))
    assert res.returncode == 0, f"row 12: the publisher died: {res.tail()}"
    assert res.elapsed <= EXIT_BOUND + 10, f"row 12: took {res.elapsed:.1f}s"
    assert res.warnings, f"row 12: an unusable state dir went unsaid: {res.tail()}"
    assert_history(backend, run, {"solo": 200}, "12", context=res.tail())


def test_row12_bad_state_dir_server_down(
    backend: Backend, procs: Procs, bad_state_dir: Path
) -> None:
    """Row 12, full (or read-only) state dir and nothing listening, durable mode: no crash,
    no hang; a warning that states the true total of what could not be kept (200)."""
    run = backend.new_run()
    backend.down()
    res = procs.run(client(backend, run, [{"publish": 200}], mode="durable"))
    assert res.returncode == 0, f"row 12: the publisher died: {res.tail()}"
    assert res.elapsed <= EXIT_BOUND, f"row 12: took {res.elapsed:.1f}s"
    assert any("200" in w for w in res.warnings), (
        f"row 12: no warning with the true total (200): {res.tail()}"
    )


# =========================================================================== rows 13-17: trees


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_row13_two_processes_one_token_first_exits(
    backend: Backend, method: str, procs: Procs, turns: Path
) -> None:
    """Row 13, two processes bound with the same token; the first exits, then the second
    starts children: they still get the context and the token; everything delivered."""
    run = backend.new_run()
    steps = [
        {"publish": 20},
        {"touch": str(turns / "first-published")},
        {"wait_file": str(turns / "first-may-exit")},
    ]
    first = procs.start(client(backend, run, steps, worker="first"))
    wait_for(turns / "first-published", first)
    cmd = faultcase("late_children", backend, run, turns, method=method, events=50)
    second = procs.start([*cmd, "--adopter", "flush_tree"])
    wait_for(turns / "second-bound", second)
    (turns / "first-may-exit").touch()
    first_res = procs.finish(first)
    assert first_res.returncode == 0, first_res.tail()
    (turns / "first-gone").touch()
    res = procs.finish(second)
    assert res.returncode == 0, res.tail()
    want = {"first": 20, "second": 50, "second.c0": 50, "second.c1": 50}
    assert_history(backend, run, want, "13", context=res.tail())
    assert res.report.get("flush_tree") is True, res.report


def _wait_gone(pids: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"children {pids} still running after {timeout}s")


@pytest.mark.parametrize("how", ["fork", "exec"])
def test_row14_parent_exits_before_its_children(
    backend: Backend, how: str, procs: Procs, turns: Path
) -> None:
    """Row 14, a parent binds, starts workers (forked, or exec'd interpreters that inherit
    the context) and exits before them: their events are delivered, by themselves or
    spooled and drained by a later process."""
    run = backend.new_run()
    cmd = faultcase("orphans", backend, run, turns, how=how, children=3, events=100)
    res = procs.run(cmd)
    assert res.returncode == 0, res.tail()
    children = json.loads((turns / "children.json").read_text())
    (turns / "parent-gone").touch()
    _wait_gone(children)
    drained = drain(procs)
    context = f"parent: {res.tail()}\ndrain: {drained.stdout}"
    assert_history(backend, run, {f"c{i}": 100 for i in range(3)}, "14", context=context)
    assert_drained(drained, "14")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_row15_pool_started_before_bind(
    backend: Backend, method: str, procs: Procs, turns: Path
) -> None:
    """Row 15, a worker started before `bind()`: `Pool(4)` created, then `bind()`, then
    `map()`: the workers find the run their parent bound; all 800 events delivered."""
    run = backend.new_run()
    cmd = faultcase("before_bind", backend, run, turns, method=method, events=200)
    res = procs.run([*cmd, "--adopter", "flush_tree"])
    assert res.returncode == 0, res.tail()
    assert_history(backend, run, {f"w{i}": 200 for i in range(4)}, "15", context=res.tail())
    assert res.report.get("flush_tree") is True, res.report


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_row16_binding_parent_adopts_at_exit(
    backend: Backend, method: str, procs: Procs, turns: Path
) -> None:
    """Row 16, a parent that binds and never publishes: durable, 4 workers SIGKILLed
    mid-burst, the parent exits normally: after its exit every event publish() returned
    for is on the server (the binding parent adopts at its exit; on a server that stores
    every POST, with `spool drain` after it, as the fault model says)."""
    run = backend.new_run()
    cmd = faultcase("kill", backend, run, turns, mode="durable", method=method)
    res = procs.run([*cmd, "--cap", "2000", "--kill-at", "2000", "--adopter", "exit"])
    assert res.returncode == 0, res.tail()
    later = after_the_exit(backend, procs)
    want, maybe = returned_want(res.report["returned"])
    assert_history(backend, run, want, "16", maybe=maybe, context=res.tail() + later)


def test_row17_two_spool_drains_at_once(backend: Backend, procs: Procs) -> None:
    """Row 17, two deliverers of the same spools at once: two `spool drain` processes
    started together (0.2 s per POST, so they overlap): exactly once."""
    run = backend.new_run()
    backend.down()
    producers = [
        procs.start(client(backend, run, [{"publish": 1500}], worker=w, mode="durable"))
        for w in ("a", "b")
    ]
    for proc in producers:
        assert_exited(procs.finish(proc), "17")
    backend.up([{"action": "accept", "delay": 0.2}])
    cmd = [sys.executable, "-m", "zstream_mp", "spool", "drain", "--timeout", "30"]
    both = [procs.start(cmd), procs.start(cmd)]
    outs = [procs.finish(p) for p in both]
    backend.script([])
    last = drain(procs)  # whatever the two left (one may have found everything claimed)
    context = "\n".join(f"drain: {r.stdout} {r.tail()}" for r in [*outs, last])
    assert_history(backend, run, {"a": 1500, "b": 1500}, "17", context=context)
    assert_drained(last, "17")


def test_row17_background_adoption_and_exit_hook(
    backend: Backend, procs: Procs, turns: Path
) -> None:
    """Row 17, a parent's background adoption and its exit hook on the same spools: durable
    children leave through `os._exit` with batches in flight (0.2 s per POST); the parent
    publishes (its first publish starts the background adoption) and exits at once:
    exactly once. What the exit's budget leaves (an in-flight batch it cannot judge yet)
    stays spooled for a later process (`spool drain`), which must not send it twice."""
    run = backend.new_run()
    backend.script([{"action": "accept", "delay": 0.2}])
    cmd = faultcase("forks", backend, run, turns, mode="durable", children=2, events=600)
    res = procs.run([*cmd, "--child-exit", "os_exit", "--parent-publish", "5", "--adopter", "exit"])
    assert res.returncode == 0, res.tail()
    backend.wait_settled()
    drained = drain(procs)
    print(f"row 17: the parent took {res.elapsed:.1f}s; then spool drain: {drained.stdout.strip()}")
    want = {"c0": 600, "c1": 600, "parent-late": 5}
    context = f"parent: {res.tail()}\ndrain: {drained.stdout}{drained.stderr}"
    assert_history(backend, run, want, "17", context=context)
    assert_drained(drained, "17")
