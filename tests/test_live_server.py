"""The tests' HTTP server (tests/live_server.py) closes every response, also when the client
resets the connection, as PEP 3333 and gunicorn do."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, Response, request

from .live_server import _CloseOnce, serving, wsgi_server

WAIT = 10  # seconds, for every wait on the server thread


def _read_response(sock: socket.socket) -> bytes:
    """Read one whole HTTP response with a Content-Length from `sock`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before the headers: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return head


def test_a_client_reset_after_the_answer_still_closes_the_static_file(app: Flask) -> None:
    """Chromium resets connections it drops; werkzeug's own handler then skipped close() on a
    send_file response while draining the unread request body, and the file's ResourceWarning
    surfaced in a later test. Made deterministic: the request announces a body of 10 bytes and
    sends 5 once the app has read the headers, so the server is still draining the rest when
    the reset arrives."""
    sent: list[Response] = []

    @app.after_request
    def keep(resp: Response) -> Response:
        if request.endpoint == "static":
            sent.append(resp)
        return resp

    entered, body_sent, closed = threading.Event(), threading.Event(), threading.Event()

    class Answer:
        """The app's answer; tells the test when the server closed it."""

        def __init__(self, body: Iterable[bytes]) -> None:
            self.body = body

        def __iter__(self) -> Iterator[bytes]:
            return iter(self.body)

        def close(self) -> None:
            self.body.close()  # type: ignore[attr-defined]  # send_file's FileWrapper
            closed.set()

    def gate(environ: dict[str, Any], start_response: Callable[..., Any]) -> Answer:
        entered.set()  # the server has parsed the request head; the body is still to come
        assert body_sent.wait(WAIT)
        return Answer(app(environ, start_response))

    server = wsgi_server(gate)
    with serving(server):
        host, port = server.server_address[:2]
        sock = socket.create_connection((host, port))
        try:
            # Host: localhost, the app's base URL in tests.
            sock.sendall(b"GET /static/embed.css HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Length: 10\r\n\r\n")
            assert entered.wait(WAIT)
            sock.sendall(b"12345")
            body_sent.set()
            head = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 ")
            # Close with a reset (linger 0), as a browser dropping the connection does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()
        assert closed.wait(WAIT), "the response was never closed"
    (resp,) = sent
    assert resp.response.file.closed  # type: ignore[attr-defined]  # send_file's FileWrapper


def test_the_safety_net_closes_a_response_once() -> None:
    """werkzeug's own close() and the handler's safety net together run a response's close
    hooks once."""
    calls: list[str] = []

    class Body(list[bytes]):
        def close(self) -> None:
            calls.append("closed")

    body = _CloseOnce(Body([b"x"]))
    assert list(body) == [b"x"]
    body.close()
    body.close()
    assert calls == ["closed"]
