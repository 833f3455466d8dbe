"""A per-worker view of a run's stream for a terminal: `tail --live` and the demo.

Everything shown comes from the events the server streamed, never from local state: one
row per worker (`payload["worker"]`, else the correlation id) with
its last `progress` (`done`/`total`), events seen, events per second and drops (a
worker's `dropped` count when its events report one), plus the run's totals and gaps.
On a terminal it draws with `rich` (the `tui` extra, imported only here and only
then); elsewhere it prints a plain summary line at most once a second.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO

from zstream_mp.cli._printable import printable
from zstream_mp.consumer import Event, Gap

_RATE_WINDOW = 5.0
_PLAIN_EVERY = 1.0
_NAME_MAX = 64
_ROWS_MAX = 1000
"""Workers shown; events of further workers count in the totals only (names are the
publisher's, so their number is too)."""


@dataclass
class WorkerRow:
    """What the stream has shown of one worker."""

    done: int | None = None
    total: int | None = None
    events: int = 0
    dropped: int = 0
    finished: bool = False
    arrivals: deque[float] = field(default_factory=deque)

    def rate(self, now: float) -> float:
        while self.arrivals and now - self.arrivals[0] > _RATE_WINDOW:
            self.arrivals.popleft()
        return len(self.arrivals) / _RATE_WINDOW


def worker_of(event: Event) -> str | None:
    """`payload["worker"]`, else the correlation id; None counts in the totals only.

    The name is the publisher's: control characters are escaped (`printable`) and it is
    cut to `_NAME_MAX` characters; rich draws it as plain text, never as markup.
    """
    worker = event.payload.get("worker")
    if isinstance(worker, str | int) and not isinstance(worker, bool):
        name: str | None = str(worker)
    else:
        name = event.correlation_id
    return None if name is None else printable(name[:_NAME_MAX])


def _number(value: Any) -> int | None:
    """A count from the stream, or None: a bool, NaN or an infinity is not a count."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if math.isfinite(value) else None


class Tally:
    """Per-worker counts from a stream of items; safe to feed from another thread."""

    def __init__(self) -> None:
        self.rows: dict[str, WorkerRow] = {}
        self.events = 0
        self.gaps: list[str] = []
        self.state = "connecting"
        self.lock = threading.Lock()
        self._arrivals: deque[float] = deque()

    def add(self, item: Event | Gap) -> None:
        now = time.monotonic()
        with self.lock:
            self.state = "live"
            if isinstance(item, Gap):
                self.gaps.append(printable(item.reason[:_NAME_MAX]))
                return
            self.events += 1
            self._arrivals.append(now)
            name = worker_of(item)
            if name is None:
                return
            row = self.rows.get(name)
            if row is None:
                if len(self.rows) >= _ROWS_MAX:
                    return
                row = self.rows[name] = WorkerRow()
            row.events += 1
            row.arrivals.append(now)
            payload = item.payload
            if item.kind == "progress":
                done, total = _number(payload.get("done")), _number(payload.get("total"))
                if done is not None:
                    row.done, row.total = done, total
            dropped = _number(payload.get("dropped"))
            if dropped is not None:
                row.dropped = dropped
            if payload.get("state") == "finished":
                row.finished = True

    def rate(self, now: float) -> float:
        while self._arrivals and now - self._arrivals[0] > _RATE_WINDOW:
            self._arrivals.popleft()
        return len(self._arrivals) / _RATE_WINDOW

    def summary(self) -> str:
        """One plain line: every worker's progress, then the totals."""
        now = time.monotonic()
        with self.lock:
            parts = []
            for name, row in sorted(self.rows.items()):
                where = f"{row.done}/{row.total or '?'}" if row.done is not None else "-"
                parts.append(f"{name} {where} ({row.events} events)")
            return (
                f"progress: {', '.join(parts) or 'no events yet'} | events {self.events}, "
                f"{self.rate(now):.0f}/s, gaps {len(self.gaps)}, {self.state}"
            )


class Dashboard:
    """Draws a `Tally` while entered: live bars on a terminal, summary lines elsewhere."""

    def __init__(self, tally: Tally, out: TextIO, title: str, *, plain: bool | None = None) -> None:
        self.tally = tally
        self.out = out
        self.title = title
        self.plain = not out.isatty() if plain is None else plain
        self._live: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not self.plain:
            try:
                import rich  # noqa: F401
            except ImportError:
                self.plain = True
                out.write("(pip install 'zstream-mp[tui]' to draw bars)\n")

    def __enter__(self) -> Dashboard:
        if self.plain:
            self._thread = threading.Thread(target=self._plain_loop, daemon=True)
            self._thread.start()
        else:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.out, highlight=False)
            self._live = Live(get_renderable=self.renderable, console=console, refresh_per_second=8)
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
        else:
            self.out.write(self.tally.summary() + "\n")
            self.out.flush()

    def _plain_loop(self) -> None:
        last = ""
        while not self._stop.wait(_PLAIN_EVERY):
            line = self.tally.summary()
            if line != last:
                self.out.write(line + "\n")
                self.out.flush()
                last = line

    def renderable(self) -> Any:
        """The rich table of workers (called by rich's refresh thread)."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        tally = self.tally
        now = time.monotonic()
        table = Table(
            title=Text(printable(self.title)), title_justify="left", expand=False, box=None
        )
        for name, justify in (
            ("worker", "left"),
            ("progress", "left"),
            ("done", "right"),
            ("events", "right"),
            ("events/s", "right"),
            ("dropped", "right"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        with tally.lock:
            for name, row in sorted(tally.rows.items()):
                total = row.total or 0
                done = row.done or 0
                bar = ProgressBar(
                    total=float(total or 1), completed=float(done if total else 0), width=30
                )
                where = f"{done}/{total}" if row.done is not None else "-"
                table.add_row(
                    Text(name),
                    bar,
                    where + (" ✓" if row.finished else ""),
                    str(row.events),
                    f"{row.rate(now):.0f}",
                    str(row.dropped),
                )
            caption = (
                f"events {tally.events}  ·  {tally.rate(now):.0f}/s  ·  gaps {len(tally.gaps)}"
                f"  ·  {tally.state}"
            )
        table.caption = Text(caption)
        table.caption_justify = "left"
        return table
