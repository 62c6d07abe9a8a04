"""Real-browser tests: Debian's Chromium driven by Playwright. The host page is served from
another origin (127.0.0.2) than Closeloop (127.0.0.1), as on a merchant's site."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from app.extensions import db
from app.models import Impression, Response

from .conftest import free_port, make_site, need, verified_token

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.browser
TIMEOUT = 10_000  # ms, for every wait


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (skips on laptops without it; fails in CI)."""
    need("Chromium", os.path.exists(CHROMIUM), f"{CHROMIUM} is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("Playwright", False, "the playwright package is not installed")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def _serve(server) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{server.server_address[0]}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def live(make_app):
    """Closeloop on 127.0.0.1 (SQLite, jobs run after commit)."""
    port = free_port()  # links are built on PUBLIC_BASE_URL, and other hosts are refused
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    server = make_server("127.0.0.1", port, app, threaded=True)
    for url in _serve(server):
        yield app, url


@pytest.fixture
def host() -> Iterator[tuple[dict[str, str], str]]:
    """A merchant's site on 127.0.0.2: pages[path] = html."""
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = pages.get(self.path, "not found").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    for url in _serve(server):
        yield pages, url


def shop_page(base: str, attrs: str, body: str = "") -> str:
    return (f"<!doctype html><html lang=en><head><title>Shop</title></head><body>"
            f"<h1>Order confirmed</h1>{body}"
            f'<script src="{base}/widget.js" async {attrs}></script></body></html>')


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_script_tag_prompt_answer_thank_you(browser, live, host):
    """Host page on another origin → slide-in prompt → rating + comment → thank-you in the
    frame; the row carries the page's SKUs, channel, moment and order; the frame sized
    itself by postMessage; the host page saw no error; the close button removes it."""
    app, base = live
    pages, origin = host
    site = make_site(app, [origin])
    pages["/checkout"] = shop_page(base, f'data-site="{site.public_key}" data-moment="checkout"'
                                   ' data-sku="TR2-42,MS-3" data-channel="web" data-order="1001"')
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(origin + "/checkout")
    box = page.get_by_role("complementary", name="Feedback")
    box.wait_for(timeout=TIMEOUT)
    frame = page.frame_locator("iframe[title=Feedback]")
    frame.get_by_text("How easy was it to place your order?").wait_for(timeout=TIMEOUT)
    page.wait_for_function(
        "document.querySelector('iframe[title=Feedback]').style.height !== '200px'",
        timeout=TIMEOUT)
    frame.locator("label[for=rating-1]").click()  # 2 of 5
    frame.get_by_label("Tell us more").fill("The parcel arrived broken <b>twice</b>")
    frame.get_by_role("button", name="Send").click()
    frame.get_by_role("heading", name="We are sorry").wait_for(timeout=TIMEOUT)
    assert errors == []
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert (r.rating, r.segment, r.channel, r.skus, r.order_ref) == (
            2, "negative", "web", ["TR2-42", "MS-3"], "1001")
        assert r.comment == "The parcel arrived broken <b>twice</b>"
        assert r.page_url == origin + "/checkout"
    assert count(app, Impression) == 1
    page.get_by_role("button", name="Close feedback").click()
    assert page.locator("iframe[title=Feedback]").count() == 0
    # Within the cooldown the same browser is not asked again, not even the server.
    page.goto(origin + "/checkout")
    page.wait_for_timeout(800)
    assert page.locator("iframe[title=Feedback]").count() == 0
    assert count(app, Impression) == 1
    page.close()


def test_bare_link_without_javascript(browser, live):
    """The prompt link from an email works with JavaScript disabled and cookies blocked."""
    app, base = live
    site = make_site(app)
    token = verified_token(site, moment="delivery", order="1001", customer="c-9")
    context = browser.new_context(java_script_enabled=False)
    context.route("**/*", lambda route: route.continue_())
    page = context.new_page()
    page.goto(f"{base}/p/{token}")
    page.get_by_text("How likely are you to recommend us").wait_for(timeout=TIMEOUT)
    page.locator("label[for=rating-10]").click()  # 10
    page.get_by_role("button", name="Send").click()
    page.get_by_role("heading", name="Thank you!").wait_for(timeout=TIMEOUT)
    assert context.cookies() == []
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert (r.rating, r.segment, r.verified, r.customer_ref) == (10, "promoter", True, "c-9")
    context.close()


def test_keyboard_only(browser, live):
    """Tab to the ratings, arrow keys choose, Tab to Send, Enter submits."""
    app, base = live
    site = make_site(app)
    page = browser.new_page()
    page.goto(f"{base}/p/{verified_token(site, moment='checkout')}")
    page.keyboard.press("Tab")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")  # 1 → 3 (arrow keys select within the radio group)
    page.keyboard.press("Tab")
    page.keyboard.type("Could be quicker")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Thanks for your feedback").wait_for(timeout=TIMEOUT)
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert (r.rating, r.comment) == (3, "Could be quicker")
    page.close()


def test_disallowed_origin_and_framing(browser, live, host):
    """A site that does not list this origin: no prompt, no impression; and its prompt page
    framed directly by this origin is refused by CSP, while an allowed site's is shown."""
    app, base = live
    pages, origin = host
    mine = make_site(app, [origin], name="Mine")
    theirs = make_site(app, ["https://elsewhere.example"], name="Theirs")
    pages["/foreign"] = shop_page(base, f'data-site="{theirs.public_key}" data-moment="checkout"')
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(origin + "/foreign")
    page.wait_for_timeout(1000)
    assert page.locator("iframe").count() == 0 and errors == []
    assert count(app, Impression) == 0
    good = verified_token(mine, moment="checkout")
    bad = verified_token(theirs, moment="checkout")
    pages["/frames"] = (f'<iframe name="good" src="{base}/p/{good}"></iframe>'
                        f'<iframe name="bad" src="{base}/p/{bad}"></iframe>')
    page.goto(origin + "/frames")
    page.frame_locator("iframe[name=good]").locator("form").wait_for(timeout=TIMEOUT)
    page.wait_for_timeout(500)
    bad_frame = page.frame(name="bad")
    assert bad_frame is None or bad_frame.locator("form").count() == 0
    page.close()


def test_single_page_app_show_and_bad_config(browser, live, host):
    """Closeloop.show() opens the post-chat prompt on demand; a bogus site key shows nothing
    and throws nothing into the host page."""
    app, base = live
    pages, origin = host
    site = make_site(app, [origin])
    button = ("<button id=end onclick=\"Closeloop.show({moment:'post_chat',channel:'chat'})\">"
              "End chat</button>")
    pages["/chat"] = shop_page(base, f'data-site="{site.public_key}"', button)
    pages["/bogus"] = shop_page(base, 'data-site="pk_nope" data-moment="checkout"')
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(origin + "/bogus")
    page.wait_for_timeout(800)
    assert page.locator("iframe").count() == 0
    page.goto(origin + "/chat")
    page.wait_for_function("!!(window.Closeloop && window.Closeloop.show)", timeout=TIMEOUT)
    assert page.locator("iframe").count() == 0
    page.click("#end")
    frame = page.frame_locator("iframe[title=Feedback]")
    frame.get_by_text("How satisfied are you with this chat?").wait_for(timeout=TIMEOUT)
    frame.locator("label[for=rating-4]").click()
    frame.get_by_role("button", name="Send").click()
    frame.get_by_role("heading", name="Thank you!").wait_for(timeout=TIMEOUT)
    assert errors == []
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert (r.channel, r.rating) == ("chat", 5)
    page.close()
