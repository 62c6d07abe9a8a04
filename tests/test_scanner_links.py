"""Links that survive mail scanners (DESIGN rule 13): a GET or HEAD of any link we put in an
email shows a page and changes nothing; a POST records the choice once. And a second comment
on an answer is either stored or refused with the reason, never thanked for and dropped."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from sqlalchemy import func, select

from app.extensions import db
from app.loop import cases
from app.models import Case, CaseEvent, EmailMessage, Outbox, Response

from .conftest import verified_token

BASE = "http://localhost"  # PUBLIC_BASE_URL (the test client's host): links in emails
CUSTOMER = "customer@mail.example"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [v for k, v in attrs if k == "href" and v]


def links(message) -> set[str]:
    """Every URL in an email: the hrefs of its HTML part and the URLs in its text part."""
    parser = _Links()
    parser.feed(message.get_body(("html",)).get_content())
    text = message.get_body(("plain",)).get_content()
    return set(parser.hrefs) | set(re.findall(r"https?://\S+", text))


def state(app) -> tuple:
    """Everything a click could change: answers, cases, timeline, emails and outbox."""
    with app.app_context():
        db.session.expire_all()
        answers = db.session.execute(select(Response.id, Response.rating, Response.comment)
                                     .order_by(Response.id)).all()
        case_rows = db.session.execute(select(Case.id, Case.status, Case.cycle, Case.verified_at)
                                       .order_by(Case.id)).all()
        counts = [db.session.scalar(select(func.count()).select_from(m))
                  for m in (CaseEvent, EmailMessage, Outbox)]
        return tuple(answers), tuple(case_rows), tuple(counts)


def open_changes_nothing(app, client, url: str) -> None:
    """GET and HEAD of `url` (as a scanner would, without JavaScript): a page, no cookie,
    and not one row different."""
    before = state(app)
    for method in ("GET", "HEAD"):
        resp = client.open(url, method=method)
        assert resp.status_code == 200, (method, url, resp.status_code)
        assert "Set-Cookie" not in resp.headers, url
    assert state(app) == before, url


def test_one_click_link_get_and_head_store_nothing(app, client, site):
    """GET or HEAD of a star link shows the prompt with that rating chosen and one labelled
    button, and stores nothing (no response, case or outbox row); the POST stores it once."""
    token = verified_token(site, moment="delivery", customer="c-1", n="star-link-00001")
    for rating in range(11):
        open_changes_nothing(app, client, f"/p/{token}?rating={rating}")
    page = client.get(f"/p/{token}?rating=3").get_data(as_text=True)
    assert 'value="3" checked' in page and page.count(" checked") == 1
    assert f'action="/p/{token}"' in page and "data-autosubmit" in page
    assert page.count("<button") == 1 and ">Send my rating</button>" in page
    assert state(app) == ((), (), (0, 0, 0))
    assert client.post(f"/p/{token}", data={"rating": "3"}).status_code == 303
    assert client.post(f"/p/{token}", data={"rating": "3"}).status_code == 303  # a 2nd click
    with app.app_context():
        assert db.session.scalars(select(Response.rating)).all() == [3]
        assert db.session.scalar(select(func.count()).select_from(Case)) == 1


def test_every_link_in_customer_emails_is_get_safe(make_app, smtp_server):
    """Each link of the one-click, thank-you, resolution and verification emails, opened
    with GET and HEAD and no JavaScript, changes no row; a POST of a verification link then
    applies it once, and a second POST says the answer is already recorded."""
    port, box = smtp_server
    app = make_app("sqlite", MAIL_SERVER="127.0.0.1", MAIL_PORT=port, PUBLIC_BASE_URL=BASE,
                   MAIL_FROM="loop@closeloop.example")
    from .conftest import make_site

    site = make_site(app, review_url="https://reviews.example/s",
                     referral_url="https://shop.example/refer",
                     support_contact="help@shop.example")
    client = app.test_client()
    # The merchant's one-click email, built as the README says.
    token = verified_token(site, moment="checkout", customer="c-1", email=CUSTOMER,
                           order="1001", locale="en")
    stars = [f"/p/{token}?rating={n}" for n in range(1, 6)]
    for url in stars:
        open_changes_nothing(app, client, url)
    assert state(app)[0] == ()
    assert client.post(f"/p/{token}", data={"rating": "2"}).status_code == 303

    thanks = [m for m in box.to(CUSTOMER) if m["Subject"].startswith("We are sorry")]
    assert len(thanks) == 1
    ours = {u for u in links(thanks[0]) if u.startswith(BASE)}
    for url in ours:
        open_changes_nothing(app, client, url.removeprefix(BASE))

    with app.app_context():
        case_id = db.session.scalar(select(Case.id))
        cases.transition(case_id, "resolved", "agent@shop.example", resolution="Refunded",
                         customer_message="We refunded you.")
    resolution = [m for m in box.to(CUSTOMER) if "what we did" in m["Subject"]]
    assert len(resolution) == 1
    verdict = sorted(u.removeprefix(BASE) for u in links(resolution[0]) if "/v/" in u)
    assert len(verdict) == 2  # yes and no, each in the text and the HTML part
    for url in verdict:
        open_changes_nothing(app, client, url)
    no = next(u for u in verdict
              if u in resolution[0].get_body(("plain",)).get_content().split(
                  "No, it is not resolved: ")[1].split()[0])
    page = client.get(no).get_data(as_text=True)
    assert "Is it resolved for you?" in page and f'action="{no}"' in page
    assert page.count("<button") == 1 and "No, it is not resolved</button>" in page

    reopened = client.post(no)
    assert reopened.status_code == 200 and "Set-Cookie" not in reopened.headers
    assert "We have reopened your case" in reopened.get_data(as_text=True)
    after_first = state(app)
    again = client.post(no).get_data(as_text=True)
    assert "We already have your answer" in again
    assert state(app) == after_first
    with app.app_context():
        assert db.session.get(Case, case_id).status == "reopened"
        assert db.session.scalars(select(CaseEvent.kind).where(CaseEvent.actor == "customer")
                                  ).all() == ["reopened"]
        cases.transition(case_id, "resolved", "agent@shop.example", resolution="Replaced")
    verification = [m for m in box.to(CUSTOMER) if m["Subject"].startswith("Is it resolved?")]
    assert len(verification) == 1
    verdict2 = {u.removeprefix(BASE) for u in links(verification[0]) if "/v/" in u}
    assert len(verdict2) == 2
    for url in verdict2:
        open_changes_nothing(app, client, url)
    for url in sorted(u for u in links(verification[0]) | links(resolution[0])
                      if u.startswith(BASE) and "/v/" not in u):
        open_changes_nothing(app, client, url.removeprefix(BASE))  # none today; any to come
    yes = verification[0].get_body(("plain",)).get_content().split(
        "Yes, it is resolved: ")[1].split()[0].removeprefix(BASE)
    assert "Thank you for confirming" in client.post(yes).get_data(as_text=True)
    assert "We already have your answer" in client.post(yes).get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Case, case_id).status == "verified"
        kinds = db.session.scalars(select(CaseEvent.kind).where(CaseEvent.actor == "customer")
                                   .order_by(CaseEvent.id)).all()
        assert kinds == ["reopened", "verified"]


def test_verify_link_posts_are_rate_limited(make_app):
    """POSTs of a verification link need no cookie but count against LIMIT_SUBMIT."""
    app = make_app("sqlite", LIMIT_SUBMIT="2/minute")
    client = app.test_client()
    assert [client.post("/v/not-a-token").status_code for _ in range(3)] == [400, 400, 429]


def test_second_comment_on_amendable_answer_is_stored(app, client, site):
    """Answer with a comment, reopen the same link, choose a rating and write a second
    comment: both comments are kept, with the newer rating, and routed again (it used to
    say "We have your comment" and drop it)."""
    token = verified_token(site, moment="delivery", customer="c-2", n="second-cmt-0001")
    first = client.post(f"/p/{token}", data={"rating": "3", "comment": "Late by two days"})
    assert first.status_code == 303
    assert client.get(f"/p/{token}").status_code == 200  # the link opened again
    second = client.post(f"/p/{token}", data={"rating": "2", "comment": "And the box was wet"},
                         follow_redirects=True)
    assert second.status_code == 200
    assert "We have your comment" in second.get_data(as_text=True)
    # The same comment sent again (a retry, a double click) is not stored twice.
    client.post(f"/p/{token}", data={"rating": "2", "comment": "And the box was wet"})
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert r.comment == "Late by two days\n\nAnd the box was wet"
        assert (r.rating, r.segment) == (2, "detractor")
        kinds = db.session.scalars(select(CaseEvent.kind).order_by(CaseEvent.id)).all()
        assert [k for k in kinds if k.endswith("routed")] == ["routed", "rerouted"]


def test_second_comment_after_team_started_says_why(app, client, site):
    """Once the team has acknowledged the case, a second comment (form, JSON or thank-you
    page) is refused with a 409 that says why and gives the text back; nothing changes."""
    token = verified_token(site, moment="delivery", customer="c-3", n="second-cmt-0002")
    location = client.post(f"/p/{token}", data={"rating": "3", "comment": "Late"}
                           ).headers["Location"]
    with app.app_context():
        cases.transition(db.session.scalar(select(Case.id)), "acknowledged", "agent@shop.example")
    before = state(app)
    resp = client.post(f"/p/{token}", data={"rating": "1", "comment": "Still waiting"})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 409
    assert "could not add this comment" in page and "already started working" in page
    assert "Still waiting" in page and "help@shop.example" in page
    assert "We have your comment" not in page and "Thank you" not in page
    j = client.post(f"/p/{token}", json={"rating": 1, "comment": "Still waiting"})
    assert (j.status_code, j.json["error"], j.json["reason"]) == (409, "comment_not_added",
                                                                  "closed")
    t = client.post(location, data={"comment": "Still waiting"})
    assert t.status_code == 409 and "could not add this comment" in t.get_data(as_text=True)
    assert state(app) == before
    # Without a comment, sending the same answer again is just the thank-you page.
    assert client.post(f"/p/{token}", data={"rating": "3"}).status_code == 303


def test_thank_you_page_offers_no_comment_once_the_case_is_worked(app, client, site):
    """An answer without a comment whose case the team has acknowledged: the thank-you page
    offers no comment box (the comment could not be stored)."""
    token = verified_token(site, moment="delivery", n="second-cmt-0003")
    location = client.post(f"/p/{token}", data={"rating": "8"}).headers["Location"]
    assert "<textarea" in client.get(location).get_data(as_text=True)
    with app.app_context():
        cases.transition(db.session.scalar(select(Case.id)), "acknowledged", "agent@shop.example")
    assert "<textarea" not in client.get(location).get_data(as_text=True)


def test_comments_on_one_answer_are_capped(app, client, site):
    """Comments added to one answer stop at four times COMMENT_MAX_CHARS, with a 409 saying
    so rather than a silent drop."""
    token = verified_token(site, moment="delivery", n="second-cmt-0004")
    for letter in "abc":
        assert client.post(f"/p/{token}", data={"rating": "5", "comment": letter * 1000}
                           ).status_code == 303
    full = client.post(f"/p/{token}", data={"rating": "5", "comment": "d" * 1000})
    assert full.status_code == 409 and "as much text" in full.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.length(Response.comment))) == 3 * 1000 + 2 * 2
