"""`_settings.Settings.from_env`: defaults, ranges, and the error each bad value gets."""

from __future__ import annotations

import pytest

from zstream_mp._settings import Settings
from zstream_mp._wire import (
    ENV_BATCH_SIZE,
    ENV_EXIT_TIMEOUT,
    ENV_IDLE_EXIT,
    ENV_REQUEST_TIMEOUT,
    ENV_RETRY_DEADLINE,
)
from zstream_mp.errors import ConfigurationError

ALL = (ENV_BATCH_SIZE, ENV_EXIT_TIMEOUT, ENV_IDLE_EXIT, ENV_REQUEST_TIMEOUT, ENV_RETRY_DEADLINE)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    assert Settings.from_env() == Settings(64, 2.0, 1.0, 30.0, 10.0)


def test_blank_means_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BATCH_SIZE, "  ")
    assert Settings.from_env().batch_size == 64


@pytest.mark.parametrize(
    ("name", "value", "field", "parsed"),
    [
        (ENV_BATCH_SIZE, "1", "batch_size", 1),
        (ENV_BATCH_SIZE, " 1000 ", "batch_size", 1000),
        (ENV_BATCH_SIZE, "64", "batch_size", 64),
        (ENV_BATCH_SIZE, " 500 ", "batch_size", 500),
        (ENV_EXIT_TIMEOUT, "0", "exit_timeout", 0.0),
        (ENV_IDLE_EXIT, "0.01", "idle_exit", 0.01),
        (ENV_RETRY_DEADLINE, "86400", "retry_deadline", 86400.0),
        (ENV_REQUEST_TIMEOUT, "0.1", "request_timeout", 0.1),
    ],
)
def test_edges_of_the_ranges_are_accepted(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str, parsed: float
) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(Settings.from_env(), field) == parsed


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        (ENV_BATCH_SIZE, "0", "out of range"),
        (ENV_BATCH_SIZE, "1001", "out of range"),
        (ENV_BATCH_SIZE, "2000", "out of range; use 1..1000"),
        (ENV_BATCH_SIZE, "-5", "out of range"),
        (ENV_BATCH_SIZE, "sixty", "not a whole number"),
        (ENV_BATCH_SIZE, "64.0", "not a whole number"),
        (ENV_BATCH_SIZE, "lots", "not a whole number"),
        (ENV_EXIT_TIMEOUT, "-1", "out of range"),
        (ENV_EXIT_TIMEOUT, "soon", "not a number of seconds"),
        (ENV_IDLE_EXIT, "0", "out of range"),
        (ENV_RETRY_DEADLINE, "forever", "not a number of seconds"),
        (ENV_RETRY_DEADLINE, "nan?", "not a number of seconds"),
        (ENV_REQUEST_TIMEOUT, "601", "out of range"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=says) as info:
        Settings.from_env()
    assert str(info.value).startswith(f"{name}="), info.value
    assert isinstance(info.value, ValueError)


def test_the_server_a_caller_names_then_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zstream_mp._settings import given_server, server_or_default
    from zstream_mp._wire import DEFAULT_SERVER, ENV_SERVER

    monkeypatch.delenv(ENV_SERVER, raising=False)
    assert given_server(None) is None
    assert server_or_default(None) == DEFAULT_SERVER
    assert server_or_default("http://mine:1/") == "http://mine:1"
    monkeypatch.setenv(ENV_SERVER, "http://env:2//")
    assert given_server(None) == "http://env:2"
    assert server_or_default("http://mine:1") == "http://mine:1"
