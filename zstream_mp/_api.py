"""`publish()`, `flush()`, `flush_tree()` and `stats()`: the caller's side."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any, Literal, overload

from zstream_mp import _context, _encode, _event, _process, _recovery
from zstream_mp._stats import Counters, PublisherStats, TreeStats
from zstream_mp._wire import ENV_SERVER, ENVELOPE_BYTES_MAX, ENVELOPE_OVERHEAD, PAYLOAD_BYTES_MAX
from zstream_mp.errors import PayloadTooLargeError, Reentered

logger = logging.getLogger("zstream_mp")

_known_kinds = _event.known_kinds
_NO_CORRELATION_TAIL = _event.NO_CORRELATION_TAIL
_getpid = os.getpid
_EVENT_BYTES_MAX = ENVELOPE_BYTES_MAX - ENVELOPE_OVERHEAD


def publish(
    payload: dict[str, Any],
    *,
    kind: str = "event",
    correlation_id: str | None = None,
    index: int | None = None,
) -> None:
    """Queue one event for the run this process (or ZenML step) is bound to.

    Never blocks on I/O. Bad arguments raise a typed error here, in the caller's thread,
    and leave what is already queued untouched. Outside any run context the event is
    dropped, counted as `no_context`, with a debug-level log line.
    """
    # The common cases inline (a known kind, no correlation, a dict payload, the same
    # destination as before): each call saved is ~40 ns of a ~1 µs publish.
    kind_bytes = _known_kinds.get(kind) if type(kind) is str else None
    if kind_bytes is None:
        kind_bytes = _event.check_kind(kind)
    if correlation_id is None and index is None:
        tail = _NO_CORRELATION_TAIL
    else:
        tail = _event.encode_tail(correlation_id, index)
    try:
        if type(payload) is dict:
            fast = _event.fast
            if fast is None:
                body = _event.encode_json(payload)
            else:
                try:
                    body = fast.dumps(payload, fast.default, fast.options)
                except TypeError:  # what orjson refuses: the stdlib encoder's to write or refuse
                    body = _encode.encode_stdlib(payload)
            if len(body) > PAYLOAD_BYTES_MAX:
                _event.check_payload_size(body)
        else:
            body = _event.encode_payload(payload)
        dest = _context.resolve_destination()
        if dest is None:
            _process.state().count_drop("no_context")
            _say_no_run(kind)
            return
        event = b"".join((dest.prefix, kind_bytes, tail, body, b"}"))
        if len(event) > _EVENT_BYTES_MAX:
            _event.check_event_size(event)
    except PayloadTooLargeError:  # the payload's 65,536 or the envelope's 69,632 bytes
        _process.state().count_drop("oversize")
        raise
    st = _process.current  # this PID's: the fork hook clears it in every child (no getpid()
    if st is None:  # on this path: a system call, ~15% of a publish)
        try:
            st = _process.state()
        except Reentered:
            _process.drop_reentered(kind)
            return
    if dest is st.steady_dest:
        if st.queue.append(dest, event):
            st.sender.ensure_running()
    else:
        st.enqueue(dest, event)


_no_run_said: int | None = None


def _say_no_run(kind: str) -> None:
    """Once per process a WARNING on how to bind a run; at DEBUG inside ZenML, where a
    publish outside a step is ZenML's own no-op."""
    global _no_run_said
    if "zenml" in sys.modules or _no_run_said == _getpid():
        logger.debug("publish() called outside any run context; event of kind %r dropped", kind)
        return
    _no_run_said = _getpid()
    logger.warning(
        "publish() was called outside any run, so the event (kind %r) was dropped and counted "
        "as no_context; bind a run first: zstream_mp.bind(run_id, server=..., token=...) "
        "(or set %s and call bind(run_id)). Said once per process.",
        kind,
        ENV_SERVER,
    )


def flush(timeout: float | None = 2.0) -> bool:
    """Wait until this process's queued events are delivered.

    True when everything published since the previous `flush()` is on the server. False
    when `timeout` seconds pass first (what it waited for is then kept in the process's
    spool, so an `os._exit` next loses none of it), or when some of it was refused,
    failed or set aside for later (the warnings say which). `None` waits as long as it
    takes; it never waits longer than asked, whatever the server does.
    """
    deadline = _deadline(timeout)  # a bad timeout is an error before the first publish too
    st = _process.existing_state()
    if st is None:
        return True
    if st.flush_until(deadline):
        return st.nothing_given_up_since_last_flush()
    # What this flush waited for goes to disk before it returns: a process that leaves
    # through os._exit next loses none of it (its sender still delivers it if it lives).
    failure = st.health.last_failure
    st.spill.spill_unsettled(
        st.queue,
        f"flush() gave up after {timeout:g} s" + (f" (last failure: {failure})" if failure else ""),
    )
    st.nothing_given_up_since_last_flush()
    return False


def _deadline(timeout: float | None) -> float:
    if timeout is None:
        return math.inf
    if timeout < 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
    return time.monotonic() + timeout


def flush_tree(timeout: float | None = 10.0, *, run_id: str | None = None) -> bool:
    """Wait until this process and every registered descendant have delivered their events.

    Descendants that died leave spools: this call adopts and delivers them. With `run_id`
    the scope is every process on this host that published to that run instead (workers
    of Ray or Dask are not our descendants). True once everything published in scope is on
    the server or dropped by policy; False when `timeout` passes first (a hung process)
    or when a process was killed with events that no spool kept.
    """
    return _recovery.flush_tree(
        _deadline(timeout),
        None if run_id is None else str(run_id),
        own=_process.existing_state(),
        token_for=_process.own_token_for,
    )


@overload
def stats(scope: Literal["process"] = "process", run_id: None = None) -> PublisherStats: ...
@overload
def stats(scope: Literal["tree", "run"], run_id: str | None = None) -> TreeStats: ...
def stats(scope: str = "process", run_id: str | None = None) -> PublisherStats | TreeStats:
    """Counters: of this process (`PublisherStats`, zeros before its first publish), or
    `TreeStats` of this process and its descendants (`"tree"`) or of every process on
    this host that published to `run_id` (`"run"`), with a row per process.
    """
    if scope == "process":
        st = _process.existing_state()
        if st is None:
            return Counters().snapshot(os.getpid(), 0, False)
        return st.snapshot()
    if scope not in ("tree", "run"):
        raise ValueError(f"scope must be 'process', 'tree' or 'run', got {scope!r}")
    return _recovery.tree_stats(scope, None if run_id is None else str(run_id))


STEP_END_TIMEOUT = 10.0
"""How long a ZenML step's end waits for what it and its children left (only as long as
there is something left: an idle step ends at once)."""


def step_ended() -> None:
    """A ZenML step is ending: deliver what this process and the children it started left
    (their spools included), before ZenML ends the run's stream."""
    flush_tree(STEP_END_TIMEOUT)
