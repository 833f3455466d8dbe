"""The state dir must be provably ours: attacks by a second uid are refused, with a fallback.

Each case runs a fresh interpreter that binds a run with a token (which writes the token and
context files) under a TMPDIR where another user (`nobody`, via a forked child that drops
to that uid) has prepared the default `zstream-mp-<uid>` path. Needs root to act as two uids.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, sys, uuid
import zstream_mp
from zstream_mp._recovery import statedir as _statedir
zstream_mp.bind(str(uuid.uuid4()), server="http://127.0.0.1:9", token="secret-token-xyz")
print(json.dumps({"dir": _statedir.state_dir(), "ctx": os.environ["ZSTREAM_CONTEXT"]}))
"""


def _as_nobody(action: object) -> None:
    """Run `action()` in a forked child with the uid and gid of `nobody`."""
    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            action()  # type: ignore[operator]
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _run_victim(tmpdir: Path) -> tuple[dict[str, str], str]:
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=str(REPO))
    env.pop("ZSTREAM_STATE_DIR", None)
    env.pop("ZSTREAM_CONTEXT", None)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _shared_tmp() -> Path:
    base = Path(tempfile.mkdtemp(prefix="zstream-attack-"))
    base.chmod(0o1777)  # like /tmp: everyone may create entries
    return base


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="two uids need root")


def _check_refused(base: Path, stderr: str, out: dict[str, str]) -> None:
    attacked = base / f"zstream-mp-{os.getuid()}"
    assert "refuses the state directory" in stderr, stderr
    assert stderr.count("refuses the state directory") == 1
    used = Path(out["dir"])
    assert used != attacked and not str(used).startswith(str(attacked) + "/")
    st = os.lstat(used)
    assert st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
    ctx = json.loads(out["ctx"])
    assert Path(ctx["token_file"]).parent == used
    # nothing of ours, above all no token, was written where the other user can read it
    target = attacked.resolve() if attacked.is_symlink() else attacked
    if target.is_dir():
        for path in target.iterdir():
            assert b"secret-token-xyz" not in path.read_bytes()
            assert not path.name.startswith(("token-", "ctx-"))


@needs_root
@pytest.mark.parametrize("mode", [0o777, 0o700])
def test_dir_precreated_by_another_uid(mode: int) -> None:
    base = _shared_tmp()
    path = base / f"zstream-mp-{os.getuid()}"

    def make() -> None:
        os.mkdir(path, mode)
        os.chmod(path, mode)

    _as_nobody(make)
    assert os.lstat(path).st_uid != os.getuid()
    out, stderr = _run_victim(base)
    _check_refused(base, stderr, out)


@needs_root
def test_symlink_to_a_dir_of_another_uid() -> None:
    base = _shared_tmp()
    theirs = base / "theirs"
    path = base / f"zstream-mp-{os.getuid()}"

    def make() -> None:
        os.mkdir(theirs, 0o777)
        os.chmod(theirs, 0o777)
        os.symlink(theirs, path)

    _as_nobody(make)
    out, stderr = _run_victim(base)
    _check_refused(base, stderr, out)
    assert list(theirs.iterdir()) == []


def test_our_dir_with_a_wrong_mode() -> None:
    base = _shared_tmp()
    path = base / f"zstream-mp-{os.getuid()}"
    path.mkdir()
    path.chmod(0o755)
    out, stderr = _run_victim(base)
    _check_refused(base, stderr, out)


def test_our_symlink_is_refused_too() -> None:
    base = _shared_tmp()
    real = base / "real"
    real.mkdir(mode=0o700)
    (base / f"zstream-mp-{os.getuid()}").symlink_to(real)
    out, stderr = _run_victim(base)
    _check_refused(base, stderr, out)


def test_a_good_dir_is_used_silently() -> None:
    base = _shared_tmp()
    out, stderr = _run_victim(base)
    assert "refuses" not in stderr
    assert Path(out["dir"]) == base / f"zstream-mp-{os.getuid()}"
    assert stat.S_IMODE(os.lstat(out["dir"]).st_mode) == 0o700


@needs_root
def test_a_planted_token_file_is_not_read() -> None:
    """A handoff naming a file another uid controls yields no context, not their token."""
    from zstream_mp import _handoff

    base = _shared_tmp()
    planted = base / "token-planted"

    def make() -> None:
        planted.write_text("their-token")

    _as_nobody(make)
    raw = json.dumps({"run_id": str(uuid.uuid4()), "token_file": str(planted)})
    assert _handoff.parse(raw) is None
