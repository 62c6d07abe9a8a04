"""An SSRF-guarded, single-shot HTTP POST client for outgoing webhooks, on urllib3.

urllib3 does the HTTP: TLS (SNI and certificate verification for the URL's hostname), request
framing, chunked responses, status and headers. This module adds the address policy, checked
where the socket is made: our connection classes replace urllib3's ``_new_conn`` (the approach
of Sentry's ``safe_create_connection``), which resolves the host once, refuses the whole host if
*any* resolved address is forbidden, and only then connects, to one of those checked addresses.
Nothing else resolves the name, so DNS rebinding between a check and the connect is impossible.

Guarantees of `post`:

* only ``http``/``https`` URLs without credentials;
* the address policy (`_forbidden`): never unspecified, multicast, loopback, link-local (which
  includes the cloud metadata address 169.254.169.254 and fe80::/10), other metadata addresses,
  shared (100.64/10), reserved or otherwise non-global addresses, nor those embedded in IPv6
  (``::ffff:127.0.0.1``, 6to4, NAT64). ``allow_private`` opens exactly the private networks:
  RFC 1918 (10/8, 172.16/12, 192.168/16) and IPv6 ULA (fc00::/7), metadata addresses excepted;
* redirects are never followed (a 3xx is reported as a failure) and nothing is retried;
* at most 64 KiB of response body is read (never decompressed), and ``timeout`` is one overall
  deadline for connect, TLS handshake, send and read: the connect gets the time that is left,
  and a timer shuts the socket down when the deadline passes, so a server that hangs or
  trickles bytes cannot hold the caller much longer than ``timeout``. (DNS resolution counts
  against the deadline but cannot be interrupted: ``getaddrinfo`` has no timeout.)

Network failures are reported in the returned `HttpResult`; only a refused URL or address
raises (`UnsafeTarget`).

Tests reach a receiver on 127.0.0.1 through ``loopback_ports_for_tests``: loopback addresses
(127.0.0.0/8, ::1 — never an embedded form) on exactly those ports are allowed. The webhooks
module passes it only from the test-only setting WEBHOOK_LOOPBACK_PORTS_FOR_TESTS, and only
when the app is TESTING.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

USER_AGENT = "Closeloop-Webhooks/1"
MAX_BODY = 64 * 1024
EXCERPT_CHARS = 500

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "fc00::/7",  # RFC 4193 unique local addresses
))
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use
_LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.ip_address("::1")
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, ...
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6 (inside the ULA range)
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
}
# Headers the client manages itself; caller-supplied values are ignored.
_MANAGED_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "user-agent",
                    "accept-encoding"}
_READ_SIZE = 16 * 1024


class UnsafeTarget(ValueError):
    """URL refused: bad scheme, credentials in URL, or a host resolving to a forbidden address."""


@dataclass(frozen=True)
class HttpResult:
    status: int | None  # HTTP status, None when no response
    error: str | None  # short human-readable error, or None on 2xx
    duration_ms: int
    body_excerpt: str  # first <= 500 chars of response body, decoded leniently

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


# -- validation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # ASCII hostname or bare IP literal (no brackets)
    port: int
    path: str  # path + query, never empty


@dataclass(frozen=True)
class _Policy:
    allow_private: bool = False
    loopback_ports_for_tests: frozenset[int] = frozenset()

    def check(self, host: str, port: int, addrs: list[tuple[int, tuple]]) -> None:
        """Raise UnsafeTarget unless every resolved address may be contacted."""
        for _family, sockaddr in addrs:
            ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
            if port in self.loopback_ports_for_tests and (ip in _LOOPBACK_V4
                                                         or ip == _LOOPBACK_V6):
                continue
            why = _forbidden(ip, self.allow_private)
            if why:
                where = f"{ip}" if _is_literal(host, ip) else f"{host} resolves to {ip}"
                raise UnsafeTarget(f"{where}: {why} not allowed")


def _parse(url: str) -> _Target:
    if not isinstance(url, str) or not url:
        raise UnsafeTarget("URL is empty")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeTarget("URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeTarget(f"scheme must be http or https, not {scheme or 'missing'!r}")
    if "@" in parts.netloc:
        raise UnsafeTarget("credentials in URL are not allowed")
    host = parts.hostname
    if not host:
        raise UnsafeTarget("URL has no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise UnsafeTarget("invalid international hostname") from None
    if port is None:
        port = 443 if scheme == "https" else 80
    elif port == 0:
        raise UnsafeTarget("port 0 is not allowed")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(scheme, host, port, path)


def _resolve(host: str, port: int) -> list[tuple[int, tuple]]:
    """One DNS lookup: (family, sockaddr) pairs in resolver order, duplicates dropped."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: set[str] = set()
    out: list[tuple[int, tuple]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        ip = str(sockaddr[0])
        if family not in (socket.AF_INET, socket.AF_INET6) or ip in seen:
            continue
        seen.add(ip)
        out.append((family, sockaddr))
    if not out:
        raise socket.gaierror(socket.EAI_NONAME, "no IPv4/IPv6 address")
    return out


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _forbidden(ip: _IP, allow_private: bool) -> str | None:
    """Why `ip` may not be contacted, or None when it may. `allow_private` allows RFC 1918 and
    ULA addresses only: loopback, link-local, metadata and the rest stay refused."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        v4 = _embedded_v4(ip)
        if v4 is not None:
            why = _forbidden(v4, allow_private)
            if why:
                return f"{why} (IPv4 {v4} embedded in IPv6)"
            if ip.ipv4_mapped is not None or ip in _NAT64:
                return None  # the packets go to the (allowed) IPv4 address
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_multicast:
        return "multicast address"
    if ip in _METADATA:
        return "cloud metadata address"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_link_local:
        return "link-local address"
    if allow_private and any(ip in net for net in _PRIVATE_NETWORKS):
        return None
    if ip.version == 4 and ip in _SHARED:
        return "shared address space"
    if ip.version == 6 and (ip in _NAT64_LOCAL or ip.is_site_local):
        return "private address"
    if ip.is_private:
        return "private address"
    if ip.is_reserved:
        return "reserved address"
    if not ip.is_global:
        return "non-global address"
    return None


def _is_literal(host: str, ip: _IP) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]) == ip
    except ValueError:
        return False


def check_url(url: str, allow_private: bool = False, *,
              loopback_ports_for_tests: Iterable[int] = ()) -> list[str]:
    """Validate a webhook URL at save time; return the resolved IP addresses (all allowed).
    Raises UnsafeTarget (also when the host does not resolve). `post` checks again at connect
    time, on its own (single) lookup."""
    target = _parse(url)
    policy = _Policy(allow_private, frozenset(loopback_ports_for_tests))
    try:
        addrs = _resolve(target.host, target.port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeTarget(f"cannot resolve host {target.host!r}: {_reason(exc)}") from None
    policy.check(target.host, target.port, addrs)
    return [sockaddr[0] for _family, sockaddr in addrs]


# -- transport ----------------------------------------------------------------------------------


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # certificate + hostname verification on


class _Guard:
    """One request's policy and overall deadline. When the deadline passes, a timer shuts down
    every socket the request connected (through a duplicate descriptor, which stays valid
    when TLS takes the original over), so whatever blocks on it returns at once."""

    def __init__(self, policy: _Policy, timeout: float) -> None:
        self.policy = policy
        self.deadline = time.monotonic() + timeout
        self.expired = False
        self._lock = threading.Lock()
        self._closed = False
        self._watched: list[socket.socket] = []
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        dup = sock.dup()
        with self._lock:
            self._watched.append(dup)
            if self.expired:
                _shutdown(dup)

    def _expire(self) -> None:
        with self._lock:
            if self._closed:
                return
            self.expired = True
            for sock in self._watched:
                _shutdown(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._closed = True
            watched, self._watched = self._watched, []
        for sock in watched:
            sock.close()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected (any more)


class _GuardedConnection(HTTPConnection):
    """urllib3 connection whose socket is made here: one lookup, the policy on every address,
    then a connect to a checked address within the deadline."""

    def __init__(self, *args: Any, guard: _Guard, **kwargs: Any) -> None:
        self._guard = guard
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        guard = self._guard
        host = self._dns_host.strip("[]")
        try:
            addrs = _resolve(host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except (OSError, UnicodeError) as exc:
            gai = socket.gaierror(socket.EAI_FAIL, _reason(exc))
            raise NameResolutionError(self.host, self, gai) from exc
        guard.policy.check(host, self.port, addrs)  # UnsafeTarget passes through urllib3
        error: OSError | None = None
        for family, sockaddr in addrs:
            left = guard.remaining()
            if left <= 0:
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out")
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(left)
                sock.connect(sockaddr)
            except TimeoutError as exc:
                sock.close()
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from exc
            except OSError as exc:
                sock.close()
                error = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            guard.watch(sock)
            return sock
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error


class _GuardedHTTPSConnection(_GuardedConnection, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those it wraps (cause, context, exception arguments), each once."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (e.__cause__, e.__context__, *e.args) if isinstance(x, BaseException)]


def _describe(exc: BaseException) -> str:
    """Short human-readable text for a network failure."""
    chain = list(_chain(exc))

    def find(kind: type[BaseException] | tuple[type[BaseException], ...]) -> Any:
        return next((e for e in chain if isinstance(e, kind)), None)

    if (e := find(ssl.SSLCertVerificationError)) is not None:
        return f"TLS certificate verify failed: {e.verify_message}"
    if (e := find(ssl.SSLError)) is not None:
        return f"TLS error: {e.reason or e}"
    if find((TimeoutError, urllib3.exceptions.ReadTimeoutError)) is not None or (
            isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError)):
        return "timeout"
    if find(ConnectionRefusedError) is not None:
        return "connection refused"
    if find(ConnectionResetError) is not None:
        return "connection reset"
    if find(http.client.RemoteDisconnected) is not None:
        return "connection closed without response"
    if (e := find((http.client.HTTPException, urllib3.exceptions.ProtocolError))) is not None:
        return f"bad HTTP response ({type(e).__name__})"
    root = chain[-1]
    return f"network error: {_reason(root)}"


def _status_error(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"redirect not followed ({status})"
    return f"HTTP {status}"


def _excerpt(data: bytes) -> str:
    return data[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")[:EXCERPT_CHARS]


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    allow_private: bool = False,
    loopback_ports_for_tests: Iterable[int] = (),
) -> HttpResult:
    """POST body once. The host is resolved once, when the connection is made; a forbidden
    address raises UnsafeTarget before any connect. Host/SNI/certificate use the original
    hostname; redirects are never followed; at most 64 KiB of the response is read;
    `timeout` is an overall deadline. Network errors become HttpResult(status=None, error=...).

    Once a status line has been received, a failure while reading the body does not turn the
    result into an error: the status is what counts, the excerpt is simply shorter.
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    start = time.monotonic()

    def result(status: int | None, error: str | None, data: bytes = b"") -> HttpResult:
        elapsed = int((time.monotonic() - start) * 1000)
        return HttpResult(status, error, elapsed, _excerpt(data))

    target = _parse(url)
    send_headers = {k: v for k, v in headers.items() if k.lower() not in _MANAGED_HEADERS}
    send_headers["User-Agent"] = USER_AGENT
    send_headers["Content-Length"] = str(len(body))
    send_headers["Connection"] = "close"
    send_headers["Accept-Encoding"] = "identity"

    guard = _Guard(_Policy(allow_private, frozenset(loopback_ports_for_tests)), timeout)
    pool: HTTPConnectionPool | None = None
    response = None
    try:
        pool_kw: dict[str, Any] = {"maxsize": 1, "retries": False, "guard": guard}
        if target.scheme == "https":
            pool = _GuardedHTTPSPool(target.host, target.port, ssl_context=_tls_context(),
                                     **pool_kw)
        else:
            pool = _GuardedHTTPPool(target.host, target.port, **pool_kw)
        try:
            response = pool.urlopen(
                "POST", target.path, body=body, headers=send_headers, retries=False,
                redirect=False, assert_same_host=False, preload_content=False,
                decode_content=False, release_conn=False,
                timeout=urllib3.Timeout(connect=timeout, read=timeout))
        except NameResolutionError as exc:
            return result(None, f"DNS lookup failed: {_reason(exc.__cause__ or exc)}")
        except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as exc:
            return result(None, "timeout" if guard.expired else _describe(exc))
        data = bytearray()
        try:
            while len(data) < MAX_BODY:
                chunk = response.read(min(_READ_SIZE, MAX_BODY - len(data)),
                                      decode_content=False)
                if not chunk:
                    break
                data += chunk
        except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException):
            pass  # keep the partial body; the status already tells the outcome
        return result(response.status, _status_error(response.status), bytes(data))
    finally:
        if response is not None:
            response.close()
        if pool is not None:
            pool.close()
        guard.close()
