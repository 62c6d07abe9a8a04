"""Blob storage for uploaded bytes (voice notes, logos): a folder or an S3-compatible bucket.

Everything is stored under a key made by `new_key` (random, URL-safe, never derived from what a
client sent) and checked by `check_key`, so no key can name a path outside the store. Content
under a key never changes: a new upload gets a new key and the old one is deleted, which makes
"key + size" a sound ETag and lets a logo be cached as immutable.

Backends (`STORAGE_URL`):
- "" → the folder `<instance_path>/media`; "file:///abs/dir" → that folder. Writes go to a
  temporary file in the same directory and are renamed into place (`os.replace`), so a reader
  never sees half a file and a crash leaves no partial object under a real key.
- "s3://bucket/prefix" → S3 (or MinIO, Ceph, …: `S3_ENDPOINT_URL`, `S3_REGION`; credentials
  from the usual `AWS_*` variables). Connect/read timeouts and a bounded retry count mean a dead
  endpoint fails a request with `StorageError` within seconds instead of hanging it.

A missing key: `size` → None, `read` → FileNotFoundError, `delete` → nothing. Any other
failure is an OSError (`StorageError` for S3).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

from flask import Flask, Response, abort, current_app, request
from werkzeug.datastructures import ContentRange
from werkzeug.utils import secure_filename

EXTENSION = "closeloop.storage"
# Segments of letters, digits, "_" and "-" joined by "/", then at most one ".ext": no "..",
# no absolute path, no backslash or NUL can get through, whatever the backend.
_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}(?:/[A-Za-z0-9_-]{1,128}){0,7}(?:\.[A-Za-z0-9]{1,16})?")
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}(?:/[A-Za-z0-9_-]{1,64}){0,3}")
_EXT = re.compile(r"[A-Za-z0-9]{1,16}")
# A response body is read from the backend in pieces of this size (one S3 GET each).
CHUNK = 1024 * 1024


class StorageError(OSError):
    """The backend could not be reached or refused the operation (not "missing")."""


class Storage(Protocol):
    """What the app needs from a blob store; keys come from `new_key`."""

    def put(self, key: str, data: bytes, content_type: str) -> None: ...
    def size(self, key: str) -> int | None: ...
    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes: ...
    def delete(self, key: str) -> None: ...


def check_key(key: str) -> str:
    """`key` if it is a well-formed storage key, else ValueError."""
    if not isinstance(key, str) or len(key) > 512 or not _KEY.fullmatch(key):
        raise ValueError(f"invalid storage key: {key!r}")
    return key


def new_key(prefix: str, ext: str) -> str:
    """A fresh random key such as "voice/<32 URL-safe characters>.webm"."""
    if not _PREFIX.fullmatch(prefix) or not _EXT.fullmatch(ext):
        raise ValueError(f"invalid key prefix or extension: {prefix!r}, {ext!r}")
    return f"{prefix}/{secrets.token_urlsafe(24)}.{ext.lower()}"


def _span(start: int, end: int | None) -> tuple[int, int | None]:
    if start < 0 or (end is not None and end < 0):
        raise ValueError("negative offsets")
    return start, end


class FolderStorage:
    """Objects as files under one directory (the default: `<instance>/media`)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write atomically: a temporary file beside the target, fsynced, renamed into place."""
        path = self._path(key)
        # Owner-only, every level from the root down (mkdir(parents=True) would give the
        # intermediate ones the default mode): the store holds customers' voices.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = self.root
        for part in path.relative_to(self.root).parent.parts:
            folder = folder / part
            folder.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def size(self, key: str) -> int | None:
        """Size in bytes, None when missing."""
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) (to the end when `end` is None); FileNotFoundError when missing."""
        start, end = _span(start, end)
        with open(self._path(key), "rb") as fh:
            fh.seek(start)
            return fh.read() if end is None else fh.read(max(0, end - start))

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""
        self._path(key).unlink(missing_ok=True)


