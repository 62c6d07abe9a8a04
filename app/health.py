"""GET /healthz for load balancers, answered before Flask: no session, no rate limit, no
host check (probes use the instance's address, not the public host), one `SELECT 1` and one
Redis PING.

200 {"status": "ok", ...} when the database answers, 503 when it does not. Redis being down is
reported ("redis": "error", "status": "degraded") but still 200: answers are committed to the
database with their outbox row and the sweep hands them to the workers once Redis is back, so
taking the web process out of rotation would only lose answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from sqlalchemy import text

from .extensions import db

log = logging.getLogger(__name__)
PATH = "/healthz"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def check(app: Flask) -> tuple[int, dict[str, str]]:
    """(status code, body): the database's and Redis' state."""
    body: dict[str, str] = {}
    with app.app_context():
        try:
            db.session.execute(text("SELECT 1"))
            body["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ok"
            log.warning("healthz: database check failed: %s", type(exc).__name__)
            body["database"] = "error"
        finally:
            db.session.remove()
    body["redis"] = _redis_state(app)
    ok = body["database"] == "ok"
    body["status"] = ("ok" if body["redis"] != "error" else "degraded") if ok else "error"
    return (200 if ok else 503), body


def _redis_state(app: Flask) -> str:
    url = app.config.get("REDIS_URL")
    if not url:
        return "not configured"
    client = app.extensions.get("closeloop.health_redis")
    if client is None:
        from redis import Redis

        # Short timeouts: a probe must answer even when Redis is a black hole.
        client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        app.extensions["closeloop.health_redis"] = client
    try:
        client.ping()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ok"
        log.warning("healthz: Redis check failed: %s", type(exc).__name__)
        return "error"


class HealthCheck:
    """WSGI middleware answering GET/HEAD /healthz; everything else goes on to `app`."""

    def __init__(self, app: WSGIApp, flask_app: Flask,
                 extra_headers: list[tuple[str, str]]) -> None:
        self.app = app
        self.flask_app = flask_app
        self.extra_headers = extra_headers

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") not in (
                "GET", "HEAD"):
            return self.app(environ, start_response)
        code, body = check(self.flask_app)
        payload = json.dumps(body).encode()
        start_response(f"{code} {'OK' if code == 200 else 'Service Unavailable'}", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"), *self.extra_headers])
        return [b""] if environ["REQUEST_METHOD"] == "HEAD" else [payload]


def init_app(app: Flask) -> None:
    """Answer /healthz in front of everything but the request log."""
    from .security import STATIC_HEADERS

    app.wsgi_app = HealthCheck(app.wsgi_app, app, STATIC_HEADERS)  # type: ignore[method-assign]
