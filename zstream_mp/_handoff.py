"""How child processes learn their context: the environment variable and its files.

Format. `ZSTREAM_CONTEXT` holds compact JSON:

    {"run_id": "<uuid>", "step_run_id": "<uuid>", "step_name": "train",
     "server": "http://127.0.0.1:8237", "token_file": "<state dir>/token-<sha256[:24]>",
     "origin": <pid of the process that exported it>}

Only `run_id` is required. The token never travels in the variable (environments are
shown by `ps e`, logged by launchers and copied into Ray's dashboard): it sits in a 0600
file named by the token's hash, so every process that binds the same token agrees on it.

The exporting process (the *origin*) also keeps its current context, in the same JSON, in
`ctx-<origin>.json`. Children re-read that file at most once every `RECHECK_SECONDS`,
so workers that outlive a `bind()` in their parent (a long-lived pool, the forkserver,
loky's reusable workers) follow it. When the file is gone (the origin exited or unbound),
a child keeps what the variable itself said.

Every file is written to a temporary name and renamed into place, mode 0600, inside the
state directory (`_statedir`), and read only when it is a private file of this user in a
private directory of this user. A file lives while any process may still need it: at exit
the origin removes its own files only when it has no live descendant left; otherwise the
registry's sweep removes them once no live process references them (`sweep()`).

The environment variable reaches spawn, forkserver, loky, Ray and Dask workers because
they copy `os.environ`; a forked child has it already.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from zstream_mp._forksafe import on_fork_in_child
from zstream_mp._recovery import liveness as _liveness
from zstream_mp._recovery.statedir import read_private, state_dir, write_private
from zstream_mp._settings import checked_token
from zstream_mp._stream_context import StreamContext
from zstream_mp._wire import ENV_CONTEXT, ENV_TOKEN
from zstream_mp.errors import ConfigurationError

logger = logging.getLogger("zstream_mp")

_TOKEN_NAME = re.compile(r"token-[0-9a-f]{24}")
RECHECK_SECONDS = 1.0
"""How often a child looks at its origin's file for a newer context."""


# --------------------------------------------------------------------------- exporting


def export(ctx: StreamContext) -> None:
    """Hand `ctx` to the children this process starts, and to those it already has."""
    data: dict[str, Any] = {"run_id": ctx.run_id}
    if ctx.step_run_id:
        data["step_run_id"] = ctx.step_run_id
    if ctx.step_name is not None:
        data["step_name"] = ctx.step_name
    if ctx.server:
        data["server"] = ctx.server
    try:
        if ctx.token:
            data["token_file"] = token_file(ctx.token)
        pid, start = _liveness.own_identity()
        data["origin"] = pid
        data["origin_start"] = start
        value = json.dumps(data, separators=(",", ":"))
        if os.environ.get(ENV_CONTEXT) == value:
            return
        write_private(_origin_path(pid), value)
        _remove_at_exit(_origin_path(pid))
    except OSError as exc:  # no writable state dir: children still get the run, not the token
        logger.warning(
            "cannot write the handoff files (%s); child processes will need %s or their own bind()",
            exc,
            ENV_TOKEN,
        )
        data.pop("token_file", None)
        data.pop("origin", None)
        value = json.dumps(data, separators=(",", ":"))
    os.environ[ENV_CONTEXT] = value


def exported() -> str | None:
    """What this process currently hands down (to restore it later)."""
    return os.environ.get(ENV_CONTEXT)


def restore(previous: str | None) -> None:
    """Hand down `previous` again (a value of `exported()`), or nothing."""
    if previous is None:
        withdraw()
    else:
        os.environ[ENV_CONTEXT] = previous


def withdraw() -> None:
    """Stop handing a context down: children started from now on get none."""
    os.environ.pop(ENV_CONTEXT, None)
    with contextlib.suppress(OSError):
        os.unlink(_origin_path(os.getpid()))


# --------------------------------------------------------------------------- inheriting


@dataclass
class _Inherited:
    raw: str
    origin_path: str | None
    stamp: int | None
    checked: float
    handed_down: StreamContext | None
    """What the variable itself says; used when the origin's file is gone or unreadable."""
    current: StreamContext | None


_inherited: _Inherited | None = None


