"""Ray: bind a run in every worker of a job, and deliver their tail before ``ray.shutdown()``.

Ray workers are started by the raylet, not by the driver, so no environment handoff
reaches them on another node (or on this one, when the cluster was started before the
``bind()``). And ``runtime_env`` ``env_vars`` are shown on the dashboard and logged, so a
token must not travel there. ``runtime_env(ctx)`` instead puts a
``worker_process_setup_hook`` into the job's runtime_env: Ray cloudpickles the callable
(context and token included) into the GCS and runs it in each worker before its first task;
``env_vars`` only ever hold Ray's key to it.

``ray.shutdown()`` ends a local cluster's workers without running their exit hooks, so
events still queued in them are lost. ``shutdown(timeout)`` (or ``flush_workers(timeout)``
before your own ``ray.shutdown()``) delivers them first: the setup hook also gives each
worker a small flush channel on its node, which every node's flush uses.

Actors: ``ray.actor.exit_actor()`` and ``actor.__ray_terminate__.remote()`` run the
actor's exit hooks, so its events are delivered. ``ray.kill(actor)`` and the OOM killer
run none: only durable mode survives them.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import math
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import zstream_mp
from zstream_mp._recovery.statedir import state_dir
from zstream_mp._sender import THREAD_PREFIX, start_without_signals
from zstream_mp._stream_context import StreamContext
from zstream_mp.errors import InvalidContextError, MissingExtraError
from zstream_mp.integrations._extras import require

__all__ = ["chain_hooks", "flush_workers", "runtime_env", "setup_hook", "shutdown"]

logger = logging.getLogger("zstream_mp")

SETUP_HOOK_KEY = "worker_process_setup_hook"
"""The runtime_env field Ray runs in every worker process before its first task."""

DEFAULT_FLUSH_TIMEOUT = 10.0
"""Seconds ``flush_workers()`` waits at most; it returns once every worker has answered."""

Hook: TypeAlias = Callable[[], object] | str
"""A setup hook as Ray accepts it: a callable, or a ``"module.function"`` name."""


def _ray() -> Any:
    return require("ray", "ray")


def _context(ctx: StreamContext | None) -> StreamContext:
    if ctx is not None:
        if not isinstance(ctx, StreamContext):
            kind = type(ctx).__name__  # type: ignore[unreachable]
            raise InvalidContextError(f"ctx must be a zstream_mp.StreamContext, not {kind}")
        return ctx
    found = zstream_mp.current_context()
    if found is None:
        raise InvalidContextError(
            "no run context to hand to Ray workers: pass a StreamContext, call "
            "zstream_mp.bind() first, or call this inside a ZenML step"
        )
    return found


# --------------------------------------------------------------------------- hooks


class _BindHook:
    """Runs in a Ray worker: binds the context and registers the worker for the flush.

    Pickled by reference to this module (workers import zstream_mp), with the context as
    its only state. Ray keeps ``__name__`` in the runtime_env for display.
    """

    def __init__(self, ctx: StreamContext) -> None:
        self.ctx = ctx
        self.__name__ = "zstream_mp_bind"

    def __repr__(self) -> str:
        return f"zstream_mp.integrations.ray.setup_hook({self.ctx!r})"

    def __call__(self) -> None:
        zstream_mp.bind(self.ctx)
        try:
            _register_this_worker()
        except OSError as exc:  # a failing hook would cost Ray the worker; this costs the flush
            logger.warning(
                "this Ray worker cannot register for flush_workers() (%s); "
                "its events are still published, but ray.shutdown() may cut their tail",
                exc,
            )


class _ChainedHooks:
    """Several setup hooks run in order in one worker (Ray takes one per runtime_env)."""

    def __init__(self, hooks: tuple[Hook, ...]) -> None:
        self.hooks = hooks
        self.__name__ = "+".join(_hook_name(h) for h in hooks)

    def __repr__(self) -> str:
        return f"zstream_mp.integrations.ray.chain_hooks{self.hooks!r}"

    def __call__(self) -> None:
        for hook in self.hooks:
            _load_hook(hook)()


def _hook_name(hook: Hook) -> str:
    return hook if isinstance(hook, str) else str(getattr(hook, "__name__", type(hook).__name__))


def _load_hook(hook: Hook) -> Callable[[], object]:
    if not isinstance(hook, str):
        return hook
    module, _, attr = hook.rpartition(".")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def setup_hook(ctx: StreamContext | None = None) -> Callable[[], None]:
    """A picklable ``worker_process_setup_hook`` that binds ``ctx`` in each Ray worker.

    ``ctx`` defaults to this process's current context (its ``bind()``, or the ZenML step).
    """
    context = _context(ctx)
    _runs_handed_out.add(context.run_id)
    return _BindHook(context)


_runs_handed_out: set[str] = set()
"""Runs this driver bound workers to: ``shutdown()`` adopts what dead workers of them left."""


def chain_hooks(*hooks: Hook | None) -> Callable[[], None]:
    """One setup hook that runs ``hooks`` in order (callables or ``"module.function"``)."""
    kept = tuple(h for h in hooks if h is not None)
    for hook in kept:
        if not (isinstance(hook, str) or callable(hook)):
            raise TypeError(f"a setup hook is a callable or a 'module.function' str, not {hook!r}")
        if isinstance(hook, str) and "." not in hook.strip("."):
            raise ValueError(f"a setup hook name must be 'module.function', got {hook!r}")
    return _ChainedHooks(kept)


def runtime_env(
    ctx: StreamContext | None = None, *, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A runtime_env whose workers publish to ``ctx`` (default: the current context).

    Before ``ray.init()``, pass it to ``ray.init(runtime_env=...)``: every task and actor
    of the job. Once Ray is initialized, pass it to ``.options(runtime_env=...)``: the
    hook is exported to the GCS now, as Ray does for a job's hook at ``ray.init()``.
    ``base`` is your own runtime_env: its fields are kept, and its
    ``worker_process_setup_hook`` runs after the binding one. The token travels inside
    the pickled hook; ``env_vars`` gain only Ray's key to it.
    """
    hook = setup_hook(ctx)
    env = dict(base or {})
    own = env.get(SETUP_HOOK_KEY)
    env[SETUP_HOOK_KEY] = hook if own is None else chain_hooks(hook, own)
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        env = _export_hook(env)
    return env


