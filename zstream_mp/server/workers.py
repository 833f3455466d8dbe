"""`serve --workers N`: N server processes on one listening socket, one box's cores in use.

The parent probes the broker, binds the socket once, prints the banner and supervises: it
starts N workers with the `spawn` start method (fresh interpreters, nothing inherited but
the socket and the settings, which travel over multiprocessing's pipe, never argv or the
environment), starts a new one when one dies, and on SIGTERM/SIGINT asks each to stop.
Each worker is a whole server (`runner.serve` on the shared socket): its own event loop,
broker connections, shared Redis reader, idempotency client and subscribers, all created
in the worker; the kernel hands each accepted connection to one of them.

Not uvicorn's `workers=`: its supervisor runs a plain `uvicorn.Server` in each worker, which
would lose the graceful path (`gap: shutdown` and `end` to every subscriber before the
connections close). Workers share state only through Redis, so the memory broker (one
process's memory) is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from zstream_mp.server.config import ServerConfig

logger = logging.getLogger("zstream_mp.server")

STOP_GRACE_S = 10.0
"""Seconds a worker gets after SIGTERM (uvicorn's own graceful budget is 5) before SIGKILL."""
_POLL_S = 0.25
_FAST_FAILURE_S = 5.0
"""A worker that dies sooner than this after starting failed fast (e.g. Redis is down)."""
RESTART_BACKOFF_S = (0.5, 30.0)
"""A slot whose workers keep failing fast waits 0.5, 1, 2 … up to 30 s between starts,
for as long as it takes (a Redis outage): the supervisor never gives up on its own."""


def check_workers(config: ServerConfig, workers: int) -> None:
    """Refuse a worker count the broker cannot serve (`ValueError`, with why)."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if workers > 1 and config.broker == "memory":
        raise ValueError(
            "--workers needs the Redis broker (--broker redis://...): the memory broker "
            "lives in one process, so workers could not see each other's streams"
        )


async def _probe(config: ServerConfig) -> None:
    from zstream_mp.server.brokers import create_broker

    broker = create_broker(config.broker)
    try:
        await broker.ping()
    finally:
        await broker.close()


def _worker_main(config: ServerConfig, sock: socket.socket, parent: int) -> None:
    """One worker: the whole server on the inherited socket, until told to stop."""
    from zstream_mp.server.runner import serve_in_own_process

    def watch(server: Any) -> None:
        stop: Callable[[], None] = server.request_stop

        def orphaned() -> None:  # the supervisor was SIGKILLed: do not linger
            while os.getppid() == parent:
                time.sleep(1.0)
            stop()

        threading.Thread(target=orphaned, name="zstream-mp-parent-watch", daemon=True).start()

    try:
        serve_in_own_process(config, on_server=watch, sock=sock)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # the broker is down and the like: one line, the parent retries
        logger.error("worker %s could not serve: %s: %s", os.getpid(), type(exc).__name__, exc)
        raise SystemExit(1) from None


class _Supervisor:
    def __init__(self, config: ServerConfig, workers: int, sock: socket.socket) -> None:
        self.config = config
        self.count = workers
        self.sock = sock
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[tuple[BaseProcess, float]] = []
        self.stopping = threading.Event()

    def _start(self) -> tuple[BaseProcess, float]:
        proc = self.ctx.Process(
            target=_worker_main,
            args=(self.config, self.sock, os.getpid()),
            name="zstream-mp-worker",
        )
        proc.start()
        return proc, time.monotonic()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _on_hangup(self, sig: int, frame: FrameType | None) -> None:
        """SIGHUP: every worker re-reads the tokens file (see `reload.py`)."""
        for proc, _ in self.procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGHUP)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_hangup)
        self.procs = [self._start() for _ in range(self.count)]
        failures = [0] * self.count
        due: list[float | None] = [None] * self.count  # when a dead slot starts again
        while not self.stopping.wait(_POLL_S):
            now = time.monotonic()
            for i, (proc, started) in enumerate(self.procs):
                if due[i] is not None:
                    if now >= (due[i] or 0.0):
                        due[i] = None
                        self.procs[i] = self._start()
                    continue
                if proc.is_alive():
                    continue
                lived = now - started
                failures[i] = failures[i] + 1 if lived < _FAST_FAILURE_S else 0
                low, high = RESTART_BACKOFF_S
                delay = 0.0 if failures[i] == 0 else min(high, low * 2 ** (failures[i] - 1))
                logger.warning(
                    "worker %s exited with %s after %.1f s; starting another in %.1f s",
                    proc.pid,
                    proc.exitcode,
                    lived,
                    delay,
                )
                due[i] = now + delay
        self._stop_all()
        return 0

    def _stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc, _ in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def serve_workers(
    config: ServerConfig, workers: int, on_ready: Callable[[str], None] | None = None
) -> int:
    """Probe, bind, report the URL, run `workers` workers until SIGTERM/SIGINT; exit status."""
    from zstream_mp.server.runner import bind_socket, url_of

    check_workers(config, workers)
    if not config.disabled:
        asyncio.run(_probe(config))
    sock = bind_socket(config.host, config.port)
    try:
        if on_ready is not None:
            on_ready(url_of(sock))
        return _Supervisor(config, workers, sock).run()
    finally:
        sock.close()
