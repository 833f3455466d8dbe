"""A forked child of a ZenML step gets back the signal handlers ZenML's step replaced; any
other handler is the program's and stays.

ZenML is not installed here, so a class that lives in ZenML's module name stands in for its
step `SignalHandler` (the real one is covered in tests/test_zenml_fanout.py)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

import zstream_mp  # noqa: F401  (registers the fork hooks)


class SignalHandler:
    """Shaped like `zenml.orchestrators.signal_handler.SignalHandler`."""

    def __init__(self, previous: dict[int, Any]) -> None:
        self._previous = previous

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise RuntimeError("the step's handler ran")


SignalHandler.__module__ = "zenml.orchestrators.signal_handler"


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _in_child() -> list[str]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        handlers = [signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)]
        os.write(w, json.dumps([repr(h) for h in handlers]).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 65536)
    os.close(r)
    os.waitpid(pid, 0)
    result: list[str] = json.loads(data)
    return result


@pytest.mark.usefixtures("restore_signals")
def test_zenmls_step_handler_is_replaced_by_what_it_replaced() -> None:
    handler = SignalHandler({signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.SIG_IGN})
    signal.signal(signal.SIGTERM, handler._handle)
    signal.signal(signal.SIGINT, handler._handle)
    assert _in_child() == [repr(signal.SIG_DFL), repr(signal.SIG_IGN)]
    assert signal.getsignal(signal.SIGTERM) == handler._handle  # the step keeps its own


@pytest.mark.usefixtures("restore_signals")
def test_without_a_record_of_the_replaced_handler_the_defaults_return() -> None:
    handler = SignalHandler({})
    signal.signal(signal.SIGTERM, handler._handle)
    signal.signal(signal.SIGINT, handler._handle)
    assert _in_child() == [repr(signal.SIG_DFL), repr(signal.default_int_handler)]


@pytest.mark.usefixtures("restore_signals")
def test_a_programs_own_handler_is_inherited_as_usual() -> None:
    def mine(signum: int, frame: FrameType | None) -> None:
        pass

    signal.signal(signal.SIGTERM, mine)
    assert _in_child()[0] == repr(mine)
