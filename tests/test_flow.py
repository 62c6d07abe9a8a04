"""The whole path, per database: token → form → submit → row → RQ worker → case → thank-you."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from app.extensions import db
from app.models import Case, CaseEvent, Outbox, Response, ResponseSku

from .conftest import make_site, public_prompt, run_worker, verified_token

SEGMENT_PAGES = {
    # moment, rating -> (segment, words on its thank-you page)
    ("delivery", 10): ("promoter", "Thank you!"),
    ("delivery", 8): ("passive", "What would make it a 10?"),
    ("delivery", 3): ("detractor", "We are sorry"),
    ("checkout", 5): ("positive", "Thank you!"),
    ("checkout", 3): ("neutral", "What would have made it better?"),
    ("checkout", 1): ("negative", "We are sorry"),
}


def test_whole_path_each_database(make_app, db_kind, redis_url):
    """Script-tag prompt and merchant-signed prompt both end as routed cases with due times,
    and every segment lands on its own thank-you page (review link offered to all)."""
    app = make_app(db_kind, REDIS_URL=redis_url)
    site = make_site(app, review_url="https://reviews.example/s", support_contact="help@s.example")
    client = app.test_client()

    public_ids = {}
    for (moment, rating), (segment, _words) in SEGMENT_PAGES.items():
        path = public_prompt(client, site, moment, channel="web", skus=["SKU-1", "SKU-2"],
                             order="A-1")
        page = client.get(path)
        assert page.status_code == 200
        assert 'type="radio"' in page.get_data(as_text=True)
        resp = client.post(path, data={"rating": str(rating), "comment": "fine"})
        assert resp.status_code == 303, resp.get_data(as_text=True)
        public_ids[segment] = resp.headers["Location"].split("/t/")[1].split("?")[0]

    # A merchant-signed after-delivery email link, answered with one click then a comment.
    token = verified_token(site, skus=["SKU-9"], order="1001", customer="c-42", locale="en")
    assert client.get(f"/p/{token}?rating=2").status_code == 200
    resp = client.post(f"/p/{token}", data={"rating": "2", "comment": "Box was damaged"})
    assert resp.status_code == 303

    with app.app_context():
        rows = db.session.scalars(select(Response).order_by(Response.id)).all()
        assert len(rows) == 7
        first = rows[0]
        assert (first.channel, first.skus, first.order_ref) == ("web", ["SKU-1", "SKU-2"], "A-1")
        assert first.verified is False and first.customer_ref is None
        email = rows[-1]
        assert (email.channel, email.verified, email.customer_ref) == ("email", True, "c-42")
        assert email.comment == "Box was damaged" and email.segment == "detractor"
        assert db.session.scalar(select(func.count()).select_from(ResponseSku)) == 6 * 2 + 1
        # Nothing routed yet: the jobs wait in Redis.
        assert db.session.scalar(select(func.count()).where(Case.routed_at.is_not(None))) == 0

    assert run_worker(app) >= 7

    with app.app_context():
        cases = {c.response_id: c for c in db.session.scalars(select(Case))}
        for r in db.session.scalars(select(Response)):
            c = cases[r.id]
            assert c.routed_at is not None and c.status == "new"
            assert c.ack_due_at == r.created_at + timedelta(hours=2)
            assert c.close_due_at == r.created_at + timedelta(hours=48)
            assert c.loop_due_at == r.created_at + timedelta(hours=72)
            hours = {"detractor": 24, "negative": 24, "passive": 48, "neutral": 48}.get(
                r.segment, 168)
            assert c.followup_due_at == r.created_at + timedelta(hours=hours)
            lowest = r.rating <= 2 if r.scale == "nps" else r.rating == 1
            expected = ("routine" if r.segment not in ("detractor", "negative")
                        else "critical" if lowest else "high")  # only the lowest page
            assert c.priority == expected, (r.segment, c.priority)
        email_case = cases[email.id]
        assert email_case.team == "logistics"  # the delivery moment's owner
        assert db.session.scalar(select(func.count()).where(Outbox.done_at.is_(None))) == 0
        kinds = db.session.scalars(select(CaseEvent.kind)).all()
        assert kinds.count("routed") == 7

    for segment, public_id in public_ids.items():
        words = next(w for (s, w) in SEGMENT_PAGES.values() if s == segment)
        page = client.get(f"/t/{public_id}").get_data(as_text=True)
        assert words in page, segment
        assert "https://reviews.example/s" in page  # no review gating: every segment
        if segment in ("detractor", "negative"):
            assert "help@s.example" in page and "within 24 hours" in page
