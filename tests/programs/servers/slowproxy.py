"""A loopback HTTP proxy that adds a fixed delay to every POST: a slow server in front of ours.

`python tests/programs/servers/slowproxy.py --upstream URL --delay 0.1` prints
`slowproxy on URL` and forwards every request (method, path, headers, body) to `URL` after
`delay` seconds for a POST. Standard library only.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = ""
    delay = 0.0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if method == "POST":
            time.sleep(self.delay)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        req = urllib.request.Request(
            self.upstream + self.path, data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, data, rh = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            status, data, rh = exc.code, exc.read(), exc.headers
        self.send_response(status)
        for k, v in rh.items():
            if k.lower() not in (
                "transfer-encoding",
                "connection",
                "content-length",
                "date",
                "server",
            ):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self._forward("POST")

    def do_GET(self) -> None:
        self._forward("GET")


class Quiet(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that went away mid-answer (a process exiting) is expected


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--delay", type=float, default=0.1)
    args = parser.parse_args()
    Handler.upstream = args.upstream.rstrip("/")
    Handler.delay = args.delay
    server = Quiet(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"slowproxy on http://127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
