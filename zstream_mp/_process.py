"""Per-process publisher state: created lazily per PID, dropped in every forked child.

After a fork nothing inherited is trusted. The ``after_in_child`` hook only swaps
references (no logging, no I/O, no ``close()``, no ``join()``), and every call also checks
the PID, for forks that skip the hooks. The child never sends its parent's queued events.

Exit hooks are registered on the first publish in each process, because multiprocessing
wipes hooks inherited or registered at fork time: ``atexit``, ``multiprocessing.util.Finalize``
(pool children on 3.10-3.12 leave through ``os._exit``) and, in multiprocessing and joblib
pool children, a SIGTERM handler that flushes and then lets the signal do what it did before.
One exit budget (``ZSTREAM_EXIT_TIMEOUT``) bounds all of them together. What the budget
cannot deliver is spilled to the process's spool (``_spill``) in milliseconds, counted and
reported in one warning line, for the parent (or a later publisher) to adopt; the process
exits on time. In durable mode every event is in the spool already (``_durable``).

The first publish also makes the process's registry entry (``_registry``), whose mapped
page holds the counters, so other processes see them live.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time

from zstream_mp import _sigterm
from zstream_mp._forksafe import on_fork_in_child
from zstream_mp._health import DeliveryHealth
from zstream_mp._queue import EventQueue
from zstream_mp._recovery import adopt as _adopt
from zstream_mp._recovery import registry as _registry
from zstream_mp._recovery import tree as _tree
from zstream_mp._recovery.durable import DurableQueue
from zstream_mp._recovery.spill import Spill
from zstream_mp._sender import Sender, start_without_signals
from zstream_mp._settings import Settings, env_server
from zstream_mp._stats import F_DURABLE, F_EXITED, F_MUTED, Counters, PublisherStats
from zstream_mp._stream_context import Destination
from zstream_mp._transport import Transport
from zstream_mp._wire import ENV_TOKEN, QUEUE_MAXSIZE
from zstream_mp.errors import ConfigurationError

logger = logging.getLogger("zstream_mp")

_FAR_FUTURE = float("inf")


class ProcessState:
    """Queue, sender and HTTP client of exactly one PID."""

    def __init__(self, pid: int, settings: Settings) -> None:
        self.pid = pid
        self.settings = settings
        self.entry = _registry.register(settings.durable) if settings.registry else None
        counters = Counters(self.entry.page if self.entry is not None else None)
        self.queue = _make_queue(settings, self.entry, counters)
        if self.queue.durable:
            counters.flags |= F_DURABLE
        self.health = DeliveryHealth(self.queue)
        self.spill = Spill(self.entry.name if self.entry is not None else None)
        self._last_dest: Destination | None = None
        self.transport = Transport(
            settings.request_timeout,
            settings.retry_deadline,
            refresh_token=_refresh_token,
            observer=self.health,
        )
        self.sender = Sender(
            self.queue,
            self.transport,
            self.health,
            settings.batch_size,
            settings.idle_exit,
            self.give_up_at,
            self._muted,
        )
        self.exit_deadline: float | None = None
        self.hooks_installed = False

    def give_up_at(self) -> float:
        deadline = self.exit_deadline
        return _FAR_FUTURE if deadline is None else deadline

    def enqueue(self, dest: Destination, event: bytes) -> None:
        queue = self.queue
        sender = self.sender
        if dest is not self._last_dest:
            self._new_destination(dest)
        with queue.lock:
            if sender.muted:
                queue.counters.dropped["muted"] += 1
                return
            queue.append_locked(dest, event)
            if sender.thread is None:
                sender.ensure_running()
        if not self.hooks_installed:
            self._install_exit_hooks()

    def _new_destination(self, dest: Destination) -> None:
        """Once per destination: the registry learns the run (one small file write)."""
        self._last_dest = dest
        entry = self.entry
        if entry is not None and dest.run_id not in entry.runs:
            from zstream_mp import _handoff

            token_file = _handoff.token_file_of(dest.token) if dest.token else None
            entry.note_run(dest.run_id, token_file)

    def flush_until(self, deadline: float) -> bool:
        queue = self.queue
        with queue.lock:
            if queue.waiting():
                self.sender.ensure_running()
        return queue.wait_drained(deadline)

    def count_drop(self, reason: str) -> None:
        with self.queue.lock:
            self.queue.counters.dropped[reason] += 1

    def snapshot(self) -> PublisherStats:
        queue = self.queue
        with queue.lock:
            return queue.counters.snapshot(
                self.pid,
                queue.waiting() + queue.in_flight,
                self.sender.muted,
                self.health.last_failure,
            )

    def _muted(self, reason: str) -> None:
        self.queue.counters.flags |= F_MUTED
        logger.warning(
            "Streaming is disabled on the server (%s). Further publishes will be "
            "dropped for the rest of this process.",
            reason,
        )
        self.queue.discard("muted")

    def _install_exit_hooks(self) -> None:
        self.hooks_installed = True
        atexit.register(exit_flush)
        if self.entry is not None:
            _adopt.maintain_soon(own_token_for, self._count_adopted)
        if "multiprocessing" in sys.modules:
            import multiprocessing.util

            self._install_multiprocessing_hooks()
            # A spawn or forkserver child that publishes while importing the main module
            # does so before ``_bootstrap`` clears the finalizers; put ours back after it.
            multiprocessing.util.register_after_fork(self, ProcessState._after_bootstrap)

    def _install_multiprocessing_hooks(self) -> None:
        import multiprocessing.util

        multiprocessing.util.Finalize(None, exit_flush, exitpriority=100)
        if _in_pool_child():
            _sigterm.install(exit_flush, start_without_signals)

    def _count_adopted(self, n: int) -> None:
        with self.queue.lock:
            self.queue.counters.adopted += n

    def _after_bootstrap(self) -> None:
        if self.pid == os.getpid():
            self._install_multiprocessing_hooks()


def _make_queue(
    settings: Settings, entry: _registry.Entry | None, counters: Counters
) -> EventQueue:
    if settings.durable and entry is not None:
        try:
            return DurableQueue(entry, counters, settings.spool_max_bytes)
        except OSError as exc:
            logger.warning("Cannot open the durable spool (%s); not durable", exc)
    return EventQueue(QUEUE_MAXSIZE, counters)


def own_token_for(server: str) -> str | None:
    """The token this process itself sends to ``server`` (for adopted spools): the one of
    its latest event's destination, else fresh credentials."""
    st = existing_state()
    dest = st._last_dest if st is not None else None
    if dest is not None and dest.server == server and dest.token:
        return dest.token
    return _refresh_token(server)


