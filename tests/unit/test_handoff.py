"""`_handoff`: the environment variable, the token and origin files, following the origin."""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from zstream_mp import _handoff
from zstream_mp._recovery.statedir import write_private
from zstream_mp._stream_context import StreamContext
from zstream_mp._wire import ENV_CONTEXT, ENV_STATE_DIR

RUN = str(uuid.uuid4())
STEP = str(uuid.uuid4())


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path / "state"))
    monkeypatch.delenv(ENV_CONTEXT, raising=False)
    _handoff._token_files.clear()
    _handoff.forget_inherited()
    yield tmp_path / "state"
    _handoff.withdraw()
    _handoff.forget_inherited()
    _handoff._token_files.clear()


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_export_writes_the_variable_without_the_token(state: Path) -> None:
    ctx = StreamContext(RUN, STEP, "train", "http://127.0.0.1:1", token="s3cret-token")
    _handoff.export(ctx)
    raw = os.environ[ENV_CONTEXT]
    assert "s3cret-token" not in raw
    data = json.loads(raw)
    assert data["run_id"] == RUN and data["step_run_id"] == STEP
    assert data["step_name"] == "train" and data["server"] == "http://127.0.0.1:1"
    assert data["origin"] == os.getpid()
    assert Path(data["token_file"]).parent == state
    assert Path(data["token_file"]).read_text() == "s3cret-token"


def test_token_and_origin_files_are_0600_in_a_0700_dir(state: Path) -> None:
    _handoff.export(StreamContext(RUN, token="t0k"))
    data = json.loads(os.environ[ENV_CONTEXT])
    assert _mode(data["token_file"]) == 0o600
    origin = state / f"ctx-{os.getpid()}.json"
    assert _mode(origin) == 0o600
    assert _mode(state) == 0o700
    assert origin.read_text() == os.environ[ENV_CONTEXT]


def test_the_token_file_is_named_by_the_token_so_binders_agree() -> None:
    _handoff.export(StreamContext(RUN, token="same"))
    first = json.loads(os.environ[ENV_CONTEXT])["token_file"]
    _handoff._token_files.clear()
    _handoff.export(StreamContext(str(uuid.uuid4()), token="same"))
    assert json.loads(os.environ[ENV_CONTEXT])["token_file"] == first


def test_parse_round_trips_export() -> None:
    ctx = StreamContext(RUN, STEP, "train", "http://127.0.0.1:1", token="tok")
    _handoff.export(ctx)
    assert _handoff.parse(os.environ[ENV_CONTEXT]) == ctx


@pytest.mark.parametrize(
    "raw",
    ["", "not json", "[]", '{"step_name": "x"}', '{"run_id": "not-a-uuid"}', "null"],
)
def test_parse_refuses_unusable_values(raw: str) -> None:
    assert _handoff.parse(raw) is None


def test_parse_with_a_missing_token_file_is_unusable(tmp_path: Path) -> None:
    raw = json.dumps({"run_id": RUN, "token_file": str(tmp_path / "gone")})
    assert _handoff.parse(raw) is None


def test_export_without_a_writable_state_dir_keeps_the_run_drops_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(ENV_STATE_DIR, str(blocker / "state"))
    _handoff.export(StreamContext(RUN, token="t"))
    data = json.loads(os.environ[ENV_CONTEXT])
    assert data == {"run_id": RUN}
    assert "cannot write the handoff files" in caplog.text


def test_withdraw_removes_the_variable_and_the_origin_file(state: Path) -> None:
    _handoff.export(StreamContext(RUN))
    origin = state / f"ctx-{os.getpid()}.json"
    assert origin.exists()
    previous = _handoff.exported()
    _handoff.withdraw()
    assert ENV_CONTEXT not in os.environ and not origin.exists()
    _handoff.restore(previous)
    assert os.environ[ENV_CONTEXT] == previous


def _as_child_of(state: Path, origin: int, ctx: dict[str, object]) -> Path:
    """Set the variable a parent with pid `origin` would have left; return its file."""
    os.environ[ENV_CONTEXT] = json.dumps({**ctx, "origin": origin})
    state.mkdir(mode=0o700, exist_ok=True)
    return state / f"ctx-{origin}.json"


def test_inherited_follows_the_origin_file(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_handoff, "RECHECK_SECONDS", 0.0)
    origin = _as_child_of(state, 1, {"run_id": RUN})
    assert _handoff.inherited() == StreamContext(RUN)  # no file yet: the variable's value

    later = str(uuid.uuid4())
    write_private(str(origin), json.dumps({"run_id": later, "origin": 1}))
    assert _handoff.inherited() == StreamContext(later)

    newest = str(uuid.uuid4())
    write_private(str(origin), json.dumps({"run_id": newest, "origin": 1}))
    os.utime(origin, ns=(1, os.stat(origin).st_mtime_ns + 1_000_000))
    assert _handoff.inherited() == StreamContext(newest)

    origin.unlink()  # the origin exited or unbound: keep what was handed down
    assert _handoff.inherited() == StreamContext(RUN)


def test_inherited_rechecks_at_most_once_per_interval(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_handoff, "RECHECK_SECONDS", 3600.0)
    origin = _as_child_of(state, 1, {"run_id": RUN})
    first = _handoff.inherited()
    write_private(str(origin), json.dumps({"run_id": str(uuid.uuid4()), "origin": 1}))
    assert _handoff.inherited() is first  # cached: no stat within the interval
    _handoff.forget_inherited()
    assert _handoff.inherited() != first


def test_an_unreadable_origin_file_falls_back_to_the_variable(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_handoff, "RECHECK_SECONDS", 0.0)
    origin = _as_child_of(state, 1, {"run_id": RUN})
    origin.write_text("{torn")
    assert _handoff.inherited() == StreamContext(RUN)


def test_own_origin_file_is_not_followed(state: Path) -> None:
    """The exporting process reads its own variable, never its own file."""
    assert _handoff._origin_of(json.dumps({"run_id": RUN, "origin": os.getpid()})) is None
    assert _handoff._origin_of(json.dumps({"run_id": RUN, "origin": 1})) == str(
        state / "ctx-1.json"
    )


def test_a_forked_child_forgets_the_parents_files(state: Path) -> None:
    _handoff.export(StreamContext(RUN, token="forked"))
    assert _handoff._cleanup and _handoff._token_files
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what the fork hook left, then leave without cleanup
        try:
            report = {
                "cleanup": len(_handoff._cleanup),
                "token_files": len(_handoff._token_files),
                "inherited_cache": _handoff._inherited is not None,
                "env": os.environ.get(ENV_CONTEXT) is not None,
            }
            os.write(write, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        report = json.loads(fh.read())
    os.waitpid(pid, 0)
    assert report == {"cleanup": 0, "token_files": 0, "inherited_cache": False, "env": True}
    assert (state / f"ctx-{os.getpid()}.json").exists()  # the child's exit did not remove it


def test_origin_pid_reads_the_exporters_pid_or_nothing() -> None:
    assert _handoff.origin_pid(json.dumps({"run_id": RUN, "origin": 4242})) == 4242
    assert _handoff.origin_pid(json.dumps({"run_id": RUN})) is None
    assert _handoff.origin_pid(json.dumps({"origin": "4242"})) is None
    assert _handoff.origin_pid("not json") is None
    assert _handoff.origin_pid("[1, 2]") is None
    assert _handoff.origin_pid(None) is None
