"""Publishers that died: a forked child that publishes, spills what it holds to its spool
and ends by `os._exit` (as a SIGKILL would leave it), for unit tests of the recovery wing.
Everything lands in the state dir the test chose (`ZSTREAM_STATE_DIR`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from helpers.mock_server import SERVER, event_bytes
from zstream_mp._queue import EventQueue
from zstream_mp._recovery import registry as _registry
from zstream_mp._recovery.durable import DurableQueue
from zstream_mp._recovery.spill import Spill
from zstream_mp._stats import F_EXITED, Counters
from zstream_mp._stream_context import Destination


@dataclass(frozen=True)
class DeadPublisher:
    pid: int
    name: str
    """Its registry entry's name, `p<pid>-<iid>` (its spool directory's too)."""


def leave_dead(
    n: int,
    run_id: str | None = None,
    *,
    token: str | None = "tok-1",
    spool: bool = True,
    exited: bool = False,
    server: str = SERVER,
    durable: bool = False,
) -> DeadPublisher:
    """Fork a child that publishes `n` events to `run_id`, spills them (unless `spool=False`)
    and ends without its exit hooks; `exited=True` marks its exit hook as finished;
    `durable=True` publishes into a durable queue (the spool itself) instead."""
    run = run_id or str(uuid.uuid4())
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_fd)
            entry = _registry.register(durable)
            assert entry is not None
            counters = Counters(entry.page)
            queue = (
                DurableQueue(entry, counters, 1 << 24) if durable else EventQueue(1000, counters)
            )
            dest = Destination(run_id=run, server=server, token=token, prefix=b"")
            entry.note_run(run, None)
            for seq in range(n):
                queue.append(dest, event_bytes(seq, run))
            if spool and n and not durable:
                Spill(entry.name, 1 << 20).spill_unsettled(queue, "test", final=True)
            if exited:
                counters.flags = counters.flags | F_EXITED
            os.write(write_fd, entry.name.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        name = fh.read().decode()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and name, "the dead publisher's child failed"
    return DeadPublisher(pid, name)


LeaveDead = Callable[..., DeadPublisher]
