"""The SSRF-guarded webhook client: URL/address policy, pinning, redirects, deadlines, TLS."""

from __future__ import annotations

import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from app.loop import safehttp
from app.loop.safehttp import UnsafeTarget, check_url, post

from .conftest import need

# -- helpers ------------------------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


class _Server(socketserver.TCPServer):
    """Single-threaded: each request is fully handled (socket closed) before the next."""

    def __init__(self, reply: Reply, tls: ssl.SSLContext | None = None) -> None:
        self.reply = reply
        self.hits: list[Hit] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.hits.append(Hit(self.path, {k.lower(): v for k, v in self.headers.items()},
                                    body))
        reply = self.server.reply
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[..., _Server]]:
    """Start real HTTP servers on 127.0.0.1; all are shut down and closed at teardown."""
    started: list[tuple[_Server, threading.Thread]] = []

    def start(reply: Reply | None = None, tls: ssl.SSLContext | None = None) -> _Server:
        server = _Server(reply or Reply(), tls)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join()
        server.server_close()


class _RawServer:
    """Accepts one connection, sends `prefix` at once and `payload` one byte per `interval`,
    then holds the connection open until closed."""

    def __init__(self, payload: bytes = b"", interval: float = 0.0, prefix: bytes = b"") -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.prefix = prefix
        self.payload = payload
        self.interval = interval
        self.stop = threading.Event()
        self.accepted = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted.set()
            with conn:
                try:
                    conn.sendall(self.prefix)
                    for byte in self.payload:
                        if self.stop.wait(self.interval):
                            break
                        conn.sendall(bytes([byte]))
                except OSError:
                    pass  # the client gave up
                self.stop.wait()
            return

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.listener.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., _RawServer]]:
    """Start misbehaving raw TCP servers on 127.0.0.1; closed at teardown."""
    started: list[_RawServer] = []

    def start(payload: bytes = b"", interval: float = 0.0, prefix: bytes = b"") -> _RawServer:
        started.append(_RawServer(payload, interval, prefix))
        return started[-1]

    yield start
    for server in started:
        server.close()


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> list[str]:
    """Replace getaddrinfo: host -> successive answers (last one repeats); returns the log."""
    calls: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        calls.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        seq = answers[host]
        ips = seq[min(calls.count(host), len(seq)) - 1]
        out = []
        for ip in ips:
            if ":" in ip:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
        return out

    monkeypatch.setattr(safehttp.socket, "getaddrinfo", getaddrinfo)
    return calls


# -- URL and address policy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/",
        "http://[::1]/",
        "http://10.0.0.5/",
        "http://172.16.3.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[2002:a00:1::1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://2130706433/",
        "http://localhost/",
    ],
)
def test_forbidden_addresses_refused(url: str) -> None:
    """Loopback, private, link-local/metadata, shared, special and embedded-v4 targets raise."""
    with pytest.raises(UnsafeTarget):
        check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://user:pass@example.com/",
        "http://user@example.com/",
        "http:///path",
        "http://",
        "",
        "http://exa mple.com/",
        "http://example.com:99999/",
    ],
)
def test_malformed_urls_refused(url: str) -> None:
    """Bad schemes, credentials, missing hosts, bad ports and whitespace are refused."""
    with pytest.raises(UnsafeTarget):
        check_url(url)


def test_public_literals_allowed() -> None:
    """Public IPv4/IPv6 literals (bracketed, with port) pass and are returned."""
    assert check_url("https://93.184.216.34/hook") == ["93.184.216.34"]
    assert check_url("http://[2606:4700::1111]:8080/x?y=1") == ["2606:4700::1111"]
    assert check_url("http://[64:ff9b::808:808]/") == ["64:ff9b::808:808"]


def test_hostname_resolving_to_private_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostname whose DNS answer is 10.x is refused by check_url and post."""
    fake_dns(monkeypatch, {"internal.example": [["10.1.2.3"]]})
    with pytest.raises(UnsafeTarget, match="internal.example resolves to 10.1.2.3"):
        check_url("https://internal.example/hook")
    with pytest.raises(UnsafeTarget):
        post("https://internal.example/hook", b"{}", {}, timeout=1)


def test_any_forbidden_answer_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """If one of several resolved addresses is forbidden, the whole host is refused."""
    fake_dns(monkeypatch, {"mixed.example": [["93.184.216.34", "127.0.0.1"]]})
    with pytest.raises(UnsafeTarget, match="127.0.0.1"):
        check_url("https://mixed.example/")


def test_public_hostname_returns_all_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A public hostname returns every resolved address, deduplicated, in resolver order."""
    fake_dns(monkeypatch, {"hook.example": [["93.184.216.34", "2606:4700::1111",
                                             "93.184.216.34"]]})
    assert check_url("https://hook.example/") == ["93.184.216.34", "2606:4700::1111"]


