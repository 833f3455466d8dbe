"""The on-disk spool of one process: events it could not deliver itself, in seq order.

Layout, `<state dir>/spool/p<pid>-<iid>/`:

    dests.json        [{"run_id", "server", "token_file"}, ...]  (index = dest number; no token)
    state             one page of int64 slots: magic, resolved_below, in-flight range and key
    seg-<first seq>   segments: a 32-byte header (magic, committed end, first seq) and records

A record is `u32 length | u16 dest | u16 reserved | u64 seq` and the event's bytes exactly
as queued. A segment's committed end is written last, so a writer killed half-way through a
record leaves a tail that readers ignore. `resolved_below` says every seq below it is
settled (delivered or refused); `inflight` is the seq range of the one batch being POSTed
and the Idempotency-Key it carries, recorded before the POST, so whoever resumes the spool
resends exactly that batch with exactly that key (our server answers it from its memory
instead of appending it again).

Two writers: the exit spill (one segment written with one `write`, when an exit path runs
out of budget) and the durable log (`_durable`), which appends in `publish()` through
mmap'd segments. Exactly one process resumes a spool, after claiming it by an atomic rename
(`claim`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import mmap
import os
import shutil
import struct
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from zstream_mp import _handoff
from zstream_mp._recovery import liveness as _liveness
from zstream_mp._recovery.statedir import read_private, subdir, write_all, write_private
from zstream_mp._stream_context import Destination

SEG_MAGIC = b"ZSPSEG1\0"
STATE_MAGIC = 0x31455441545350
SEG_HEADER = 32
RECORD = struct.Struct("<IHHQ")
COMMIT = struct.Struct("<Q")
STATE_SIZE = 4096
# state slots
T_MAGIC, T_RESOLVED, T_INFLIGHT_FIRST, T_INFLIGHT_LAST, T_INFLIGHT_STARTED = range(5)
KEY_OFFSET = 64
CLAIM = ".claim-"
DEDUP_MEMORY = 24 * 3600.0
"""Seconds a server's word that it deduplicates is trusted without a fresh answer."""
KEY_NAMESPACE = uuid.UUID("5d0c1b7e-8a4e-4f0e-9c55-7a2a2b7f1e01")


def spool_root() -> str:
    return subdir("spool")


def batch_key(iid: str, first: int, last: int) -> str:
    """The Idempotency-Key of the spooled batch of seqs first..last: the same for everyone."""
    return str(uuid.uuid5(KEY_NAMESPACE, f"{iid}:{first}:{last}"))


def dest_record(
    run_id: str, server: str | None, token_file: str | None, deduplicates: bool = False
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "server": server,
        "token_file": token_file,
        "deduplicates": deduplicates,
    }


def write_dests(
    directory: str, dests: Sequence[Destination], deduplicating: Collection[str] = ()
) -> None:
    """Record where the spool's events go. A token is kept in its own 0600 handoff file in
    the state dir (never in the spool), so whoever delivers the spool later has the
    credentials it was given for that server, and only for that server. A server known to
    honour the Idempotency-Key (`deduplicating`) is marked: a batch whose fate is
    unknown is resent there without reading the stream first."""
    records = []
    for d in dests:
        token_file = None
        if d.token:
            with contextlib.suppress(OSError):
                token_file = _handoff.token_file(d.token)
        records.append(dest_record(d.run_id, d.server, token_file, d.server in deduplicating))
    write_private(os.path.join(directory, "dests.json"), json.dumps(records))


# --------------------------------------------------------------------------- servers


def _server_mark(server: str) -> str:
    name = hashlib.sha256(server.encode()).hexdigest()[:24]
    return os.path.join(subdir("servers"), f"dedup-{name}")


def note_deduplicating(server: str, deduplicates: bool) -> None:
    """Remember, for every deliverer on this host, whether `server` honours the
    Idempotency-Key (it said so on an answer, or answered a keyed POST without saying so)."""
    with contextlib.suppress(OSError):
        path = _server_mark(server)
        if deduplicates:
            write_private(path, server)
        else:
            os.unlink(path)


def deduplicates(server: str) -> bool:
    """`server` said it honours the Idempotency-Key within the last `DEDUP_MEMORY` s."""
    try:
        return time.time() - os.stat(_server_mark(server)).st_mtime < DEDUP_MEMORY
    except OSError:
        return False


# --------------------------------------------------------------------------- state page


def allocate(fd: int, size: int) -> None:
    """Give the file `size` bytes of real blocks before it is mapped: a sparse file written
    through `mmap` on a full disk kills the process with SIGBUS; this raises ENOSPC here."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, size)  # a file system without fallocate (writes below may still fail)
        os.pwrite(fd, bytes(size), 0)


class StatePage:
    """The mmap'd state page of one spool directory."""

    def __init__(self, path: str, create: bool) -> None:
        flags = os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                allocate(fd, STATE_SIZE)
            elif os.fstat(fd).st_size < STATE_SIZE:
                raise OSError(errno.EINVAL, f"{path}: a torn state page")
            self._map = mmap.mmap(fd, STATE_SIZE)
        finally:
            os.close(fd)
        self.slots = memoryview(self._map).cast("B").cast("q")
        if create:
            self.slots[T_MAGIC] = STATE_MAGIC
            self.slots[T_INFLIGHT_FIRST] = -1

    @property
    def resolved_below(self) -> int:
        return int(self.slots[T_RESOLVED])

    def set_inflight(self, first: int, last: int, key: str, started: float | None = None) -> None:
        """Record the batch about to be POSTed (first, then the range that makes it valid)."""
        self._map[KEY_OFFSET : KEY_OFFSET + 16] = uuid.UUID(key).bytes
        self.slots[T_INFLIGHT_STARTED] = int((time.time() if started is None else started) * 1000)
        self.slots[T_INFLIGHT_LAST] = last
        self.slots[T_INFLIGHT_FIRST] = first

    @property
    def inflight_started(self) -> float:
        """Wall-clock time at which the batch recorded in flight was (last) sent."""
        return int(self.slots[T_INFLIGHT_STARTED]) / 1000.0

    def inflight(self) -> tuple[int, int, str] | None:
        first = int(self.slots[T_INFLIGHT_FIRST])
        if first < 0 or first < self.resolved_below:
            return None
        key = uuid.UUID(bytes=bytes(self._map[KEY_OFFSET : KEY_OFFSET + 16]))
        return first, int(self.slots[T_INFLIGHT_LAST]), str(key)

    def resolve_inflight(self) -> None:
        """The batch recorded in flight proved not to have reached the server."""
        self.slots[T_INFLIGHT_FIRST] = -1

    def resolve(self, below: int) -> None:
        """Everything below `below` is settled; no batch is in flight."""
        self.slots[T_RESOLVED] = below
        self.slots[T_INFLIGHT_FIRST] = -1

    def close(self) -> None:
        self.slots.release()
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()


