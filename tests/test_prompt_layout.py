"""The prompt, looked at (issue 9, point 6): in the slide-in's widths every scale fits one row
or two balanced rows, every rating is a touch target of at least 44 × 44 px, nothing runs
past the right edge, and the end labels match the question's scale."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Moment

from .conftest import make_site, verified_token

# The frame's width: the 380 px slide-in, and on a 320 px phone the slide-in less its 8 px
# margins; 390 px is a common phone opening the link itself.
WIDTHS = (304, 320, 360, 380, 390, 1280)


@pytest.mark.browser
def test_every_scale_fits_the_slide_in(make_app):

    from .conftest import free_port
    from .test_browser import check_page, chromium_serving, no_frame_js

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(PUBLIC_BASE_URL=base)
    site = make_site(app)
    with app.app_context():
        moments = {m.scale: m.key for m in db.session.scalars(
            select(Moment).where(Moment.site_id == site.id).order_by(Moment.id))}
    assert set(moments) == {"ces", "csat", "nps", "thumbs", "emoji"}
    measured = {}
    with chromium_serving(app, port) as (browser, _url):
        context = browser.new_context()
        no_frame_js(context)
        page = context.new_page()
        for scale, key in moments.items():
            token = verified_token(site, moment=key, locale="en")
            # As the slide-in shows it: framed (data-parent), so the compact layout.
            page.goto(f"{base}/p/{token}?o=https%3A%2F%2Fshop.example")
            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": 700})
                boxes = page.locator(".opts label").evaluate_all(
                    "els => els.map(e => e.getBoundingClientRect().toJSON())")
                edge = page.locator("fieldset").evaluate(
                    "e => e.getBoundingClientRect().right")
                rows: dict[int, int] = {}
                for b in boxes:
                    assert b["width"] >= 44 and b["height"] >= 44, (scale, width, b)
                    assert b["right"] <= min(edge, width) + 0.5, (scale, width, b)
                    rows[round(b["top"])] = rows.get(round(b["top"]), 0) + 1
                counts = list(rows.values())
                assert len(counts) <= 2 and max(counts) - min(counts) <= 1, (
                    scale, width, counts)
                measured[(scale, width)] = counts
            if scale in ("emoji", "thumbs"):
                check_page(page, f"prompt-{scale}-framed")
            if scale == "nps":
                check_page(page, "prompt-nps-framed")
                # Opened as a link on a wide screen: room for one row of eleven.
                page.goto(f"{base}/p/{token}")
                page.set_viewport_size({"width": 1280, "height": 700})
                tops = page.locator(".opts label").evaluate_all(
                    "els => els.map(e => Math.round(e.getBoundingClientRect().top))")
                measured[("nps-link", 1280)] = [len(tops)] if len(set(tops)) == 1 else []
                check_page(page, "prompt-nps-link")
        context.close()
    assert measured[("nps", 380)] == [6, 5] and measured[("nps-link", 1280)] == [11]
    assert all(measured[(s, 304)] == [n] for s, n in (("ces", 5), ("csat", 5), ("emoji", 5),
                                                       ("thumbs", 2)))


def test_end_labels_follow_the_scale(app):
    """The default checkout question asks about ease: its ends say difficult/easy; a
    satisfaction question keeps dissatisfied/satisfied."""
    site = make_site(app)
    client = app.test_client()
    ease = client.get(f"/p/{verified_token(site, moment='checkout')}").get_data(as_text=True)
    assert "How easy was it to place your order?" in ease
    assert "<span>Very difficult</span><span>Very easy</span>" in ease
    assert "dissatisfied" not in ease
    chat = client.get(f"/p/{verified_token(site, moment='post_chat')}").get_data(as_text=True)
    assert "<span>Very dissatisfied</span><span>Very satisfied</span>" in chat


def test_rating_icons_are_drawn_not_emoji(app):
    """The emoji scale's faces and the yes/no scale's tick and cross are inline SVG (a
    machine without an emoji font showed empty boxes); yes/no also say their word."""
    site = make_site(app)
    client = app.test_client()
    for moment, words in (("browse", ()), ("product_page", ("Yes", "No"))):
        html = client.get(f"/p/{verified_token(site, moment=moment)}").get_data(as_text=True)
        assert not any(0x1F300 <= ord(c) <= 0x1FAFF for c in html), moment
        assert html.count('<svg class="ri"') == (5 if moment == "browse" else 2)
        for word in words:
            assert f"</svg><span>{word}</span>" in html
    tr = client.get(f"/p/{verified_token(site, moment='product_page', locale='tr')}")
    assert "</svg><span>Evet</span>" in tr.get_data(as_text=True)


def test_the_shop_is_named_on_pages_opened_from_a_link(app):
    """A link from an email opens a page that says whose survey it is (escaped); inside the
    shop's own page (the slide-in) it does not repeat the shop's name."""
    site = make_site(app, name="Tea <b>&</b> Co")
    client = app.test_client()
    token = verified_token(site, moment="delivery")
    page = client.get(f"/p/{token}").get_data(as_text=True)
    assert '<p class="shop">Tea &lt;b&gt;&amp;&lt;/b&gt; Co</p>' in page
    assert "<title>How likely are you to recommend us to a friend? · Tea &lt;b&gt;" in page
    framed = client.get(f"/p/{token}?o=https%3A%2F%2Fshop.example").get_data(as_text=True)
    assert 'class="shop"' not in framed
    r = client.post(f"/p/{token}", data={"rating": "3"})
    thanks = client.get(r.headers["Location"]).get_data(as_text=True)
    assert '<p class="shop">Tea &lt;b&gt;&amp;&lt;/b&gt; Co</p>' in thanks
