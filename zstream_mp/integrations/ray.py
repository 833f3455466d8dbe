"""Ray: bind a run in every worker of a job, and deliver their tail before `ray.shutdown()`.

Ray workers are started by the raylet, not by the driver, so no environment handoff
reaches them on another node (or on this one, when the cluster was started before the
`bind()`). And `runtime_env` `env_vars` are shown on the dashboard and logged, so a
token must not travel there. `runtime_env(ctx)` instead puts a
`worker_process_setup_hook` into the job's runtime_env: Ray cloudpickles the callable
(context and token included) into the GCS and runs it in each worker before its first task;
`env_vars` only ever hold Ray's key to it.

`ray.shutdown()` ends a local cluster's workers without running their exit hooks, so
events still queued in them are lost. `shutdown(timeout)` (or `flush_workers(timeout)`
before your own `ray.shutdown()`) delivers them first: on every node, a flush waits
through the host's registry until each worker of the run has delivered what it published.

Actors: `ray.actor.exit_actor()` and `actor.__ray_terminate__.remote()` run the
actor's exit hooks, so its events are delivered. `ray.kill(actor)` and the OOM killer
run none: only durable mode survives them.
"""

from __future__ import annotations

import importlib
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import zstream_mp
from zstream_mp._stream_context import StreamContext
from zstream_mp.errors import InvalidContextError, MissingExtraError
from zstream_mp.integrations._extras import require

__all__ = ["chain_hooks", "flush_workers", "runtime_env", "setup_hook", "shutdown"]

logger = logging.getLogger("zstream_mp")

SETUP_HOOK_KEY = "worker_process_setup_hook"
"""The runtime_env field Ray runs in every worker process before its first task."""

DEFAULT_FLUSH_TIMEOUT = 10.0
"""Seconds `flush_workers()` waits at most; it returns once every worker has answered."""

Hook: TypeAlias = Callable[[], object] | str
"""A setup hook as Ray accepts it: a callable, or a `"module.function"` name."""


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
    its only state. Ray keeps `__name__` in the runtime_env for display.
    """

    def __init__(self, ctx: StreamContext) -> None:
        self.ctx = ctx
        self.__name__ = "zstream_mp_bind"

    def __repr__(self) -> str:
        return f"zstream_mp.integrations.ray.setup_hook({self.ctx!r})"

    def __call__(self) -> None:
        zstream_mp.bind(self.ctx)


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
    """A picklable `worker_process_setup_hook` that binds `ctx` in each Ray worker.

    `ctx` defaults to this process's current context (its `bind()`, or the ZenML step).
    """
    context = _context(ctx)
    _runs_handed_out.add(context.run_id)
    return _BindHook(context)


_runs_handed_out: set[str] = set()
"""Runs this driver bound workers to: `shutdown()` adopts what dead workers of them left."""


def chain_hooks(*hooks: Hook | None) -> Callable[[], None]:
    """One setup hook that runs `hooks` in order (callables or `"module.function"`)."""
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
    """A runtime_env whose workers publish to `ctx` (default: the current context).

    Before `ray.init()`, pass it to `ray.init(runtime_env=...)`: every task and actor
    of the job. Once Ray is initialized, pass it to `.options(runtime_env=...)`: the
    hook is exported to the GCS now, as Ray does for a job's hook at `ray.init()`.
    `base` is your own runtime_env: its fields are kept, and its
    `worker_process_setup_hook` runs after the binding one. The token travels inside
    the pickled hook; `env_vars` gain only Ray's key to it.
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


# --------------------------------------------------------------------------- one node
#
# Every worker that publishes registers itself in the host's registry, like any publisher
# (`zstream_mp._recovery`): a flush on a node is `flush_tree(run_id=...)` there, which
# waits until every process of the run on that host has delivered (or left spools, which
# it adopts). Nothing is ended, so actors and warm task workers survive a flush.


def _flush_node(runs: list[str], timeout: float) -> bool:
    """Deliver what the workers on this node published to `runs`; runs on that node."""
    deadline = time.monotonic() + timeout
    ok = True
    for run_id in runs:
        ok = zstream_mp.flush_tree(max(0.0, deadline - time.monotonic()), run_id=run_id) and ok
    return zstream_mp.flush(max(0.0, deadline - time.monotonic())) and ok


# --------------------------------------------------------------------------- flushing


def flush_workers(timeout: float = DEFAULT_FLUSH_TIMEOUT, *, run_id: str | None = None) -> bool:
    """Deliver everything this job's workers published, on every node; call it when done.

    Call it after your last `ray.get()` and before `ray.shutdown()`, which would
    otherwise end the workers with their queues. Each worker of the job (task workers
    and actors) flushes its own queue; none is ended. Returns False when `timeout`
    passed first.
    """
    if timeout < 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be >= 0, got {timeout!r}")
    ray = _ray()
    if not ray.is_initialized():
        return zstream_mp.flush(timeout)
    runs = _runs(run_id)
    deadline = time.monotonic() + timeout
    here = ray.get_runtime_context().get_node_id()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote_flush = ray.remote(num_cpus=0, max_retries=0)(_flush_node)
    pending = [
        remote_flush.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(runs, timeout)
        for node in ray.nodes()
        if node.get("Alive") and node["NodeID"] != here
    ]
    ok = _flush_node(runs, timeout)
    for ref in pending:
        try:
            ok = bool(ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))) and ok
        except ray.exceptions.GetTimeoutError:
            ok = False
    return zstream_mp.flush(max(0.0, deadline - time.monotonic())) and ok


def _runs(run_id: str | None) -> list[str]:
    """The runs a flush covers: the one named, else those this driver handed to workers
    and the one it is bound to."""
    if run_id is not None:
        return [str(run_id)]
    runs = set(_runs_handed_out)
    current = zstream_mp.current_context()
    if current is not None:
        runs.add(current.run_id)
    return sorted(runs)


def shutdown(timeout: float = DEFAULT_FLUSH_TIMEOUT) -> bool:
    """`flush_workers(timeout)` (which also adopts what dead workers of this driver's
    runs spooled on each host, in durable mode), then `ray.shutdown()`; False if it
    timed out."""
    ray = _ray()
    try:
        return flush_workers(timeout)
    finally:
        ray.shutdown()
