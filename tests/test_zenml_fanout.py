"""Inside real ZenML steps, on the real ZenML server, with default settings: every fan-out
delivers every worker event exactly once, whether or not the step published first.

The pipelines (tests/programs/zenml/fanout_steps.py) run in the ZenML peer's venv on the
local orchestrator; `ZSTREAM_EXIT_TIMEOUT` and every other setting is left at its default.
The test subscribes to the run's stream on ZenML's server from the run's first second (ZenML
trims a stream to 10,000 entries, so a replay afterwards would not see everything) and counts
every event by its identity `(case, worker, seq)`.

* `burst` cases: the step publishes 50 events right before it fans out, so forks land
  while the step's sender builds its first HTTP client and posts.
* `silent` cases: the step itself never publishes; its context must still reach every
  child process and thread it starts.
* `noflush` / `flush`: workers end with or without an explicit `flush()`.
"""

from __future__ import annotations

import dataclasses
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.programs import program
from helpers.zenml_peer import Peer, PeerUnavailable, ensure_peer
from helpers.zenml_steps import (
    ZStreamNotInstallable,
    ensure_peer_packages,
    ensure_zstream_in_peer,
    read_stream,
    run_pipeline,
)

pytestmark = [
    pytest.mark.zenml,
    pytest.mark.timeout(3000),
]

SCRIPT = program("zenml/fanout_pipeline.py")
WORKERS, WORKER_EVENTS, BURST = 4, 200, 50
CASES = [
    "fork_sys_exit",
    "fork_atexit_os_exit",
    "fork_flush_os_exit",
    "pool_fork",
    "pool_spawn",
    "pool_forkserver",
    "with_pool",
    "ppe_fork",
    "ppe_spawn",
    "joblib_loky",
    "joblib_multiprocessing",
    "dask_local",
    "threads_copy_context",
    "threads_plain",
]
ONLY_WITH_FLUSH = {"fork_flush_os_exit"}
NAMES = [
    f"{variant}.{case}.{flush}"
    for variant in ("burst", "silent")
    for flush in ("noflush", "flush")
    for case in CASES
    if not (case in ONLY_WITH_FLUSH and flush == "noflush")
]


@pytest.fixture(scope="module")
def peer() -> Peer:
    try:
        found = ensure_peer()
    except PeerUnavailable as exc:
        pytest.skip(f"ZenML peer unavailable, in-step fan-out tests NOT run: {exc}")
    try:
        ensure_zstream_in_peer(found.python)
        ensure_peer_packages(found.python, "joblib", "distributed")
    except ZStreamNotInstallable as exc:
        pytest.skip(f"cannot prepare the ZenML peer venv, NOT run: {exc}")
    return found


@dataclasses.dataclass
class FanOut:
    events: list[Any]
    """Every event of every fan-out run, replayed whole from ZenML's server."""
    results: dict[str, Any]
    """What the step saw per case name."""


@pytest.fixture(scope="module")
def fanout(peer: Peer, tmp_path_factory: pytest.TempPathFactory) -> FanOut:
    result = run_pipeline(
        peer, "fanout", tmp_path_factory.mktemp("zenml-fanout"), script=SCRIPT, timeout=2400
    )
    hung = result.log.find("==== ")
    if hung >= 0:  # the step's watchdog found a fan-out hung and ended the pipeline
        pytest.fail(f"a fan-out hung in the step; every process's stacks:\n{result.log[hung:]}")
    result.check()
    events: list[Any] = []
    results: dict[str, Any] = {}
    for name, record in result.steps.items():
        if not name.startswith("fan_out_"):
            continue
        assert record["step_flush"], f"{name}: the step's own flush() failed: {record}"
        results.update(record["results"])
        frames = read_stream(peer.url, record["run_id"], peer.token)
        events += [_Event(f.id, f.event, f.json()["payload"]) for f in frames if f.id]
    return FanOut(events, results)


@dataclasses.dataclass(frozen=True)
class _Event:
    id: str | None
    kind: str
    payload: dict[str, Any]


def _counts(events: list[Any], case: str, kind: str) -> Counter[tuple[Any, int]]:
    return Counter(
        (e.payload["worker"], e.payload["seq"])
        for e in events
        if e.kind == kind and e.payload.get("case") == case
    )


def _outcome(run: FanOut, name: str) -> Any:
    return run.results[name]


@pytest.mark.parametrize("name", NAMES)
def test_every_worker_event_exactly_once(fanout: FanOut, name: str) -> None:
    outcome = _outcome(fanout, name)
    assert not isinstance(outcome["outcome"], str), outcome
    got = _counts(fanout.events, name, "w")
    want = {(w, s) for w in range(WORKERS) for s in range(WORKER_EVENTS)}
    missing = sorted(want - set(got))
    dups = sorted(k for k, n in got.items() if n > 1)
    assert not missing and not dups and set(got) == want, (
        f"{name}: {len(missing)} missing (first {missing[:5]}), {len(dups)} duplicated "
        f"(first {dups[:5]}); outcome {outcome}"
    )
    if name.endswith(".flush") and isinstance(outcome["outcome"], list):
        flushes = [r.get("flush") for r in outcome["outcome"] if isinstance(r, dict)]
        assert all(flushes), f"{name}: a worker's flush() returned False: {flushes}"


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("burst.")])
def test_the_steps_burst_exactly_once(fanout: FanOut, name: str) -> None:
    got = _counts(fanout.events, name, "b")
    assert got == Counter({("step", s): 1 for s in range(BURST)}), name


