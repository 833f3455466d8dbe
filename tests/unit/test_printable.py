"""`cli/_printable.printable()`: text from the network never reaches the terminal raw."""

from __future__ import annotations

import json

import pytest

from zstream_mp.cli._printable import printable


@pytest.mark.parametrize(
    "text",
    ["plain text", "numbers 123 and symbols !@#$%^&*()", "ünïcödé ✓ 日本語", "tab-free", ""],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert printable(text) == text


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("\x1b]52;c;SGVsbG8=\x07", "\\u001b]52;c;SGVsbG8=\\u0007"),  # OSC 52: the clipboard
        ("a\nforged line", "a\\u000aforged line"),
        ("over\rwrite", "over\\u000dwrite"),
        ("tab\tstop", "tab\\u0009stop"),
        ("nul\x00", "nul\\u0000"),
        ("del\x7f", "del\\u007f"),
        ("c1\x9b31m", "c1\\u009b31m"),  # the 8-bit CSI
        ("\u202eevil", "\\u202eevil"),  # right-to-left override
        ("\u2066isolate\u2069", "\\u2066isolate\\u2069"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("line\u2028sep", "line\\u2028sep"),
        ("\ufeffbom", "\\ufeffbom"),
        ("arabic mark\u061c", "arabic mark\\u061c"),
        ("anchor\ufff9", "anchor\\ufff9"),
    ],
)
def test_controls_line_breaks_and_bidi_become_escapes(raw: str, escaped: str) -> None:
    assert printable(raw) == escaped


def test_the_output_has_no_unsafe_character_left() -> None:
    every = "".join(chr(c) for c in range(0x00, 0xA0)) + "\u200f\u202a\u2060\ufffb"
    out = printable(every)
    assert all(c.isprintable() and c not in "\u200f\u202a\u2060\ufffb" for c in out)


def test_an_escaped_string_means_the_same_inside_json() -> None:
    """`tail --json` prints escaped text inside a JSON string: it decodes to the original."""
    raw = "bell\x07, newline\n, bidi \u202e, esc \x1b[2J"
    assert json.loads(f'"{printable(raw)}"') == raw


def test_a_lone_surrogate_from_the_network_is_escaped_so_printing_never_fails() -> None:
    text = printable(json.loads('"a\\ud800b"'))
    text.encode("utf-8")
    assert json.loads(f'"{text}"') == "a\ud800b"