class S3Storage:
    """Objects in an S3-compatible bucket under an optional prefix."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, connect_timeout: float = 5,
                 read_timeout: float = 30, max_attempts: int = 3) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._options = dict(endpoint_url=endpoint_url or None, region_name=region or None)
        self._timeouts = (connect_timeout, read_timeout, max_attempts)
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use (clients are thread-safe; creating one is slow)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config

                    connect, read, attempts = self._timeouts
                    config = Config(connect_timeout=connect, read_timeout=read,
                                    retries={"max_attempts": attempts, "mode": "standard"},
                                    # Path-style works with every S3-compatible server.
                                    s3={"addressing_style": "path"}
                                    if self._options["endpoint_url"] else {})
                    self._client = boto3.session.Session().client("s3", config=config,
                                                                  **self._options)
        return self._client

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, op: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "NotFound", "404") or status == 404:
                raise FileNotFoundError(kwargs.get("Key", "")) from None
            if code == "InvalidRange" or status == 416:
                raise _InvalidRange from None
            raise StorageError(f"S3 {op} failed: {code or status}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 {op} failed: {exc}") from exc

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store the object (S3 writes are atomic: readers see the old or the new, never half)."""
        self._call("put_object", Key=self._key(key), Body=data, ContentType=content_type)

    def size(self, key: str) -> int | None:
        """Size in bytes from HEAD, None when missing."""
        try:
            head = self._call("head_object", Key=self._key(key))
        except FileNotFoundError:
            return None
        return int(head["ContentLength"])

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) by a ranged GET; FileNotFoundError when missing."""
        start, end = _span(start, end)
        if end is not None and end <= start:
            self._call("head_object", Key=self._key(key))  # still say "missing" when it is
            return b""
        rng = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            obj = self._call("get_object", Key=self._key(key), Range=rng)
        except _InvalidRange:
            return b""  # start at or past the end: nothing there, like a file read
        body = obj["Body"]
        try:
            data: bytes = body.read()
        except Exception as exc:  # a connection dropped mid-body: urllib3/botocore errors
            raise StorageError(f"S3 read failed: {exc}") from exc
        finally:
            body.close()
        return data

    def delete(self, key: str) -> None:
        """Remove the object; S3 answers a missing key like a deleted one."""
        try:
            self._call("delete_object", Key=self._key(key))
        except FileNotFoundError:
            pass


class _InvalidRange(Exception):
    """S3 answered 416: the requested start is at or past the object's end."""


def from_config(app: Flask) -> Storage:
    """The backend STORAGE_URL names (see the module docstring)."""
    cfg = app.config
    url = (cfg.get("STORAGE_URL") or "").strip()
    if not url:
        return FolderStorage(os.path.join(app.instance_path, "media"))
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not os.path.isabs(path):
            raise RuntimeError(f"STORAGE_URL {url!r}: a file URL needs an absolute path, "
                               "e.g. file:///var/lib/closeloop/media")
        return FolderStorage(path)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise RuntimeError(f"STORAGE_URL {url!r}: name the bucket, e.g. s3://bucket/prefix")
        return S3Storage(parts.netloc, unquote(parts.path), endpoint_url=cfg.get("S3_ENDPOINT_URL"),
                         region=cfg.get("S3_REGION"),
                         connect_timeout=float(cfg.get("S3_CONNECT_TIMEOUT", 5)),
                         read_timeout=float(cfg.get("S3_READ_TIMEOUT", 30)),
                         max_attempts=int(cfg.get("S3_MAX_ATTEMPTS", 3)))
    raise RuntimeError(f"STORAGE_URL {url!r}: use file:///abs/dir, s3://bucket/prefix or nothing")


def init_app(app: Flask) -> None:
    """Register the configured backend as app.extensions["closeloop.storage"]."""
    app.extensions[EXTENSION] = from_config(app)


