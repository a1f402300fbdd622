"""A loopback HTTP server holding files at "signed URLs", as a contact-center platform does:
GET /file/<name> serves it; /expired answers 403; /gone 410; /busy/<n>/<name> answers 429
(Retry-After: 1) n times before serving; every request is counted."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[str] = []
        self._busy: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                path = self.path.split("?")[0]
                parts = path.strip("/").split("/")
                if parts[0] == "busy" and len(parts) == 3:
                    seen = outer._busy.get(path, 0)
                    if seen < int(parts[1]):
                        outer._busy[path] = seen + 1
                        self.send_response(429)
                        self.send_header("Retry-After", "1")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    parts = ["file", parts[2]]
                if parts[0] == "file" and len(parts) == 2 and parts[1] in outer.files:
                    data = outer.files[parts[1]]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                status = {"expired": 403, "gone": 410}.get(parts[0], 404)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
