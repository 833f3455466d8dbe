"""`_zenml.credentials`: the REST store's URL and token, cached and rechecked, and the one
re-login after a 401. A stand-in store replaces ZenML's (not installed here)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from zstream_mp._zenml import credentials
from zstream_mp._zenml.credentials import Credentials

URL = "http://zenml.example:8080/"


class _Token:
    def __init__(self, value: str, *, expired: bool = False) -> None:
        self.access_token, self.expired = value, expired


class Store:
    """Shaped like ZenML's `RestZenStore`: its type, URL, held token and token factory."""

    def __init__(self, token: str, *, kind: str = "rest") -> None:
        self.type = types.SimpleNamespace(value=kind)
        self.url = URL
        self._api_token = _Token(token)
        self.generated = 0

    def get_or_generate_api_token(self) -> str:
        self.generated += 1
        return self._api_token.access_token


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    credentials.reset()
    yield
    credentials.reset()


def _use(monkeypatch: pytest.MonkeyPatch, store: Any) -> None:
    monkeypatch.setattr(credentials, "_zen_store", lambda: store)


def test_a_rest_store_gives_its_url_and_held_token(monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, Store("held"))
    creds = credentials.load()
    assert (creds.server, creds.token) == (URL.rstrip("/"), "held")
    assert credentials.load() is creds is credentials.current  # cached


def test_a_local_store_gives_no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, Store("unused", kind="sql"))
    assert (credentials.load().server, credentials.load().token) == (None, None)


def test_an_unavailable_store_gives_no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise RuntimeError("no global configuration")

    monkeypatch.setattr(credentials, "_zen_store", broken)
    assert credentials.load().server is None


def test_stale_credentials_are_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store("first")
    _use(monkeypatch, store)
    credentials.current = Credentials(URL.rstrip("/"), "old", -credentials.TTL - 1.0)
    assert credentials.load().token == "first"


def test_forget_drops_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, Store("held"))
    credentials.load()
    credentials.forget()
    assert credentials.current is None


def test_no_refresh_without_zenml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "zenml", raising=False)
    assert credentials.refresh_token(URL) is None


def test_a_newer_token_zenml_holds_is_taken_without_a_login(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "zenml", types.ModuleType("zenml"))
    store = Store("handed-out")
    _use(monkeypatch, store)
    credentials.load()
    store._api_token = _Token("refreshed-by-zenml")
    assert credentials.refresh_token(URL.rstrip("/")) == "refreshed-by-zenml"
    assert credentials.current is not None and credentials.current.token == "refreshed-by-zenml"


def test_another_servers_401_is_not_zenmls_to_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zenml", types.ModuleType("zenml"))
    _use(monkeypatch, Store("held"))
    assert credentials.refresh_token("http://ours.example:1") is None


def test_the_same_token_again_is_no_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zenml", types.ModuleType("zenml"))
    store = Store("handed-out")
    _use(monkeypatch, store)
    credentials.load()
    monkeypatch.setattr(credentials, "_reauthenticate", lambda store: "handed-out")
    assert credentials.refresh_token(URL) is None