def storage() -> Storage:
    """The current app's backend."""
    backend: Storage = current_app.extensions[EXTENSION]
    return backend


def etag_for(key: str, size: int) -> str:
    """A strong validator: content under a key never changes, so key and size identify it."""
    return hashlib.sha256(f"{key}\0{size}".encode()).hexdigest()[:32]


def content_disposition(download_name: str) -> str:
    """`inline` with an ASCII-only filename, plus RFC 5987 `filename*` when that lost anything."""
    # Control characters and path separators never reach the header, in either form.
    cleaned = "".join(c for c in download_name if c.isprintable() and c not in "/\\")[:150]
    ascii_name = secure_filename(cleaned)[:100] or "file"
    value = f'inline; filename="{ascii_name}"'
    if cleaned and cleaned != ascii_name:
        value += "; filename*=UTF-8''" + quote(cleaned, safe="")
    return value


def send_stored(key: str, content_type: str, download_name: str, *,
                max_age: int | None = None) -> Response:
    """Serve a stored object to the current request: 200, 206 for one byte range, 416, or 304.

    `Cache-Control: private, no-store` unless `max_age` is given, for public content only
    (a logo): then `public, max-age=…, immutable`, safe because a key's content never changes.
    A missing object is a 404.
    """
    backend = storage()
    try:
        size = backend.size(key)
    except ValueError:  # not a key we could have made: as missing as a deleted one
        abort(404)
    if size is None:
        abort(404)
    etag = etag_for(key, size)
    headers = {
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": content_disposition(download_name),
        "Cache-Control": (f"public, max-age={int(max_age)}, immutable" if max_age
                          else "private, no-store"),
        # Opened on its own, the object is never a document that could run anything.
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    if request.if_none_match.contains_weak(etag):  # also "*"; weak comparison, as RFC 9110 says
        resp = Response(status=304, headers=headers)
        resp.set_etag(etag)
        return resp

    start, stop, status = 0, size, 200
    rng = request.range
    # If-Range with another (or a date) validator: the client's partial copy is stale, send all.
    # If-Range compares strongly (RFC 9110 13.1.5): a weak validator never matches.
    if_range = request.if_range
    weak = request.headers.get("If-Range", "").lstrip().startswith("W/")
    stale = bool(if_range.etag or if_range.date) and (weak or if_range.etag != etag)
    if rng is not None and rng.units == "bytes" and len(rng.ranges) == 1 and not stale:
        first, last = rng.ranges[0]  # werkzeug: [first, last) or (-n, None) for a suffix
        if first < 0:  # "bytes=-n": the last n bytes, all of them when n exceeds the size
            first = max(0, size + first)
        last = size if last is None else min(last, size)
        if first >= size or size == 0:
            resp = Response(status=416, headers=headers)
            resp.content_range = ContentRange("bytes", None, None, size)
            resp.set_etag(etag)
            return resp
        start, stop, status = first, last, 206
    # Multiple ranges: the whole object (allowed by RFC 9110, and no multipart bodies to get wrong).

    if request.method == "HEAD":  # the headers only: no read (an S3 GET) for a body never sent
        head = b""
    else:
        try:
            head = backend.read(key, start, min(stop, start + CHUNK))
        except FileNotFoundError:  # deleted between size() and read()
            abort(404)

    def body() -> Any:
        yield head
        pos = start + len(head)
        while pos < stop:
            piece = backend.read(key, pos, min(stop, pos + CHUNK))
            if not piece:
                return
            yield piece
            pos += len(piece)

    streamed = request.method != "HEAD" and stop - start > len(head)
    resp = Response(body() if streamed else [head], status=status,
                    headers=headers, mimetype=None, content_type=content_type,
                    direct_passthrough=True)
    resp.content_length = stop - start
    if status == 206:
        resp.content_range = ContentRange("bytes", start, stop, size)
    resp.set_etag(etag)
    return resp
