"""Per-process publisher state: created lazily per PID, dropped in every forked child.

After a fork nothing inherited is trusted. The `after_in_child` hook only swaps
references (no logging, no I/O, no `close()`, no `join()`), and every call also checks
the PID, for forks that skip the hooks. The child never sends its parent's queued events.

Exit hooks are registered on the first publish in each process, because multiprocessing
wipes hooks inherited or registered at fork time: `atexit`, `multiprocessing.util.Finalize`
(pool children on 3.10-3.12 leave through `os._exit`) and, in multiprocessing and joblib
pool children, a SIGTERM handler that flushes and then lets the signal do what it did before.
One exit budget (`ZSTREAM_EXIT_TIMEOUT`) bounds all of them together. What the budget
cannot deliver is spilled to the process's spool (`_spill`) in milliseconds, counted and
reported in one warning line, for the parent (or a later publisher) to adopt; the process
exits on time. In durable mode every event is in the spool already (`_durable`).

The first publish also makes the process's registry entry (`_registry`), whose mapped
page holds the counters, so other processes see them live.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time

from zstream_mp import _handoff, _recovery, _sigterm, _zenml
from zstream_mp._forksafe import on_fork_in_child
from zstream_mp._health import DeliveryHealth
from zstream_mp._queue import EventQueue
from zstream_mp._recovery import registry as _registry
from zstream_mp._recovery.durable import DurableQueue
from zstream_mp._recovery.spill import Spill
from zstream_mp._sender import Sender, start_without_signals
from zstream_mp._settings import Settings, env_token_for
from zstream_mp._stats import (
    F_DURABLE,
    F_EXITED,
    F_MUTED,
    Counters,
    PublisherStats,
)
from zstream_mp._stream_context import Destination
from zstream_mp._transport import Transport
from zstream_mp._wire import ENV_EXIT_TIMEOUT, QUEUE_MAXSIZE
from zstream_mp.errors import ConfigurationError, Reentered

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
        self.spill = Spill(
            self.entry.name if self.entry is not None else None, settings.spool_max_bytes
        )
        self._last_dest: Destination | None = None
        self.steady_dest: Destination | None = None
        """Set once `enqueue` has nothing left to do for it but append: `publish()` then
        appends itself."""
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
            self,
        )
        self.exit_deadline: float | None = None
        self._given_up_seen = 0
        self.hooks_installed = False
        """Everything a first publish installs is in place."""
        self._exit_hooks = False

    def give_up_at(self) -> float:
        deadline = self.exit_deadline
        return _FAR_FUTURE if deadline is None else deadline

    def enqueue(self, dest: Destination, event: bytes) -> None:
        queue = self.queue
        sender = self.sender
        if dest is not self._last_dest:
            self._new_destination(dest)
        if queue.append(dest, event):
            sender.ensure_running()
        if not self.hooks_installed:
            self._install_exit_hooks()
        if self.hooks_installed:
            self.steady_dest = dest

    def _new_destination(self, dest: Destination) -> None:
        """Once per destination: the registry learns the run (one small file write)."""
        self._last_dest = dest
        entry = self.entry
        if entry is not None and dest.run_id not in entry.runs:
            token_file = _handoff.token_file_of(dest.token) if dest.token else None
            entry.note_run(dest.run_id, token_file)

    def flush_until(self, deadline: float) -> bool:
        """Wait until what this process queued (its own spool first) is settled."""
        queue = self.queue
        if queue.pending():
            self.sender.ensure_running()
        drained = queue.wait_drained(deadline)
        spill = self.spill
        while spill.pending() and time.monotonic() < deadline:
            if spill.awaiting_verdict:  # its sender's answer settles the batch on the wire
                time.sleep(0.005)
            elif not self.resume(deadline).complete:
                break
        return drained and queue.wait_drained(deadline) and not spill.pending()

    def nothing_given_up_since_last_flush(self) -> bool:
        """No event was refused, failed or spooled (and left there) since the previous
        flush asked: what a flush answers once the queue is drained."""
        now = self.queue.given_up()
        clean = now <= self._given_up_seen
        self._given_up_seen = now
        return clean

    # --------------------------------------------------------------- the sender's keeper

    def keep_refused(self, why: str, maybe_landed: bool = False) -> None:
        if self.queue.durable:
            self._leave_durable(why)
        else:
            self.spill.spill_posting(self.queue, why, maybe_landed)

    def keep_unsettled(self, why: str, maybe_landed: bool) -> None:
        if self.queue.durable:
            self._leave_durable(why)
        else:
            self.spill.spill_unsettled(self.queue, why, maybe_landed)

    def _leave_durable(self, why: str) -> None:
        queue = self.queue
        assert isinstance(queue, DurableQueue)
        queue.leave_for_adoption(why)

    def server_deduplicates(self, server: str, deduplicates: bool) -> None:
        _recovery.note_deduplicating(server, deduplicates)
        if not deduplicates:
            return
        queue = self.queue
        if isinstance(queue, DurableQueue):
            queue.server_deduplicates(server)
        self.spill.server_deduplicates(server)

    def resume_due(self) -> bool:
        return self.spill.due()

    def resume(self, deadline: float) -> _recovery.Adopted:
        result = self.spill.resume(self.transport, deadline, own_token_for)
        queue = self.queue
        if result.sent or result.dropped:
            queue.count("spooled", -(result.sent + result.dropped))
            queue.count("sent", result.sent)
            queue.count_drop("rejected", result.dropped)
        return result

    def count_drop(self, reason: str) -> None:
        self.queue.count_drop(reason)

    def snapshot(self) -> PublisherStats:
        return self.queue.snapshot(self.pid, self.health.last_failure)

    def _muted(self, reason: str) -> None:
        self.queue.set_flag(F_MUTED)
        logger.warning(
            "Streaming is disabled on the server (%s). Further publishes will be "
            "dropped for the rest of this process.",
            reason,
        )
        self.queue.mute()

    def _install_exit_hooks(self, *, maintain: bool = True) -> None:
        """The exit hooks (once per process: at its bind or first publish), and with the
        first publish the scan that delivers what dead processes left."""
        if maintain:
            self.hooks_installed = True  # publish() checks only this
            if self.entry is not None:
                _recovery.maintain_soon(own_token_for, self._count_adopted)
        if self._exit_hooks:
            return
        self._exit_hooks = True
        atexit.register(exit_flush)
        if "multiprocessing" in sys.modules:
            import multiprocessing.util

            self._install_multiprocessing_hooks()
            # A spawn or forkserver child that publishes while importing the main module
            # does so before `_bootstrap` clears the finalizers; put ours back after it.
            multiprocessing.util.register_after_fork(self, ProcessState._after_bootstrap)

    def _install_multiprocessing_hooks(self) -> None:
        import multiprocessing.util

        multiprocessing.util.Finalize(None, exit_flush, exitpriority=100)
        if _in_pool_child():
            _sigterm.install(exit_flush, start_without_signals)

    def _count_adopted(self, result: _recovery.Adopted) -> None:
        if result.sent:
            self.queue.count("adopted", result.sent)

    def _after_bootstrap(self) -> None:
        if self.pid == os.getpid():
            self._install_multiprocessing_hooks()


def _make_queue(
    settings: Settings, entry: _registry.ProcessEntry | None, counters: Counters
) -> EventQueue:
    if settings.durable and entry is not None:
        try:
            return DurableQueue(entry, counters, settings.spool_max_bytes)
        except OSError as exc:
            logger.warning("Cannot open the durable spool (%s); not durable", exc)
    return EventQueue(QUEUE_MAXSIZE, counters)


def own_token_for(server: str) -> str | None:
    """The token this process itself sends to `server` (for adopted spools): the one of
    its latest event's destination, else fresh credentials."""
    st = existing_state()
    dest = st._last_dest if st is not None else None
    if dest is not None and dest.server == server and dest.token:
        return dest.token
    return _refresh_token(server)


