"""Signed prompts: forged, expired, other-site and wrong-purpose tokens change nothing;
origins are enforced when prompts are issued and when prompt pages are framed."""

from __future__ import annotations

import json

import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import func, select

from app.extensions import db
from app.models import Impression, Response

from .conftest import ORIGIN, make_site, public_prompt, verified_token


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def _flip(token: str) -> str:
    i = len(token) - 5
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]


@pytest.fixture
def tokens(app, site):
    """One bad token of each kind for `site`."""
    other = make_site(app, ["https://other.example"], name="Other")
    good = verified_token(site)
    forged_payload = URLSafeTimedSerializer("guessed-secret", salt="closeloop.prompt.v1").dumps(
        {"site": site.public_key, "moment": "delivery"})
    return {
        "flipped": _flip(good),
        "forged": forged_payload,
        "other_site_secret": verified_token(site, key=other.signing_secrets[-1]),
        "wrong_purpose": verified_token(site, salt="closeloop.case-verify.v1"),
        "garbage": "not-a-token",
        "huge": "a" * 5000,
        "unknown_moment": verified_token(site, moment="nope"),
    }


def test_bad_tokens_get_400_and_store_nothing(app, client, site, tokens):
    """Every bad token: 400 on GET, form POST, JSON POST and one-click, and no row."""
    for name, token in tokens.items():
        assert client.get(f"/p/{token}").status_code == 400, name
        assert client.get(f"/p/{token}?rating=5").status_code == 400, name
        r = client.post(f"/p/{token}", data={"rating": "5"})
        assert r.status_code == 400, name
        assert "not valid" in r.get_data(as_text=True)
        r = client.post(f"/p/{token}", json={"rating": 5})
        assert r.status_code == 400 and r.json["error"] == "invalid", name
    assert count(app, Response) == 0


def test_expired_token_says_expired(app, client, site, monkeypatch):
    """A genuine token past its max age: 400 with an 'expired' page, no row."""
    token = verified_token(site)
    app.config["VERIFIED_PROMPT_MAX_AGE"] = 1
    import time

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 10)
    r = client.post(f"/p/{token}", data={"rating": "5"})
    assert r.status_code == 400 and "expired" in r.get_data(as_text=True)
    assert client.post(f"/p/{token}", json={"rating": 5}).json["error"] == "expired"
    assert count(app, Response) == 0


def test_public_tokens_are_not_verified_identity(app, client, site):
    """A public (script-tag) token carries no customer identity even if the page sent one."""
    path = public_prompt(client, site, customer="c-999", order="X-1")
    assert client.post(path, data={"rating": "4"}).status_code == 303
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert (r.verified, r.customer_ref, r.order_ref) == (False, None, "X-1")


def test_rotated_secret_keeps_old_links_valid(app, client, site, runner):
    """After rotate-secret the old secret still verifies; after --drop-old it does not."""
    old = verified_token(site, n="old-link-0001")
    out = runner.invoke(args=["sites", "rotate-secret", site.public_key]).output
    new_secret = out.split("new signing secret:")[1].split()[0]
    new = verified_token(site, key=new_secret, n="new-link-0001")
    assert client.post(f"/p/{old}", data={"rating": "9"}).status_code == 303
    assert client.post(f"/p/{new}", data={"rating": "9"}).status_code == 303
    runner.invoke(args=["sites", "rotate-secret", site.public_key, "--drop-old"])
    assert client.get(f"/p/{old}").status_code == 400
    assert count(app, Response) == 2


def test_disallowed_origin_gets_no_prompt(app, client, site):
    """Foreign or missing Origin: 403, the Origin is not echoed, no impression."""
    body = json.dumps({"site": site.public_key, "moment": "checkout", "vid": "v"})
    for headers in ({"Origin": "https://evil.example"}, {}, {"Origin": "null"}):
        r = client.post("/e/prompt", data=body, headers=headers)
        assert r.status_code == 403
        assert "Access-Control-Allow-Origin" not in r.headers
        assert "Access-Control-Allow-Credentials" not in r.headers
    assert count(app, Impression) == 0
    ok = client.post("/e/prompt", data=body, headers={"Origin": ORIGIN})
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Credentials" not in ok.headers


def test_frame_ancestors(client, site):
    """Prompt and thank-you pages may be framed only by the site's origins; others by none."""
    path = public_prompt(client, site)
    csp = client.get(path).headers["Content-Security-Policy"]
    assert f"frame-ancestors {ORIGIN}" in csp and "unsafe-inline" not in csp
    thanks = client.post(path, data={"rating": "5"}).headers["Location"]
    assert f"frame-ancestors {ORIGIN}" in client.get(thanks).headers["Content-Security-Policy"]
    for url in ("/admin/login", "/demo/", "/p/forged-token"):
        resp = client.get(url)
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"], url
        assert resp.headers["X-Frame-Options"] == "DENY"


def test_parent_origin_only_when_allowed(client, site):
    """postMessage target origin is rendered only for one of the site's origins."""
    path = public_prompt(client, site)
    assert f'data-parent="{ORIGIN}"' in client.get(f"{path}?o={ORIGIN}").get_data(as_text=True)
    page = client.get(f"{path}?o=https://evil.example").get_data(as_text=True)
    assert "data-parent" not in page


def test_embed_surface_uses_no_cookies(client, site):
    """Embed responses neither set nor vary on cookies (third-party cookies may be blocked)."""
    path = public_prompt(client, site)
    thanks = client.post(path, data={"rating": "5"})
    for resp in (client.get(path), thanks, client.get(thanks.headers["Location"]),
                 client.get("/widget.js"), client.get("/p/forged")):
        assert "Set-Cookie" not in resp.headers
        assert "Cookie" not in resp.headers.get("Vary", "")
