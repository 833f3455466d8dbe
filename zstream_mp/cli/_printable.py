"""Text from the network made safe to print: no control sequence reaches the terminal.

Event fields and payloads are chosen by whoever publishes. Printed raw, an ESC or a C1
control starts a terminal escape sequence (OSC 52 writes the clipboard, others retitle the
window or clear the screen), a CR or LF forges lines, and bidi overrides reorder what is
shown, and a lone surrogate (which `json.loads` makes of a `\\ud800` escape) cannot be
encoded to UTF-8 at all. Each such character is printed as its `\\uXXXX` escape instead,
which is also a valid escape inside a JSON string, so `tail --json` output stays parseable
and equal in meaning.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb"
    "\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str) -> str:
    """`text` with every control, line-breaking and bidi character escaped."""
    return _UNSAFE.sub(_escape, text)
