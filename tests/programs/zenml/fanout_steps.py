"""Real ZenML steps that fan out every way users do, publishing through zstream_mp.

Run by `fanout_pipeline.py` inside the ZenML peer venv, on the local orchestrator, with
default zstream_mp settings. The workers run `fanout_work.work`.

Modes:
  fanout   steps that run every case of `CASES` (comma separated, default all): `burst`
           steps publish 50 events right before each fan-out, `silent` steps never publish
           themselves; workers end without or with a final `flush()`. Every worker
           publishes `WORKER_EVENTS` events `{"case", "worker", "seq"}` of kind `w`.
           One pipeline run per (variant, flush, half of the cases).
  durable  with `ZSTREAM_DURABLE=1`: forked workers publish and `os._exit` without any
           flush (`burst` and `silent`); the step's end delivers their spools.
  storm    one step whose thread publishes non-stop while the step forks 200 short children
           that publish 10 events each and `flush()` before `os._exit`.
  logs     one step that publishes 5,000 events (the test reads its captured log back).
  signals  one step that forks children and reports the SIGTERM/SIGINT handlers they got,
           and whether `Pool.terminate()` ends a worker whose main thread cannot take
           SIGTERM (as when the kernel hands it to another thread while the main thread
           waits in the pool's queue semaphore).

Each step writes `OUT_DIR/run.json` (its run id) as soon as it starts, so the test can
subscribe before a busy stream is trimmed, and `OUT_DIR/<step>.json` with what it saw.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from fanout_work import work
from zenml import pipeline, step
from zenml.steps import get_step_context

import zstream_mp

MODE = sys.argv[1] if len(sys.argv) > 1 else "fanout"
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else ".")
WORKERS = 4
WORKER_EVENTS = int(os.environ.get("ZSZ_WORKER_EVENTS", "200"))
BURST = 50
FORKS = int(os.environ.get("ZSZ_FORKS", "200"))
STORM_STEP_EVENTS_PER_FORK = 32
"""200 forks: at most 6,400 step events beside the 2,000 of the children."""


def _jobs(case: str, do_flush: bool) -> list[tuple[str, int, int, bool]]:
    return [(case, w, WORKER_EVENTS, do_flush) for w in range(WORKERS)]


# ----------------------------------------------------------------------------- fan-outs


def _fork(case: str, do_flush: bool, leave: str) -> list[Any]:
    pids = []
    for job in _jobs(case, do_flush):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                work(job)
            except BaseException:
                code = 3
            if leave == "sys_exit":
                # What sys.exit() does at the top of a script. Raised here, ZenML's step
                # runner (inherited by the child) would catch the SystemExit and report the
                # parent's step failed, so the child runs the interpreter's exit sequence
                # itself: threads, then atexit, the parent's inherited handlers included.
                threading._shutdown()  # type: ignore[attr-defined]
                atexit._run_exitfuncs()
            if leave == "atexit":
                atexit._run_exitfuncs()
            os._exit(code)
        pids.append(pid)
    codes: list[Any] = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    return codes


def _pool(method: str) -> Callable[[str, bool], list[Any]]:
    def run(case: str, do_flush: bool) -> list[Any]:
        pool = multiprocessing.get_context(method).Pool(WORKERS)
        try:
            return pool.map(work, _jobs(case, do_flush), chunksize=1)
        finally:
            pool.close()
            pool.join()

    return run


def _with_pool(case: str, do_flush: bool) -> list[Any]:
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        return pool.map(work, _jobs(case, do_flush), chunksize=1)


def _ppe(method: str) -> Callable[[str, bool], list[Any]]:
    def run(case: str, do_flush: bool) -> list[Any]:
        mp = multiprocessing.get_context(method)
        with ProcessPoolExecutor(WORKERS, mp_context=mp) as ex:
            return list(ex.map(work, _jobs(case, do_flush)))

    return run


def _joblib(backend: str) -> Callable[[str, bool], list[Any]]:
    def run(case: str, do_flush: bool) -> list[Any]:
        from joblib import Parallel, delayed

        jobs = _jobs(case, do_flush)
        return list(Parallel(n_jobs=WORKERS, backend=backend)(delayed(work)(j) for j in jobs))

    return run


def _dask(case: str, do_flush: bool) -> list[Any]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        return list(client.gather(client.map(work, _jobs(case, do_flush), pure=False)))


def _threads(copy: bool) -> Callable[[str, bool], list[Any]]:
    def run(case: str, do_flush: bool) -> list[Any]:
        with ThreadPoolExecutor(WORKERS) as ex:
            if copy:
                futures = [
                    ex.submit(contextvars.copy_context().run, work, j)
                    for j in _jobs(case, do_flush)
                ]
            else:
                futures = [ex.submit(work, j) for j in _jobs(case, do_flush)]
            return [f.result() for f in futures]

    return run


CASES: dict[str, Callable[[str, bool], list[Any]]] = {
    "fork_sys_exit": lambda c, f: _fork(c, f, "sys_exit"),
    "fork_atexit_os_exit": lambda c, f: _fork(c, f, "atexit"),
    "fork_flush_os_exit": lambda c, f: _fork(c, True, "os_exit"),
    "pool_fork": _pool("fork"),
    "pool_spawn": _pool("spawn"),
    "pool_forkserver": _pool("forkserver"),
    "with_pool": _with_pool,
    "ppe_fork": _ppe("fork"),
    "ppe_spawn": _ppe("spawn"),
    "joblib_loky": _joblib("loky"),
    "joblib_multiprocessing": _joblib("multiprocessing"),
    "dask_local": _dask,
    "threads_copy_context": _threads(True),
    "threads_plain": _threads(False),
}
ONLY_WITH_FLUSH = {"fork_flush_os_exit"}  # os._exit without any flush is lost by design


CASE_DEADLINE = float(os.environ.get("ZSZ_CASE_DEADLINE", "180"))
"""Seconds one fan-out may take (a few, normally) before the watchdog calls it hung."""
HUNG_EXIT = 75
"""The pipeline's exit status when a fan-out hung."""


