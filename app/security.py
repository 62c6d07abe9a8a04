"""Response headers: framing denied everywhere except embed pages, which list the site's
origins in CSP frame-ancestors (set `g.frame_ancestors` in the view)."""

from __future__ import annotations

from flask import Flask, Response, g, request

EMBED_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'"
)
APP_CSP = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "img-src 'self' data:"
)


def _source(origin: str) -> str:
    # CSP source expressions cannot contain ; or , or spaces: drop anything that does.
    return origin if origin and not any(c in origin for c in " ;,'\"") else ""


def set_headers(response: Response) -> Response:
    """Add the security headers every response carries."""
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    if request.endpoint in ("static", "embed.widget", "embed.widget_versioned"):
        return response
    ancestors = getattr(g, "frame_ancestors", None)
    if ancestors:
        sources = " ".join(s for s in map(_source, ancestors) if s) or "'none'"
        h["Content-Security-Policy"] = f"{EMBED_CSP}; frame-ancestors {sources}"
    else:
        h.setdefault("Content-Security-Policy", f"{APP_CSP}; frame-ancestors 'none'")
        h.setdefault("X-Frame-Options", "DENY")
    return response


def init_app(app: Flask) -> None:
    """Register the header hook."""
    app.after_request(set_headers)
