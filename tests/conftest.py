"""Fixtures: app/client/runner on a fresh database per test (SQLite always; PostgreSQL and
Redis when running, and required when CI=true), an RQ worker, and token helpers."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app import sites as site_ops
from app.extensions import db
from app.models import Site

CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ORIGIN = "https://shop.example"


@pytest.fixture(autouse=True, scope="session")
def _own_instance_folder(tmp_path_factory) -> Iterator[None]:
    """Every app and every `flask` subprocess of this session (their env copies os.environ)
    gets an empty instance folder: the developer's instance/config.py never changes a test."""
    before = os.environ.get("CLOSELOOP_INSTANCE_PATH")
    os.environ["CLOSELOOP_INSTANCE_PATH"] = str(tmp_path_factory.mktemp("instance"))
    yield
    if before is None:
        os.environ.pop("CLOSELOOP_INSTANCE_PATH", None)
    else:
        os.environ["CLOSELOOP_INSTANCE_PATH"] = before


def need(service: str, reachable: bool, why: str = "") -> None:
    """Skip on a laptop without `service`; fail in CI, where every service must be there."""
    if reachable:
        return
    message = f"{service} is not reachable{': ' + why if why else ''}"
    if CI:
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def base_config(**overrides: Any) -> dict[str, Any]:
    """Test settings; each test gets its own app."""
    cfg: dict[str, Any] = {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "PUBLIC_BASE_URL": "http://localhost",  # the test client's host; links are built on it
        "RATELIMIT_STORAGE_URI": "memory://",
        "DEMO_ENABLED": True,
        "SESSION_COOKIE_SECURE": False,
    }
    cfg.update(overrides)
    return cfg


# -- databases --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test session."""
    need("PostgreSQL at 127.0.0.1:5432", _port_open("127.0.0.1", 5432))
    import sqlalchemy as sa

    name = f"closeloop_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
            ), {"n": name})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def redis_url() -> str:
    """Real Redis, test database flushed before the test."""
    need("Redis at 127.0.0.1:6379", _port_open("127.0.0.1", 6379))
    from redis import Redis

    r = Redis.from_url(REDIS_URL)
    r.flushdb()
    r.close()
    return REDIS_URL


def _make_app(uri: str, **overrides: Any) -> Iterator[Flask]:
    app = create_app(base_config(SQLALCHEMY_DATABASE_URI=uri, **overrides))
    with app.app_context():
        db.drop_all()
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


@pytest.fixture
def make_app(tmp_path, request) -> Iterator[Any]:
    """Factory: make_app(db="sqlite"|"postgres", **config) -> app with a fresh schema."""
    made: list[Iterator[Flask]] = []

    def factory(db_kind: str = "sqlite", **overrides: Any) -> Flask:
        if db_kind == "postgres":
            uri = request.getfixturevalue("pg_url")
        else:
            uri = f"sqlite:///{tmp_path}/test-{len(made)}.sqlite3"
        gen = _make_app(uri, **overrides)
        made.append(gen)
        return next(gen)

    yield factory
    for gen in made:
        next(gen, None)


@pytest.fixture(params=["sqlite", "postgres"])
def db_kind(request) -> str:
    """Run a test once per supported database."""
    return request.param


@pytest.fixture
def app(make_app) -> Flask:
    """SQLite app, jobs run synchronously after commit (no Redis)."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()


@pytest.fixture
def site(app: Flask) -> Site:
    """A site with the default moments, embeddable from https://shop.example."""
    with app.app_context():
        s = site_ops.create("Test shop", [ORIGIN], review_url="https://reviews.example/shop",
                            support_contact="help@shop.example")
        db.session.refresh(s)
        db.session.expunge(s)
        return s


def make_site(app: Flask, origins: list[str] | None = None, **kw: Any) -> Site:
    """Create a site in `app` and return it detached."""
    with app.app_context():
        s = site_ops.create(kw.pop("name", "Shop"), origins or [ORIGIN], **kw)
        db.session.refresh(s)
        db.session.expunge(s)
        return s


# -- tokens ----------------------------------------------------------------------------------