def inherited() -> StreamContext | None:
    """The context a parent handed down, following the origin's later binds."""
    global _inherited
    cached = _inherited
    now = time.monotonic()
    if cached is not None and now - cached.checked < RECHECK_SECONDS:
        return cached.current
    raw = os.environ.get(ENV_CONTEXT)
    origin_path: str | None = None
    if not raw:
        found = _from_ancestors()
        if found is None:
            _inherited = _Inherited("", None, None, now, None, None)
            return None
        raw, origin_path = found
    if cached is None or cached.raw != raw:
        handed_down = parse(raw)
        origin_path = origin_path or _origin_of(raw)
        cached = _Inherited(raw, origin_path, None, now, handed_down, handed_down)
    cached.checked = now
    if cached.origin_path is not None:
        try:
            stamp: int | None = os.stat(cached.origin_path).st_mtime_ns
        except OSError:  # the origin has exited or unbound: keep what was inherited
            stamp = None
        if stamp != cached.stamp:
            cached.stamp = stamp
            fresh = None
            if stamp is not None:
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    fresh = parse(read_private(cached.origin_path).decode("utf-8"))
            cached.current = fresh or cached.handed_down
    _inherited = cached
    return cached.current


def _from_ancestors() -> tuple[str, str] | None:
    """The context an ancestor exports now, for a process started before that ancestor
    bound its run: a pool made before `bind()`, the forkserver (started once, with the
    environment of that moment), loky's reusable workers. Nearest ancestor first; an
    ancestor's file counts only when its recorded start time is that ancestor's own."""
    try:
        lineage = _liveness.ancestors()
        directory = state_dir()
    except OSError:
        return None
    for pid, start in lineage:
        path = os.path.join(directory, f"ctx-{pid}.json")
        try:
            raw = read_private(path).decode("utf-8")
            data = json.loads(raw)
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(data, dict) and data.get("origin_start") in (None, start):
            return raw, path
    return None


def forget_inherited() -> None:
    """Drop the cache, so the next `inherited()` reads the variable afresh."""
    global _inherited
    _inherited = None


def parse(raw: str) -> StreamContext | None:
    """A context from the handoff JSON, or None when it is unusable."""
    try:
        data = json.loads(raw)
        token = None
        named = data.get("token_file")
        if named:
            token = read_token_file(named)
            if token is None:
                _refuse_once(raw, "its token_file is not a token file of this user's state dir")
                return None
        return StreamContext(
            run_id=data["run_id"],
            step_run_id=data.get("step_run_id"),
            step_name=data.get("step_name"),
            server=data.get("server"),
            token=token,
        )
    except (ValueError, KeyError, TypeError, OSError, AttributeError, UnicodeDecodeError):
        return None


_refused: set[str] = set()


def _refuse_once(raw: str, why: str) -> None:
    if raw not in _refused:
        _refused.add(raw)
        logger.warning(
            "%s is ignored: %s; events published here without bind() are dropped "
            "(counted as no_context)",
            ENV_CONTEXT,
            why,
        )


def read_token_file(path: object) -> str | None:
    """The token in `path` when it is one of this user's token files in the state dir, else
    None. Only the state dir is trusted: a context or spool naming another file (any other
    private file of the user) never has it read and sent as a credential."""
    if not isinstance(path, str) or not _TOKEN_NAME.fullmatch(os.path.basename(path)):
        return None
    try:
        if os.path.dirname(os.path.abspath(path)) != os.path.abspath(state_dir()):
            return None
        return checked_token(read_private(path).decode("utf-8"), f"the token file {path}")
    except (OSError, UnicodeDecodeError, ConfigurationError):
        return None


def origin_pid(raw: str | None) -> int | None:
    """The PID of the process that exported a `ZSTREAM_CONTEXT` value, if it names one."""
    if not raw:
        return None
    try:
        origin = json.loads(raw).get("origin")
    except (ValueError, AttributeError):
        return None
    return origin if isinstance(origin, int) else None


def _origin_of(raw: str) -> str | None:
    """The origin file of a handed-down context, unless this process exported it."""
    origin = origin_pid(raw)
    if origin is not None and origin != os.getpid():
        return _origin_path(origin)
    return None


# --------------------------------------------------------------------------- files


def _origin_path(pid: int) -> str:
    return os.path.join(state_dir(), f"ctx-{pid}.json")


_token_files: dict[str, str] = {}