def test_unresolvable_host_refused_at_check_but_result_at_post(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS failure raises UnsafeTarget in check_url but is a plain failed result in post."""
    fake_dns(monkeypatch, {})
    with pytest.raises(UnsafeTarget, match="cannot resolve"):
        check_url("https://nowhere.example/")
    result = post("https://nowhere.example/", b"{}", {}, timeout=1)
    assert result.status is None and not result.ok
    assert result.error is not None and "DNS" in result.error


@pytest.mark.parametrize("url", [
    "http://10.0.0.5/",
    "http://172.16.3.4/",
    "http://172.31.255.254/",
    "http://192.168.1.1/",
    "http://[fc00::1]/",
    "http://[fd12:3456::7]/",
    "http://[::ffff:10.0.0.1]/",
])
def test_allow_private_permits_rfc1918_and_ula(url: str) -> None:
    """allow_private opens exactly RFC 1918 and IPv6 ULA targets (and their mapped forms)."""
    assert check_url(url, allow_private=True)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/",
    "http://127.5.6.7/",
    "http://[::1]/",
    "http://localhost/",
    "http://169.254.169.254/latest/meta-data",
    "http://169.254.1.1/",
    "http://[fe80::1]/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://100.64.0.1/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::1]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://[::ffff:0.0.0.0]/",
    "http://240.0.0.1/",
    "http://192.0.0.1/",
    "http://198.18.0.1/",
])
def test_allow_private_still_refuses_loopback_link_local_metadata_and_special(url: str) -> None:
    """"Private" is RFC 1918/ULA only: loopback, link-local, metadata, shared, unspecified,
    multicast and reserved targets (and their IPv6-embedded forms) stay refused."""
    with pytest.raises(UnsafeTarget):
        check_url(url, allow_private=True)


def test_loopback_ports_for_tests_open_only_those_ports_on_plain_loopback() -> None:
    """The test-only escape allows 127/8 and ::1 on the listed ports, nothing else."""
    assert check_url("http://127.0.0.1:8080/", loopback_ports_for_tests={8080}) == ["127.0.0.1"]
    assert check_url("http://[::1]:8080/", loopback_ports_for_tests={8080}) == ["::1"]
    for url in ("http://127.0.0.1:8081/", "http://[::ffff:127.0.0.1]:8080/",
                "http://169.254.169.254:8080/", "http://10.0.0.1:8080/"):
        with pytest.raises(UnsafeTarget):
            check_url(url, loopback_ports_for_tests={8080})


# -- sending ------------------------------------------------------------------------------------


def test_post_to_loopback_refused_without_allow_private(serve) -> None:
    """Without allow_private a real loopback server is never contacted."""
    server = serve()
    with pytest.raises(UnsafeTarget):
        post(server.url + "/hook", b"{}", {}, timeout=1)
    with pytest.raises(UnsafeTarget):
        post(f"http://[::ffff:127.0.0.1]:{server.port}/hook", b"{}", {}, timeout=1)
    assert server.hits == []


def test_post_delivers_body_and_headers(serve) -> None:
    """With allow_private the body, caller headers, UA, Content-Length and Host arrive."""
    server = serve(Reply(200, b"thanks"))
    body = b'{"event": "closed"}'
    result = post(server.url + "/hook?x=1", body,
                  {"Content-Type": "application/json", "X-Signature": "abc",
                   "Host": "evil.example", "User-Agent": "spoof"},
                  timeout=5, loopback_ports_for_tests={server.port})
    assert result.ok and result.status == 200 and result.error is None
    assert result.body_excerpt == "thanks"
    assert result.duration_ms >= 0
    [hit] = server.hits
    assert hit.path == "/hook?x=1"
    assert hit.body == body
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["x-signature"] == "abc"
    assert hit.headers["user-agent"] == "Closeloop-Webhooks/1"
    assert hit.headers["content-length"] == str(len(body))
    assert hit.headers["host"] == f"127.0.0.1:{server.port}"


def test_empty_body_sends_content_length_zero(serve) -> None:
    """An empty body still carries Content-Length: 0."""
    server = serve()
    assert post(server.url, b"", {}, timeout=5, loopback_ports_for_tests={server.port}).ok
    assert server.hits[0].headers["content-length"] == "0"
    assert server.hits[0].path == "/"


def test_redirect_not_followed(serve) -> None:
    """A 302 to a loopback target is reported as a failure and the target is never hit."""
    target = serve()
    redirector = serve(Reply(302, b"", {"Location": target.url + "/admin"}))
    result = post(redirector.url + "/hook", b"{}", {}, timeout=5,
                  loopback_ports_for_tests={redirector.port, target.port})
    assert result.status == 302
    assert not result.ok
    assert result.error == "redirect not followed (302)"
    assert len(redirector.hits) == 1
    assert target.hits == []


def test_server_error_is_not_ok(serve) -> None:
    """A 500 keeps its status, is not ok and carries an excerpt of the body."""
    server = serve(Reply(500, b"boom " * 200))
    result = post(server.url, b"{}", {}, timeout=5, loopback_ports_for_tests={server.port})
    assert result.status == 500 and not result.ok
    assert result.error == "HTTP 500"
    assert result.body_excerpt.startswith("boom boom")
    assert len(result.body_excerpt) == 500


def test_large_body_is_capped(serve) -> None:
    """A huge 2xx body still succeeds; the excerpt is at most 500 chars, invalid UTF-8 replaced."""
    server = serve(Reply(200, b"\xff" + b"a" * (1024 * 1024)))
    result = post(server.url, b"{}", {}, timeout=5, loopback_ports_for_tests={server.port})
    assert result.ok
    assert len(result.body_excerpt) == 500
    assert result.body_excerpt.startswith("\ufffdaaa")


def test_hanging_server_times_out(raw_server) -> None:
    """A server that accepts and never answers yields 'timeout' after about `timeout`."""
    server = raw_server()
    start = time.monotonic()
    result = post(f"http://127.0.0.1:{server.port}/", b"{}", {}, timeout=1,
                  loopback_ports_for_tests={server.port})
    elapsed = time.monotonic() - start
    assert server.accepted.is_set()
    assert result.status is None and not result.ok
    assert result.error == "timeout"
    assert elapsed < 1 + 3


def test_trickling_server_cut_off_by_deadline(raw_server) -> None:
    """A status line trickled one byte per 0.3 s cannot outlast the overall deadline."""
    server = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", interval=0.3)
    start = time.monotonic()
    result = post(f"http://127.0.0.1:{server.port}/", b"{}", {}, timeout=1,
                  loopback_ports_for_tests={server.port})
    elapsed = time.monotonic() - start
    assert result.status is None and result.error == "timeout"
    assert elapsed < 1 + 3


def test_trickling_body_keeps_status_and_stops_at_deadline(raw_server) -> None:
    """Headers arrive at once, the body trickles: the 200 counts and reading stops in time."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    server = raw_server(b"x" * 100, interval=0.3, prefix=head)
    start = time.monotonic()
    result = post(f"http://127.0.0.1:{server.port}/", b"{}", {}, timeout=1,
                  loopback_ports_for_tests={server.port})
    assert result.status == 200 and result.ok and result.error is None
    assert 0 < len(result.body_excerpt) < 100
    assert time.monotonic() - start < 1 + 3


def test_connection_refused() -> None:
    """A closed port gives status None and 'connection refused', no exception."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connects are refused
        port = sock.getsockname()[1]
        result = post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=2,
                      loopback_ports_for_tests={port})
    assert result.status is None and not result.ok
    assert result.error == "connection refused"


def test_dns_pinned_to_first_resolution(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    """One lookup only: a rebinding answer (10.0.0.1) on a second lookup is never used."""
    server = serve()
    calls = fake_dns(monkeypatch, {"hook.example": [["127.0.0.1"], ["10.0.0.1"]]})
    result = post(f"http://hook.example:{server.port}/h", b"{}", {}, timeout=2,
                  loopback_ports_for_tests={server.port})
    assert result.ok, result.error
    assert calls == ["hook.example"]
    [hit] = server.hits
    assert hit.headers["host"] == f"hook.example:{server.port}"


def test_post_refuses_host_when_any_address_forbidden(serve, monkeypatch) -> None:
    """At connect time one forbidden answer (10.0.0.1 beside an allowed one) refuses the host
    and the allowed address is never contacted."""
    server = serve()
    calls = fake_dns(monkeypatch, {"hook.example": [["127.0.0.1", "10.0.0.1"]]})
    with pytest.raises(UnsafeTarget, match="hook.example resolves to 10.0.0.1"):
        post(f"http://hook.example:{server.port}/h", b"{}", {}, timeout=2,
             loopback_ports_for_tests={server.port})
    assert calls == ["hook.example"]
    assert server.hits == []


def test_post_falls_back_to_next_checked_address(serve, monkeypatch) -> None:
    """When the first (allowed) address refuses the connection, the next checked one is used,
    still from the one lookup."""
    server = serve()
    calls = fake_dns(monkeypatch, {"hook.example": [["127.0.0.2", "127.0.0.1"]]})
    with socket.socket() as closed:  # 127.0.0.2 on a port nobody listens on
        closed.bind(("127.0.0.2", server.port))
        result = post(f"http://hook.example:{server.port}/h", b"{}", {}, timeout=2,
                      loopback_ports_for_tests={server.port})
    assert result.ok, result.error
    assert calls == ["hook.example"]
    assert len(server.hits) == 1


def test_https_to_plain_http_server_is_tls_error(serve) -> None:
    """Speaking TLS to a plain HTTP server fails as a result, not an exception."""
    server = serve()
    result = post(f"https://127.0.0.1:{server.port}/", b"{}", {}, timeout=2,
                  loopback_ports_for_tests={server.port})
    assert result.status is None and not result.ok
    assert result.error is not None and result.error.startswith("TLS")


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for hook.example (needs the openssl binary)."""
    need("the openssl binary", shutil.which("openssl") is not None, "it makes the test certificate")
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1",
         "-subj", "/CN=hook.example", "-addext", "subjectAltName=DNS:hook.example"],
        check=True, capture_output=True,
    )
    return crt, key