def _refresh_token(server: str) -> str | None:
    """Fresh credentials after a 401: ZenML's store when in use, else `ZSTREAM_TOKEN`
    when `server` is the one `ZSTREAM_SERVER` names."""
    if "zenml" in sys.modules:
        token = _zenml.refresh_token(server)
        if token:
            return token
    return env_token_for(server)


# --------------------------------------------------------------------------- per-PID state

current: ProcessState | None = None
"""The last state made, read without a call by `publish()`; it is this PID's only if its
`pid` matches (`state()` is the checked way in)."""
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


_building: int | None = None
"""The thread building this process's state, if one is."""
_early_drops = 0
"""Events dropped before the state existed (counted into it once it does)."""


def _new_state() -> ProcessState:
    global current, _building, _early_drops
    pid = os.getpid()
    if _building == threading.get_ident():
        raise Reentered("publish() re-entered during this process's first publish")
    with _state_lock:
        st = current
        if st is not None and st.pid == pid:
            return st
        if st is not None:  # a fork the hooks did not see
            _orphans.append(st)
        _building = threading.get_ident()
        try:
            fresh = ProcessState(pid, Settings.from_env())
        finally:
            _building = None
        if _early_drops:
            fresh.queue.count("published", _early_drops)
            fresh.queue.count_drop("failed", _early_drops)
            _early_drops = 0
        current = fresh
        return fresh


def drop_reentered(kind: str) -> None:
    """Count an event published from a signal handler during the first publish (it cannot
    be queued: the queue is being built), and say so once."""
    global _early_drops
    _early_drops += 1
    if _early_drops == 1:
        logger.warning(
            "an event of kind %r was published from a signal handler while this process's "
            "first publish was setting up; it is dropped (counted as failed)",
            kind,
        )


def on_bind() -> None:
    """A process that binds a run adopts, at its exit, what its children leave behind,
    whether or not it ever publishes itself."""
    # A bad setting is reported where it matters, at the first publish (ConfigurationError)
    with contextlib.suppress(Reentered, ConfigurationError):
        state()._install_exit_hooks(maintain=False)


def _after_fork_in_child() -> None:
    global current, _state_lock, _building
    st = current
    if st is not None:
        _orphans.append(st)  # its mapped pages and files are the parent's: never touched
    current = None
    _building = None
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
    delivered = not (queue.pending() or st.spill.pending()) or st.flush_until(st.exit_deadline)
    why = f"the exit budget ({st.settings.exit_timeout:g} s, {ENV_EXIT_TIMEOUT}) ran out"
    if queue.durable:
        assert isinstance(queue, DurableQueue)
        if delivered:
            queue.remove_if_settled()
        else:
            queue.leave_for_adoption(why)
    elif not delivered:
        st.spill.spill_unsettled(queue, why, final=True)
    if st.entry is not None and time.monotonic() < st.exit_deadline:
        _recovery.adopt_descendants(
            st.exit_deadline, token_for=own_token_for, on_result=st._count_adopted
        )
    queue.set_flag(F_EXITED)


def _in_pool_child() -> bool:
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        return True
    return multiprocessing.current_process().name != "MainProcess"
