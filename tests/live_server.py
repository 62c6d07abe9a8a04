"""The app behind werkzeug's threaded HTTP server, for tests that need a real socket (Chromium,
raw HTTP): a server that closes every response the way PEP 3333 (and gunicorn) does."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_BODY = "closeloop.tests.response_body"  # environ key: the response iterable to close


class _CloseOnce:
    """The app's response iterable with an idempotent close(): the server's own call and the
    handler's safety net must not run the response's close hooks twice."""

    def __init__(self, body: Iterable[bytes]) -> None:
        self.body = body
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        """Close the wrapped iterable once."""
        if not self.closed:
            self.closed = True
            close = getattr(self.body, "close", None)
            if close is not None:
                close()


class _Recording:
    """WSGI middleware: remembers the response iterable in the environ for the handler."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> _CloseOnce:
        body = _CloseOnce(self.app(environ, start_response))
        environ[_BODY] = body
        return body


class ClosingRequestHandler(WSGIRequestHandler):
    """werkzeug's handler, but the response is closed however the request ended.

    werkzeug (3.1) closes the response only after draining unread request bytes from the
    socket; when the client resets the connection (Chromium does when it drops a request)
    that read raises ConnectionResetError first and close() is skipped. A static file sent by
    send_file then stays open until the garbage collector finds it, and its ResourceWarning
    fails whichever test is running at that moment (filterwarnings=error)."""

    def run_wsgi(self) -> None:
        """Serve the request, then close its response if werkzeug did not."""
        try:
            super().run_wsgi()
        finally:
            environ = getattr(self, "environ", None)
            body = environ.pop(_BODY, None) if environ is not None else None
            if body is not None:
                body.close()


def wsgi_server(app: WSGIApp, port: int = 0, host: str = "127.0.0.1") -> BaseWSGIServer:
    """A threaded werkzeug server for `app` on host:port (0: any free port), not started."""
    return make_server(host, port, _Recording(app), threaded=True,
                       request_handler=ClosingRequestHandler)


@contextlib.contextmanager
def serving(server: Any) -> Iterator[str]:
    """Run `server` (any socketserver) in a thread: yields its base URL; at exit it is shut
    down, its thread joined and its socket closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{server.server_address[0]}:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
