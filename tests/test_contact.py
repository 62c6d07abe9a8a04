""""May we contact you?" (issue 9, point 7): after a negative answer on a public prompt, the
thank-you page offers an anonymous customer a field for their email with explicit consent.
Stored once, with a `contact_given` event; the loop's emails (the resolution, the "is it
resolved?" question) then reach them. Without consent or with a bad address nothing is
stored; a GET never stores anything; known customers and happy ones are not asked."""

from __future__ import annotations

from sqlalchemy import select

from app.extensions import db
from app.loop import cases
from app.models import Case, CaseEvent, Response

from .conftest import make_site, public_prompt, verified_token

ADDRESS = "anna@mail.example"


def _mail(port: int) -> dict:
    return {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": port, "MAIL_FROM": "loop@closeloop.example"}


def _answer(client, path: str, rating: int) -> str:
    r = client.post(path, data={"rating": str(rating), "comment": "The parcel was soaked"})
    assert r.status_code == 303
    return r.headers["Location"]


def _stored(app) -> tuple[str | None, list[str]]:
    with app.app_context():
        answer = db.session.scalar(select(Response).order_by(Response.id.desc()))
        kinds = list(db.session.scalars(select(CaseEvent.kind).join(Case).where(
            Case.response_id == answer.id).order_by(CaseEvent.id)))
        return answer.customer_email, kinds


def test_an_anonymous_detractor_may_leave_an_address(make_app, db_kind, smtp_server):
    port, box = smtp_server
    app = make_app(db_kind, **_mail(port))
    site = make_site(app, name="Tea Shop")
    client = app.test_client()
    thanks = _answer(client, public_prompt(client, site, "delivery"), 2)
    page = client.get(thanks).get_data(as_text=True)
    assert "May we contact you?" in page and 'name="contact_email"' in page
    assert client.head(thanks).status_code == 200
    address, events_before = _stored(app)  # the GET and HEAD stored nothing
    assert address is None and "contact_given" not in events_before

    refused = [({"contact_email": ADDRESS}, "Please tick the box if we may contact you."),
               ({"contact_email": "not an address", "consent": "y"},
                "Please enter a valid email address."),
               ({"contact_email": "<script>alert(1)</script>@x.example", "consent": "y"},
                "Please enter a valid email address."),
               ({"consent": "y"}, "Please enter a valid email address.")]
    for form, message in refused:
        r = client.post(thanks, data={"form": "contact", **form})
        assert r.status_code == 400, form
        html = r.get_data(as_text=True)
        assert message in html and "<script>alert(1)" not in html
    assert _stored(app) == (None, events_before)

    r = client.post(thanks, data={"form": "contact", "contact_email": f"  {ADDRESS} ",
                                  "consent": "y"})
    assert r.status_code == 303
    assert _stored(app) == (ADDRESS, [*events_before, "contact_given"])
    page = client.get(thanks).get_data(as_text=True)
    assert "Thank you: we will contact you by email about this." in page
    assert 'name="contact_email"' not in page and ADDRESS not in page
    # A second address changes nothing.
    r = client.post(thanks, data={"form": "contact", "contact_email": "mallory@evil.example",
                                  "consent": "y"})
    assert r.status_code == 303 and _stored(app)[0] == ADDRESS

    # The loop now reaches the customer: the resolution with a message arrives.
    with app.app_context():
        case_id = db.session.scalar(select(Case.id).order_by(Case.id.desc()))
    with app.app_context():
        cases.transition(case_id, "resolved", "agent@shop.example", resolution="Refunded",
                         customer_message="We refunded the parcel; sorry about the rain.")
    mails = [m for m in box.to(ADDRESS) if "what we did" in m["Subject"]]
    assert len(mails) == 1
    assert "We refunded the parcel" in mails[0].get_body(("plain",)).get_content()
    assert box.to("mallory@evil.example") == []


def test_known_or_happy_customers_are_not_asked(make_app):
    app = make_app()
    site = make_site(app)
    client = app.test_client()
    # Happy and neutral answers: no question.
    for rating in (10, 8):
        thanks = _answer(client, public_prompt(client, site, "delivery"), rating)
        assert "May we contact you?" not in client.get(thanks).get_data(as_text=True)
        r = client.post(thanks, data={"form": "contact", "contact_email": ADDRESS,
                                      "consent": "y"})
        assert r.status_code == 303 and _stored(app)[0] is None
    # A customer the shop knows (a verified token with a customer id or an email).
    for payload in ({"customer": "c-9"}, {"email": "known@mail.example"}):
        token = verified_token(site, order=f"o-{len(payload)}-{list(payload)[0]}", **payload)
        thanks = _answer(client, f"/p/{token}", 1)
        assert "May we contact you?" not in client.get(thanks).get_data(as_text=True)
        r = client.post(thanks, data={"form": "contact", "contact_email": ADDRESS,
                                      "consent": "y"})
        assert r.status_code == 303
        assert _stored(app)[0] in (None, "known@mail.example")


def test_the_question_in_chromium(make_app):
    """A bare link, a rating of 2, the contact question answered: axe-core finds nothing,
    screenshots at 1280 and 390 px (with the consent error first)."""
    from .conftest import free_port
    from .test_browser import check_page, chromium_serving

    port = free_port()
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                   TRUSTED_HOSTS=["127.0.0.1", "localhost"])  # + the test client, for setup
    site = make_site(app, name="Tea Shop")
    path = public_prompt(app.test_client(), site, "delivery")
    with chromium_serving(app, port) as (browser, base):
        page = browser.new_page()
        page.goto(base + path)
        page.locator("label[for$='-2']").first.click()
        page.get_by_role("button", name="Send", exact=True).click()
        page.get_by_text("May we contact you?").wait_for()
        page.get_by_label("Your email").fill(ADDRESS)
        page.get_by_role("button", name="Send my email address").click()
        page.get_by_text("Please tick the box if we may contact you.").wait_for()
        check_page(page, "contact-error")
        page.get_by_label("Yes, you may email me about this answer.").check()
        page.get_by_role("button", name="Send my email address").click()
        page.get_by_text("Thank you: we will contact you by email about this.").wait_for()
        check_page(page, "contact-given")
    assert _stored(app)[0] == ADDRESS