def _export_hook(env: dict[str, Any]) -> dict[str, Any]:
    """Export the hook for a task's or actor's runtime_env (Ray does it only at init)."""
    ray = _ray()
    try:
        from ray._private.runtime_env.setup_hook import (
            upload_worker_process_setup_hook_if_needed as upload,
        )

        worker = ray._private.worker.global_worker
    except (ImportError, AttributeError) as exc:
        raise MissingExtraError(
            f"this Ray ({getattr(ray, '__version__', '?')}) cannot take a setup hook per "
            "task or actor; pass runtime_env(ctx) to ray.init() instead",
            name="ray",
        ) from exc
    env["env_vars"] = dict(env.get("env_vars") or {})
    return upload(env, worker)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- registration
#
# Each worker's setup hook leaves, in ``<state dir>/ray/<job>/<node>/``, a FIFO named by its
# PID (and a file with its start time, against PID reuse), and starts one small thread that
# blocks on opening it. A flush on that node writes ``"<request id> <timeout>"`` into every
# FIFO; each worker's thread runs ``zstream_mp.flush(timeout)`` and answers in
# ``<pid>.ack``. Nothing is ended, so actors and warm task workers survive a flush.


def _workers_dir(job_id: str, node_id: str) -> str:
    return os.path.join(state_dir(), "ray", job_id, node_id)


def _register_this_worker() -> None:
    """Make this worker reachable by the flush on its node (one thread, blocked on a FIFO)."""
    import psutil

    context = _ray().get_runtime_context()
    directory = _workers_dir(context.get_job_id(), context.get_node_id())
    os.makedirs(directory, mode=0o700, exist_ok=True)
    pid = os.getpid()
    base = os.path.join(directory, str(pid))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(base + ".fifo")
    os.mkfifo(base + ".fifo", 0o600)
    with open(base + ".start", "w", encoding="utf-8") as fh:
        fh.write(repr(psutil.Process(pid).create_time()))

    def remove() -> None:
        if os.getpid() == pid:
            for suffix in (".fifo", ".start", ".ack"):
                with contextlib.suppress(OSError):
                    os.unlink(base + suffix)

    atexit.register(remove)
    thread = threading.Thread(
        target=_answer_flush_requests, args=(base,), name=f"{THREAD_PREFIX}ray-flush", daemon=True
    )
    start_without_signals(thread)


def _answer_flush_requests(base: str) -> None:
    """In a worker: flush on every request written to this worker's FIFO, then answer."""
    while True:
        try:
            with open(base + ".fifo", "rb") as fh:  # blocks until a flusher opens it
                requests = fh.read().decode("ascii", "replace").split()
        except OSError:  # the directory is gone (the job was shut down)
            return
        for rid, timeout in zip(requests[::2], requests[1::2], strict=False):
            try:
                ok = zstream_mp.flush(max(0.0, float(timeout)))
            except ValueError:
                continue
            with contextlib.suppress(OSError):
                tmp = f"{base}.ack.tmp"
                with open(tmp, "w", encoding="ascii") as out:
                    out.write(f"{rid} {int(ok)}")
                os.replace(tmp, base + ".ack")


