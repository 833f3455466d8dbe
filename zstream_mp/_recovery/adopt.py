"""Delivering a spool: claim it, resume it from its state page, deliver it exactly once.

Who delivers: the owner itself while it lives (`Spill.resume`), then, once it is dead, the
binding parent at its `flush_tree` and exit, any later publisher of the same user
(`maintain`: a scan at most every `SCAN_EVERY` seconds per host, in a thread of its
own), and `zstream-mp spool drain`. Claiming is an atomic rename, so one process at a time
resumes a spool, and one thread within it (`_delivering`); a claim whose claimer died is
taken over the same way, and a claimer that could not finish gives its claim back.

Resuming follows the spool's state page: the batch recorded in flight is settled first
(only what the run's stream lacks is sent again: `landed`), then the rest goes in order,
in batches whose range and key are recorded before each POST, so a deliverer that dies
mid-way is itself resumed exactly. Credentials come from the token file the spool names
(a token file in the state dir, for that server only) or from the deliverer's own
credentials for that server; a 401 or 403 leaves the spool for a later attempt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from zstream_mp import _handoff
from zstream_mp._deadline import acquire_until
from zstream_mp._recovery import landed as _landed
from zstream_mp._recovery import liveness as _liveness
from zstream_mp._recovery import registry as _registry
from zstream_mp._recovery import spool as _spool
from zstream_mp._recovery.statedir import state_dir, write_private
from zstream_mp._sender import EXIT_BATCH_EVENTS, THREAD_PREFIX, start_without_signals
from zstream_mp._settings import Settings
from zstream_mp._stats import S_SPOOL_DROPPED, S_SPOOL_SENT, S_SPOOLED
from zstream_mp._transport import Outcome, Transport
from zstream_mp._transport import Result as PostResult
from zstream_mp._wire import batch_body

logger = logging.getLogger("zstream_mp")

SCAN_EVERY = 10.0
"""Seconds between two adoption scans by later publishers, per host."""
MAINTAIN_BUDGET = 1.0
"""Seconds a later publisher's scan may spend delivering others' spools: it is a courtesy,
kept short so that the thread is gone before the process next forks between bursts."""
LAST_ATTEMPT = "last-attempt"
"""File in a spool directory: why the last delivery attempt stopped (`spool ls`)."""

TokenFor = Callable[[str], "str | None"]


@dataclass
class Adopted:
    sent: int = 0
    dropped: int = 0
    complete: bool = True
    refused: int | None = None
    """The HTTP status (401, 403) that stopped the delivery, if credentials did."""


def adoptable(spool: _spool.SpoolDir) -> bool:
    """Its owner is dead and nobody alive (but possibly this process) holds a claim."""
    if spool.claimer is not None:
        if spool.claimer == _liveness.own_identity():
            return True
        if _liveness.is_alive(*spool.claimer):
            return False
    return not _liveness.is_alive(spool.owner_pid, _owner_start(spool))


def _owner_start(spool: _spool.SpoolDir) -> int | None:
    for found in _registry.scan():
        if found.name == spool.entry_name:
            return found.start
    return None


_delivering = threading.Lock()
"""One deliverer of others' spools per process: a background scan and an exit hook never
resume the same spool side by side (claims are per process, not per thread)."""


def adopt(
    spool: _spool.SpoolDir,
    deadline: float,
    transport: Transport | None = None,
    settings: Settings | None = None,
    token_for: TokenFor | None = None,
    history: _landed.History | None = None,
    token: str | None = None,
) -> Adopted:
    """Claim `spool` and deliver what is unsettled in it, until `deadline`; `token`
    replaces the credentials the spool names."""
    if not acquire_until(_delivering, deadline):
        return Adopted(complete=False)
    try:
        path = _spool.claim(spool)
        if path is None:
            return Adopted(complete=False)  # someone else took it
        settings = settings or Settings.from_env()
        transport = transport or Transport(settings.request_timeout, settings.retry_deadline)
        try:
            page = _spool.StatePage(os.path.join(path, "state"), create=False)
        except OSError:
            page = _spool.StatePage(os.path.join(path, "state"), create=True)
        result = Adopted(complete=False)  # what is accounted if delivery raises
        try:
            result = deliver(
                path,
                page,
                spool.owner_iid,
                deadline,
                transport,
                settings,
                token_for,
                history,
                token,
            )
        finally:
            page.close()
            _account(spool.entry_name, result)
        if result.complete:
            _spool.remove(path)
        else:
            _spool.unclaim(path)  # another deliverer may go on while this process lives
        return result
    finally:
        _delivering.release()


def deliver(
    path: str,
    page: _spool.StatePage,
    owner_iid: str,
    deadline: float,
    transport: Transport,
    settings: Settings | None = None,
    token_for: TokenFor | None = None,
    history: _landed.History | None = None,
    token: str | None = None,
) -> Adopted:
    """Deliver the unsettled events of the spool at `path` in order, until `deadline`."""
    override = token
    settings = settings or Settings.from_env()
    history = history or _landed.History(transport.http_transport)
    result = Adopted()
    dests = _spool.read_dests(path)
    records = _spool.pending_records(path, page.resolved_below)
    inflight = page.inflight()
    # Catching up, like a process leaving: fewer, larger POSTs.
    size = max(settings.batch_size, EXIT_BATCH_EVENTS)
    by_seq = {r.seq: r for r in records}
    for first, last, key in _batches(records, inflight, size, owner_iid):
        chunk = [by_seq[q] for q in range(first, last + 1) if q in by_seq]
        if not chunk:
            page.resolve(last + 1)
            continue
        if time.monotonic() >= deadline:
            result.complete = False
            break
        dest = dests[chunk[0].dest] if chunk[0].dest < len(dests) else {}
        server, run_id = dest.get("server"), dest.get("run_id")
        if not isinstance(server, str) or not isinstance(run_id, str) or not server:
            page.resolve(last + 1)
            result.dropped += len(chunk)
            continue
        token = override or _token(dest, server, token_for)
        events = [r.event for r in chunk]
        if (first, last, key) == inflight and not _deduplicates(dest, server):
            # its sender stopped during the POST: send only what the stream lacks
            lacking = history.missing(
                server, run_id, token, events, page.inflight_started, deadline
            )
            if lacking is _landed.NOT_YET:
                result.complete = False  # too early to tell, or no time left: later
                break
            if lacking is not None and len(lacking) < len(events):
                result.sent += len(events) - len(lacking)
                events = lacking
                key = _spool.batch_key(owner_iid + ".rest", first, last)
            if not events:
                page.resolve(last + 1)
                continue
        page.set_inflight(first, last, key)
        outcome = transport.post(
            server,
            run_id,
            token,
            batch_body(events),
            lambda: deadline,
            idempotency_key=key,
            grace=0.0,  # the deadline is the caller's budget (an exit's, a drain's): no overrun
        )
        if _kept_for_later(outcome, len(events), result, path, page, server, run_id):
            break
        page.resolve(last + 1)
    return result


def _kept_for_later(
    outcome: PostResult,
    count: int,
    result: Adopted,
    path: str,
    page: _spool.StatePage,
    server: str,
    run_id: str,
) -> bool:
    """Account one POST's outcome in `result`; True when the batch stays in the spool (no
    valid credentials, or no server yet) and this delivery stops."""
    if outcome.outcome is Outcome.DELIVERED:
        result.sent += count
        return False
    if outcome.status in (401, 403) or outcome.outcome is Outcome.FAILED:
        result.complete = False
        if outcome.status in (401, 403):
            result.refused = outcome.status
        _note_attempt(path, f"{server}: {outcome.reason or 'no response'}")
        if not outcome.maybe_landed:
            page.resolve_inflight()
        return True
    result.dropped += count
    logger.warning(
        "Dropped %d spooled events for run %s at %s: %s",
        count,
        run_id,
        server,
        outcome.reason or "no response",
    )
    return False


def _batches(
    records: list[_spool.Spooled], inflight: tuple[int, int, str] | None, size: int, iid: str
) -> list[tuple[int, int, str]]:
    """The batches to send, in order: the recorded in-flight one first, as it was."""
    out: list[tuple[int, int, str]] = []
    skip_below = -1
    if inflight is not None:
        out.append(inflight)
        skip_below = inflight[1]
    run: list[_spool.Spooled] = []
    for record in records:
        if record.seq <= skip_below:
            continue
        if run and (record.dest != run[0].dest or len(run) >= size):
            out.append((run[0].seq, run[-1].seq, _spool.batch_key(iid, run[0].seq, run[-1].seq)))
            run = []
        run.append(record)
    if run:
        out.append((run[0].seq, run[-1].seq, _spool.batch_key(iid, run[0].seq, run[-1].seq)))
    return out


def _deduplicates(dest: dict[str, object], server: str) -> bool:
    """The server honours the Idempotency-Key: the spool says so, or a process on this
    host heard it say so lately. Resending a batch of unknown fate is then harmless."""
    return bool(dest.get("deduplicates")) or _spool.deduplicates(server)


def _token(dest: dict[str, object], server: str, token_for: TokenFor | None) -> str | None:
    """The spool's own credential for `server`, else the deliverer's own for that server:
    a token goes only to the server it was given for."""
    token = _handoff.read_token_file(dest.get("token_file"))
    if token:
        return token
    return token_for(server) if token_for is not None else None


def _note_attempt(path: str, why: str) -> None:
    with contextlib.suppress(OSError):
        write_private(os.path.join(path, LAST_ATTEMPT), f"{time.time():.0f} {why}")


def last_attempt(path: str) -> str | None:
    """Why the last delivery attempt of the spool at `path` stopped, if one did."""
    try:
        with open(os.path.join(path, LAST_ATTEMPT), encoding="utf-8") as fh:
            return fh.read().partition(" ")[2] or None
    except OSError:
        return None


def _account(entry_name: str, result: Adopted) -> None:
    """Settle the adopted events in the owner's page, so its row adds up."""
    for found in _registry.scan():
        if found.name != entry_name:
            continue
        if found.slots[S_SPOOLED] == 0 and (result.sent or result.dropped):
            # a durable backlog: what the owner left is what the adopter found
            _registry.add_to_slot(entry_name, S_SPOOLED, found.row().spool_pending)
        if result.dropped:
            _registry.add_to_slot(entry_name, S_SPOOL_DROPPED, result.dropped)
        if result.complete:
            # everything is settled; events of an in-flight batch that had landed may
            # already be in the owner's `sent`, so the books close by difference
            slots = _registry.read_slots(os.path.join(_registry.procs_dir(), entry_name + ".ctr"))
            if slots is not None:
                settled = slots[S_SPOOLED] - slots[S_SPOOL_DROPPED]
                _registry.add_to_slot(entry_name, S_SPOOL_SENT, settled, absolute=True)
        elif result.sent:
            _registry.add_to_slot(entry_name, S_SPOOL_SENT, result.sent)


