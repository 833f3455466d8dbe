"""Per-run summary kept at ingest, so listing runs never reads a run's stream.

A broker updates one `RunMeta` per stream as it appends (`BatchFacts.of` reads the few
fields it needs from the frame bytes with anchored patterns, never a JSON parse of the
whole event): when the first and last events arrived, how many there were, the step
names and the payload ``pid`` values seen (the processes that published), whether the
`end` frame was appended. The sets are bounded; a run past the bound reports the bound.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

MAX_STEPS = 64
"""Step names remembered per run (a list shows a handful; the count stops here)."""
MAX_PIDS = 1024
"""Distinct ``pid`` values remembered per run."""
MAX_STEP_CHARS = 200

_END = b'{"type":"end"}'
_STEP = re.compile(
    rb'\{"type":"event","event":\{"pipeline_run_id":"[^"]*","step_run_id":(?:null|"[^"]*"),'
    rb'"step_name":(null|"(?:[^"\\]|\\.)*")'
)
_PID = re.compile(rb'(?<!\\)"pid":(\d{1,10})[,}]')


@dataclass(frozen=True)
class BatchFacts:
    """What one appended batch tells about its run."""

    events: int
    steps: frozenset[str]
    pids: frozenset[int]
    ended: bool

    @classmethod
    def of(cls, payloads: list[bytes]) -> BatchFacts:
        events = 0
        ended = False
        steps: set[str] = set()
        pids: set[int] = set()
        for payload in payloads:
            if payload == _END:
                ended = True
                continue
            events += 1
            head = _STEP.match(payload)
            if head is not None and head.group(1) != b"null":
                try:
                    name = json.loads(head.group(1))
                except ValueError:
                    name = None
                if isinstance(name, str) and name:
                    steps.add(name[:MAX_STEP_CHARS])
            pid = _PID.search(payload)
            if pid is not None:
                pids.add(int(pid.group(1)))
        return cls(events, frozenset(steps), frozenset(pids), ended)


@dataclass
class RunMeta:
    """A run's summary as a broker holds it; times are the server's receive times."""

    first: float | None = None
    last: float | None = None
    events: int = 0
    steps: set[str] = field(default_factory=set)
    pids: set[int] = field(default_factory=set)
    ended: bool = False
    last_id: str | None = None

    def add(self, facts: BatchFacts, now: float, last_id: str | None) -> None:
        if facts.events:
            if self.first is None:
                self.first = now
            self.last = now
            self.events += facts.events
        for step in facts.steps:
            if len(self.steps) >= MAX_STEPS:
                break
            self.steps.add(step)
        for pid in facts.pids:
            if len(self.pids) >= MAX_PIDS:
                break
            self.pids.add(pid)
        self.ended = self.ended or facts.ended
        if last_id is not None:
            self.last_id = last_id
