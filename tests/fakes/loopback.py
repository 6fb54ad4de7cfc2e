"""What every fake service shares: an HTTP server on 127.0.0.1, on a free port, served by
a daemon thread; `start()` and `stop()` it, or use it as a context manager."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that keeps quiet about clients hanging up."""

    daemon_threads = True
    fake: Any  # the service the handlers answer for

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or hung up mid-request is expected (under load, in timeout
        # tests), not a failure to print; anything else still goes to stderr.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class LoopbackService:
    """A fake service's lifecycle: its requests are answered by `handler`, whose
    `self.server.fake` is the service."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], thread_name: str) -> None:
        self._handler = handler
        self._thread_name = thread_name
        self._httpd: QuietServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        httpd = QuietServer(("127.0.0.1", 0), self._handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self._thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