def _registered_workers(job_id: str, node_id: str) -> list[str]:
    """FIFO bases of this job's live workers on this node, except this process."""
    import psutil

    directory = _workers_dir(job_id, node_id)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        pid, _, suffix = name.partition(".")
        if suffix != "start" or not pid.isdigit() or int(pid) == os.getpid():
            continue
        base = os.path.join(directory, pid)
        try:
            with open(base + ".start", encoding="utf-8") as fh:
                started = float(fh.read())
            proc = psutil.Process(int(pid))
            if abs(proc.create_time() - started) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(base)  # alive, and not a reused PID
        except (OSError, ValueError, psutil.Error):
            continue
    return found


def _request_flush(base: str, rid: str, timeout: float) -> bool:
    """Write a request into a worker's FIFO; False while its thread is not listening."""
    try:
        fd = os.open(base + ".fifo", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader right now (busy answering, or gone)
        return False
    try:
        os.write(fd, f"{rid} {timeout:.3f}\n".encode("ascii"))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _answer(base: str, rid: str) -> bool | None:
    try:
        with open(base + ".ack", encoding="ascii") as fh:
            got, _, ok = fh.read().partition(" ")
    except OSError:
        return None
    return ok == "1" if got == rid else None


def _alive(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _flush_registered_workers(job_id: str, node_id: str, timeout: float) -> bool:
    """Ask every registered worker of this job on this node to flush; wait for them all."""
    deadline = time.monotonic() + timeout
    rid = uuid.uuid4().hex
    waiting = set(_registered_workers(job_id, node_id))
    asked: set[str] = set()
    ok = True
    while waiting and time.monotonic() < deadline:
        for base in list(waiting):
            if base not in asked:
                if _request_flush(base, rid, deadline - time.monotonic()):
                    asked.add(base)
                elif not _alive(int(os.path.basename(base))):
                    waiting.discard(base)  # gone: exit hooks flushed, or killed (ray.kill)
                continue
            answer = _answer(base, rid)
            if answer is not None:
                ok = ok and answer
                waiting.discard(base)
            elif not _alive(int(os.path.basename(base))):
                waiting.discard(base)  # died before answering (ray.kill): nothing to wait for
        if waiting:
            time.sleep(0.01)
    own = zstream_mp.flush(max(0.0, deadline - time.monotonic()))
    return ok and own and not waiting


def _flush_node(job_id: str, node_id: str, run_id: str | None, timeout: float) -> bool:
    """Deliver what this job's workers on this node published; runs on that node."""
    return _flush_registered_workers(job_id, node_id, timeout)
    # With the host registry: return zstream_mp.flush_tree(timeout, run_id=run_id)
    # (the FIFO channel above is then no longer needed: drop _register_this_worker's call)


# --------------------------------------------------------------------------- flushing


def flush_workers(timeout: float = DEFAULT_FLUSH_TIMEOUT, *, run_id: str | None = None) -> bool:
    """Deliver everything this job's workers published, on every node; call it when done.

    Call it after your last ``ray.get()`` and before ``ray.shutdown()``, which would
    otherwise end the workers with their queues. Each worker of the job (task workers
    and actors) flushes its own queue; none is ended. Returns False when ``timeout``
    passed first.
    """
    if timeout < 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be >= 0, got {timeout!r}")
    ray = _ray()
    if not ray.is_initialized():
        return zstream_mp.flush(timeout)
    if run_id is None:
        current = zstream_mp.current_context()
        run_id = current.run_id if current is not None else None
    deadline = time.monotonic() + timeout
    context = ray.get_runtime_context()
    job_id, here = context.get_job_id(), context.get_node_id()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote_flush = ray.remote(num_cpus=0, max_retries=0)(_flush_node)
    pending = [
        remote_flush.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(job_id, node["NodeID"], run_id, timeout)
        for node in ray.nodes()
        if node.get("Alive") and node["NodeID"] != here
    ]
    ok = _flush_node(job_id, here, run_id, timeout)
    for ref in pending:
        try:
            ok = bool(ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))) and ok
        except ray.exceptions.GetTimeoutError:
            ok = False
    return zstream_mp.flush(max(0.0, deadline - time.monotonic())) and ok


def shutdown(timeout: float = DEFAULT_FLUSH_TIMEOUT) -> bool:
    """``flush_workers(timeout)``, adopt what dead workers of this driver's runs spooled on
    this host (durable mode), then ``ray.shutdown()``; False if either timed out."""
    ray = _ray()
    where = None
    if ray.is_initialized():
        context = ray.get_runtime_context()
        where = _workers_dir(context.get_job_id(), context.get_node_id())
    deadline = time.monotonic() + timeout
    try:
        flushed = flush_workers(timeout)
        # Workers that died without their exit hooks (ray.kill, the OOM killer) left their
        # events in their spools in durable mode: adopt them while this host still can.
        for run_id in sorted(_runs_handed_out):
            left = max(0.0, deadline - time.monotonic())
            flushed = zstream_mp.flush_tree(left, run_id=run_id) and flushed
        return flushed
    finally:
        ray.shutdown()
        if where is not None:  # job ids repeat across clusters: remove this node's part only
            shutil.rmtree(where, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(where))