# --------------------------------------------------------------------------- writing


def ensure_dir(path: str) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)


def encode_segment(first_seq: int, records: list[tuple[int, bytes]]) -> bytes:
    """A whole segment holding `records` as (dest, event bytes), seqs from `first_seq`."""
    parts = [b""]
    seq = first_seq
    pack = RECORD.pack
    for dest, event in records:
        parts.append(pack(len(event), dest, 0, seq))
        parts.append(event)
        seq += 1
    body_len = sum(len(p) for p in parts)
    parts[0] = SEG_MAGIC + COMMIT.pack(SEG_HEADER + body_len) + COMMIT.pack(first_seq) + bytes(8)
    return b"".join(parts)


def segment_name(first_seq: int) -> str:
    return f"seg-{first_seq:012d}"


def write_segment(directory: str, first_seq: int, records: list[tuple[int, bytes]]) -> None:
    """Write one complete segment with a single `write` (the exit spill)."""
    path = os.path.join(directory, segment_name(first_seq))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            write_all(fd, encode_segment(first_seq, records))
        finally:
            os.close(fd)
    except BaseException:
        # a segment cut short would be counted whole by its writer: none is kept instead
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


# --------------------------------------------------------------------------- reading


@dataclass
class Spooled:
    seq: int
    dest: int
    event: bytes


def read_segment(path: str) -> Iterator[Spooled]:
    """The committed records of one segment; a torn tail is ignored."""
    data = read_private(path)
    if len(data) < SEG_HEADER or data[:8] != SEG_MAGIC:
        return
    end = min(COMMIT.unpack_from(data, 8)[0], len(data))
    off = SEG_HEADER
    while off + RECORD.size <= end:
        length, dest, _, seq = RECORD.unpack_from(data, off)
        start = off + RECORD.size
        if start + length > end:
            return
        yield Spooled(seq, dest, data[start : start + length])
        off = start + length


def segments(directory: str) -> list[str]:
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith("seg-"))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names]


def read_dests(directory: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(read_private(os.path.join(directory, "dests.json")))
    except (OSError, ValueError):
        return []
    return value if isinstance(value, list) else []


def pending_records(directory: str, resolved_below: int) -> list[Spooled]:
    out: list[Spooled] = []
    for path in segments(directory):
        with contextlib.suppress(OSError):
            out.extend(r for r in read_segment(path) if r.seq >= resolved_below)
    return out


def count_pending(directory: str) -> int:
    """Events in a spool directory not yet settled."""
    try:
        page = StatePage(os.path.join(directory, "state"), create=False)
    except OSError:
        resolved = 0
    else:
        resolved = page.resolved_below
        page.close()
    return len(pending_records(directory, resolved))


# --------------------------------------------------------------------------- claiming


@dataclass(frozen=True)
class SpoolDir:
    path: str
    owner_pid: int
    owner_iid: str
    claimer: tuple[int, int] | None
    """(pid, start) of the process that claimed it, if any."""

    @property
    def entry_name(self) -> str:
        return f"p{self.owner_pid}-{self.owner_iid}"


def parse_name(directory: str, name: str) -> SpoolDir | None:
    base, _, claim = name.partition(CLAIM)
    if not base.startswith("p") or "-" not in base or name.endswith(".tmp"):
        return None
    pid_s, _, iid = base[1:].partition("-")
    try:
        pid = int(pid_s)
        claimer = None
        if claim:
            c_pid, _, c_start = claim.partition("-")
            claimer = (int(c_pid), int(c_start))
    except ValueError:
        return None
    return SpoolDir(os.path.join(directory, name), pid, iid, claimer)


def list_spools() -> list[SpoolDir]:
    root = spool_root()
    out = []
    for name in sorted(os.listdir(root)):
        found = parse_name(root, name)
        if found is not None:
            out.append(found)
    return out


def claim(spool: SpoolDir) -> str | None:
    """Claim `spool` for this process by an atomic rename; the new path, or None if lost."""
    me = _liveness.own_identity()
    if spool.claimer == me:
        return spool.path
    target = os.path.join(os.path.dirname(spool.path), f"{spool.entry_name}{CLAIM}{me[0]}-{me[1]}")
    try:
        os.rename(spool.path, target)
    except OSError:
        return None
    return target


def unclaim(path: str) -> None:
    """Give a claim back (the claimer could not finish): the spool is anyone's again."""
    base, sep, _ = os.path.basename(path).partition(CLAIM)
    if sep:
        with contextlib.suppress(OSError):
            os.rename(path, os.path.join(os.path.dirname(path), base))


def remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