def public_prompt(client: FlaskClient, site: Site, moment: str = "checkout",
                  origin: str = ORIGIN, **context: Any) -> str:
    """Ask /e/prompt like the widget does; returns the prompt path (/p/<token>)."""
    body = {"site": site.public_key, "moment": moment, "vid": uuid.uuid4().hex, **context}
    import json

    resp = client.post("/e/prompt", data=json.dumps(body), headers={"Origin": origin,
                                                                  "Content-Type": "text/plain"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.json["show"] is True, resp.json
    return "/p/" + resp.json["url"].rsplit("/p/", 1)[1]


def verified_token(site: Site, salt: str = "closeloop.prompt.v1", key: str | None = None,
                   **payload: Any) -> str:
    """Mint a token exactly as the README tells merchants to (itsdangerous only)."""
    from itsdangerous import URLSafeTimedSerializer

    data = {"site": site.public_key, "moment": "delivery", "channel": "email", **payload}
    return URLSafeTimedSerializer(key or site.signing_secrets[-1], salt=salt).dumps(data)


def run_worker(app: Flask, topic: str | None = None) -> int:
    """Run a real RQ SimpleWorker in burst mode; returns how many jobs it ran (of `topic`
    only, when given: how many follow-ups run as jobs of their own depends on timing)."""
    from app import jobs as app_jobs
    from app.jobs.rqwork import AppSimpleWorker

    with app.app_context():
        jobs = app_jobs.backend()
        executed: list[str] = []

        class Counting(AppSimpleWorker):
            def perform_job(self, job, q, execution):
                executed.append(job.id)
                return super().perform_job(job, q, execution)

        Counting([jobs.rq_queue], connection=jobs.redis, app=app).work(
            burst=True, with_scheduler=False)
        return len([j for j in executed if topic is None or j.startswith(topic + "-")])


def login(client: FlaskClient, email: str, password: str, **kw: Any):
    """Sign in through the real form, CSRF token included (`kw`: e.g. base_url)."""
    import re

    page = client.get("/admin/login", **kw).get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    return client.post("/admin/login", data={"email": email, "password": password,
                                             "csrf_token": token}, **kw)


# -- real SMTP and HTTP peers on 127.0.0.1 ------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    """What a real SMTP server (aiosmtpd) received: (mail_from, rcpt_tos, parsed message)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Any]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        from email import message_from_bytes, policy

        msg = message_from_bytes(envelope.original_content or envelope.content,
                                 policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"

    def to(self, addr: str) -> list[Any]:
        """Messages whose envelope went to `addr`."""
        return [m for _f, rcpts, m in self.messages if addr in rcpts]


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, Mailbox]]:
    """A real SMTP server on 127.0.0.1: yields (port, mailbox)."""
    from aiosmtpd.controller import Controller

    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, box
    finally:
        controller.stop()


class Receiver:
    """A real HTTP server on 127.0.0.1 recording webhook requests. Paths: /ok → 204,
    /fail → 500, /hang → never answers (until the test ends), /redirect → 302 to /ok."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append((self.path, dict(self.headers.items()), body))
                if self.path.startswith("/hang"):
                    receiver.release.wait(30)
                    return
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/ok")
                elif self.path.startswith("/fail"):
                    self.send_response(500)
                else:
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        """Absolute URL of a path on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, prefix: str) -> list[tuple[str, dict[str, str], bytes]]:
        """Requests whose path starts with `prefix`."""
        return [r for r in self.requests if r[0].startswith(prefix)]

    def close(self) -> None:
        """Stop serving and release hanging handlers."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real webhook receiver on 127.0.0.1."""
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def clock() -> Iterator[Any]:
    """Controls the app clock: `clock.set(dt)`, `clock.advance(timedelta)`; restored after."""
    from datetime import UTC, datetime

    from app.models import set_clock

    class Clock:
        def __init__(self) -> None:
            self.now = datetime.now(UTC).replace(microsecond=0)

        def set(self, dt: datetime) -> None:
            self.now = dt

        def advance(self, delta: Any) -> datetime:
            self.now = self.now + delta
            return self.now

    c = Clock()
    set_clock(lambda: c.now)
    try:
        yield c
    finally:
        set_clock(None)
