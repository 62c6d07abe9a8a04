"""Every error is a clear status: JSON for API-style requests, a friendly page for forms."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, jsonify, make_response, render_template, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

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
    if wants_json():
        resp = jsonify(error=code or str(status), message=message)
    else:
        resp = make_response(render_template("error.html", status=status, message=message))
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
        resp = error_response(status, message, code=exc.name.lower().replace(" ", "_"))
        original = exc.get_response().headers
        for key in ("Retry-After", "Allow"):
            if key in original:
                resp.headers[key] = original[key]
        if status == 429 and "Retry-After" not in resp.headers:
            resp.headers["Retry-After"] = str(_retry_after())
        return resp

    @app.errorhandler(OperationalError)
    def db_down(exc: OperationalError) -> Response:
        # Database unreachable or locked: a retryable 503, never a stack trace.
        log.error("database unavailable: %s", exc.orig.__class__.__name__ if exc.orig else exc)
        resp = error_response(503, code="unavailable")
        resp.headers["Retry-After"] = "5"
        return resp
