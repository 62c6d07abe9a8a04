"""An SSRF-guarded, single-shot HTTP POST client for outgoing webhooks (standard library only).

Guarantees of `post`:

* only ``http``/``https`` URLs without credentials;
* the host is resolved once and *every* resolved address must be allowed (no loopback, private,
  link-local/metadata, shared, reserved ... unless ``allow_private``); the connection goes to
  the first resolved address, so the HTTP layer never does a second lookup that DNS rebinding
  could answer differently;
* the Host header, TLS SNI and certificate verification use the original hostname;
* redirects are never followed (a 3xx is reported as a failure);
* at most 64 KiB of response body is read, and ``timeout`` is one overall deadline for connect,
  TLS handshake, send and read — a server that hangs or trickles bytes cannot hold the caller
  much longer than ``timeout``. (DNS resolution counts against the deadline but cannot be
  interrupted: ``getaddrinfo`` has no timeout.)

Network failures are reported in the returned `HttpResult`; only a refused URL raises
(`UnsafeTarget`).
"""

from __future__ import annotations

import functools
import http.client
import io
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

USER_AGENT = "Closeloop-Webhooks/1"
MAX_BODY = 64 * 1024
EXCERPT_CHARS = 500
# Raw bytes we are willing to receive in total: the body plus room for the status line,
# headers and chunk framing. Past that the response is cut off.
_MAX_RAW = MAX_BODY + 64 * 1024

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, ...
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
}
# Headers the client manages itself; caller-supplied values are ignored.
_MANAGED_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "user-agent"}


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
        if family not in (socket.AF_INET, socket.AF_INET6) or sockaddr[0] in seen:
            continue
        seen.add(sockaddr[0])
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
    """Why `ip` may not be contacted, or None when it may."""
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
    if allow_private:
        return None
    if ip in _METADATA:
        return "cloud metadata address"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_link_local:
        return "link-local address"
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


def _check(host: str, addrs: list[tuple[int, tuple]], allow_private: bool) -> None:
    for _family, sockaddr in addrs:
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        why = _forbidden(ip, allow_private)
        if why:
            where = f"{ip}" if _is_literal(host, ip) else f"{host} resolves to {ip}"
            raise UnsafeTarget(f"{where}: {why} not allowed")


def _is_literal(host: str, ip: _IP) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]) == ip
    except ValueError:
        return False


def check_url(url: str, allow_private: bool = False) -> list[str]:
    """Validate a webhook URL at save time and send time; return the resolved IP addresses (all
    allowed). Raises UnsafeTarget (also when the host does not resolve)."""
    target = _parse(url)
    try:
        addrs = _resolve(target.host, target.port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeTarget(f"cannot resolve host {target.host!r}: {_reason(exc)}") from None
    _check(target.host, addrs, allow_private)
    return [sockaddr[0] for _family, sockaddr in addrs]


# -- transport ----------------------------------------------------------------------------------


class _ResponseTooLarge(Exception):
    pass


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline exceeded")
    return left


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # certificate + hostname verification on


class _DeadlineReader(io.RawIOBase):
    """Raw reader over a socket: every recv waits at most until the overall deadline, and at
    most _MAX_RAW bytes are ever received. Reads through sock.makefile(), which keeps the
    socket open after HTTPConnection.close() until this reader is closed, as http.client
    expects."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline
        self._budget = _MAX_RAW

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._budget <= 0:
            raise _ResponseTooLarge
        self._sock.settimeout(_remaining(self._deadline))
        with memoryview(b) as view, view[: self._budget] as part:
            n = self._raw.readinto(part)
        self._budget -= n or 0
        return n

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineSocket:
    """What HTTPResponse sees as its socket: only makefile() is used."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTPConnection that connects to a pre-resolved address (no DNS) within a deadline."""

    def __init__(self, host: str, port: int, addr: tuple[int, tuple], deadline: float) -> None:
        super().__init__(host, port)
        self._addr = addr
        self._deadline = deadline

    def _tcp_connect(self) -> socket.socket:
        family, sockaddr = self._addr
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.settimeout(_remaining(self._deadline))
            sock.connect(sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        return sock

    def connect(self) -> None:
        self.sock = self._tcp_connect()

    def send(self, data) -> None:  # type: ignore[override]
        if self.sock is not None:
            self.sock.settimeout(_remaining(self._deadline))
        super().send(data)

    def response_class(self, sock, *args, **kwargs):  # type: ignore[override]
        return http.client.HTTPResponse(_DeadlineSocket(sock, self._deadline), *args, **kwargs)


class _PinnedHTTPS(_PinnedHTTP):
    default_port = 443  # so the Host header omits :443

    def connect(self) -> None:
        sock = self._tcp_connect()
        try:
            sock.settimeout(_remaining(self._deadline))  # bounds the whole handshake
            self.sock = _tls_context().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _describe(exc: BaseException) -> str:
    """Short human-readable text for a network failure."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, _ResponseTooLarge):
        return "response too large"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed without response"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP response ({type(exc).__name__})"
    return f"network error: {_reason(exc)}"


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
) -> HttpResult:
    """POST body once. Resolves the host, refuses forbidden addresses (raises UnsafeTarget),
    connects to the first resolved IP (pinned: no second DNS lookup), sends Host/SNI for the
    original hostname, never follows redirects, reads at most 64 KiB of the response and
    enforces `timeout` as an overall deadline. Network errors become HttpResult(status=None,
    error=...).

    Once a status line has been received, a failure while reading the body does not turn the
    result into an error: the status is what counts, the excerpt is simply shorter.
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    start = time.monotonic()
    deadline = start + timeout

    def result(status: int | None, error: str | None, data: bytes = b"") -> HttpResult:
        elapsed = int((time.monotonic() - start) * 1000)
        return HttpResult(status, error, elapsed, _excerpt(data))

    target = _parse(url)
    try:
        addrs = _resolve(target.host, target.port)
    except (OSError, UnicodeError) as exc:
        return result(None, f"DNS lookup failed: {_reason(exc)}")
    _check(target.host, addrs, allow_private)

    send_headers = {k: v for k, v in headers.items() if k.lower() not in _MANAGED_HEADERS}
    send_headers["User-Agent"] = USER_AGENT
    send_headers["Content-Length"] = str(len(body))
    send_headers["Connection"] = "close"

    cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    conn = cls(target.host, target.port, addrs[0], deadline)
    response: http.client.HTTPResponse | None = None
    try:
        try:
            conn.request("POST", target.path, body=body, headers=send_headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException, _ResponseTooLarge) as exc:
            return result(None, _describe(exc))
        data = bytearray()
        try:
            while len(data) < MAX_BODY:
                chunk = response.read1(MAX_BODY - len(data))
                if not chunk:
                    break
                data += chunk
        except (OSError, http.client.HTTPException, _ResponseTooLarge):
            pass  # keep the partial body; the status already tells the outcome
        return result(response.status, _status_error(response.status), bytes(data))
    finally:
        if response is not None:
            response.close()
        conn.close()
