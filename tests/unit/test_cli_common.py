"""`cli/_common`: exit codes, `--server`/`--token` resolution, and the one-line error report
(never a traceback, raw JSON or a server's source path)."""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import pytest

from zstream_mp._wire import DEFAULT_SERVER, ENV_SERVER, ENV_TOKEN
from zstream_mp.cli import _common
from zstream_mp.cli._common import (
    EXIT_AUTH,
    EXIT_REFUSED,
    EXIT_SERVER_GONE,
    Formatter,
    add_connection_args,
    fail,
    report,
    resolve,
)
from zstream_mp.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    PermissionDeniedError,
    RunNotFoundError,
    ServerUnavailableError,
    StreamingDisabledError,
    SubscribeError,
)

SERVER = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def _no_zenml_there(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 401 report asks the server whether it is ZenML; here nothing answers."""

    def refused(url: str, **kwargs: Any) -> httpx.Response:
        raise httpx.ConnectError("refused")

    monkeypatch.setattr(httpx, "get", refused)
    for name in (ENV_SERVER, ENV_TOKEN):
        monkeypatch.delenv(name, raising=False)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_connection_args(parser)
    return parser.parse_args(list(argv))


def test_the_exit_codes_are_the_documented_ones() -> None:
    assert (_common.EXIT_OK, EXIT_REFUSED, _common.EXIT_USAGE, EXIT_AUTH) == (0, 1, 2, 3)
    assert (EXIT_SERVER_GONE, _common.EXIT_INTERRUPTED) == (4, 130)


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SERVER, "http://env:1")
    monkeypatch.setenv(ENV_TOKEN, "env-token")
    assert resolve(_parse("--server", "http://flag:2/", "--token", "t")) == ("http://flag:2", "t")


def test_the_environment_fills_in_missing_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SERVER, "http://env:1/")
    monkeypatch.setenv(ENV_TOKEN, " env-token\n")
    assert resolve(_parse()) == ("http://env:1", "env-token")


def test_without_anything_the_default_server_and_no_token() -> None:
    assert resolve(_parse()) == (DEFAULT_SERVER.rstrip("/"), None)


def test_a_malformed_environment_token_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_TOKEN, "two words")
    with pytest.raises(ConfigurationError, match=ENV_TOKEN) as info:
        resolve(_parse())
    assert "two words" not in str(info.value)


def test_fail_prints_one_line_and_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert fail("it broke", 4, hint="try again") == 4
    assert capsys.readouterr().err == "zstream-mp: it broke\n  hint: try again\n"
    assert fail("plain") == EXIT_REFUSED
    assert capsys.readouterr().err == "zstream-mp: plain\n"


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (AuthenticationError("no", 401, "Not authenticated"), EXIT_AUTH, "--token"),
        (PermissionDeniedError("no", 403, "missing right"), EXIT_AUTH, "'read'"),
        (RunNotFoundError("no", 404, "gone"), EXIT_REFUSED, "runs list"),
        (StreamingDisabledError("no", 501, "off"), EXIT_REFUSED, "not enabled"),
        (InvalidRequestError("no", 422, "bad id"), EXIT_REFUSED, "UUID"),
        (ServerUnavailableError("cannot connect"), EXIT_SERVER_GONE, "cannot reach"),
        (SubscribeError("odd", 418, "teapot"), EXIT_REFUSED, "418"),
    ],
)
def test_each_server_error_has_its_exit_code_and_words(
    capsys: pytest.CaptureFixture[str], error: SubscribeError, code: int, words: str
) -> None:
    assert report(error, SERVER, "run-1") == code
    err = capsys.readouterr().err
    assert err.startswith("zstream-mp: ") and words in err
    assert len(err.splitlines()) <= 2


def test_a_401_from_a_zenml_server_asks_for_a_zenml_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def zenml(url: str, **kwargs: Any) -> httpx.Response:
        return httpx.Response(200, json={"version": "0.98.0", "deployment_type": "local"})

    monkeypatch.setattr(httpx, "get", zenml)
    assert report(AuthenticationError("no", 401, "nope"), SERVER) == EXIT_AUTH
    assert "ZenML 0.98.0 server: pass a ZenML API token" in capsys.readouterr().err


def test_a_lost_connection_and_a_failing_server_are_told_apart(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report(ServerUnavailableError("the connection was lost and could not (re)connect"), SERVER)
    assert "lost the connection" in capsys.readouterr().err
    report(ServerUnavailableError("failing", 503, "overloaded"), SERVER)
    assert "keeps failing (503: overloaded)" in capsys.readouterr().err


def test_a_run_not_found_names_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    report(RunNotFoundError("no", 404, "x"), SERVER, "abc")
    assert f"run abc not found on {SERVER}" in capsys.readouterr().err
    report(RunNotFoundError("no", 404, "x"), SERVER)
    assert f"the run not found on {SERVER}" in capsys.readouterr().err


def test_a_servers_traceback_and_source_paths_are_never_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    detail = (
        'Traceback (most recent call last):\n  File "/srv/app/handlers.py", line 10\n'
        "GET /api/v1/runs\nValueError: bad"
    )
    report(SubscribeError("odd", 500, detail), SERVER)
    err = capsys.readouterr().err
    assert "/srv/app" not in err and "GET /api" not in err and "ValueError: bad" in err


def test_a_json_detail_is_not_dumped(capsys: pytest.CaptureFixture[str]) -> None:
    report(SubscribeError("odd", 500, {"nested": {"deep": [1, 2]}}), SERVER)
    err = capsys.readouterr().err
    assert "the server gave no readable reason" in err and "nested" not in err


def test_zenmls_validation_detail_becomes_field_and_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    detail = [
        "ValidationError",
        "[{'type': 'uuid_parsing', 'loc': ('path', 'run_id'), 'msg': 'Input should be a "
        "valid UUID'}]",
    ]
    report(InvalidRequestError("bad", 422, detail), SERVER)
    assert "run_id: Input should be a valid UUID" in capsys.readouterr().err


def test_a_long_detail_is_cut_on_a_word(capsys: pytest.CaptureFixture[str]) -> None:
    report(SubscribeError("odd", 500, "word " * 200), SERVER)
    line = capsys.readouterr().err.splitlines()[0]
    assert line.endswith("…)") or line.endswith("…")
    assert len(line) < 400


def test_help_shows_defaults_only_where_there_is_one() -> None:
    parser = argparse.ArgumentParser(formatter_class=Formatter)
    parser.add_argument("--port", type=int, default=8237, help="port")
    parser.add_argument("--json", action="store_true", help="one object per line")
    parser.add_argument("--server", default=None, help="base URL")
    parser.add_argument("--count", default=3, help="how many (%(default)s by default)")
    text = parser.format_help()
    assert "port (default: 8237)" in text
    assert "one object per line (default" not in text
    assert "base URL (default" not in text
    assert "how many (3 by default)" in text and "(3 by default) (default" not in text
