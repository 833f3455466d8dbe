"""Raw SSE capture and normalisation for byte-level comparison between servers.

Bytes are read with `http.client` (no SSE library in between), so what is compared is
exactly what the server wrote after HTTP chunk decoding.
"""

from __future__ import annotations

import dataclasses
import http.client
import re
import time
from urllib.parse import urlsplit

_ID_LINE = re.compile(rb"^id: (.*)$")


@dataclasses.dataclass
class Capture:
    """What one SSE GET returned: status, headers, raw body and how the read ended."""

    status: int
    headers: dict[str, str]
    body: bytes
    ended: str  # "frames" (got the count asked for), "eof" (server closed), "timeout"

    def frames(self) -> list[bytes]:
        """Complete frames (comment-only frames such as pings removed)."""
        return [f for f in split_frames(self.body) if not is_comment(f)]


def split_frames(body: bytes) -> list[bytes]:
    """Split on the blank line; a trailing partial frame is dropped."""
    parts = body.split(b"\n\n")
    return [p for p in parts[:-1] if p]


def is_comment(frame: bytes) -> bool:
    return all(line.startswith(b":") for line in frame.split(b"\n"))


def frame_fields(frame: bytes) -> dict[str, str]:
    """Field name -> value of one frame (one line per field in these streams)."""
    out: dict[str, str] = {}
    for line in frame.decode("utf-8").split("\n"):
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        out[name] = value[1:] if value.startswith(" ") else value
    return out


def capture(
    url: str,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    frames: int | None = None,
    until: bytes | None = None,
    timeout: float = 15.0,
) -> Capture:
    """GET `path` and read until `frames` non-comment frames, EOF, or `timeout`.

    With `frames` given the body is cut right after the last wanted frame, so a later
    frame arriving in the same chunk does not leak into the comparison.
    """
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        sock = conn.sock
        resp = conn.getresponse()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if resp.status != 200:
            return Capture(resp.status, hdrs, resp.read(), "eof")
        buf = b""
        ended = "timeout"
        while True:
            if until is not None:
                at = buf.find(until)
                end = buf.find(b"\n\n", at) if at >= 0 else -1
                if end >= 0:
                    buf, ended = buf[: end + 2], "frames"
                    break
            if frames is not None:
                cut = _cut_after(buf, frames)
                if cut is not None:
                    buf, ended = buf[:cut], "frames"
                    break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if sock is not None:
                sock.settimeout(left)
            try:
                chunk = resp.read1(65536)
            except TimeoutError:
                break
            except http.client.IncompleteRead as exc:
                buf += exc.partial
                ended = "eof"
                break
            if not chunk:
                ended = "eof"
                break
            buf += chunk
        return Capture(resp.status, hdrs, buf, ended)
    finally:
        conn.close()


def _cut_after(buf: bytes, wanted: int) -> int | None:
    """Offset just past the `wanted`-th non-comment frame, if it is complete."""
    if wanted == 0:
        return 0
    pos = 0
    seen = 0
    while True:
        end = buf.find(b"\n\n", pos)
        if end < 0:
            return None
        frame = buf[pos:end]
        pos = end + 2
        if frame and not is_comment(frame):
            seen += 1
            if seen == wanted:
                return pos


def normalise(body: bytes, replacements: dict[str, str]) -> bytes:
    """Replace id values by their order of appearance, drop comment frames, mask run ids.

    `replacements` maps literal strings (a run id, a step run id) to placeholders.
    """
    ids: dict[bytes, int] = {}
    out: list[bytes] = []
    for frame in split_frames(body):
        if is_comment(frame):
            continue
        lines = []
        for line in frame.split(b"\n"):
            if line.startswith(b":"):
                continue
            m = _ID_LINE.match(line)
            if m:
                n = ids.setdefault(m.group(1), len(ids) + 1)
                line = b"id: <%d>" % n
            lines.append(line)
        out.append(b"\n".join(lines) + b"\n\n")
    text = b"".join(out)
    for old, new in replacements.items():
        text = text.replace(old.encode(), new.encode())
    return text


def id_key(value: str) -> tuple[int, ...]:
    """Sort key of a broker id: `<ms>-<seq>` (Redis) or a decimal integer (memory)."""
    return tuple(int(p) for p in value.split("-"))
