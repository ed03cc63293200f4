"""A real HTTP server on the loopback interface for download tests, and a way to swap the
published weights catalogue (bench.weights) for test entries."""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass, field

import pytest
from bench.codecs.weights import PublishedWeights

from bench import weights
from bench.registry import Registry


@dataclass
class Served:
    """What the loopback server answers for one path."""

    body: bytes = b""
    status: int = 200
    # Send the full Content-Length but only this many bytes, then close: a cut download.
    cut_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Answer 302 to this path instead (as HuggingFace's /resolve/ does), with ``headers``.
    redirect_to: str | None = None


class LoopbackServer:
    """An HTTP server on 127.0.0.1 in a thread, serving ``files`` and counting requests."""

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append(self.path)
                served = server.files.get(self.path)
                if served is None:
                    self.send_error(404, "Not Found")
                    return
                if served.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", served.redirect_to)
                    for name, value in served.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(served.status)
                self.send_header("Content-Length", str(len(served.body)))
                for name, value in served.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(served.body[: served.cut_after])
                if served.cut_after is not None:
                    self.close_connection = True

            def log_message(self, *_arguments) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def use_catalogue(monkeypatch: pytest.MonkeyPatch, *entries: PublishedWeights) -> None:
    """Replace the catalogue with ``entries``, as a package "test" would declare them."""
    registry = Registry("published weights catalogue")
    registry.register("test", entries)  # a registered object: the tuple itself
    monkeypatch.setattr(weights, "PUBLISHED_WEIGHTS", registry)
