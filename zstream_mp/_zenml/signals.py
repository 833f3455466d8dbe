"""A forked child of a ZenML step gets back the SIGTERM and SIGINT handlers the step replaced.

ZenML's step `SignalHandler` (`zenml/orchestrators/signal_handler.py`) is the step
process's: it asks the server about the run, may mark the step stopped, and raises in the
main thread. A forked pool worker inherits it, and then `Pool.terminate()` can hang: the
worker's main thread waits in the pool's queue semaphore, the signal lands on another thread
(OpenTelemetry's log exporter, for one), the Python handler never runs, and because a
handler is installed the kernel does not end the process either.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["release_step_signals"]

_SIGNAL_HANDLER_MODULE = "zenml.orchestrators.signal_handler"


def release_step_signals() -> None:
    """Put back what ZenML's step handler replaced (`SIG_DFL` as a rule), as without ZenML.

    One `sigaction` per signal, and only when ZenML's handler is the one installed; any
    other handler is the program's and stays. Runs in a forked child's at-fork hook.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            handler = signal.getsignal(signum)
            owner = getattr(handler, "__self__", None)
            if owner is None or type(owner).__module__ != _SIGNAL_HANDLER_MODULE:
                continue
            replaced = getattr(owner, "_previous", {}).get(signum)
            if replaced is None:
                replaced = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, replaced)
        except (ValueError, OSError, TypeError, AttributeError):
            continue
