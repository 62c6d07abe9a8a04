"""Serve the widget before Flask: a few in-memory bodies answered straight from WSGI.

The script tag sits on every page of every merchant, so /widget.js must cost less than the
cheapest Flask route. This middleware answers exactly two paths (the loader and its
content-hash URL) with prebuilt headers, gzip when accepted, and 304 for a matching ETag;
everything else goes to Flask untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from .widget import Bundle

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
SHORT = "public, max-age=300, stale-while-revalidate=86400"
LONG = "public, max-age=31536000, immutable"
_VERSIONED = re.compile(r"^/widget\.[0-9a-f]{12}\.js$")


class WidgetFastPath:
    """WSGI middleware serving /widget.js and /widget.<version>.js."""

    def __init__(self, app: WSGIApp, bundle: Bundle, extra_headers: list[tuple[str, str]]):
        self.app = app
        self.extra_headers = extra_headers
        self.etag = f'"{bundle.version}"'
        self.paths = {"/widget.js": SHORT, f"/widget.{bundle.version}.js": LONG}
        common = [("Content-Type", "text/javascript; charset=utf-8"), ("ETag", self.etag),
                  ("Vary", "Accept-Encoding"), ("Access-Control-Allow-Origin", "*"),
                  *extra_headers]
        self.bodies = {
            (path, gz): (body, [*common, ("Cache-Control", cc),
                                ("Content-Length", str(len(body))),
                                *([("Content-Encoding", "gzip")] if gz else [])])
            for path, cc in self.paths.items()
            for gz, body in ((True, bundle.gz), (False, bundle.body))
        }
        self.not_modified = {path: [("ETag", self.etag), ("Cache-Control", cc),
                                    ("Vary", "Accept-Encoding"), *extra_headers]
                             for path, cc in self.paths.items()}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD") or not path.startswith("/widget."):
            return self.app(environ, start_response)
        if path not in self.paths:
            if not _VERSIONED.match(path):
                return self.app(environ, start_response)
            # A pinned older release: send the browser to the current loader.
            start_response("302 Found", [("Location", "/widget.js"), ("Content-Length", "0"),
                                         ("Cache-Control", "public, max-age=300"),
                                         *self.extra_headers])
            return [b""]
        inm = environ.get("HTTP_IF_NONE_MATCH", "")
        if inm and (inm.strip() == "*" or self.etag in inm or self.etag[1:-1] in inm):
            start_response("304 Not Modified", self.not_modified[path])
            return [b""]
        gz = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
        body, headers = self.bodies[(path, gz)]
        start_response("200 OK", headers)
        return [b""] if method == "HEAD" else [body]
