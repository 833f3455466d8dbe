"""Settings from the environment: a bad value is a clear error at the call site."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys, uuid, zstream_mp as z
z.bind(str(uuid.uuid4()), server=sys.argv[1])
try:
    z.publish({"a": 1})
except z.ConfigurationError as exc:
    assert isinstance(exc, ValueError)
    print("error:", exc)
else:
    z.flush(5)
    print("ok", z.stats().sent)
"""


def _probe(env: dict[str, str], server: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, server],
        capture_output=True,
        text=True,
        timeout=60,
        env={**_clean_env(), **env},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("ZSTREAM_", "ZENML_STREAM_"))}


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0", "out of range; use 1..1000"),
        ("1001", "out of range; use 1..1000"),
        ("2000", "out of range; use 1..1000"),
        ("sixty", "not a whole number"),
        ("-5", "out of range"),
    ],
)
def test_batch_size_outside_1_to_1000_is_a_clear_error(
    value: str, words: str, server: object
) -> None:
    out = _probe({"ZENML_STREAM_PUBLISHER_BATCH_SIZE": value}, server.url)  # type: ignore[attr-defined]
    assert out.startswith("error: ZENML_STREAM_PUBLISHER_BATCH_SIZE="), out
    assert words in out


@pytest.mark.parametrize("value", ["1", "64", "1000", " 500 "])
def test_batch_size_in_range_delivers(value: str, server: object) -> None:
    out = _probe({"ZENML_STREAM_PUBLISHER_BATCH_SIZE": value}, server.url)  # type: ignore[attr-defined]
    assert out == "ok 1", out


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ZSTREAM_EXIT_TIMEOUT", "soon"),
        ("ZSTREAM_EXIT_TIMEOUT", "-1"),
        ("ZSTREAM_IDLE_EXIT", "0"),
        ("ZSTREAM_RETRY_DEADLINE", "nan?"),
    ],
)
def test_other_settings_are_checked_too(name: str, value: str, server: object) -> None:
    out = _probe({name: value}, server.url)  # type: ignore[attr-defined]
    assert out.startswith(f"error: {name}="), out
