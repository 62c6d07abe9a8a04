"""Message channels (issue 9, point 5): for one order, the verified links a merchant puts in
an email (one-click ratings as an accessible snippet in the customer's language) and in an
SMS (a short link under 40 characters that redirects to the verified prompt and expires with
its token); the channel and its detail are recorded on the answer."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from sqlalchemy import select, update

from app import channels
from app.extensions import db
from app.loop import cron
from app.models import Response, ShortLink, Site, utcnow
from app.prompts import PromptError

from .conftest import make_site


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links.append(dict(attrs))


def _links(app, site: Site, **kw) -> channels.Links:
    with app.app_context():
        return channels.links(db.session.get(Site, site.id), **kw)


def test_email_snippet_one_click_links_in_the_customers_language(app):
    site = make_site(app, name="Tea <Shop>")
    out = _links(app, site, moment_key="delivery", order="1001", customer="c-1",
                 email="anna@mail.example", locale="tr", detail="newsletter-nov")
    parser = _Links()
    parser.feed(out.email_html)
    ratings = [a for a in parser.links if "rating=" in (a["href"] or "")]
    assert [a["href"] for a in ratings] == [f"{out.prompt_url}?rating={v}" for v in range(11)]
    assert ratings[0]["aria-label"] == "0, hiç olası değil"  # its meaning, in Turkish
    assert ratings[10]["aria-label"] == "10, son derece olası"
    assert "Bizi bir arkadaşınıza önerme olasılığınız nedir?" in out.email_html
    assert 'lang="tr"' in out.email_html and "Tea &lt;Shop&gt;" in out.email_html
    assert "Anketi açın" in out.email_html
    assert f"0, hiç olası değil: {out.prompt_url}?rating=0" in out.email_text
    client = app.test_client()
    # A link opens the confirmation in Turkish and stores nothing; its POST stores the answer
    # with the channel and its detail.
    page = client.get(ratings[2]["href"].replace("http://localhost", ""))
    assert page.status_code == 200 and 'lang="tr"' in page.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Response.id)) is None
    r = client.post(out.prompt_url.replace("http://localhost", ""), data={"rating": "2"})
    assert r.status_code == 303
    with app.app_context():
        answer = db.session.scalars(select(Response)).one()
        assert (answer.channel, answer.channel_detail, answer.order_ref, answer.customer_ref,
                answer.customer_email, answer.locale, answer.verified) == (
            "email", "newsletter-nov", "1001", "c-1", "anna@mail.example", "tr", True)


def test_snippets_of_each_scale_and_bad_input(app):
    site = make_site(app)
    for moment, n, word in (("checkout", 5, "Very easy"), ("product_page", 2, "Yes"),
                            ("browse", 5, "Great")):
        out = _links(app, site, moment_key=moment, order="7")
        assert len(out.rating_urls) == n
        assert word in out.email_html
    with pytest.raises(PromptError, match="no active moment"):
        _links(app, site, moment_key="nope")
    with pytest.raises(PromptError):
        _links(app, site, moment_key="delivery", order="x" * 101)
    out = _links(app, site, moment_key="delivery", order="<script>alert(1)</script>")
    assert "<script>" not in out.email_html


def test_sms_short_link(app, clock):
    site = make_site(app)
    out = _links(app, site, moment_key="delivery", channel="sms", order="1002",
                 customer="c-2", locale="ru", detail="store-12")
    assert out.sms_url is not None and len(out.sms_url) < 40, out.sms_url
    assert re.fullmatch(r"http://localhost/s/[A-Za-z0-9]{8}", out.sms_url)
    client = app.test_client()
    path = out.sms_url.replace("http://localhost", "")
    r = client.get(path)
    assert r.status_code == 302 and r.headers["Location"].endswith(
        "/p/" + out.prompt_url.rsplit("/p/", 1)[1])
    assert client.head(path).status_code == 302
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert 'lang="ru"' in page
    assert client.post(r.headers["Location"], data={"rating": "9"}).status_code == 303
    with app.app_context():
        answer = db.session.scalars(select(Response)).one()
        assert (answer.channel, answer.channel_detail, answer.order_ref) == (
            "sms", "store-12", "1002")
    # Unknown, malformed and expired codes: a friendly page, nothing else.
    for bad in ("AAAAAAAA", "short", "x" * 300, "%00" * 8, "%ED%A0%80" * 8, "%FF" * 8):
        r = client.get(f"/s/{bad}")
        assert r.status_code == 404, bad
        assert "This feedback link is not valid" in r.get_data(as_text=True)
    with app.app_context():
        db.session.execute(update(ShortLink).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    r = client.get(path, headers={"Accept-Language": "et"})
    assert r.status_code == 410
    assert "Selle tagasiside lingi kehtivus on lõppenud" in r.get_data(as_text=True)
    with app.app_context():
        assert cron.purge()["short_links"] == 1
        assert db.session.scalar(select(ShortLink.id)) is None


def test_flask_links_command(app, runner):
    site = make_site(app)
    result = runner.invoke(args=["links", site.public_key, "--moment", "delivery", "--order",
                                 "55", "--locale", "et", "--sku", "TV-1", "--detail", "agent-7"])
    assert result.exit_code == 0, result.output
    assert "Kui tõenäoliselt soovitaksite meid sõbrale?" in result.output
    assert "?rating=10" in result.output
    sms = runner.invoke(args=["links", str(site.id), "--moment", "delivery", "--channel", "sms"])
    assert sms.exit_code == 0 and re.fullmatch(r"http://localhost/s/\w{8}\n", sms.output)
    bad = runner.invoke(args=["links", site.public_key, "--moment", "nope"])
    assert bad.exit_code == 1 and "no active moment" in bad.output


@pytest.mark.browser
def test_snippet_and_sms_link_in_chromium(make_app):
    """In each language: the email snippet, opened as a page, leads by one click (and the
    page's own confirmation) to a stored answer; the SMS link leads to the same verified
    prompt in that language. axe-core finds nothing on the snippet."""
    from .conftest import free_port
    from .test_browser import check_page, chromium_serving

    port = free_port()
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    site = make_site(app, name="Tea Shop")
    questions = {"en": "How likely are you to recommend us to a friend?",
                 "tr": "Bizi bir arkadaşınıza önerme olasılığınız nedir?",
                 "ru": "Насколько вероятно, что вы порекомендуете нас другу?",
                 "et": "Kui tõenäoliselt soovitaksite meid sõbrale?"}
    with chromium_serving(app, port) as (browser, base):
        for lang, question in questions.items():
            mail = _links(app, site, moment_key="delivery", order=f"m-{lang}", locale=lang,
                          customer=f"c-{lang}", detail="newsletter")
            page = browser.new_page()
            page.set_content(f"<!doctype html><html lang={lang}><head><title>Mail</title>"
                             f"</head><body><main><h1>Your order</h1>{mail.email_html}"
                             "</main></body></html>")
            if lang == "en":
                check_page(page, "email-snippet")
            page.get_by_role("link", name=mail.rating_urls[2][1], exact=True).click()
            page.wait_for_url(lambda url: "/t/" in url)  # confirmed by the page, stored
            assert page.locator("html").get_attribute("lang") == lang
            sms = _links(app, site, moment_key="delivery", channel="sms", order=f"s-{lang}",
                         locale=lang, customer=f"s-{lang}", detail="store-1")
            assert len(sms.sms_url) < 40
            page.goto(sms.sms_url)
            page.get_by_role("heading", name=question).wait_for()
            page.close()
    with app.app_context():
        rows = db.session.execute(select(Response.order_ref, Response.channel,
                                         Response.rating, Response.locale)).all()
    assert sorted(rows) == sorted((f"m-{lang}", "email", 2, lang) for lang in questions)
