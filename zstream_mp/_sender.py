"""The background sender of one process: collect a batch, group it by run, send, account.

The thread starts on demand and exits after `idle_exit` seconds without work, so a
process that forks between bursts is single-threaded at the fork.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

from zstream_mp._health import DeliveryHealth
from zstream_mp._queue import Group, Queue, Queued
from zstream_mp._stream_context import Destination
from zstream_mp._transport import Outcome, Transport
from zstream_mp._wire import ENV_SERVER, ENV_TOKEN, MAX_BATCH_SIZE, batch_body

THREAD_PREFIX = "zstream-mp-"
"""Every thread the package starts is named with this prefix (`LogHandler` skips them)."""

logger = logging.getLogger("zstream_mp")

EXIT_BATCH_EVENTS = MAX_BATCH_SIZE
"""Events per POST while the process is leaving: ZenML's server takes about 30 ms for a
POST of 64 events and 90 ms for one of 1,000, so large batches empty a queue within the
exit budget where the configured size would not."""
EXIT_BATCH_BYTES = 1024 * 1024
"""...and at most this many bytes of events per POST (past the first event), so that a
proxy's common request-body limit is not hit by the exit path alone."""

DURABLE_RETRY_PAUSE = 1.0
"""Seconds a durable sender pauses before it sends again a batch whose retries ran out."""

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
    """Start `thread` with the asynchronous signals blocked in it, from its first instruction.

    The kernel hands a process-directed signal to any thread that does not block it. Had it
    been this one, a main thread asleep in a system call (a pool worker waiting for its next
    task) would never wake to run the Python handler: a SIGTERM from `Pool.terminate()`
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


class Keeper(Protocol):
    """What the sender hands the batches it cannot deliver now (the process's spill)."""

    def keep_refused(self, why: str, maybe_landed: bool = False) -> None:
        """The batch on the wire was refused for its credentials, or failed on the
        server's side (5xx): keep it for a later attempt."""

    def keep_unsettled(self, why: str, maybe_landed: bool) -> None:
        """The process is leaving and the server fails: keep everything unsettled."""

    def server_deduplicates(self, server: str, deduplicates: bool) -> None:
        """Whether `server` honours the Idempotency-Key (what is kept for a server that
        does needs no check before it is resent)."""

    def resume_due(self) -> bool:
        """This process's own spool holds older events worth sending now."""

    def resume(self, deadline: float) -> object:
        """Send them (oldest first), until `deadline`."""


def group_by_destination(batch: list[Queued]) -> list[Group]:
    """One group per destination, in order of first appearance, each in publish order.

    Nearly every batch has one destination, the same object throughout (the queue hands out
    one per run): that case is one pass by identity, never hashing a `Destination` (a frozen
    dataclass hashes all its fields on every call, ~0.7 µs an event).
    """
    first = batch[0][0]
    if all(item[0] is first for item in batch):
        return [(first, [event for _, event in batch])]
    groups: dict[Destination, list[bytes]] = {}
    for dest, event in batch:
        groups.setdefault(dest, []).append(event)
    return list(groups.items())


class Sender:
    def __init__(
        self,
        queue: Queue,
        transport: Transport,
        health: DeliveryHealth,
        batch_size: int,
        idle_exit: float,
        give_up_at: Callable[[], float],
        on_mute: Callable[[str], None],
        keeper: Keeper,
    ) -> None:
        self._keeper = keeper
        self._heard: set[str] = set()
        self._queue = queue
        self._transport = transport
        self._health = health
        self._batch_size = batch_size
        self._idle_exit = idle_exit
        self._give_up_at = give_up_at
        self._on_mute = on_mute
        self.thread: threading.Thread | None = None
        """The running sender thread; None before the first event and after an idle exit."""
        self._counted = False
        self.muted = False

    def ensure_running(self) -> None:
        """Start the thread unless one runs (the queue says which: it knows who takes)."""
        if self._queue.claim_taker():
            thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}sender", daemon=True)
            self.thread = thread
            start_without_signals(thread)

    def _run(self) -> None:
        queue = self._queue
        keeper = self._keeper
        while True:
            if keeper.resume_due():  # what this process spooled goes before anything newer
                keeper.resume(self._give_up_at())
            if self._give_up_at() == math.inf:
                batch = queue.take(self._batch_size, self._idle_exit)
            else:  # leaving: fewer, larger POSTs drain the queue several times faster
                size = max(self._batch_size, EXIT_BATCH_EVENTS)
                batch = queue.take(size, self._idle_exit, EXIT_BATCH_BYTES)
            if batch is None:
                if queue.retire_taker():
                    if self.thread is threading.current_thread():
                        self.thread = None  # unless a newer sender has started already
                    return
                continue
            try:
                self._send(batch)
            finally:
                queue.done()

    def _send(self, batch: list[Queued]) -> None:
        queue = self._queue
        queue.hold(group_by_destination(batch))
        while True:
            claimed = queue.begin_post()
            if claimed is None:
                return  # all sent, or the exit spill took the rest of this batch
            dest, events, key = claimed
            # Each group is accounted for exactly once, whatever happens to the others.
            self._counted = False
            try:
                self._send_group(dest, events, key)
            except Exception as exc:  # never let the sender die with events in hand
                if not self._counted:
                    self._count(dropped="failed", n=len(events))
                self._health.dropped(
                    ("error", type(exc).__name__),
                    "dropped %d events for run %s: %s while sending (%s)",
                    len(events),
                    dest.run_id,
                    type(exc).__name__,
                    str(exc)[:200],
                )

    def _send_group(self, dest: Destination, events: list[bytes], key: str | None) -> None:
        n = len(events)
        if self.muted:
            self._count(dropped="muted", n=n)
            return
        if dest.server is None:
            self._count(dropped="failed", n=n)
            self._health.dropped(
                ("no-server",),
                "no server configured for run %s (set %s or bind(server=...)); %d events dropped",
                dest.run_id,
                ENV_SERVER,
                n,
            )
            return
        result = self._transport.post(
            dest.server,
            dest.run_id,
            dest.token,
            batch_body(events),
            self._give_up_at,
            idempotency_key=key,
        )
        if result.outcome is Outcome.DELIVERED:
            self._count(n=n, batch=True)
            if dest.server not in self._heard:  # once per server: does it deduplicate?
                self._heard.add(dest.server)
                self._keeper.server_deduplicates(dest.server, result.deduplicates)
        elif result.outcome is Outcome.MUTED:
            self._count(dropped="muted", n=n, batch=True)
            self.muted = True
            self._on_mute(result.reason)
        elif result.status in (401, 403):
            # kept (not dropped) for an attempt with valid credentials; counted as spooled
            self._keeper.keep_refused(
                f"{dest.server} refused run {dest.run_id}'s events with {result.reason} "
                f"(check the token: bind(token=...) or {ENV_TOKEN})"
            )
            self._count(dropped="rejected", n=n, batch=True)
        elif result.outcome is Outcome.FAILED and self._give_up_at() != math.inf:
            self._keeper.keep_unsettled(
                f"{dest.server} did not take run {dest.run_id}'s events before the exit "
                f"budget ran out ({result.reason or 'no response'})",
                result.maybe_landed,
            )
            self._count(dropped="failed", n=n, batch=True)
        elif result.outcome is Outcome.FAILED and self._queue.retry_later():
            self._health.dropped(
                ("retry", dest.server),
                "durable: %d events for run %s stay in the spool and are sent again (%s)",
                n,
                dest.run_id,
                result.reason or "no response",
            )
            time.sleep(DURABLE_RETRY_PAUSE)
        elif result.outcome is Outcome.FAILED and (result.status or 0) >= 500:
            # the server failed, not the batch: kept (not dropped) for a later attempt
            self._keeper.keep_refused(
                f"{dest.server} failed run {dest.run_id}'s events with {result.reason}",
                result.maybe_landed,
            )
            self._count(dropped="failed", n=n, batch=True)
        else:
            reason = "rejected" if result.outcome is Outcome.REJECTED else "failed"
            self._count(dropped=reason, n=n, batch=True)
            self._health.dropped(
                (reason, result.status),
                "dropped %d events for run %s at %s: %s",
                n,
                dest.run_id,
                dest.server,
                result.reason or "no response",
            )

    def _count(self, *, n: int, dropped: str | None = None, batch: bool = False) -> None:
        self._counted = True
        self._queue.settle(n, dropped, batch)
