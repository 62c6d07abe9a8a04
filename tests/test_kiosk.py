"""Kiosk mode (issue 9, point 4): a full-screen rating page per site and moment for an
in-store tablet, signed with a long-lived link a lead can revoke; each tap is stored once
per submission id (the tablet's queue may send it again), on the kiosk channel with the
store as its detail; with the network cut, answers wait in the tablet and arrive once."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app import kiosks
from app.extensions import db
from app.models import AuditEvent, Kiosk, Response, Site

from .conftest import make_site


def _kiosk(app, site: Site, moment: str = "kiosk", store: str = "tallinn-1") -> tuple[int, str]:
    with app.app_context():
        k = kiosks.create(db.session.get(Site, site.id), moment, store, "Till 1", "test")
        return k.id, kiosks.token(k)


def _count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Response.id)))


def test_kiosk_page_and_answers_once_per_submission(make_app, db_kind):
    app = make_app(db_kind)
    site = make_site(app, name="Tea Shop")
    kiosk_id, token = _kiosk(app, site)
    client = app.test_client()
    page = client.get(f"/k/{token}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "How was your visit today?" in html and html.count('<svg class="ri"') == 5
    assert "kiosk.js" in html and "frame.js" not in html
    assert _count(app) == 0  # a GET stores nothing

    body = {"submission_id": "0f8e2a4c-1111-4222-8333-444455556666", "rating": 5}
    first = client.post(f"/k/{token}", data=json.dumps(body), content_type="application/json")
    again = client.post(f"/k/{token}", data=json.dumps(body), content_type="application/json")
    assert (first.status_code, first.json) == (201, {"ok": True, "created": True})
    assert (again.status_code, again.json) == (200, {"ok": True, "created": False})
    # Without JavaScript: the form, with the id the page was rendered with.
    form = client.post(f"/k/{token}", data={"submission_id": "abcdef0123456789", "rating": "2"})
    assert form.status_code == 303 and "done=1" in form.headers["Location"]
    done = client.get(form.headers["Location"]).get_data(as_text=True)
    assert 'http-equiv="refresh"' in done and "Thank you!" in done
    with app.app_context():
        rows = db.session.execute(select(Response.rating, Response.channel,
                                         Response.channel_detail, Response.verified)
                                  .order_by(Response.id)).all()
    assert rows == [(5, "kiosk", "tallinn-1", False), (2, "kiosk", "tallinn-1", False)]

    for bad in ({"submission_id": "short", "rating": 5}, {"submission_id": "x" * 49, "rating": 5},
                {"submission_id": "bad id with spaces", "rating": 5},
                {"submission_id": "abcdefgh12", "rating": 6},
                {"submission_id": "abcdefgh12", "rating": True},
                {"submission_id": "abcdefgh12", "rating": "five"},
                {"submission_id": ["abcdefgh12"], "rating": 3}):
        r = client.post(f"/k/{token}", data=json.dumps(bad), content_type="application/json")
        assert r.status_code == 400, bad
    assert _count(app) == 2

    # Revoked: the link and the tablet's queue are refused; nothing more is stored.
    with app.app_context():
        kiosks.revoke(db.session.get(Kiosk, kiosk_id), "test")
    assert client.get(f"/k/{token}").status_code == 404
    r = client.post(f"/k/{token}", data=json.dumps({**body, "submission_id": "new-one-123"}),
                    content_type="application/json")
    assert r.status_code == 404 and r.json["error"] == "invalid"
    for forged in ("nope", token[:-3] + "abc", "x" * 400):
        assert client.get(f"/k/{forged}").status_code == 404
    assert _count(app) == 2


def test_leads_add_and_revoke_kiosks(make_app):
    from .test_settings import form_post, member, signed_in, url

    app = make_app()
    site = make_site(app)
    member(app, "lead@shop.example", site, "lead")
    member(app, "agent@shop.example", site, "agent")
    lead = signed_in(app, "lead@shop.example")
    page_url = url(site.id, "kiosks")
    resp = form_post(lead, page_url, url(site.id, "kiosks/new"), label="Till <2>",
                     store="tallinn-1", moment="kiosk")
    assert resp.status_code == 302
    page = lead.get(page_url).get_data(as_text=True)
    assert "Till &lt;2&gt;" in page and "http://localhost/k/" in page
    bad = form_post(lead, page_url, url(site.id, "kiosks/new"), label="", store="",
                    moment="nope")
    assert bad.status_code == 400 and "Choose one of the site" in bad.get_data(as_text=True)
    with app.app_context():
        kiosk = db.session.scalars(select(Kiosk)).one()
        link = "/k/" + kiosks.token(kiosk)
    assert app.test_client().get(link).status_code == 200
    resp = form_post(lead, page_url, url(site.id, f"kiosks/{kiosk.id}/revoke"))
    assert resp.status_code == 302
    assert app.test_client().get(link).status_code == 404
    with app.app_context():
        actions = list(db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.action.like("kiosk.%")).order_by(AuditEvent.id)))
    assert actions == ["kiosk.create", "kiosk.revoke"]
    agent = signed_in(app, "agent@shop.example")
    assert agent.get(page_url).status_code == 403


@pytest.mark.browser
def test_offline_tablet_sends_its_answers_once(make_app):
    """Chromium: the network is cut, three taps (each thanked, the page ready again), the
    network is back: exactly three answers, each once (the queue retried while offline)."""
    from .conftest import free_port
    from .test_browser import check_page, chromium_serving

    port = free_port()
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    site = make_site(app, name="Tea Shop")
    _kiosk_id, token = _kiosk(app, site)
    with chromium_serving(app, port) as (browser, base):
        context = browser.new_context(viewport={"width": 1024, "height": 768})
        page = context.new_page()
        page.goto(f"{base}/k/{token}")
        page.get_by_role("heading", name="How was your visit today?").wait_for()
        check_page(page, "kiosk")
        context.set_offline(True)
        for rating in (1, 4, 5):
            page.locator(f"label[for$='-{rating - 1}']").click()
            page.get_by_text("Thank you!").wait_for()
            page.get_by_role("heading", name="How was your visit today?").wait_for()
        queued = ("() => JSON.parse(localStorage.getItem(Object.keys(localStorage).find("
                  "k => k.startsWith('closeloop.kiosk.'))) || '[]').length")
        assert page.evaluate(queued) == 3
        pending = page.locator("#pending")
        assert pending.inner_text() == "3 \u2191"  # the tablet shows what it still has to send
        assert _count(app) == 0
        context.set_offline(False)
        page.evaluate("() => window.dispatchEvent(new Event('online'))")
        # The page hides the counter once the server has acknowledged the last answer and it
        # is off the queue: the event to wait on. (The rows appearing in the database is not:
        # the third answer's response may still be on its way to the page.)
        pending.wait_for(state="hidden", timeout=15_000)
        assert page.evaluate(queued) == 0
        assert _count(app) == 3
        context.close()
    with app.app_context():
        ratings = sorted(db.session.scalars(select(Response.rating)))
    assert ratings == [1, 4, 5]
