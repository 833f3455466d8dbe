"""Why `zstream-mp serve` could not listen, said in a way a user can act on.

Port 8237 is ZenML's default as well as ours, so "Address already in use" most often means
a ZenML server (whose `/api/v1/info` answers with its version) or another
`zstream-mp serve` (whose run API answers). Either way the way out is another port. For
the same reason a client's 401 may come from a ZenML server, which wants a ZenML token.
"""

from __future__ import annotations

import errno

from zstream_mp._wire import RUNS_PATH, ZENML_INFO_PATH

_PROBE_TIMEOUT = 1.0


def _base(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def zenml_version(base: str) -> str | None:
    """The version of the ZenML server at `base` (its `/api/v1/info`), else None."""
    import httpx

    try:
        info = httpx.get(base.rstrip("/") + ZENML_INFO_PATH, timeout=_PROBE_TIMEOUT)
        data = info.json() if info.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    if isinstance(data, dict) and "version" in data and "deployment_type" in data:
        return str(data["version"])
    return None


def who_listens(host: str, port: int) -> str | None:
    """What answers on the port: a ZenML server, another serve, or None (neither)."""
    import httpx

    base = _base(host, port)
    version = zenml_version(base)
    if version is not None:
        return f"a ZenML {version} server"
    try:
        runs = httpx.get(base + RUNS_PATH, timeout=_PROBE_TIMEOUT)
        if runs.status_code in (200, 401):
            return "another zstream-mp serve"
    except httpx.HTTPError:
        pass
    return None


def listen_failure(host: str, port: int, exc: OSError) -> str:
    """The lines to print when the socket could not be bound (no traceback)."""
    text = f"zstream-mp serve: cannot listen on {host}:{port}: {exc.strerror or exc}"
    if exc.errno != errno.EADDRINUSE:
        return text
    holder = who_listens(host, port) if port else None
    if holder is not None:
        text += f"\n  {holder} is listening there"
    return text + "\n  hint: pass --port 0 for a free port (the first line printed is its URL)"
