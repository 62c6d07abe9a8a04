"""The loader: small, fresh, cached right, served before Flask."""

from __future__ import annotations

import gzip

from app.embed.widget import BUILT, bundle
from widget.build import build


def test_size_budget():
    """≤ 2,000 bytes gzipped (Formbricks ~52 kB, Sentry's feedback ~18-22 kB, Typeform ~14 kB)."""
    assert len(gzip.compress(BUILT.read_bytes(), 9)) <= 2000


def test_committed_build_is_fresh():
    """The served file is exactly what `make widget` builds from widget/src."""
    assert BUILT.read_bytes() == build(), "run `make widget` and commit the result"


def test_caching_and_etag(client):
    """Short max-age + ETag on /widget.js, 304 on a match, a year and immutable on the
    content-hash URL, a redirect for an older hash; gzip only when asked; no cookies."""
    r = client.get("/widget.js", headers={"Accept-Encoding": "gzip, br"})
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(r.data) == bundle().body
    assert "max-age=300" in r.headers["Cache-Control"]
    assert "stale-while-revalidate" in r.headers["Cache-Control"]
    assert r.headers["Vary"] == "Accept-Encoding" and "Set-Cookie" not in r.headers
    assert r.headers["Content-Type"].startswith("text/javascript")
    etag = r.headers["ETag"]
    assert client.get("/widget.js", headers={"If-None-Match": etag}).status_code == 304
    plain = client.get("/widget.js")
    assert "Content-Encoding" not in plain.headers and plain.data == bundle().body
    pinned = client.get(f"/widget.{bundle().version}.js")
    assert pinned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    old = client.get("/widget.000000000000.js")
    assert old.status_code == 302 and old.headers["Location"] == "/widget.js"
    assert client.head("/widget.js").data == b""
    assert client.post("/widget.js").status_code in (404, 405)
