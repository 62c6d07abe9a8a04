"""app/storage.py: one behaviour suite over the folder backend and S3 (a real moto server on
127.0.0.1), key checks, send_stored's ranges and headers, and a dead S3 failing instead of
hanging."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app, storage
from app.storage import FolderStorage, S3Storage, StorageError, check_key, new_key, send_stored

from .conftest import base_config, free_port, need

DATA = bytes(range(256)) * 4 + b"tail"  # 1028 bytes, every byte value, no two offsets alike


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's server mode) on a free loopback port."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - moto[server] is a test dependency
        need("moto[server]", False, str(exc))
        raise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path) -> None:
    """Dummy credentials, and no developer's ~/.aws files or real AWS profile."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_SESSION_TOKEN", "testing"), ("AWS_DEFAULT_REGION", "us-east-1"),
                        ("AWS_CONFIG_FILE", str(tmp_path / "none")),
                        ("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _bucket(endpoint: str) -> str:
    import boto3

    name = f"closeloop-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["folder", "s3"])
def storage_app(request, tmp_path, aws_env) -> Flask:
    """An app whose STORAGE_URL is a folder or an S3 bucket, with a tiny route serving keys."""
    if request.param == "folder":
        cfg = {"STORAGE_URL": (tmp_path / "media").as_uri()}
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        cfg = {"STORAGE_URL": f"s3://{_bucket(endpoint)}/some/prefix",
               "S3_ENDPOINT_URL": endpoint, "S3_REGION": "us-east-1"}
    app = create_app(base_config(SQLALCHEMY_DATABASE_URI="sqlite://", **cfg))

    @app.get("/blob/<path:key>")
    def blob(key: str) -> Any:
        return send_stored(key, "audio/webm", "Kundenstimme “Müller”.webm")

    return app


@pytest.fixture
def store(storage_app: Flask) -> Iterator[storage.Storage]:
    with storage_app.app_context():
        yield storage.storage()


def test_backend_is_the_configured_one(storage_app: Flask) -> None:
    with storage_app.app_context():
        backend = storage.storage()
    url = storage_app.config["STORAGE_URL"]
    assert isinstance(backend, FolderStorage if url.startswith("file:") else S3Storage)


def test_put_size_read_delete(store: storage.Storage) -> None:
    key = new_key("voice", "webm")
    assert store.size(key) is None
    store.put(key, DATA, "audio/webm")
    assert store.size(key) == len(DATA)
    assert store.read(key) == DATA
    assert store.read(key, 0, 1) == DATA[:1]
    assert store.read(key, 10, 20) == DATA[10:20]
    assert store.read(key, 1000) == DATA[1000:]
    assert store.read(key, 1000, 5000) == DATA[1000:]  # an end past the object is its end
    assert store.read(key, len(DATA)) == b""  # at the end: nothing, not an error
    assert store.read(key, 5000) == b""
    assert store.read(key, 7, 7) == b""
    store.put(key, b"new", "audio/webm")  # replaced whole
    assert store.read(key) == b"new" and store.size(key) == 3
    store.delete(key)
    assert store.size(key) is None
    store.delete(key)  # missing is not an error
    with pytest.raises(FileNotFoundError):
        store.read(key)
    with pytest.raises(FileNotFoundError):
        store.read(key, 3, 3)


def test_empty_object(store: storage.Storage) -> None:
    key = new_key("logo", "png")
    store.put(key, b"", "image/png")
    assert store.size(key) == 0
    assert store.read(key) == b""


def test_keys_are_separate(store: storage.Storage) -> None:
    a, b = new_key("voice", "webm"), new_key("voice", "webm")
    store.put(a, b"a", "audio/webm")
    store.put(b, b"b", "audio/webm")
    store.delete(a)
    assert store.read(b) == b"b" and store.size(a) is None


BAD_KEYS = ["../x", "../../x", "a/../b", "/etc/passwd", "a\\b", "a\0b", "a..b", "a/b.c.d",
            "", "a//b", "a/", ".", "..", "a/./b", "voice/x.web m", "voice/x.", "~/x", "a:b",
            "a" * 600, "voice/ü.webm", "x\n"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused(store: storage.Storage, key: str, tmp_path: Path) -> None:
    before = sorted(tmp_path.rglob("*"))
    for call in (lambda: store.put(key, b"x", "text/plain"), lambda: store.size(key),
                 lambda: store.read(key), lambda: store.delete(key)):
        with pytest.raises(ValueError):
            call()
    assert sorted(tmp_path.rglob("*")) == before  # nothing written anywhere


def test_new_key() -> None:
    keys = {new_key("voice", "webm") for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert check_key(key) == key
        assert key.startswith("voice/") and key.endswith(".webm") and len(key) == 6 + 32 + 5
    assert new_key("brand/logos", "PNG").endswith(".png")
    for prefix, ext in (("../x", "png"), ("/abs", "png"), ("a", "p.ng"), ("a", ""), ("", "png"),
                        ("a", "../x")):
        with pytest.raises(ValueError):
            new_key(prefix, ext)


def test_folder_writes_atomically_and_privately(tmp_path: Path) -> None:
    store = FolderStorage(tmp_path / "media")
    key = new_key("voice/2026", "webm")
    store.put(key, DATA, "audio/webm")
    path = tmp_path / "media" / key
    assert path.read_bytes() == DATA
    for private in (path, tmp_path / "media", tmp_path / "media" / "voice", path.parent):
        assert private.stat().st_mode & 0o077 == 0, private
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_folder_failed_write_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    store = FolderStorage(tmp_path / "media")
    key = new_key("voice", "webm")
    store.put(key, b"old", "audio/webm")

    def broken(*_a: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        store.put(key, DATA, "audio/webm")
    assert store.read(key) == b"old"  # the old object whole, no half-written new one
    assert len(list((tmp_path / "media" / "voice").iterdir())) == 1


def test_config(tmp_path: Path) -> None:
    app = create_app(base_config(SQLALCHEMY_DATABASE_URI="sqlite://"))
    backend = app.extensions[storage.EXTENSION]
    assert isinstance(backend, FolderStorage)
    assert backend.root == (Path(app.instance_path) / "media").resolve()
    for bad in ("file://relative/dir", "ftp://x/y", "s3:///prefix", "/plain/path"):
        with pytest.raises(RuntimeError):
            create_app(base_config(SQLALCHEMY_DATABASE_URI="sqlite://", STORAGE_URL=bad))
    app = create_app(base_config(SQLALCHEMY_DATABASE_URI="sqlite://",
                                 STORAGE_URL="s3://bucket/a/b/", S3_REGION="eu-west-1",
                                 S3_CONNECT_TIMEOUT=2, S3_READ_TIMEOUT=7, S3_MAX_ATTEMPTS=2))
    backend = app.extensions[storage.EXTENSION]
    assert isinstance(backend, S3Storage)
    assert (backend.bucket, backend.prefix) == ("bucket", "a/b/")


# -- send_stored -------------------------------------------------------------------------------


@pytest.fixture
def served(storage_app: Flask) -> tuple[Any, str]:
    """The test client and the key of DATA stored as a voice note."""
    key = new_key("voice", "webm")
    with storage_app.app_context():
        storage.storage().put(key, DATA, "audio/webm")
    return storage_app.test_client(), key


def test_send_full(served: tuple[Any, str]) -> None:
    client, key = served
    resp = client.get(f"/blob/{key}")
    assert resp.status_code == 200
    assert resp.data == DATA
    h = resp.headers
    assert h["Content-Type"] == "audio/webm"
    assert h["Content-Length"] == str(len(DATA))
    assert h["Accept-Ranges"] == "bytes"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Cache-Control"] == "private, no-store"
    assert h["ETag"].startswith('"') and len(h["ETag"]) > 10
    assert "Content-Range" not in h
    disposition = h["Content-Disposition"]
    assert disposition.startswith('inline; filename="')
    assert disposition.isascii()
    assert "filename*=UTF-8''Kundenstimme%20%E2%80%9CM%C3%BCller%E2%80%9D.webm" in disposition
    head = client.head(f"/blob/{key}")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(DATA))
    assert head.headers["ETag"] == h["ETag"]
    head = client.head(f"/blob/{key}", headers={"Range": "bytes=10-19"})
    assert head.status_code == 206 and head.data == b""
    assert head.headers["Content-Length"] == "10"
    assert head.headers["Content-Range"] == f"bytes 10-19/{len(DATA)}"


@pytest.mark.parametrize(("header", "first", "stop"), [
    ("bytes=0-0", 0, 1), ("bytes=2-5", 2, 6), ("bytes=1000-", 1000, 1028), ("bytes=-4", 1024, 1028),
    ("bytes=1020-99999", 1020, 1028), ("bytes=-5000", 0, 1028), ("bytes=0-", 0, 1028),
])
def test_send_one_range(served: tuple[Any, str], header: str, first: int, stop: int) -> None:
    client, key = served
    resp = client.get(f"/blob/{key}", headers={"Range": header})
    assert resp.status_code == 206
    assert resp.data == DATA[first:stop]
    assert resp.headers["Content-Range"] == f"bytes {first}-{stop - 1}/{len(DATA)}"
    assert resp.headers["Content-Length"] == str(stop - first)
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("header", ["bytes=1028-", "bytes=5000-6000"])
def test_send_unsatisfiable(served: tuple[Any, str], header: str) -> None:
    client, key = served
    resp = client.get(f"/blob/{key}", headers={"Range": header})
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(DATA)}"
    assert resp.data == b""


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=9-2", "bytes=x-y",
                                    "bytes=--1", "garbage"])
