"""SIGHUP: re-read the tokens file, so a revoked token stops working without a restart.

The new tokens replace the old ones for every request from then on (open SSE streams keep
the access they were granted when they started). A file that cannot be read or parsed
leaves the previous tokens in force. Either way one log line says what happened (the
number of tokens and the file, never a token).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from zstream_mp.server.auth import load_tokens_file
from zstream_mp.server.state import ServerState

logger = logging.getLogger("zstream_mp.server")


def reload_tokens(state: ServerState) -> bool:
    """Re-read `--tokens-file` into `state.auth`; False (and the old tokens) on failure."""
    path = state.config.tokens_file
    if path is None:
        logger.warning("SIGHUP: no --tokens-file to reload; tokens unchanged")
        return False
    try:
        tokens = load_tokens_file(path)
    except (OSError, ValueError) as exc:
        logger.error("SIGHUP: %s not reloaded (%s); the previous tokens stay in force", path, exc)
        return False
    for token, rights in state.config.flag_tokens.items():
        tokens[token] = tokens.get(token, frozenset()) | rights
    state.auth.replace(tokens)
    logger.warning("SIGHUP: reloaded %d token(s) from %s", len(tokens), path)
    return True


def watch_sighup(loop: asyncio.AbstractEventLoop, state: ServerState) -> bool:
    """Reload on SIGHUP (POSIX, main thread); False where signals cannot be caught."""
    hup = getattr(signal, "SIGHUP", None)
    if hup is None:
        return False
    try:
        loop.add_signal_handler(hup, reload_tokens, state)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
        return False
    return True
