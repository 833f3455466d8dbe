"""Replay protection for POSTed batches keyed by `Idempotency-Key` (not in ZenML).

The publisher sends one key per batch and reuses it on every retry. If the server stored a
batch but the response was lost, the retry gets the stored answer instead of appending the
events again. Keys are remembered per run (the last `per_run` keys, for the last `runs`
runs). A retry that arrives while the first attempt is still publishing waits for it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

Result = dict[str, Any]


class IdempotencyCache:
    """Bounded map (run, key) -> stored 200 body, plus in-flight attempts."""

    def __init__(self, per_run: int = 10_000, runs: int = 1_000) -> None:
        self._per_run = per_run
        self._runs = runs
        self._done: OrderedDict[str, OrderedDict[str, Result]] = OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future[Result | None]] = {}

    async def claim(self, run: str, key: str) -> Result | None:
        """A stored result for this key, or None after claiming it (then call `finish`)."""
        while True:
            stored = self._done.get(run)
            if stored is not None and key in stored:
                return stored[key]
            waiter = self._pending.get((run, key))
            if waiter is None:
                self._pending[(run, key)] = asyncio.get_running_loop().create_future()
                return None
            result = await asyncio.shield(waiter)
            if result is not None:
                return result

    def finish(self, run: str, key: str, result: Result | None) -> None:
        """Store a successful result (None: the attempt failed, a retry may try again)."""
        waiter = self._pending.pop((run, key), None)
        if result is not None:
            stored = self._done.get(run)
            if stored is None:
                stored = self._done[run] = OrderedDict()
                while len(self._done) > self._runs:
                    self._done.popitem(last=False)
            else:
                self._done.move_to_end(run)
            stored[key] = result
            while len(stored) > self._per_run:
                stored.popitem(last=False)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)
