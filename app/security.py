"""Response headers and the public URL.

- Framing denied everywhere except embed pages, which list the site's origins in CSP
  frame-ancestors (set `g.frame_ancestors` in the view).
- HSTS on responses served over HTTPS (behind a proxy: PROXY_FIX_X_FOR, which trusts its
  X-Forwarded-Proto); `Cache-Control: no-store` on every page Flask renders (staff pages,
  prompt forms carrying a token, thank-you pages, anything with a session) unless the view set
  its own; static files and the widget keep their long cache lifetimes.
- `public_url`: absolute links are built from PUBLIC_BASE_URL, never from the Host header
  (which Flask also checks against TRUSTED_HOSTS: a forged Host is a 400).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, has_request_context, request, url_for
from flask.sessions import SecureCookieSessionInterface

log = logging.getLogger(__name__)
DEV_BASE_URL = "http://127.0.0.1:5000"

EMBED_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "media-src blob:; connect-src 'self'; form-action 'self'; base-uri 'none'"
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
    hsts = current_app.config["HSTS_SECONDS"]
    if hsts and request.is_secure:
        h.setdefault("Strict-Transport-Security", f"max-age={int(hsts)}")
    if request.endpoint in ("static", "embed.widget", "embed.widget_versioned"):
        return response
    # Pages carry prompt tokens, public ids, CSRF tokens or staff data: never stored by a
    # browser or a shared cache (a view that wants caching sets its own Cache-Control).
    h.setdefault("Cache-Control", "no-store")
    ancestors = getattr(g, "frame_ancestors", None)
    # Inline <style> elements this page carries (the site's accent, app/branding.py), each
    # allowed by its hash: style-src never needs 'unsafe-inline'.
    styles = " ".join(sorted(g.get("csp_style_hashes", ())))
    if ancestors:
        sources = " ".join(s for s in map(_source, ancestors) if s) or "'none'"
        csp = EMBED_CSP.replace("style-src 'self'", f"style-src 'self' {styles}") if styles \
            else EMBED_CSP
        h["Content-Security-Policy"] = f"{csp}; frame-ancestors {sources}"
    else:
        extra = f"; style-src 'self' {styles}" if styles else ""
        h.setdefault("Content-Security-Policy", f"{APP_CSP}{extra}; frame-ancestors 'none'")
        h.setdefault("X-Frame-Options", "DENY")
    return response


def allow_inline_style(source: str) -> None:
    """Allow one inline <style> (a CSP hash source, 'sha256-…') in this response's CSP."""
    hashes: set[str] = g.setdefault("csp_style_hashes", set())
    hashes.add(source)


class NoCookiesOnEmbed(SecureCookieSessionInterface):
    """Embed pages and static files never use the session: no Set-Cookie and no
    `Vary: Cookie` there (other extensions peek at the session on every request), so they
    work with third-party cookies blocked and stay cacheable by shared caches."""

    def save_session(self, app: Flask, session, response: Response) -> None:  # type: ignore[no-untyped-def]
        if request.blueprint == "embed" or request.endpoint == "static":
            return
        super().save_session(app, session, response)


def public_url(endpoint: str, **values: Any) -> str:
    """An absolute URL for `endpoint` under PUBLIC_BASE_URL (prompt URLs for the widget,
    thank-you URLs, links in emails), the same in a request, a job or the CLI.

    Only a development app may run without PUBLIC_BASE_URL (create_app refuses otherwise):
    there a request's own host is used, and outside a request the `flask run` default."""
    base = current_app.config.get("PUBLIC_BASE_URL")
    if not base:
        if has_request_context():
            return url_for(endpoint, _external=True, **values)
        log.warning("PUBLIC_BASE_URL is not set: links point at %s", DEV_BASE_URL)
        base = DEV_BASE_URL
    adapters: dict[str, Any] = current_app.extensions.setdefault("closeloop.url_adapters", {})
    adapter = adapters.get(base)
    if adapter is None:
        parts = urlsplit(base)
        adapter = current_app.url_map.bind(parts.netloc, script_name=parts.path or "/",
                                           url_scheme=parts.scheme)
        adapters[base] = adapter
    return str(adapter.build(endpoint, values, force_external=True))


def check_public_base_url(base: str) -> str:
    """PUBLIC_BASE_URL normalised (no trailing slash), or ValueError saying what is wrong."""
    base = base.strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or parts.username or parts.password:
        raise ValueError(f"PUBLIC_BASE_URL must look like https://feedback.example.com "
                         f"(scheme, host, optional port and path), not {base!r}")
    return base


def trusted_hosts(configured: Any, base: str) -> list[str] | None:
    """TRUSTED_HOSTS as a list (a comma-separated string is accepted); unset means the host
    of PUBLIC_BASE_URL, and None (any host) only without one (development)."""
    if isinstance(configured, str):
        configured = [h.strip() for h in configured.split(",") if h.strip()]
    if configured:
        return [str(h).lower() for h in configured]
    host = urlsplit(base).hostname if base else None
    return [host] if host else None


def init_app(app: Flask) -> None:
    """Register the header hook and the session interface."""
    app.session_interface = NoCookiesOnEmbed()
    app.after_request(set_headers)
