"""Every error is a clear status: JSON for API-style requests, a friendly page for forms.

A database that cannot be reached is a 503 with Retry-After; every other exception is a 500,
logged with its traceback and the request id (which the response carries in X-Request-ID)."""

from __future__ import annotations

import logging
import sqlite3
import time

from flask import Flask, Response, current_app, jsonify, make_response, render_template, request
from flask.globals import request_ctx
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException, SecurityError

from . import logs
from .extensions import limiter

log = logging.getLogger(__name__)

FRIENDLY = {
    400: "Something in this request was not right.",
    403: "This page is not available from here.",
    404: "We could not find that page.",
    405: "That action is not allowed here.",
    413: "The request body is too large.",
    429: "Too many requests. Please wait a moment and try again.",
    500: "Something went wrong on our side.",
    503: "We are briefly unavailable. Please try again in a moment.",
}


def wants_json() -> bool:
    """API-style callers get JSON errors; browsers get a page."""
    if request.path.startswith(("/e/", "/api/")) or request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(status: int, message: str | None = None, code: str | None = None) -> Response:
    """The JSON or HTML error response for `status`, with a message safe to show."""
    message = message or FRIENDLY.get(status, "Request failed.")
    # Server-side failures name the request id, so a report can be matched to the log line.
    rid = request.environ.get("closeloop.request_id") if status >= 500 else None
    if wants_json():
        body = {"error": code or str(status), "message": message}
        resp = jsonify({**body, "request_id": rid} if rid else body)
    elif request_ctx.url_adapter is None:  # an untrusted Host: no URL can be built for a page
        resp = make_response(message, {"Content-Type": "text/plain; charset=utf-8"})
    else:
        resp = make_response(render_template("error.html", status=status, message=message,
                                             request_id=rid))
    resp.status_code = status
    return resp


def _retry_after() -> int:
    """Seconds until the breached limit's window resets (one storage look-up, only on 429)."""
    try:
        current = limiter.current_limit
        if current is not None:
            return max(1, int(current.reset_at - time.time()) + 1)
    except Exception:  # noqa: BLE001 - storage down: a safe default
        log.warning("could not read the rate-limit window", exc_info=True)
    return 60


def init_app(app: Flask) -> None:
    """Register the handlers."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        # Our own 400s carry a customer-safe description; others get the stock sentence.
        message = exc.description if status == 400 else None
        if isinstance(exc, SecurityError):  # Host not in TRUSTED_HOSTS: do not echo it back
            message = "This service does not answer to that host name."
        resp = error_response(status, message, code=exc.name.lower().replace(" ", "_"))
        original = exc.get_response().headers
        for key in ("Retry-After", "Allow"):
            if key in original:
                resp.headers[key] = original[key]
        if status == 429 and "Retry-After" not in resp.headers:
            resp.headers["Retry-After"] = str(_retry_after())
        return resp

    @app.errorhandler(Exception)
    def unhandled(exc: Exception) -> Response:
        # Only a database we cannot reach (or that is locked) is a retryable 503; anything
        # else, a missing table among them, is a bug: a 500 logged with its traceback and the
        # request id, which the page shows so a report can be matched to the log line.
        if is_connection_error(exc):
            log.error("database unavailable: %s", _describe(exc))
            resp = error_response(503, code="unavailable")
            resp.headers["Retry-After"] = "5"
            return resp
        propagate = current_app.config["PROPAGATE_EXCEPTIONS"]
        if propagate or (propagate is None and (current_app.testing or current_app.debug)):
            raise exc  # tests and the debugger see the exception itself (as Flask does)
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method,
                  logs.safe_path(request.path), exc_info=exc)
        return error_response(500, code="internal_error")


# SQLSTATE classes/codes that mean "no usable connection": 08 connection exceptions, the
# server shutting down or starting (57P01-57P03), too many connections (53300).
_PG_CONNECTION_STATES = ("08", "57P01", "57P02", "57P03", "53300")
_SQLITE_UNAVAILABLE = ("database is locked", "database table is locked", "unable to open")


def is_connection_error(exc: BaseException) -> bool:
    """True for database errors that mean "unreachable or busy, try again": PostgreSQL
    refusing or dropping the connection, SQLite locked or not openable. Everything else
    (no such table, a constraint, a syntax error) is a bug, not an outage."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if type(orig).__module__.startswith("sqlite3"):
        return isinstance(orig, sqlite3.OperationalError) and str(orig).startswith(
            _SQLITE_UNAVAILABLE)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    if isinstance(orig, psycopg.OperationalError):
        state = getattr(orig, "sqlstate", None)
        # No SQLSTATE: the client library failed (refused, reset, timed out) before a server
        # could answer.
        return state is None or state.startswith(_PG_CONNECTION_STATES)
    return False


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    first_line = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first_line}"[:300]