@contextlib.contextmanager
def _watchdog(name: str) -> Iterator[None]:
    """Past `CASE_DEADLINE`, the fan-out has hung: every process of the pipeline prints its
    stacks to the log (SIGUSR1, registered by `fanout_work`), then all end, so the suite
    fails at once with the stacks instead of waiting for its timeout."""
    done = threading.Event()

    def watch() -> None:
        if done.wait(CASE_DEADLINE):
            return
        me = psutil.Process()
        kids = me.children(recursive=True)
        for proc in [me, *kids]:
            with contextlib.suppress(Exception):
                header = f"\n==== {name} hung: stacks of pid {proc.pid} {proc.cmdline()}\n"
                os.write(2, header.encode())
                os.kill(proc.pid, signal.SIGUSR1)
                time.sleep(0.5)
        for proc in kids:
            with contextlib.suppress(Exception):
                proc.kill()
        os._exit(HUNG_EXIT)

    thread = threading.Thread(target=watch, name="zsz-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _selected() -> list[str]:
    raw = sys.argv[3] if len(sys.argv) > 3 else ""
    return [c for c in raw.split(",") if c] or list(CASES)


def _write(name: str, data: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / f".{name}.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(OUT / f"{name}.json")


def _announce() -> dict[str, Any]:
    """Write the run id at once (`run.json`), for a test that subscribes while it runs."""
    ctx = get_step_context()
    ids = {"run_id": str(ctx.pipeline_run.id), "step_run_id": str(ctx.step_run.id)}
    _write("run", ids)
    return ids


# ----------------------------------------------------------------------------- steps


@step
def fan_out(variant: str, flush: bool, cases: list[str]) -> int:
    ids = _announce()
    results: dict[str, Any] = {}
    for case in cases:
        name = f"{variant}.{case}.{'flush' if flush else 'noflush'}"
        if variant == "burst":  # right before the fan-out: the sender is building its client
            for seq in range(BURST):
                zstream_mp.publish({"case": name, "worker": "step", "seq": seq}, kind="b")
        started = time.monotonic()
        with _watchdog(name):
            try:
                outcome: Any = CASES[case](name, flush)
            except Exception as exc:
                outcome = f"error: {type(exc).__name__}: {exc}"
        results[name] = {"outcome": outcome, "seconds": time.monotonic() - started}
    step_flush = zstream_mp.flush(60.0)
    _write(
        f"fan_out_{variant}_{'flush' if flush else 'noflush'}_{cases[0]}",
        {**ids, "results": results, "step_flush": step_flush, "stats": repr(zstream_mp.stats())},
    )
    return len(results)


@pipeline(enable_cache=False)
def fanout_pipeline(variant: str, flush: bool, cases: list[str]) -> None:
    fan_out(variant=variant, flush=flush, cases=cases)


def run_fanouts() -> None:
    """One run per (variant, flush, half of the cases): each stream stays under ZenML's
    10,000 retained entries, so the test can replay every run whole afterwards."""
    selected = _selected()
    for variant in ("burst", "silent"):
        for flush in (False, True):
            cases = [c for c in selected if flush or c not in ONLY_WITH_FLUSH]
            for half in (cases[: (len(cases) + 1) // 2], cases[(len(cases) + 1) // 2 :]):
                if half:
                    fanout_pipeline(variant=variant, flush=flush, cases=half)


@step
def durable_fan_out(variant: str) -> int:
    """Durable mode (`ZSTREAM_DURABLE=1` for the whole pipeline): forked workers publish
    and leave through `os._exit` at once, without any flush; the step's end delivers
    what their spools hold."""
    ids = _announce()
    name = f"{variant}.fork_durable_os_exit.noflush"
    if variant == "burst":
        for seq in range(BURST):
            zstream_mp.publish({"case": name, "worker": "step", "seq": seq}, kind="b")
    codes = _fork(name, False, "os_exit")
    _write(f"durable_{variant}", {**ids, "results": {name: {"outcome": codes}}})
    return len(codes)


@pipeline(enable_cache=False)
def durable_pipeline(variant: str) -> None:
    durable_fan_out(variant=variant)


def run_durable() -> None:
    for variant in ("burst", "silent"):
        durable_pipeline(variant=variant)


@step
def storm() -> int:
    ids = _announce()
    stop = threading.Event()

    allowed = [STORM_STEP_EVENTS_PER_FORK]

    def publish_non_stop() -> None:
        # In bursts of 8 every 16 ms (about 500 events/s), so the step's sender is building
        # a batch or posting one when a child forks; paced by the forks (at most
        # STORM_STEP_EVENTS_PER_FORK per fork), so that however fast or slow the machine
        # forks, the run's stream stays within ZenML's 10,000 retained entries and the
        # test can replay it whole.
        seq = 0
        while not stop.is_set():
            if seq >= allowed[0]:
                time.sleep(0.002)
                continue
            for _ in range(8):
                zstream_mp.publish({"case": "storm.step", "worker": "step", "seq": seq}, kind="s")
                seq += 1
            time.sleep(0.016)

    thread = threading.Thread(target=publish_non_stop, daemon=True)
    thread.start()
    flushes: list[Any] = []
    r, w = os.pipe()
    for child in range(FORKS):
        allowed[0] = STORM_STEP_EVENTS_PER_FORK * (child + 1)
        pid = os.fork()
        if pid == 0:
            os.close(r)
            ok = False
            try:
                for seq in range(10):
                    zstream_mp.publish({"case": "storm", "worker": child, "seq": seq}, kind="w")
                ok = zstream_mp.flush(10.0)
            finally:
                os.write(w, b"1" if ok else b"0")
                os._exit(0)
        deadline = time.monotonic() + 20.0
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                flushes.append(os.waitstatus_to_exitcode(status))
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                flushes.append("hung")
                break
            time.sleep(0.005)
    os.close(w)
    answers = b""
    while chunk := os.read(r, 4096):
        answers += chunk
    stop.set()
    thread.join()
    ok = zstream_mp.flush(60.0)
    _write(
        "storm",
        {
            **ids,
            "exit_codes": flushes,
            "flush_true": answers.count(b"1"),
            "flush_false": answers.count(b"0"),
            "step_flush": ok,
        },
    )
    return FORKS


@pipeline(enable_cache=False)
def storm_pipeline() -> None:
    storm()


@step
def chatty() -> int:
    ids = _announce()
    print("zsz-step-log-probe", flush=True)  # proves the log was captured and read back
    for seq in range(5000):  # 20 bursts, each flushed: nothing overflows the queue
        zstream_mp.publish({"case": "logs", "worker": "step", "seq": seq}, kind="w")
        if seq % 250 == 249:
            zstream_mp.flush(30.0)
    ok = zstream_mp.flush(60.0)
    _write("chatty", {**ids, "flush": ok})
    return 5000


@pipeline(enable_cache=False)
def logs_pipeline() -> None:
    chatty()


def _child_handlers() -> str:
    """In a forked child: what SIGTERM and SIGINT would run."""
    handlers = [signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)]
    return json.dumps([repr(h) for h in handlers])


def _deaf_task(publish_first: bool, ready_fd: int) -> None:
    """A pool task whose main thread cannot take SIGTERM, so the kernel hands it to another
    thread: what happens when a worker waits in the pool's queue semaphore while an
    exporter thread (OpenTelemetry's, in a ZenML step) runs beside it."""
    if publish_first:
        zstream_mp.publish({"case": "signals", "worker": "pool", "seq": 0}, kind="g")
    threading.Thread(target=threading.Event().wait, daemon=True).start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    os.write(ready_fd, b"1")
    threading.Event().wait()


def _terminate_deaf_pool(publish_first: bool) -> Any:
    """`Pool.terminate()` while its worker runs `_deaf_task`: the worker's exit code, or
    `"hung"` if terminate had not returned 10 s later."""
    r, w = os.pipe()
    pool = multiprocessing.get_context("fork").Pool(1)
    workers = list(pool._pool)  # type: ignore[attr-defined]
    pool.apply_async(_deaf_task, (publish_first, w))
    os.read(r, 1)
    os.close(r)
    os.close(w)
    time.sleep(0.2)
    ender = threading.Thread(target=pool.terminate, daemon=True)
    ender.start()
    ender.join(10.0)
    if ender.is_alive():
        for proc in workers:
            with contextlib.suppress(Exception):
                os.kill(proc.pid, signal.SIGKILL)
        ender.join(10.0)
        return "hung"
    return [proc.exitcode for proc in workers]


@step
def signals_in_children() -> int:
    ids = _announce()
    step_handler = repr(signal.getsignal(signal.SIGTERM))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, _child_handlers().encode())
        os._exit(0)
    os.close(w)
    child = json.loads(os.read(r, 65536))
    os.close(r)
    os.waitpid(pid, 0)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        pool_child = json.loads(pool.apply(_child_handlers))
    results = {
        "step_sigterm": step_handler,
        "child": child,
        "pool_child": pool_child,
        "terminate_silent_worker": _terminate_deaf_pool(False),
        "terminate_publishing_worker": _terminate_deaf_pool(True),
    }
    _write("signals", {**ids, **results, "step_flush": zstream_mp.flush(30.0)})
    return 1


@pipeline(enable_cache=False)
def signals_pipeline() -> None:
    signals_in_children()


PIPELINES = {
    "fanout": run_fanouts,
    "durable": run_durable,
    "storm": storm_pipeline,
    "logs": logs_pipeline,
    "signals": signals_pipeline,
}
