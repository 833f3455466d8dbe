"""`LogHandler`: records from many processes arrive as `log` events, exactly once each,
and the library's own logging (and httpx's, from the sender thread) never feeds back.

Each scenario runs in a fresh interpreter (`python -c`) so the root logger, the handler
and the publisher state are its own; the events are then read back over SSE and counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter

from helpers.servers import RunningServer, start_server

import zstream_mp
from zstream_mp.runs import create_run

FOUR_PROCESSES = """
import logging, multiprocessing, os, sys
import zstream_mp

def work(worker):
    log = logging.getLogger("app.worker")
    for seq in range(250):
        log.info("record %d from worker %d", seq, worker, extra={"worker": worker})
    return os.getpid()

if __name__ == "__main__":
    run_id, server = sys.argv[1], sys.argv[2]
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)          # httpx/httpcore debug lines in the sender too
    root.addHandler(zstream_mp.LogHandler())   # attached before the pool forks
    zstream_mp.bind(run_id, server=server)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pids = pool.map(work, range(4))
        pool.close()
        pool.join()
    assert len(set(pids)) == 4, pids
    assert zstream_mp.flush(10)
    print(zstream_mp.stats().published)
"""

REFUSED = """
import logging, sys
import zstream_mp

run_id, server = sys.argv[1], sys.argv[2]
root = logging.getLogger()
root.setLevel(logging.DEBUG)
handler = zstream_mp.LogHandler()
root.addHandler(handler)
zstream_mp.bind(run_id, server=server)       # a run the strict server does not know: 404
for i in range(50):
    logging.getLogger("app").warning("attempt %d", i)
assert not zstream_mp.flush(10)  # every batch refused (404): flush() says so
s = zstream_mp.stats()
print(s.published, s.queued, dict(s.dropped))
"""

FORK_CHILD = """
import logging, os, sys
import zstream_mp

run_id, server = sys.argv[1], sys.argv[2]
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(zstream_mp.LogHandler(correlation_id="forked"))
zstream_mp.bind(run_id, server=server)
log.info("parent before fork")
pid = os.fork()
if pid == 0:
    for i in range(10):
        log.info("child %d", i)
    os._exit(0 if zstream_mp.flush(10) else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
log.info("parent after fork")
assert zstream_mp.flush(10)
"""


def _run(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RecursionError" not in done.stderr and "Logging error" not in done.stderr
    return done.stdout


def _events(server: str, run_id: str) -> list[zstream_mp.Event]:
    zstream_mp.runs.end_run(server, run_id)
    return [e for e in zstream_mp.subscribe(server, run_id) if isinstance(e, zstream_mp.Event)]


def test_1000_records_from_4_processes_arrive_once_each(server: RunningServer) -> None:
    run_id = create_run(server.url)
    published_by_parent = int(_run(FOUR_PROCESSES, run_id, server.url))
    assert published_by_parent == 0  # httpx's and the library's records were not published
    events = _events(server.url, run_id)
    assert {e.kind for e in events} == {"log"}, Counter(e.kind for e in events)
    seen = Counter(e.payload["message"] for e in events)
    want = {f"record {s} from worker {w}" for w in range(4) for s in range(250)}
    assert set(seen) == want and all(n == 1 for n in seen.values())
    assert len(events) == 1000
    assert len({e.payload["pid"] for e in events}) == 4
    sample = events[0].payload
    assert sample["level"] == "INFO" and sample["logger"] == "app.worker"
    assert sample["where"].endswith(":8") and isinstance(sample["time"], float)


def test_the_library_logging_while_sending_does_not_recurse() -> None:
    with start_server(strict_runs=True) as srv:
        out = _run(REFUSED, str(uuid.uuid4()), srv.url)
    published, queued, dropped = out.split(" ", 2)
    # Exactly the 50 application records: the sender's "dropped ... 404" warnings and
    # httpx's request lines were never turned into events, so nothing kept the loop going.
    assert int(published) == 50 and int(queued) == 0
    counts = json.loads(dropped.replace("'", '"'))
    assert counts["rejected"] == 50, counts


def test_a_handler_attached_before_a_fork_works_in_the_child(server: RunningServer) -> None:
    run_id = create_run(server.url)
    _run(FORK_CHILD, run_id, server.url)
    messages = [e.payload["message"] for e in _events(server.url, run_id)]
    assert sorted(messages) == sorted(
        ["parent before fork", "parent after fork", *[f"child {i}" for i in range(10)]]
    )
    assert len({m for m in messages}) == 12


def test_skips_the_library_and_its_threads() -> None:
    import logging
    import threading

    handler = zstream_mp.LogHandler()
    make = logging.getLogger("x").makeRecord
    assert handler.skips(make("zstream_mp", logging.WARNING, "f", 1, "m", (), None))
    assert handler.skips(make("zstream_mp.server", logging.WARNING, "f", 1, "m", (), None))
    assert not handler.skips(make("zstream_mpx", logging.WARNING, "f", 1, "m", (), None))
    seen: list[bool] = []

    def in_sender_named_thread() -> None:
        seen.append(handler.skips(make("httpx", logging.INFO, "f", 1, "m", (), None)))

    thread = threading.Thread(target=in_sender_named_thread, name="zstream-mp-sender")
    thread.start()
    thread.join()
    assert seen == [True]
