"""The background sender of one process: collect a batch, group it by run, send, account.

The thread starts on demand and exits after ``idle_exit`` seconds without work, so a
process that forks between bursts is single-threaded at the fork.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from zstream_mp._queue import EventQueue, Item
from zstream_mp._stream_context import Destination
from zstream_mp._transport import Outcome, Transport

logger = logging.getLogger("zstream_mp")

_ASYNC_SIGNALS = frozenset(
    getattr(signal, name)
    for name in (
        "SIGTERM",
        "SIGINT",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGCHLD",
        "SIGWINCH",
    )
    if hasattr(signal, name)
)


def start_without_signals(thread: threading.Thread) -> None:
    """Start ``thread`` with the asynchronous signals blocked in it, from its first instruction.

    The kernel hands a process-directed signal to any thread that does not block it. Had it
    been this one, a main thread asleep in a system call (a pool worker waiting for its next
    task) would never wake to run the Python handler: a SIGTERM from ``Pool.terminate()``
    would be swallowed and the pool would wait for that worker forever.
    """
    if not hasattr(signal, "pthread_sigmask"):
        thread.start()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS)
    try:
        thread.start()  # the new thread inherits the blocked mask
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Sender:
    def __init__(
        self,
        queue: EventQueue,
        transport: Transport,
        batch_size: int,
        idle_exit: float,
        give_up_at: Callable[[], float],
        on_mute: Callable[[str], None],
    ) -> None:
        self._queue = queue
        self._transport = transport
        self._batch_size = batch_size
        self._idle_exit = idle_exit
        self._give_up_at = give_up_at
        self._on_mute = on_mute
        self._thread: threading.Thread | None = None
        self._warned: set[object] = set()
        self.muted = False

    def ensure_running(self) -> None:
        """Start the thread if it is not running. Caller holds the queue lock."""
        if self._thread is None and not self.muted:
            thread = threading.Thread(target=self._run, name="zstream-mp-sender", daemon=True)
            self._thread = thread
            start_without_signals(thread)

    def _run(self) -> None:
        queue = self._queue
        while True:
            batch = queue.take(self._batch_size, self._idle_exit)
            if batch is None:
                with queue.lock:
                    if not queue.items:
                        self._thread = None
                        return
                continue
            try:
                self._send(batch)
            except Exception:  # never let the sender die with events in hand
                logger.exception("zstream-mp sender failed; %d events dropped", len(batch))
                self._count(dropped="failed", n=len(batch))
            finally:
                queue.done()

    def _send(self, batch: list[Item]) -> None:
        groups: dict[Destination, list[bytes]] = {}
        for dest, event in batch:
            groups.setdefault(dest, []).append(event)
        queue = self._queue
        queue.hold(list(groups.items()))
        while True:
            claimed = queue.begin_post()
            if claimed is None:
                return  # all sent, or the exit spill took the rest of this batch
            dest, events, key = claimed
            n = len(events)
            if self.muted:
                self._count(dropped="muted", n=n)
                continue
            if dest.server is None:
                self._warn_once(
                    ("no-server",),
                    "no server configured for run %s "
                    "(set ZSTREAM_SERVER or bind(server=...)); %d events dropped",
                    dest.run_id,
                    n,
                )
                self._count(dropped="failed", n=n)
                continue
            body = b'{"events":[' + b",".join(events) + b"]}"
            result = self._transport.post(
                dest.server, dest.run_id, dest.token, body, self._give_up_at, idempotency_key=key
            )
            if result.outcome is Outcome.DELIVERED:
                self._count(n=n, attempts=result.attempts)
            elif result.outcome is Outcome.MUTED:
                self._count(dropped="muted", n=n, attempts=result.attempts)
                self.muted = True
                self._on_mute(result.reason)
            else:
                reason = "rejected" if result.outcome is Outcome.REJECTED else "failed"
                self._count(dropped=reason, n=n, attempts=result.attempts)
                self._warn_once(
                    (reason, result.status),
                    "zstream-mp dropped %d events for run %s: %s",
                    n,
                    dest.run_id,
                    result.reason or "no response",
                )

    def _count(self, *, n: int, dropped: str | None = None, attempts: int = 0) -> None:
        queue = self._queue
        with queue.lock:
            counters = queue.counters
            settle = queue.end_post()
            if settle is not None:  # the exit spill holds these events: settle them there
                settle(dropped is None, n)
            elif dropped is None:
                counters.sent += n
            else:
                counters.dropped[dropped] += n
            if attempts:
                counters.batches += 1
                counters.retries += attempts - 1

    def _warn_once(self, key: object, message: str, *args: object) -> None:
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        logger.log(level, message, *args)
