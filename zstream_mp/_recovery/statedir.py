"""The per-user state directory, and reading and writing the private files inside it.

Everything the package keeps on disk (handoff context and token files, the registry, the
spool) lives here, so the directory must be provably ours: a real directory (`lstat`, no
symlink followed), owned by this uid, with no group or other permission bits. Anything else
(pre-created by another user, a symlink, a wrong mode) is refused with one warning, and the
process uses a private directory from `mkdtemp` instead. The fallback is exported in
`ZSTREAM_STATE_DIR`, so the children share it instead of each warning and falling back.

Files follow the same rules: written to a temporary name and renamed into place, 0600;
read with `O_NOFOLLOW` and accepted only when they are regular files owned by this uid
with no group or other bits.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
import threading

from zstream_mp._wire import ENV_STATE_DIR

logger = logging.getLogger("zstream_mp")

_cache: tuple[int, str | None, str] | None = None
"""(pid, the value of ZSTREAM_STATE_DIR it was computed for, the directory)."""


class _UnsafePathError(OSError):
    """A path in the state dir that is not provably this user's (internal; never escapes)."""


def default_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"zstream-mp-{os.getuid()}")


def problem_with_dir(path: str) -> str | None:
    """Why `path` is not a directory we can trust, or None when it is ours and private."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot inspect it ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != os.getuid():
        return f"it is owned by uid {st.st_uid}, not {os.getuid()}"
    if st.st_mode & 0o077:
        return f"its mode is {stat.S_IMODE(st.st_mode):04o}, not 0700"
    return None


def state_dir() -> str:
    """`$ZSTREAM_STATE_DIR`, else `<tmp>/zstream-mp-<uid>`: created 0700 and verified."""
    global _cache
    chosen = os.environ.get(ENV_STATE_DIR) or None
    cached = _cache
    if cached is not None and cached[0] == os.getpid() and cached[1] == chosen:
        return cached[2]
    directory = chosen or default_dir()
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    problem = problem_with_dir(directory)
    if problem is not None:
        fallback = tempfile.mkdtemp(prefix=f"zstream-mp-{os.getuid()}-")
        logger.warning(
            "This process refuses the state directory %s (%s); using the private %s instead",
            directory,
            problem,
            fallback,
        )
        os.environ[ENV_STATE_DIR] = fallback  # children share the fallback
        directory, chosen = fallback, fallback
    _cache = (os.getpid(), chosen, directory)
    return directory


def subdir(name: str) -> str:
    """`<state dir>/<name>`, created 0700 and verified like the state dir itself."""
    path = os.path.join(state_dir(), name)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    problem = problem_with_dir(path)
    if problem is not None:
        raise _UnsafePathError(f"{path}: {problem}")
    return path


def write_private(path: str, data: str | bytes) -> None:
    """Write `data` to `path` atomically (temp file + rename), mode 0600."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            write_all(fd, data.encode() if isinstance(data, str) else data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data`, or raise: a full disk makes `os.write` write part of it."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def read_private(path: str) -> bytes:
    """The bytes of `path` if it is a regular 0600-or-stricter file of ours, else raise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise _UnsafePathError(f"{path} is not a private file of this user")
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)