def _tls_server_context(cert: tuple[Path, Path], seen_sni: list[str | None]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    ctx.sni_callback = lambda _sock, name, _ctx: seen_sni.append(name)
    return ctx


def test_https_pinned_with_sni_and_verification(serve, cert, monkeypatch) -> None:
    """TLS to a pinned IP uses SNI and certificate checks for the original hostname."""
    seen_sni: list[str | None] = []
    server = serve(Reply(200, b"tls ok"), tls=_tls_server_context(cert, seen_sni))
    fake_dns(monkeypatch, {"hook.example": [["127.0.0.1"]]})
    client_ctx = ssl.create_default_context(cafile=str(cert[0]))
    monkeypatch.setattr(safehttp, "_tls_context", lambda: client_ctx)
    result = post(f"https://hook.example:{server.port}/h", b"{}", {}, timeout=5,
                  loopback_ports_for_tests={server.port})
    assert result.ok, result.error
    assert result.body_excerpt == "tls ok"
    assert seen_sni == ["hook.example"]
    assert server.hits[0].headers["host"] == f"hook.example:{server.port}"


def test_https_untrusted_certificate_fails(serve, cert, monkeypatch) -> None:
    """A certificate not signed by a trusted CA is rejected and nothing is sent."""
    server = serve(tls=_tls_server_context(cert, []))
    fake_dns(monkeypatch, {"hook.example": [["127.0.0.1"]]})
    result = post(f"https://hook.example:{server.port}/h", b"{}", {}, timeout=5,
                  loopback_ports_for_tests={server.port})
    assert result.status is None and not result.ok
    assert result.error is not None and "certificate verify failed" in result.error
    assert server.hits == []


def test_https_wrong_hostname_fails(serve, cert, monkeypatch) -> None:
    """A trusted certificate for another name is rejected (hostname verification is on)."""
    server = serve(tls=_tls_server_context(cert, []))
    fake_dns(monkeypatch, {"other.example": [["127.0.0.1"]]})
    client_ctx = ssl.create_default_context(cafile=str(cert[0]))
    monkeypatch.setattr(safehttp, "_tls_context", lambda: client_ctx)
    result = post(f"https://other.example:{server.port}/h", b"{}", {}, timeout=5,
                  loopback_ports_for_tests={server.port})
    assert result.status is None
    assert result.error is not None and "TLS" in result.error
    assert server.hits == []