def token_file(token: str) -> str:
    """A 0600 file holding `token`, named by its hash so every binder agrees on it.

    Never removed at exit: other binders of the same token, saved contexts and unsent
    spools may name it. The sweep removes it once nothing live references it."""
    directory = state_dir()
    path = _token_files.get(token)
    if path is not None and os.path.dirname(path) == directory and os.path.exists(path):
        return path
    name = hashlib.sha256(token.encode()).hexdigest()[:24]
    path = os.path.join(directory, f"token-{name}")
    if not os.path.exists(path):
        write_private(path, token)
    else:
        os.utime(path)  # in use again: the sweep's age test starts over
    _token_files[token] = path
    return path


def token_file_of(token: str) -> str | None:
    """The existing handoff file that holds `token`, if there is one (never creates one)."""
    path = _token_files.get(token) or os.path.join(
        state_dir(), "token-" + hashlib.sha256(token.encode()).hexdigest()[:24]
    )
    return path if os.path.exists(path) else None


_cleanup: set[str] = set()


def _remove_at_exit(path: str) -> None:
    """At exit, remove `path` unless a live descendant may still read it (then the sweep does)."""
    if path in _cleanup:
        return
    if not _cleanup:
        atexit.register(_remove_own_files, os.getpid())
    _cleanup.add(path)


def _remove_own_files(owner: int) -> None:
    if os.getpid() != owner or _has_live_descendants():
        return
    for path in list(_cleanup):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _has_live_descendants() -> bool:
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return True  # cannot tell: keep the files (fail-closed), the sweep removes them
    for child in children:
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


# --------------------------------------------------------------------------- sweep


def sweep(directory: str, referenced: set[str]) -> int:
    """Remove ctx and token files that no live process needs; returns how many were removed.

    A ctx file lives while its origin is alive or any live process descends from it; a token
    file while a live ctx file, a live registry entry (`referenced`) or the environment of
    a live process of this user names it.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    live_lineage, environ_refs = _live_processes()
    removed = 0
    keep_tokens = set(referenced) | environ_refs
    for name in names:
        if not (name.startswith("ctx-") and name.endswith(".json")):
            continue
        path = os.path.join(directory, name)
        try:
            data = json.loads(read_private(path))
            origin = int(data.get("origin") or name[4:-5])
            start = data.get("origin_start")
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        key = (origin, start if isinstance(start, int) else None)
        if _liveness.is_alive(origin, key[1]) or _lineage_includes(live_lineage, key):
            token_file = data.get("token_file")
            if isinstance(token_file, str):
                keep_tokens.add(token_file)
            continue
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed += 1
    for name in names:
        if not name.startswith("token-") or name.endswith(".tmp"):
            continue
        path = os.path.join(directory, name)
        if path in keep_tokens:
            continue
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed += 1
    return removed


def _lineage_includes(lineage: set[tuple[int, int | None]], key: tuple[int, int | None]) -> bool:
    return key in lineage or (key[0], None) in lineage


def _live_processes() -> tuple[set[tuple[int, int | None]], set[str]]:
    """Every (pid, start) that is an ancestor of a live process of this user, and every
    handoff file path the environments of those processes name."""
    import psutil

    lineage: set[tuple[int, int | None]] = set()
    refs: set[str] = set()
    uid = os.getuid()
    for proc in psutil.process_iter(["pid", "ppid", "uids", "status"]):
        info = proc.info
        if info.get("status") == psutil.STATUS_ZOMBIE or not info.get("uids"):
            continue
        if info["uids"].real != uid:
            continue
        pid = info["pid"]
        lineage.add((pid, _liveness.start_of(pid)))
        ppid = info.get("ppid") or 0
        while ppid > 1:
            lineage.add((ppid, _liveness.start_of(ppid)))
            try:
                ppid = psutil.Process(ppid).ppid()
            except psutil.Error:
                break
        with contextlib.suppress(psutil.Error, OSError):
            raw = proc.environ().get(ENV_CONTEXT)
            if raw:
                with contextlib.suppress(ValueError, AttributeError):
                    token_file = json.loads(raw).get("token_file")
                    if isinstance(token_file, str):
                        refs.add(token_file)
    return lineage, refs


def _after_fork_in_child() -> None:
    """The parent's files are the parent's to remove; the child re-reads the variable."""
    global _inherited
    _inherited = None
    _cleanup.clear()
    _token_files.clear()


on_fork_in_child("handoff", _after_fork_in_child)
