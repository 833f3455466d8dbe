"""The per-user state directory that the handoff, the registry and the spool write into."""

from __future__ import annotations

import os
import tempfile

from zstream_mp._wire import ENV_STATE_DIR


def state_dir() -> str:
    """``$ZSTREAM_STATE_DIR``, else ``<tmp>/zstream-mp-<uid>``, created 0700."""
    directory = os.environ.get(ENV_STATE_DIR) or os.path.join(
        tempfile.gettempdir(), f"zstream-mp-{os.getuid()}"
    )
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return directory
