"""Prompt issuance for the script tag: sampling, per-visitor cooldown, impressions,
merchant-signed tokens through the widget; one-click ratings from email links."""

from __future__ import annotations

import json

from sqlalchemy import func, select, update

from app.extensions import db
from app.models import Case, CaseEvent, Impression, Moment, Response
from app.prompts import forget_site

from .conftest import ORIGIN, verified_token


def ask(client, body, origin=ORIGIN):
    return client.post("/e/prompt", data=json.dumps(body), headers={"Origin": origin})


def impressions(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Impression))


def set_moment(app, site, key, **values):
    """Change a moment as an admin would: write, then forget the cached copy."""
    with app.app_context():
        db.session.execute(update(Moment).where(Moment.site_id == site.id, Moment.key == key)
                           .values(**values))
        db.session.commit()
        forget_site(site.public_key)


def test_cooldown_per_visitor(app, client, site):
    """After one prompt the same visitor is not asked again within the cooldown; another is."""
    body = {"site": site.public_key, "moment": "checkout", "vid": "visitor-1"}
    first = ask(client, body).json
    assert first["show"] is True and first["cooldown"] == 14 * 24 * 3600
    again = ask(client, {**body, "moment": "delivery"}).json
    assert again["show"] is False and again["reason"] == "cooldown"
    assert 0 < again["cooldown"] <= 14 * 24 * 3600
    assert ask(client, {**body, "vid": "visitor-2"}).json["show"] is True
    assert impressions(app) == 2


def test_sampling(app, client, site):
    """Sampling 0 never shows a public prompt; sampling 0.5 shows about half; the merchant's
    own signed prompts are not sampled."""
    app.config["LIMIT_PROMPT_ISSUE"] = "1000 per minute"
    set_moment(app, site, "browse", sampling_rate=0.0, cooldown_hours=0)
    body = {"site": site.public_key, "moment": "browse"}
    assert all(ask(client, {**body, "vid": f"v{i}"}).json["reason"] == "sampled_out"
               for i in range(20))
    assert impressions(app) == 0
    set_moment(app, site, "browse", sampling_rate=0.5)
    shown = sum(ask(client, {**body, "vid": f"w{i}"}).json["show"] for i in range(400))
    assert 140 < shown < 260  # binomial(400, .5): outside this is < 1e-8 likely
    set_moment(app, site, "delivery", sampling_rate=0.0)
    token = verified_token(site, moment="delivery", customer="c-1")
    assert ask(client, {"token": token, "vid": "x"}).json["show"] is True


def test_verified_token_through_widget(app, client, site):
    """data-token: the widget gets the same signed URL back; the cooldown follows the
    customer, not the browser."""
    token = verified_token(site, moment="checkout", customer="c-7", order="1001")
    r = ask(client, {"token": token, "vid": "browser-a"}).json
    assert r["show"] is True and r["url"].endswith(f"/p/{token}")
    other = verified_token(site, moment="delivery", customer="c-7")
    assert ask(client, {"token": other, "vid": "browser-b"}).json["reason"] == "cooldown"


def test_inactive_or_unknown_moment(app, client, site):
    """An inactive or unknown moment gets a 400, not a prompt."""
    set_moment(app, site, "kiosk", active=False)
    for moment in ("kiosk", "nope"):
        r = ask(client, {"site": site.public_key, "moment": moment, "vid": "v"})
        assert r.status_code == 400 and r.json["error"] == "invalid"


def test_one_click_then_comment(app, client, site):
    """An email star link shows the rating chosen and stores nothing (scanners open links);
    its POST records it once, and the comment that follows amends the same response, and
    routing re-runs (now critical: 'refund')."""
    token = verified_token(site, moment="checkout", customer="c-1", n="email-link-0001")
    page = client.get(f"/p/{token}?rating=4")
    assert page.status_code == 200 and "Send my rating" in page.get_data(as_text=True)
    assert 'value="4" checked' in page.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Response)) == 0
    location = client.post(f"/p/{token}", data={"rating": "4"}).headers["Location"]
    # A second click (or a mail scanner) does not create another response.
    assert client.post(f"/p/{token}", data={"rating": "5"}).status_code == 303
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert (r.rating, r.comment) == (4, None)
        assert db.session.scalar(select(Case.priority)) == "routine"
    resp = client.post(location, data={"comment": "I want a refund"})
    assert resp.status_code == 303
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert r.comment == "I want a refund"
        assert db.session.scalar(select(Case.priority)) == "critical"
        kinds = db.session.scalars(select(CaseEvent.kind).order_by(CaseEvent.id)).all()
        assert kinds == ["routed", "rerouted", "alerted"]  # the support contact heard it


def test_one_click_bad_rating(app, client, site):
    """A tampered star link: 400 with the form, nothing stored."""
    token = verified_token(site, moment="checkout")
    assert client.get(f"/p/{token}?rating=9").status_code == 400
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Response)) == 0


def test_thank_you_comment(app, client, site):
    """The thank-you page offers one comment while there is none, then stops offering; a
    second comment POSTed anyway is added after the first (the case is still new)."""
    token = verified_token(site, moment="delivery", n="thanks-cmt-0001")
    location = client.post(f"/p/{token}", data={"rating": "7"}).headers["Location"]
    page = client.get(location).get_data(as_text=True)
    assert "What would make it a 10?" in page and "<textarea" in page
    bad = client.post(location, data={"comment": "x" * 1001})
    assert bad.status_code == 400
    assert client.post(location, data={"comment": "Faster shipping"}).status_code == 303
    page = client.get(location).get_data(as_text=True)
    assert "<textarea" not in page and "We have your comment" in page
    assert client.post(location, data={"comment": "And a tracking link"}).status_code == 303
    with app.app_context():
        assert db.session.scalar(select(Response.comment)) == (
            "Faster shipping\n\nAnd a tracking link")


def test_site_cache_expires(app, client, site, monkeypatch):
    """A change made outside this process shows once SITE_CACHE_SECONDS have passed."""
    import time

    body = {"site": site.public_key, "moment": "browse", "vid": "cache-1"}
    assert ask(client, body).json["show"] is True
    with app.app_context():
        db.session.execute(update(Moment).where(Moment.key == "browse").values(active=False))
        db.session.commit()
    assert ask(client, {**body, "vid": "cache-2"}).status_code == 200  # cached for now
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + 31)
    assert ask(client, {**body, "vid": "cache-3"}).status_code == 400
