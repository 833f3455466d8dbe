"""Adopting the spool of a dead process: claim it, resume it, deliver it exactly once.

Who adopts: the binding parent at its ``flush_tree`` and exit first, then any later
publisher of the same user (``maintain``: a scan at most every ``SCAN_EVERY`` seconds per
host, in a thread of its own), then ``zstream-mp spool drain``. Claiming is an atomic
rename, so exactly one live process resumes a spool; a claim whose claimer died is taken
over the same way.

Resuming follows the spool's state page: the batch recorded in flight is resent first,
byte for byte, with its recorded Idempotency-Key (a server that deduplicates, like ours,
answers it without appending it again); the rest goes in batches whose range and key are
recorded before each POST, so an adopter that dies mid-way is itself resumed exactly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from zstream_mp._recovery import landed as _landed
from zstream_mp._recovery import liveness as _liveness
from zstream_mp._recovery import registry as _registry
from zstream_mp._recovery import spool as _spool
from zstream_mp._recovery.statedir import in_trusted_dir, read_private, state_dir
from zstream_mp._sender import EXIT_BATCH_EVENTS, THREAD_PREFIX, start_without_signals
from zstream_mp._settings import Settings
from zstream_mp._stats import S_SPOOL_DROPPED, S_SPOOL_SENT, S_SPOOLED
from zstream_mp._transport import Outcome, Transport
from zstream_mp._wire import ENV_TOKEN

logger = logging.getLogger("zstream_mp")

SCAN_EVERY = 10.0
"""Seconds between two adoption scans by later publishers, per host."""
LANDED_BUDGET = 10.0
"""Seconds an adopter may spend reading a stream to see whether an in-flight batch landed."""
LANDED_RECHECK = 1.0
"""Seconds between the two looks at the stream for an in-flight batch that seems missing."""
MAINTAIN_BUDGET = 1.0
"""Seconds a later publisher's scan may spend delivering others' spools: it is a courtesy,
kept short so that the thread is gone before the process next forks between bursts."""


@dataclass
class Adopted:
    sent: int = 0
    dropped: int = 0
    complete: bool = True


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


def adopt(
    spool: _spool.SpoolDir,
    deadline: float,
    transport: Transport | None = None,
    settings: Settings | None = None,
    token_for: Callable[[str], str | None] | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> Adopted:
    """Claim ``spool`` and deliver what is unsettled in it, until ``deadline``."""
    path = _spool.claim(spool)
    if path is None:
        return Adopted(complete=False)  # someone else took it
    settings = settings or Settings.from_env()
    transport = transport or Transport(settings.request_timeout, settings.retry_deadline)
    try:
        page = _spool.StatePage(os.path.join(path, "state"), create=False)
    except OSError:
        page = _spool.StatePage(os.path.join(path, "state"), create=True)
    result = Adopted()
    try:
        dests = _spool.read_dests(path)
        records = _spool.pending_records(path, page.resolved_below)
        inflight = page.inflight()
        # Catching up, like a process leaving: fewer, larger POSTs.
        size = max(settings.batch_size, EXIT_BATCH_EVENTS)
        batches = _batches(records, page, size, spool.owner_iid)
        by_seq = {r.seq: r for r in records}
        for first, last, key in batches:
            chunk = [by_seq[q] for q in range(first, last + 1) if q in by_seq]
            if not chunk:
                page.resolve(last + 1)
                continue
            if time.monotonic() >= deadline:
                result.complete = False
                break
            dest = dests[chunk[0].dest] if chunk[0].dest < len(dests) else {}
            server, run_id = dest.get("server"), dest.get("run_id")
            n = len(chunk)
            if not server or not run_id:
                page.resolve(last + 1)
                result.dropped += n
                continue
            token = _token(dest, server, token_for)
            events = [r.event for r in chunk]
            if inflight is not None and (first, last, key) == inflight:
                # its sender died during the POST: send only what the stream lacks
                lacking = _landed.missing(server, run_id, token, events, LANDED_BUDGET)
                if lacking:
                    # the server may still be working on the request its sender left:
                    # look once more before sending what is missing again
                    time.sleep(min(LANDED_RECHECK, max(0.0, deadline - time.monotonic())))
                    lacking = _landed.missing(server, run_id, token, lacking, LANDED_BUDGET)
                if lacking is not None and len(lacking) < len(events):
                    result.sent += len(events) - len(lacking)
                    events = lacking
                    key = _spool.batch_key(spool.owner_iid + ".rest", first, last)
                if not events:
                    page.resolve(last + 1)
                    continue
            page.set_inflight(first, last, key)
            n = len(events)
            body = b'{"events":[' + b",".join(events) + b"]}"
            outcome = transport.post(
                server, run_id, token, body, lambda: deadline, idempotency_key=key
            )
            if outcome.outcome is Outcome.DELIVERED:
                result.sent += n
                if on_sent is not None:
                    on_sent(n)
            elif outcome.status == 401 or outcome.outcome is Outcome.FAILED:
                result.complete = False  # no credentials or no server yet: leave it for later
                break
            else:
                result.dropped += n
                logger.warning(
                    "Dropped %d spooled events for run %s: %s",
                    n,
                    run_id,
                    outcome.reason or "no response",
                )
            page.resolve(last + 1)
    finally:
        page.close()
        _account(spool.entry_name, result)
    if result.complete:
        _spool.remove(path)
    return result


def _batches(
    records: list[_spool.Spooled], page: _spool.StatePage, size: int, iid: str
) -> list[tuple[int, int, str]]:
    """The batches to send, in order: the recorded in-flight one first, as it was."""
    out: list[tuple[int, int, str]] = []
    inflight = page.inflight()
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


def _token(
    dest: dict[str, object], server: str, token_for: Callable[[str], str | None] | None
) -> str | None:
    token_file = dest.get("token_file")
    if isinstance(token_file, str) and in_trusted_dir(token_file):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            token = read_private(token_file).decode("utf-8").strip()
            if token:
                return token
    if token_for is not None:
        own = token_for(server)
        if own:
            return own
    return os.environ.get(ENV_TOKEN) or None


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
            # already be in the owner's ``sent``, so the books close by difference
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
    token_for: Callable[[str], str | None] | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> bool:
    """Adopt every adoptable spool (``only`` those it accepts); True when none is left."""
    try:
        spools = _spool.list_spools()
    except OSError:
        return True
    settings = Settings.from_env()
    transport: Transport | None = None
    complete = True
    for spool in spools:
        if only is not None and not only(spool):
            continue
        if not adoptable(spool):
            if _spool.count_pending(spool.path):
                complete = False
            continue
        transport = transport or Transport(settings.request_timeout, settings.retry_deadline)
        result = adopt(spool, deadline, transport, settings, token_for, on_sent)
        complete = complete and result.complete
    return complete


# --------------------------------------------------------------------------- later publishers

_scan_started: int | None = None


def maintain_soon(token_for: Callable[[str], str | None], on_sent: Callable[[int], None]) -> None:
    """Once per process, and at most every ``SCAN_EVERY`` s per host: adopt and sweep."""
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
        target=_maintain, args=(token_for, on_sent), name=f"{THREAD_PREFIX}adopt", daemon=True
    )
    start_without_signals(thread)


def _maintain(token_for: Callable[[str], str | None], on_sent: Callable[[int], None]) -> None:
    try:
        adopt_all(time.monotonic() + MAINTAIN_BUDGET, token_for=token_for, on_sent=on_sent)
        _registry.sweep()
    except Exception:  # maintenance must never disturb publishing
        logger.debug("Spool maintenance failed", exc_info=True)
