"""What every fan-out worker of `fanout_steps.py` runs: publish, maybe flush, report.

A module of its own that imports no ZenML, so spawn, forkserver, loky and Dask workers
import only this and `zstream_mp` (a spawned interpreter re-imports the parent's main
module, here a few lines, not ZenML).
"""

from __future__ import annotations

import faulthandler
import os
import signal
from typing import Any

import zstream_mp

# Every process of the suite (the step's and every worker, however started) prints its
# threads' stacks to the pipeline's log on SIGUSR1: the step's watchdog sends it to a
# fan-out that overruns its deadline, so a hang fails one case with its stacks instead of
# stalling the suite.
faulthandler.register(signal.SIGUSR1, all_threads=True)


def work(args: tuple[str, int, int, bool]) -> dict[str, Any]:
    """One worker's share: `n` events, then (maybe) a flush; returns what it saw."""
    case, worker, n, do_flush = args
    for seq in range(n):
        zstream_mp.publish({"case": case, "worker": worker, "seq": seq}, kind="w")
    flushed = zstream_mp.flush(10.0) if do_flush else None
    st = zstream_mp.stats()
    return {"pid": os.getpid(), "worker": worker, "flush": flushed, "published": st.published}