def test_nothing_else_arrives(fanout: FanOut) -> None:
    """No parent event re-sent by a child, no event of one case counted under another."""
    assert len(fanout.events) == len(NAMES) * WORKERS * WORKER_EVENTS + BURST * sum(
        1 for n in NAMES if n.startswith("burst.")
    )


@pytest.mark.parametrize("variant", ["burst", "silent"])
def test_durable_os_exit_without_flush_in_a_step(
    peer: Peer, durable_runs: dict[str, Any], variant: str
) -> None:
    """Durable mode: workers that leave through `os._exit` without any flush lose nothing;
    the step's end adopts their spools before ZenML ends the run."""
    record = durable_runs[f"durable_{variant}"]
    name = f"{variant}.fork_durable_os_exit.noflush"
    assert record["results"][name]["outcome"] == [0] * WORKERS, record
    events = _replayed(peer, record["run_id"])
    got = _counts(events, name, "w")
    want = {(w, s) for w in range(WORKERS) for s in range(WORKER_EVENTS)}
    missing = sorted(want - set(got))
    dups = sorted(k for k, n in got.items() if n > 1)
    assert not missing and not dups, f"{len(missing)} missing {missing[:5]}, dups {dups[:5]}"
    if variant == "burst":
        assert _counts(events, name, "b") == Counter({("step", s): 1 for s in range(BURST)})


@pytest.fixture(scope="module")
def durable_runs(peer: Peer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = run_pipeline(
        peer,
        "durable",
        tmp_path_factory.mktemp("zenml-durable"),
        script=SCRIPT,
        timeout=900,
        env={"ZSTREAM_DURABLE": "1"},
    )
    result.check()
    return result.steps


def _replayed(peer: Peer, run_id: str) -> list[_Event]:
    frames = read_stream(peer.url, run_id, peer.token)
    return [_Event(f.id, f.event, f.json()["payload"]) for f in frames if f.id]


def test_fork_storm_in_a_step(peer: Peer, tmp_path: Path) -> None:
    """200 short forks while a step thread publishes non-stop: no hang, every child's
    flush() True, every child event delivered exactly once."""
    result = run_pipeline(peer, "storm", tmp_path, script=SCRIPT, timeout=900)
    result.check()
    record = result.steps["storm"]
    assert record["exit_codes"] == [0] * 200, record["exit_codes"]
    assert (record["flush_true"], record["flush_false"]) == (200, 0), record
    events = _replayed(peer, record["run_id"])
    first = _counts(events, "storm.step", "s")
    assert ("step", 0) in first, "precondition: the stream was not trimmed (replayed whole)"
    got = _counts(events, "storm", "w")
    want = {(c, s) for c in range(200) for s in range(10)}
    assert set(got) == want and max(got.values()) == 1, (
        f"missing {sorted(want - set(got))[:5]}, dups {[k for k, n in got.items() if n > 1][:5]}"
    )


def test_step_log_has_no_per_request_lines(peer: Peer, tmp_path: Path) -> None:
    """5,000 events from a step: its log, read back through ZenML, holds no line per batch."""
    # The local artifact store (where ZenML keeps a step's log) resolves under the client's
    # local stores path: share the server's, so the server can read the log back.
    stores = {"ZENML_LOCAL_STORES_PATH": str(Path(peer.state) / "local_stores")}
    result = run_pipeline(peer, "logs", tmp_path, script=SCRIPT, timeout=600, env=stores)
    result.check()
    record = result.steps["chatty"]
    assert len(_counts(_replayed(peer, record["run_id"]), "logs", "w")) == 5000
    response = httpx.get(
        f"{peer.url}/api/v1/steps/{record['step_run_id']}/logs",
        params={"source": "step"},
        headers={"Authorization": f"Bearer {peer.token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:500]
    entries = response.json()
    text = "\n".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in entries)
    assert "zsz-step-log-probe" in text, f"the step's log was not read back: {text[:500]}"
    offending = [
        line
        for line in text.splitlines()
        if "HTTP Request" in line or "/events" in line or "httpcore" in line
    ]
    assert not offending, f"{len(offending)} per-request lines, e.g. {offending[:3]}"


def test_step_signal_handler_stays_in_the_step(peer: Peer, tmp_path: Path) -> None:
    """ZenML's step SignalHandler is the step's alone: forked children get the default
    SIGTERM back, so `Pool.terminate()` ends a worker whose main thread cannot take the
    signal (it lands on another thread) instead of waiting for it forever."""
    result = run_pipeline(peer, "signals", tmp_path, script=SCRIPT, timeout=600)
    result.check()
    record = result.steps["signals"]
    assert "SignalHandler" in record["step_sigterm"], f"precondition: {record['step_sigterm']}"
    for where in ("child", "pool_child"):
        sigterm, sigint = record[where]
        assert sigterm == repr(signal.SIG_DFL), (where, sigterm)
        assert "SignalHandler" not in sigint, (where, sigint)
    # A silent worker dies of the signal; a publishing one flushes first (exit 143).
    assert record["terminate_silent_worker"] == [-signal.SIGTERM], record
    assert record["terminate_publishing_worker"] in ([143], [-signal.SIGTERM]), record
    got = _counts(_replayed(peer, record["run_id"]), "signals", "g")
    assert got == Counter({("pool", 0): 1}), f"the terminated worker's event: {got}"
