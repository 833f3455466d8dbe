"""The run list, one page per request: what `GET .../runs` and the index page read.

A page costs one registry walk (O(log n + page)), at most one index read of a shared
broker, and one `run_summaries` call for the page's runs (one pipeline on Redis), whatever
the number of runs: the summaries (first and last event, count, steps, processes, ended)
are kept by the broker as events arrive, so no run's stream is read to list it.

Runs come from this process's registry (created, published to or ended here) and, with
Redis, from the deployment's shared index (runs published to through any server process
or before a restart). Pages are ordered by first seen and continue from an opaque cursor.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from zstream_mp.server.brokers.run_meta import RunMeta
from zstream_mp.server.runs import Cursor

if TYPE_CHECKING:
    from starlette.datastructures import QueryParams

    from zstream_mp.server.state import ServerState

DEFAULT_LIMIT = 1000
MAX_LIMIT = 1000
LIVE_WINDOW_S = 30.0
"""A run with an event this recent is `live`; one without is `quiet` (still open)."""
SHOWN_STEPS = 8
_SLICE = 100
"""Runs summarised between two yields to the event loop, so a big page never holds it."""
CONCURRENT_PAGES = 4
"""Pages built at once per server process; more listers wait their turn (idle), so they
queue behind each other instead of in front of every other request."""
_gates: weakref.WeakKeyDictionary[object, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def listing_gate(state: ServerState) -> asyncio.Semaphore:
    """The server's semaphore of `CONCURRENT_PAGES` (made on first use, in its loop)."""
    gate = _gates.get(state.runs)
    if gate is None:
        gate = _gates[state.runs] = asyncio.Semaphore(CONCURRENT_PAGES)
    return gate


@dataclass(frozen=True)
class PageRequest:
    """`?order=newest|oldest&limit=N&cursor=...` parsed; `ValueError` names the bad one."""

    newest_first: bool = False
    limit: int = DEFAULT_LIMIT
    cursor: Cursor | None = None

    @classmethod
    def of(cls, query: QueryParams) -> PageRequest:
        order = query.get("order", "oldest")
        if order not in ("oldest", "newest"):
            raise ValueError("order must be 'oldest' or 'newest'")
        raw_limit = query.get("limit", str(DEFAULT_LIMIT))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer in 1..{MAX_LIMIT}")
        raw_cursor = query.get("cursor")
        return cls(order == "newest", int(raw_limit), parse_cursor(raw_cursor))


def format_cursor(row: Cursor) -> str:
    return f"{row[0]!r}_{row[1]}"


def parse_cursor(text: str | None) -> Cursor | None:
    if not text:
        return None
    stamp, sep, run_id = text.partition("_")
    try:
        if not sep or len(text) > 80:
            raise ValueError
        return float(stamp), str(UUID(run_id))
    except ValueError:
        raise ValueError("cursor is not one this server returned") from None


def summary(
    state: ServerState, run_id: UUID, meta: RunMeta | None, first_seen: float | None
) -> dict[str, Any]:
    """One run as the list and the status answer it (the older fields first, unchanged)."""
    meta = meta or RunMeta()
    ended = state.runs.ended(run_id) or meta.ended
    steps = sorted(meta.steps)
    if ended:
        run_state = "ended"
    elif meta.last is not None and time.time() - meta.last < LIVE_WINDOW_S:
        run_state = "live"
    elif meta.last is None:
        run_state = "waiting"
    else:
        run_state = "quiet"
    return {
        "id": str(run_id),
        "ended": ended,
        "subscribers": state.broadcaster.subscriber_count(state.key(run_id)),
        "last_event_id": meta.last_id,
        "state": run_state,
        "started": meta.first if meta.first is not None else first_seen,
        "first_event": meta.first,
        "last_event": meta.last,
        "events": meta.events,
        "steps": steps[:SHOWN_STEPS],
        "step_count": len(steps),
        "processes": len(meta.pids),
    }


async def summaries(state: ServerState, run_ids: list[UUID]) -> dict[UUID, RunMeta]:
    """The broker's summaries of these runs in one call; empty when the broker is down."""
    keys = {state.key(run_id): run_id for run_id in run_ids}
    try:
        found = await state.broker.run_summaries(list(keys))
    except Exception:
        return {}
    return {keys[key]: meta for key, meta in found.items()}


async def list_page(state: ServerState, page: PageRequest) -> dict[str, Any]:
    """`{"runs": [...], "next": cursor or null}`: one page in first-seen order."""
    rows: dict[str, tuple[float, UUID]] = {
        text: (stamp, run_id)
        for stamp, text, run_id in state.runs.page(page.newest_first, page.cursor, page.limit)
    }
    prefix = state.key(UUID(int=0)).rpartition(":run:")[0]
    try:
        shared = await state.broker.indexed_runs(prefix, page.newest_first, page.cursor, page.limit)
    except Exception:
        shared = None
    shared_ids = set()
    for stamp, text in shared or ():  # the shared index's time wins: a run sits at one place
        shared_ids.add(text)
        known = rows.get(text)
        rows[text] = (stamp, known[1] if known else UUID(text))
    merged = sorted(((t, text, r) for text, (t, r) in rows.items()), reverse=page.newest_first)
    merged = merged[: page.limit]
    await asyncio.sleep(0)
    metas = await summaries(state, [run_id for _, _, run_id in merged])
    runs = []
    for at, (stamp, text, run_id) in enumerate(merged, 1):
        meta = metas.get(run_id)
        listed_elsewhere = meta is not None and meta.first is not None
        if shared is not None and text not in shared_ids and listed_elsewhere:
            continue  # a run with events is listed where the shared index puts it
        runs.append(summary(state, run_id, meta, stamp))
        if at % _SLICE == 0:
            await asyncio.sleep(0)
    more = len(merged) == page.limit
    last = merged[-1][:2] if merged else None
    return {"runs": runs, "next": format_cursor(last) if more and last else None}
