"""`_recovery/statedir`: the state dir must be provably ours, and so must every file read
from it. Each test chooses its own directory through `ZSTREAM_STATE_DIR`."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zstream_mp._recovery import statedir
from zstream_mp._recovery.statedir import (
    _UnsafePathError,
    problem_with_dir,
    read_private,
    state_dir,
    subdir,
    write_private,
)
from zstream_mp._wire import ENV_STATE_DIR


@pytest.fixture
def choose(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Point `ZSTREAM_STATE_DIR` at a path; a fallback dir made meanwhile is removed after."""

    def point(path: Path) -> None:
        monkeypatch.setenv(ENV_STATE_DIR, str(path))

    yield point
    chosen = os.environ.get(ENV_STATE_DIR, "")
    if os.path.basename(chosen).startswith(f"zstream-mp-{os.getuid()}-"):
        shutil.rmtree(chosen, ignore_errors=True)


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_missing_directory_is_created_private(
    tmp_path: Path, choose: Callable[[Path], None]
) -> None:
    target = tmp_path / "fresh"
    choose(target)
    assert state_dir() == str(target)
    assert mode(target) == 0o700


def test_an_existing_private_directory_is_used(
    tmp_path: Path, choose: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "ours"
    target.mkdir(mode=0o700)
    choose(target)
    assert state_dir() == str(target)
    assert not caplog.records


def test_the_default_is_per_user_in_the_temp_dir() -> None:
    assert statedir.default_dir().endswith(f"zstream-mp-{os.getuid()}")


@pytest.mark.parametrize("bad", ["group_writable", "symlink", "file"])
def test_an_untrusted_directory_is_refused_for_a_private_one_children_share(
    tmp_path: Path,
    choose: Callable[[Path], None],
    caplog: pytest.LogCaptureFixture,
    bad: str,
) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    target = tmp_path / "chosen"
    if bad == "group_writable":
        target.mkdir()
        target.chmod(0o770)
    elif bad == "symlink":
        target.symlink_to(real)
    else:
        target.write_text("not a directory")
    choose(target)
    with caplog.at_level(logging.WARNING, logger="zstream_mp"):
        used = state_dir()
    assert used != str(target) and used != str(real)
    assert problem_with_dir(used) is None
    assert os.environ[ENV_STATE_DIR] == used  # exported: children share the fallback
    (line,) = [r.getMessage() for r in caplog.records]
    assert str(target) in line and used in line
    assert state_dir() == used  # decided once: no second warning
    assert len(caplog.records) == 1


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("missing", "cannot inspect it"),
        ("symlink", "symbolic link"),
        ("file", "not a directory"),
        ("mode", "its mode is 0755, not 0700"),
    ],
)
def test_problem_with_dir_says_why(tmp_path: Path, setup: str, reason: str) -> None:
    path = tmp_path / "d"
    if setup == "symlink":
        path.symlink_to(tmp_path)
    elif setup == "file":
        path.write_text("")
    elif setup == "mode":
        path.mkdir()
        path.chmod(0o755)
    problem = problem_with_dir(str(path))
    assert problem is not None and reason in problem


def test_a_subdir_is_created_private_inside_the_state_dir() -> None:
    path = subdir("procs")
    assert os.path.dirname(path) == state_dir()
    assert mode(path) == 0o700
    assert subdir("procs") == path


def test_a_subdir_that_is_not_ours_is_an_unsafe_path() -> None:
    path = Path(state_dir()) / "spool"
    path.mkdir(mode=0o700)
    path.chmod(0o755)
    with pytest.raises(_UnsafePathError, match="0755"):
        subdir("spool")
    other = Path(state_dir()) / "elsewhere"
    other.mkdir(mode=0o700)
    (Path(state_dir()) / "linked").symlink_to(other)
    with pytest.raises(_UnsafePathError, match="symbolic link"):
        subdir("linked")


def test_unsafe_path_is_an_os_error() -> None:
    """Callers that keep going without the disk catch `OSError`; this must be one."""
    assert issubclass(_UnsafePathError, OSError)


def test_write_private_is_0600_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "token-x"
    write_private(str(path), "first")
    write_private(str(path), b"second")
    assert path.read_bytes() == b"second"
    assert mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token-x"]


def test_write_private_replaces_a_symlink_never_writes_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    link = tmp_path / "ctx.json"
    link.symlink_to(victim)
    write_private(str(link), "ours")
    assert victim.read_text() == "keep me"
    assert not link.is_symlink() and link.read_text() == "ours"


def test_read_private_reads_a_private_file_of_any_size(tmp_path: Path) -> None:
    path = tmp_path / "big"
    data = os.urandom(200_000)
    write_private(str(path), data)
    assert read_private(str(path)) == data


def test_read_private_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "open"
    path.write_text("secret")
    path.chmod(0o644)
    with pytest.raises(_UnsafePathError):
        read_private(str(path))


def test_read_private_never_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    write_private(str(target), "secret")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OSError):
        read_private(str(link))


def test_read_private_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(_UnsafePathError):
        read_private(str(fifo))


def test_read_private_of_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_private(str(tmp_path / "absent"))


def _write_under_a_file_size_limit(path: Path, data: bytes, limit: int) -> bytes:
    """`write_private(path, data)` in a forked child whose files may not grow past `limit`
    bytes (a full disk's short write, made deterministic); what it reported."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
            try:
                write_private(str(path), data)
                os.write(write_fd, b"returned")
            except OSError as exc:
                os.write(write_fd, f"raised {exc.errno}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        said = fh.read()
    os.waitpid(pid, 0)
    return said


def test_a_short_write_never_puts_a_truncated_file_in_place(tmp_path: Path) -> None:
    path = tmp_path / "dests.json"
    said = _write_under_a_file_size_limit(path, b"x" * 100, limit=10)
    assert said.startswith(b"raised") and not path.exists()


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # the rename onto it fails
    with pytest.raises(OSError):
        write_private(str(target), "data")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]
