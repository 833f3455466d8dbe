"""joblib: the loky backend (reusable workers) and the multiprocessing backend.

pip install 'zstream-mp[joblib]'
python examples/joblib_parallel.py
"""

from __future__ import annotations

import os
import sys

from _server import server, show

import zstream_mp
from zstream_mp.runs import create_run, end_run


def step(backend: str, n: int) -> int:
    zstream_mp.publish({"backend": backend, "n": n, "pid": os.getpid()}, kind="task")
    return n


def main() -> None:
    try:
        from joblib import Parallel, delayed
    except ImportError:
        print("this example needs joblib: pip install 'zstream-mp[joblib]'")
        sys.exit(0)
    with server() as (url, token):
        run_id = create_run(url, token=token)
        show(url, run_id)
        zstream_mp.bind(run_id, server=url, token=token)
        for backend in ("loky", "multiprocessing"):
            Parallel(n_jobs=2, backend=backend)(delayed(step)(backend, n) for n in range(20))
        zstream_mp.flush_tree(30)
        end_run(url, run_id, token=token)
        print("published 40 events")


if __name__ == "__main__":
    main()
