"""subscribe() through a TCP proxy that cuts every connection mid-stream: nothing lost or twice."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid

import httpx
from helpers.servers import RunningServer

from zstream_mp.consumer import Event, subscribe


class DroppingProxy:
    """Loopback TCP proxy; each connection is closed after `budget` bytes from the server."""

    def __init__(self, target_port: int, budget: int) -> None:
        self.target_port = target_port
        self.budget = budget
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(upstream, client, self.budget), daemon=True
            ).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, budget: int | None) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                if budget is not None and sent + len(data) > budget:
                    dst.sendall(data[: budget - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def test_reconnects_resume_without_loss_or_duplicates(server: RunningServer) -> None:
    run = str(uuid.uuid4())
    n = 600
    events = [
        {
            "pipeline_run_id": run,
            "kind": "k" if i % 3 else "skip",
            "index": i,
            "payload": {"seq": i},
        }
        for i in range(n)
    ]
    url = f"{server.url}/api/v1/runs/{run}/events"
    for start in range(0, n, 200):
        assert httpx.post(url, json={"events": events[start : start + 200]}).status_code == 200
    assert httpx.post(f"{server.url}/api/v1/zstream/runs/{run}/end").status_code == 200
    port = int(server.url.rsplit(":", 1)[1])
    proxy = DroppingProxy(port, budget=7_000)  # a few dozen frames per connection
    try:
        got = list(subscribe(f"http://127.0.0.1:{proxy.port}", run, kinds="k", timeout=10))
    finally:
        proxy.close()
    assert proxy.connections > 5
    assert all(isinstance(e, Event) for e in got)
    seqs = [e.payload["seq"] for e in got if isinstance(e, Event)]
    assert seqs == [i for i in range(n) if i % 3]  # exact set, in order, once each
    assert len({e.id for e in got if isinstance(e, Event)}) == len(got)


def test_a_stream_longer_than_retry_for_survives_its_drops(server: RunningServer) -> None:
    """`retry_for` bounds consecutive failure, not the stream's age: a connection that lived
    longer than it is resumed when it drops, as often as it drops."""
    import threading
    import time

    run = str(uuid.uuid4())
    n = 40
    url = f"{server.url}/api/v1/runs/{run}/events"

    def publish_slowly() -> None:
        for i in range(n):
            event = {"pipeline_run_id": run, "kind": "k", "payload": {"seq": i}}
            assert httpx.post(url, json={"events": [event]}).status_code == 200
            time.sleep(0.1)
        assert httpx.post(f"{server.url}/api/v1/zstream/runs/{run}/end").status_code == 200

    port = int(server.url.rsplit(":", 1)[1])
    proxy = DroppingProxy(port, budget=2_500)  # ~10 frames, about a second, per connection
    publisher = threading.Thread(target=publish_slowly, daemon=True)
    publisher.start()
    try:
        got = list(subscribe(f"http://127.0.0.1:{proxy.port}", run, timeout=10, retry_for=0.5))
    finally:
        proxy.close()
        publisher.join(timeout=30)
    assert proxy.connections >= 3
    assert [e.payload["seq"] for e in got if isinstance(e, Event)] == list(range(n))
