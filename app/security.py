"""Response headers: framing denied everywhere except embed pages, which list the site's
origins in CSP frame-ancestors (set `g.frame_ancestors` in the view)."""

from __future__ import annotations

from flask import Flask, Response, g, request
from flask.sessions import SecureCookieSessionInterface

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


# What every response carries, also those served before Flask (the widget fast path).
STATIC_HEADERS = [("X-Content-Type-Options", "nosniff"),
                  ("Referrer-Policy", "strict-origin-when-cross-origin")]


def set_headers(response: Response) -> Response:
    """Add the security headers every response carries."""
    h = response.headers
    for key, value in STATIC_HEADERS:
        h.setdefault(key, value)
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


class NoCookiesOnEmbed(SecureCookieSessionInterface):
    """Embed pages and static files never use the session: no Set-Cookie and no
    `Vary: Cookie` there (other extensions peek at the session on every request), so they
    work with third-party cookies blocked and stay cacheable by shared caches."""

    def save_session(self, app: Flask, session, response: Response) -> None:  # type: ignore[no-untyped-def]
        if request.blueprint == "embed" or request.endpoint == "static":
            return
        super().save_session(app, session, response)


def init_app(app: Flask) -> None:
    """Register the header hook and the session interface."""
    app.session_interface = NoCookiesOnEmbed()
    app.after_request(set_headers)
