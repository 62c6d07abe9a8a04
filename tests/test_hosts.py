"""Hosts and headers: absolute URLs come from PUBLIC_BASE_URL, a forged Host is refused,
production needs a public URL, HSTS over HTTPS, no-store on pages, and /healthz."""

from __future__ import annotations

import json

import pytest

from app import create_app
from app.loop import notify

from .conftest import ORIGIN, base_config, free_port, make_site, verified_token

BASE = "https://feedback.example"


def _ask(client, site, **headers):
    body = json.dumps({"site": site.public_key, "moment": "checkout"})
    return client.post("/e/prompt", data=body, headers={"Origin": ORIGIN,
                                                        "Content-Type": "text/plain", **headers})


def test_forged_host_is_refused_and_urls_come_from_the_public_url(make_app):
    """`Host: evil.example` is a 400 (nothing issued); from the public host, and from another
    trusted name, prompt URLs and thank-you URLs are under PUBLIC_BASE_URL."""
    app = make_app(PUBLIC_BASE_URL=BASE, TRUSTED_HOSTS=["feedback.example", "web-1.internal"])
    site = make_site(app)
    client = app.test_client()
    evil = _ask(client, site, Host="evil.example")
    assert evil.status_code == 400 and "evil.example" not in evil.get_data(as_text=True)
    for host in ("feedback.example", "web-1.internal:8000"):
        r = _ask(client, site, Host=host)
        assert r.status_code == 200 and r.json["url"].startswith(f"{BASE}/p/"), r.json
    token = verified_token(site, moment="checkout")
    r = client.post(f"/p/{token}", json={"rating": 5}, headers={"Host": "web-1.internal"})
    assert r.status_code == 201
    assert r.json["thank_you_url"] == f"{BASE}/t/{r.json['id']}"
    assert client.get("/admin/login", headers={"Host": "evil.example"}).status_code == 400


def test_trusted_hosts_default_to_the_public_urls_host(make_app):
    """Unset TRUSTED_HOSTS means PUBLIC_BASE_URL's host (any port); a comma-separated string
    is a list; a path prefix in PUBLIC_BASE_URL is kept in every link."""
    app = make_app(PUBLIC_BASE_URL="https://Feedback.example:8443/fb/")
    assert app.config["PUBLIC_BASE_URL"] == "https://Feedback.example:8443/fb"
    assert app.config["TRUSTED_HOSTS"] == ["feedback.example"]
    client = app.test_client()
    assert client.get("/admin/login", headers={"Host": "feedback.example:8443"}).status_code \
        == 200
    refused = client.get("/admin/login", headers={"Host": "localhost"})
    assert refused.status_code == 400 and "localhost" not in refused.get_data(as_text=True)
    with app.app_context():
        assert notify.external_url("embed.thanks", public_id="abc") == \
            "https://feedback.example:8443/fb/t/abc"
    app = make_app(PUBLIC_BASE_URL=BASE, TRUSTED_HOSTS="a.example, b.example")
    assert app.config["TRUSTED_HOSTS"] == ["a.example", "b.example"]


def test_email_links_use_the_public_url_in_and_out_of_requests(make_app):
    """Email links (notify.external_url) are under PUBLIC_BASE_URL from a job or the CLI and
    inside a request that came in under another trusted host name."""
    app = make_app(PUBLIC_BASE_URL=BASE, TRUSTED_HOSTS=["feedback.example", "10.0.0.7"])
    with app.app_context():
        assert notify.external_url("embed.verify", token="t1") == f"{BASE}/v/t1"
    with app.test_request_context("/", base_url="http://10.0.0.7:8000"):
        assert notify.external_url("embed.verify", token="t1") == f"{BASE}/v/t1"
        assert notify.case_url(7) == f"{BASE}/admin/cases/7"