def adopt_all(
    deadline: float,
    *,
    only: Callable[[_spool.SpoolDir], bool] | None = None,
    token_for: TokenFor | None = None,
    on_result: Callable[[Adopted], None] | None = None,
    token: str | None = None,
) -> bool:
    """Adopt every adoptable spool (`only` those it accepts); True when none is left.

    One pass shares one replay of each run's stream among the spools it checks.
    """
    try:
        spools = _spool.list_spools()
    except OSError:
        return True
    settings = Settings.from_env()
    transport: Transport | None = None
    history = _landed.History()
    complete = True
    for spool in spools:
        if only is not None and not only(spool):
            continue
        if not adoptable(spool):
            if _spool.count_pending(spool.path):
                complete = False
            continue
        transport = transport or Transport(settings.request_timeout, settings.retry_deadline)
        result = adopt(spool, deadline, transport, settings, token_for, history, token)
        if on_result is not None:
            on_result(result)
        complete = complete and result.complete
    return complete


# --------------------------------------------------------------------------- later publishers

_scan_started: int | None = None


def maintain_soon(token_for: TokenFor, on_result: Callable[[Adopted], None]) -> None:
    """Once per process, and at most every `SCAN_EVERY` s per host: adopt and sweep."""
    global _scan_started
    pid = os.getpid()
    if _scan_started == pid:
        return
    _scan_started = pid
    stamp = os.path.join(state_dir(), "last-scan")
    try:
        if time.time() - os.stat(stamp).st_mtime < SCAN_EVERY:
            return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        with open(stamp, "a"):
            pass
        os.utime(stamp)
    thread = threading.Thread(
        target=_maintain, args=(token_for, on_result), name=f"{THREAD_PREFIX}adopt", daemon=True
    )
    start_without_signals(thread)


def _maintain(token_for: TokenFor, on_result: Callable[[Adopted], None]) -> None:
    try:
        adopt_all(time.monotonic() + MAINTAIN_BUDGET, token_for=token_for, on_result=on_result)
        _registry.sweep()
    except Exception:  # maintenance must never disturb publishing
        logger.debug("Spool maintenance failed", exc_info=True)