def test_send_other_ranges_get_everything(served: tuple[Any, str], header: str) -> None:
    client, key = served
    resp = client.get(f"/blob/{key}", headers={"Range": header})
    assert resp.status_code == 200
    assert resp.data == DATA


def test_send_conditionals(served: tuple[Any, str]) -> None:
    client, key = served
    etag = client.get(f"/blob/{key}").headers["ETag"]
    resp = client.get(f"/blob/{key}", headers={"If-None-Match": etag})
    assert resp.status_code == 304 and resp.data == b""
    assert resp.headers["ETag"] == etag
    assert client.get(f"/blob/{key}", headers={"If-None-Match": '"other"'}).status_code == 200
    same = client.get(f"/blob/{key}", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert same.status_code == 206 and same.data == DATA[:10]
    # The client's partial copy is of another version (or dated): the whole object.
    for validator in ('"other"', "Wed, 21 Oct 2015 07:28:00 GMT", "W/" + etag):
        stale = client.get(f"/blob/{key}", headers={"Range": "bytes=0-9", "If-Range": validator})
        assert stale.status_code == 200 and stale.data == DATA


def test_send_missing_and_forged(served: tuple[Any, str]) -> None:
    client, _key = served
    for path in (new_key("voice", "webm"), "voice/..%2F..%2Fetc.webm", "a..b"):
        assert client.get(f"/blob/{path}").status_code == 404


def test_send_streams_in_chunks(served: tuple[Any, str], storage_app: Flask,
                                monkeypatch) -> None:
    client, key = served
    monkeypatch.setattr(storage, "CHUNK", 100)  # DATA is then 11 backend reads
    assert client.get(f"/blob/{key}").data == DATA
    resp = client.get(f"/blob/{key}", headers={"Range": "bytes=150-949"})
    assert resp.status_code == 206 and resp.data == DATA[150:950]


def test_public_caching_for_logos(storage_app: Flask) -> None:
    key = new_key("logo", "png")
    with storage_app.app_context():
        storage.storage().put(key, b"\x89PNG", "image/png")
        with storage_app.test_request_context(f"/x/{key}"):
            resp = send_stored(key, "image/png", "logo.png", max_age=31536000)
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"


# -- a dead S3 ---------------------------------------------------------------------------------


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (a hung S3 or proxy)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        srv.close()


@pytest.mark.parametrize("endpoint_kind", ["refused", "silent"])
def test_dead_s3_fails_instead_of_hanging(aws_env, black_hole: str, endpoint_kind: str) -> None:
    endpoint = black_hole if endpoint_kind == "silent" else f"http://127.0.0.1:{free_port()}"
    store = S3Storage("bucket", endpoint_url=endpoint, region="us-east-1",
                      connect_timeout=0.5, read_timeout=0.5, max_attempts=2)
    assert store.client.meta.config.read_timeout == 0.5
    assert store.client.meta.config.connect_timeout == 0.5
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            store.put(new_key("voice", "webm"), b"x", "audio/webm")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    # A bound against hanging the suite, far above the configured 2 × 0.5 s, not a measurement.
    worker.join(60)
    assert not worker.is_alive(), "S3Storage.put hung on a dead endpoint"
    assert isinstance(outcome[0], StorageError)
    assert isinstance(outcome[0], OSError)


def test_head_reads_no_bytes(served: tuple[Any, str], storage_app: Flask, monkeypatch) -> None:
    """HEAD answers from the size alone: no read (for S3, no GET) for a body never sent."""
    client, key = served
    with storage_app.app_context():
        backend = storage.storage()

    def no_read(*_a: Any, **_k: Any) -> bytes:
        raise AssertionError("HEAD read the object")

    monkeypatch.setattr(backend, "read", no_read)
    resp = client.head(f"/blob/{key}")
    assert resp.status_code == 200 and resp.headers["Content-Length"] == str(len(DATA))