def _refresh_token(server: str) -> str | None:
    """Fresh credentials after a 401: ZenML's store when in use, else ``ZSTREAM_TOKEN``
    when ``server`` is the one ``ZSTREAM_SERVER`` names."""
    if "zenml" in sys.modules:
        from zstream_mp import _zenml

        token = _zenml.refresh_token(server)
        if token:
            return token
    # ZSTREAM_TOKEN is the credential of ZSTREAM_SERVER's server, and of no other.
    try:
        from_env = env_server()
    except ConfigurationError:
        return None
    if from_env is None or from_env != server:
        return None
    return os.environ.get(ENV_TOKEN) or None


# --------------------------------------------------------------------------- per-PID state

current: ProcessState | None = None
"""The last state made, read without a call by ``publish()``; it is this PID's only if its
``pid`` matches (``state()`` is the checked way in)."""
_state_lock = threading.Lock()
_orphans: list[ProcessState] = []
"""States inherited across a fork: kept referenced so no destructor touches their HTTP
clients, mapped pages or files."""


def state() -> ProcessState:
    st = current
    if st is not None and st.pid == os.getpid():
        return st
    return _new_state()


def existing_state() -> ProcessState | None:
    """This PID's state if it has published, without creating one."""
    st = current
    return st if st is not None and st.pid == os.getpid() else None


def _new_state() -> ProcessState:
    global current
    pid = os.getpid()
    with _state_lock:
        st = current
        if st is not None and st.pid == pid:
            return st
        if st is not None:  # a fork the hooks did not see
            _orphans.append(st)
        fresh = ProcessState(pid, Settings.from_env())
        current = fresh
        return fresh


def _after_fork_in_child() -> None:
    global current, _state_lock
    st = current
    if st is not None:
        _orphans.append(st)  # its mapped pages and files are the parent's: never touched
    current = None
    _state_lock = threading.Lock()


on_fork_in_child("process", _after_fork_in_child)
on_fork_in_child("sigterm", _sigterm.after_fork_in_child)


# --------------------------------------------------------------------------- exit paths


def exit_flush() -> None:
    """Flush this PID's queue within what is left of the one exit budget; spill the rest.

    Then, with what is left, adopt the spools of dead descendants (the binding parent's
    share of the adoption order).
    """
    st = existing_state()
    if st is None:
        return
    if st.exit_deadline is None:
        st.exit_deadline = time.monotonic() + st.settings.exit_timeout
    queue = st.queue
    delivered = not queue.pending() or st.flush_until(st.exit_deadline)
    if queue.durable:
        assert isinstance(queue, DurableQueue)
        if delivered:
            queue.remove_if_settled()
        else:
            queue.leave_for_adoption(st.settings.exit_timeout)
    elif not delivered:
        st.spill.spill(queue, st.settings.exit_timeout)
    if st.entry is not None and time.monotonic() < st.exit_deadline:
        _tree.adopt_descendants(
            st.exit_deadline, token_for=own_token_for, on_sent=st._count_adopted
        )
    with queue.lock:
        queue.counters.flags |= F_EXITED


def _in_pool_child() -> bool:
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        return True
    return multiprocessing.current_process().name != "MainProcess"