def test_production_refuses_to_start_without_a_public_url():
    """Outside development and tests there is no app without PUBLIC_BASE_URL (clear message),
    and a malformed one is refused too; development may run without it."""
    with pytest.raises(RuntimeError, match="PUBLIC_BASE_URL is not set"):
        create_app(base_config(TESTING=False, PUBLIC_BASE_URL=""))
    for bad in ("feedback.example", "ftp://feedback.example", "https://x.example/?a=1",
                "https://user:pw@x.example"):
        with pytest.raises(RuntimeError, match="PUBLIC_BASE_URL must look like"):
            create_app(base_config(TESTING=False, PUBLIC_BASE_URL=bad))
    dev = create_app(base_config(TESTING=False, PUBLIC_BASE_URL="", ENV_NAME="development"))
    assert dev.config["TRUSTED_HOSTS"] is None
    prod = create_app(base_config(TESTING=False, PUBLIC_BASE_URL=BASE))
    assert prod.config["TRUSTED_HOSTS"] == ["feedback.example"]


def test_hsts_only_over_https_and_through_a_trusted_proxy(make_app):
    """Strict-Transport-Security on HTTPS responses, also when a trusted proxy says the
    client used HTTPS; never over plain HTTP or on a forged X-Forwarded-Proto."""
    app = make_app(PUBLIC_BASE_URL=BASE)
    client = app.test_client()
    secure = client.get("/admin/login", base_url=BASE)
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert client.get("/admin/login", base_url="http://feedback.example").headers.get(
        "Strict-Transport-Security") is None
    forged = client.get("/admin/login", base_url="http://feedback.example",
                        headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in forged.headers
    proxied = make_app(PUBLIC_BASE_URL=BASE, PROXY_FIX_X_FOR=1).test_client().get(
        "/admin/login", base_url="http://feedback.example",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"})
    assert proxied.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_pages_are_never_stored_static_files_are(app, site):
    """Staff pages, prompt forms (token inside), answer results and thank-you pages carry
    Cache-Control: no-store; static files and the widget keep their public lifetimes."""
    client = app.test_client()
    token = verified_token(site, moment="checkout")
    answered = client.post(f"/p/{token}", data={"rating": "5"})
    pages = {
        "staff login": client.get("/admin/login"),
        "prompt form": client.get(f"/p/{token}"),
        "answer result": answered,
        "thank-you": client.get(answered.headers["Location"]),
        "error": client.get("/nowhere"),
    }
    assert {name: r.headers.get("Cache-Control") for name, r in pages.items()} == {
        name: "no-store" for name in pages}
    assert "max-age=300" in client.get("/widget.js").headers["Cache-Control"]
    with client.get("/static/embed.css") as static:
        assert "no-store" not in static.headers.get("Cache-Control", "")


def test_healthz_reports_database_and_redis(make_app, redis_url):
    """/healthz: 200 with database and Redis "ok", under any Host, without a session
    cookie or a rate limit; Redis down is "degraded" but 200 (answers wait in the outbox)."""
    from app.extensions import limiter

    app = make_app(REDIS_URL=redis_url, RATELIMIT_DEFAULT="2 per minute")
    client = app.test_client()
    try:
        replies = [client.get("/healthz", headers={"Host": "10.1.2.3:8000"}) for _ in range(20)]
    finally:
        # Flask-Limiter keeps default limits on its (process-wide) extension object once set:
        # later apps in this test session must not inherit "2 per minute".
        limiter.limit_manager.set_default_limits([])
    assert {r.status_code for r in replies} == {200}
    assert replies[0].json == {"database": "ok", "redis": "ok", "status": "ok"}
    assert "Set-Cookie" not in replies[0].headers
    assert replies[0].headers["Cache-Control"] == "no-store"
    down = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client().get("/healthz")
    assert (down.status_code, down.json) == (200, {"database": "ok", "redis": "error",
                                                   "status": "degraded"})
    plain = make_app().test_client().get("/healthz")
    assert plain.json == {"database": "ok", "redis": "not configured", "status": "ok"}


def test_healthz_is_503_when_the_database_is_down():
    """An unreachable database makes /healthz 503 so the balancer stops sending answers."""
    app = create_app(base_config(
        SQLALCHEMY_DATABASE_URI="postgresql+psycopg://nobody@127.0.0.1:1/x",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 1}}))
    r = app.test_client().get("/healthz")
    assert (r.status_code, r.json) == (503, {"database": "error", "redis": "not configured",
                                             "status": "error"})
