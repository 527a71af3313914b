"""A small real HTTP upstream on 127.0.0.1 for the demo, the tests and the benchmarks.

Stands in for an LLM API: it records what reached it (path, Authorization header) so a test can prove
the host injected the token and that refused calls never left the machine.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class SeenRequest:
    method: str
    path: str
    authorization: str | None
    body: bytes
    at: float


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real API
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between header and body writes
    wbufsize = -1  # buffer each response; handle_one_request flushes it
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        self.server.upstream._record(SeenRequest(self.command, parts.path, self.headers.get("Authorization"),
                                                 body, time.monotonic()))
        path = parts.path
        if path == "/v1/chat/completions":
            payload = {"id": "chatcmpl-local", "object": "chat.completion",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "test"}}],
                       "canary": self.server.upstream.canary}
            self._reply(200, json.dumps(payload).encode())
        elif path == "/echo-auth":
            self._reply(200, json.dumps({"authorization": self.headers.get("Authorization")}).encode())
        elif path.startswith("/redirect"):
            self._reply(302, b"", {"Location": query.get("to", ["/v1/chat/completions"])[0]})
        elif path == "/big":
            size = int(query.get("n", ["1048576"])[0])
            self._reply(200, b"x" * size)
        elif path == "/slow":  # a slow upstream (the server side waits, as a slow API would)
            time.sleep(float(query.get("s", ["1"])[0]))
            self._reply(200, b'{"slow":true}')
        else:
            self._reply(200, json.dumps({"ok": True, "path": path}).encode())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops bursts of connects (1 s SYN retry)
    upstream: "LocalUpstream"

    def handle_error(self, request: object, client_address: object) -> None:
        # a client dropping a keep-alive connection (e.g. after a capped read) is normal here
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class LocalUpstream:
    """``with LocalUpstream() as up: up.url("/v1/chat/completions")``"""

    def __init__(self, host: str = "127.0.0.1", canary: str = "canary-7f3a9c") -> None:
        self.canary = canary
        self._server = _Server((host, 0), _Handler)
        self._server.upstream = self
        self.host, self.port = self._server.server_address[0], self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="if-chassis-upstream", daemon=True)
        self._lock = threading.Lock()
        self.requests: list[SeenRequest] = []

    def _record(self, seen: SeenRequest) -> None:
        with self._lock:
            self.requests.append(seen)

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def seen(self, path: str | None = None) -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def start(self) -> "LocalUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "LocalUpstream":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """``python -m infrafabric.chassis.upstream``: serve in this process, print the port, run until killed."""
    upstream = LocalUpstream()
    print(upstream.port, flush=True)
    upstream._server.serve_forever()


if __name__ == "__main__":
    main()
