"""The fault-injection proxy behaves like a TCP path: the fault tests' outages are the ones
they mean to cause, and no other (a peer left waiting forever is a test bug, not a finding)."""

from __future__ import annotations

import socket
import threading

from .proxy import TcpProxy


class _Server:
    """A one-connection TCP server whose replies the test releases."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.reply = threading.Event()
        self.hang_up = threading.Event()
        self.conn: socket.socket | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:  # closed before any client came
            return
        self.conn = conn
        with conn:
            try:
                conn.recv(100)
                while not (self.reply.wait(0.05) or self.hang_up.is_set()):
                    pass
                if self.hang_up.is_set():
                    conn.shutdown(socket.SHUT_RDWR)
                else:
                    conn.sendall(b"late reply")
            except OSError:  # the proxy cut this connection: what the cut test is about
                pass

    def close(self) -> None:
        self.sock.close()


def _dropped(c: socket.socket) -> bool:
    """The connection ended: EOF, or a reset (the proxy closed with bytes unread)."""
    try:
        return c.recv(100) == b""
    except ConnectionResetError:
        return True


def _client(proxy: TcpProxy) -> socket.socket:
    c = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    c.sendall(b"query")
    return c


def test_a_quiet_connection_stays_open():
    """A reply that comes after 3 quiet seconds (a query waiting on a lock) still arrives:
    the proxy has no idle timeout of its own."""
    server = _Server()
    proxy = TcpProxy("127.0.0.1", server.port)
    try:
        with _client(proxy) as c:
            threading.Timer(3.0, server.reply.set).start()  # the quiet period under test
            assert c.recv(100) == b"late reply"
    finally:
        proxy.cut()
        server.close()


def test_the_server_hanging_up_reaches_a_waiting_client():
    """The server closing while the client waits for a reply ends the client's connection,
    instead of leaving it waiting forever."""
    server = _Server()
    proxy = TcpProxy("127.0.0.1", server.port)
    try:
        with _client(proxy) as c:
            server.hang_up.set()
            assert _dropped(c)
    finally:
        proxy.cut()
        server.close()


def test_cut_drops_a_waiting_client_and_refuses_new_ones():
    """cut() ends the connection of a client blocked on a reply at once and refuses new connections;
    restore() accepts them again on the same port."""
    server = _Server()
    proxy = TcpProxy("127.0.0.1", server.port)
    try:
        with _client(proxy) as c:
            proxy.cut()
            assert _dropped(c)
        try:
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
            refused = False
        except ConnectionRefusedError:
            refused = True
        assert refused
        proxy.restore()
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
    finally:
        proxy.cut()
        server.close()
