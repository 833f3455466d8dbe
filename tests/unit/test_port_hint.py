"""`cli/_port_hint`: why `serve` could not listen, and who holds the port.

The probes use `httpx.get`; here it is routed through an `httpx.MockTransport` that plays a
ZenML server, another `zstream-mp serve`, or nothing at all.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from zstream_mp._wire import RUNS_PATH, ZENML_INFO_PATH
from zstream_mp.cli._port_hint import listen_failure, who_listens, zenml_version

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def answer(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[str]]:
    """Route the module's probes to a handler; returns the list of URLs asked."""

    def install(handler: Handler) -> list[str]:
        asked: list[str] = []

        def recording(request: httpx.Request) -> httpx.Response:
            asked.append(str(request.url))
            return handler(request)

        client = httpx.Client(transport=httpx.MockTransport(recording))

        def get(url: str, **kwargs: Any) -> httpx.Response:
            kwargs.pop("timeout", None)
            return client.get(url, **kwargs)

        monkeypatch.setattr(httpx, "get", get)
        return asked

    return install


def zenml(request: httpx.Request) -> httpx.Response:
    if request.url.path == ZENML_INFO_PATH:
        return httpx.Response(200, json={"version": "0.98.0", "deployment_type": "local"})
    return httpx.Response(404)


def ours(status: int) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == RUNS_PATH:
            return httpx.Response(status, json={"runs": []})
        return httpx.Response(404, json={"detail": "Not Found"})

    return handler


def nobody(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def in_use() -> OSError:
    return OSError(errno.EADDRINUSE, "Address already in use")


def test_a_zenml_server_is_named_with_its_version(answer: Callable[[Handler], list[str]]) -> None:
    answer(zenml)
    assert zenml_version("http://127.0.0.1:8237/") == "0.98.0"
    assert who_listens("127.0.0.1", 8237) == "a ZenML 0.98.0 server"


@pytest.mark.parametrize(
    "info",
    [
        {"version": "1.0"},  # no deployment_type: not ZenML's /info
        ["0.98.0"],
        "0.98.0",
    ],
)
def test_an_info_answer_that_is_not_zenmls_is_not_taken_for_it(
    answer: Callable[[Handler], list[str]], info: object
) -> None:
    answer(lambda request: httpx.Response(200, json=info))
    assert zenml_version("http://127.0.0.1:8237") is None


def test_an_info_answer_that_is_not_json_is_not_zenml(
    answer: Callable[[Handler], list[str]],
) -> None:
    answer(lambda request: httpx.Response(200, text="<html>hello</html>"))
    assert zenml_version("http://127.0.0.1:8237") is None


@pytest.mark.parametrize("status", [200, 401])
def test_another_serve_is_recognised_by_its_run_api(
    answer: Callable[[Handler], list[str]], status: int
) -> None:
    answer(ours(status))
    assert who_listens("127.0.0.1", 8237) == "another zstream-mp serve"


def test_nobody_answering_is_none(answer: Callable[[Handler], list[str]]) -> None:
    answer(nobody)
    assert zenml_version("http://127.0.0.1:8237") is None
    assert who_listens("127.0.0.1", 8237) is None


def test_something_else_answering_is_none(answer: Callable[[Handler], list[str]]) -> None:
    answer(lambda request: httpx.Response(404))
    assert who_listens("127.0.0.1", 8237) is None


@pytest.mark.parametrize(
    ("host", "base"),
    [
        ("0.0.0.0", "http://127.0.0.1:8237"),
        ("", "http://127.0.0.1:8237"),
        ("::", "http://127.0.0.1:8237"),
        ("::1", "http://[::1]:8237"),
        ("localhost", "http://localhost:8237"),
    ],
)
def test_the_probe_goes_where_a_client_would_connect(
    answer: Callable[[Handler], list[str]], host: str, base: str
) -> None:
    asked = answer(nobody)
    who_listens(host, 8237)
    assert asked[0] == base + ZENML_INFO_PATH


def test_an_address_in_use_names_the_holder_and_hints_another_port(
    answer: Callable[[Handler], list[str]],
) -> None:
    answer(zenml)
    text = listen_failure("127.0.0.1", 8237, in_use())
    lines = text.splitlines()
    assert lines[0] == "zstream-mp serve: cannot listen on 127.0.0.1:8237: Address already in use"
    assert lines[1] == "  a ZenML 0.98.0 server is listening there"
    assert lines[2].startswith("  hint: pass --port 0")


def test_an_address_in_use_with_an_unknown_holder_still_hints(
    answer: Callable[[Handler], list[str]],
) -> None:
    answer(nobody)
    lines = listen_failure("127.0.0.1", 8237, in_use()).splitlines()
    assert len(lines) == 2 and "--port 0" in lines[1]


def test_other_errors_are_one_line_without_a_probe(
    answer: Callable[[Handler], list[str]],
) -> None:
    asked = answer(zenml)
    text = listen_failure("10.9.9.9", 80, OSError(errno.EACCES, "Permission denied"))
    assert text == "zstream-mp serve: cannot listen on 10.9.9.9:80: Permission denied"
    assert asked == []


def test_an_error_without_strerror_is_still_said(answer: Callable[[Handler], list[str]]) -> None:
    answer(nobody)
    assert listen_failure("h", 1, OSError("odd")).endswith(": odd")


def test_port_zero_is_not_probed(answer: Callable[[Handler], list[str]]) -> None:
    asked = answer(zenml)
    lines = listen_failure("127.0.0.1", 0, in_use()).splitlines()
    assert asked == [] and len(lines) == 2
