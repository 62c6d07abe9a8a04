"""Static assets under content-hash URLs (cached for a year), and small template helpers."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from flask import Flask, Response, request, url_for

STATIC = Path(__file__).parent / "static"


@cache
def _digest(name: str) -> str:
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]


def asset_url(name: str) -> str:
    """URL of a static file with its content hash, so it can be cached as immutable."""
    return url_for("static", filename=name, v=_digest(name))


def contact_href(contact: str | None) -> str | None:
    """A safe link for a support contact: mailto for an address, http(s) as is, else none."""
    if not contact:
        return None
    if contact.startswith(("https://", "http://")):
        return contact
    if "@" in contact and not any(c in contact for c in " <>\"'\r\n:/"):
        return "mailto:" + contact
    return None


def _immutable(resp: Response) -> Response:
    if request.endpoint == "static" and request.args.get("v"):
        resp.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return resp


def init_app(app: Flask) -> None:
    """Register the template helpers and the caching hook."""
    app.jinja_env.globals["asset_url"] = asset_url
    app.jinja_env.filters["contact_href"] = contact_href
    app.after_request(_immutable)
