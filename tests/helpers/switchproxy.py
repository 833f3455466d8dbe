"""A loopback HTTP proxy in front of one replica that loses one answer and fails over.

    with SwitchProxy(replica_a.url, replica_b.url) as proxy:   # proxy.url
        ...                                                   # publish to proxy.url

The first `POST` is forwarded to `primary` and fully answered there, then the proxy
closes the client's connection without relaying that answer (a response lost on the way
back, as when a load balancer's backend dies after committing) and switches every later
request, the publisher's retry included, to `secondary`. Each forwarded request is
recorded (upstream, path, `Idempotency-Key`, status, body, relayed or not) so a test
can check the retry reused the key and got the stored answer. Standard library only.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True)
class Forwarded:
    upstream: str
    path: str
    key: str | None
    status: int
    body: bytes
    relayed: bool


class SwitchProxy:
    def __init__(self, primary: str, secondary: str) -> None:
        self.primary, self.secondary = primary, secondary
        self.upstream = primary
        self.log: list[Forwarded] = []
        self._lock = threading.Lock()
        self._dropped = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    upstream = proxy.upstream
                    drop = method == "POST" and not proxy._dropped
                    proxy._dropped = proxy._dropped or drop
                skip = ("host", "connection", "content-length")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                req = urllib.request.Request(
                    upstream + self.path, data=body, method=method, headers=headers
                )
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status, data, rh = resp.status, resp.read(), resp.headers
                except urllib.error.HTTPError as exc:
                    status, data, rh = exc.code, exc.read(), exc.headers
                proxy.log.append(
                    Forwarded(
                        upstream,
                        self.path,
                        self.headers.get("Idempotency-Key"),
                        status,
                        data,
                        not drop,
                    )
                )
                if drop:  # the upstream committed; its answer never reaches the client
                    with proxy._lock:
                        proxy.upstream = proxy.secondary
                    self.close_connection = True
                    return
                self.send_response(status)
                for name, value in rh.items():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> SwitchProxy:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
