"""Real-browser tests: Debian's Chromium driven by Playwright. The host page is served from
another origin (127.0.0.2) than Closeloop (127.0.0.1), as on a merchant's site."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Impression, Response

from .conftest import free_port, make_site, need, verified_token
from .live_server import serving, wsgi_server

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


def sign_in(page, base: str, email: str, password: str) -> None:
    """Sign in through the admin's real form (the browser tests' shared first step)."""
    page.goto(f"{base}/admin/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


@contextlib.contextmanager
def chromium_serving(app, port: int, args: tuple[str, ...] = ()) -> Iterator[tuple[Any, str]]:
    """`app` served on 127.0.0.1:`port` in a thread and a headless Chromium (with `args` on
    its command line): yields (browser, base URL). The shared frame of the admin and page
    tests that need their own app (skips on laptops without Chromium or Playwright; fails in
    CI)."""
    need("Chromium", os.path.exists(CHROMIUM), f"{CHROMIUM} is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("Playwright", False, "the playwright package is not installed")
    server = wsgi_server(app, port)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", *args])
        try:
            with serving(server) as base:
                yield browser, base
        finally:
            browser.close()


@pytest.fixture
def live(make_app):
    """Closeloop on 127.0.0.1 (SQLite, jobs run after commit)."""
    port = free_port()  # links are built on PUBLIC_BASE_URL, and other hosts are refused
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    with serving(wsgi_server(app, port)) as url:
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

    with serving(ThreadingHTTPServer(("127.0.0.2", 0), Handler)) as url:
        yield pages, url


def shop_page(base: str, attrs: str, body: str = "") -> str:
    return (f"<!doctype html><html lang=en><head><title>Shop</title></head><body>"
            f"<h1>Order confirmed</h1>{body}"
            f'<script src="{base}/widget.js" async {attrs}></script></body></html>')


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def requests_to(page, path: str, method: str = "POST") -> list[str]:
    """A live list of the page's requests to URLs containing `path` with `method`."""
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if path in r.url and r.method == method
            else None)
    return seen


def barrier(page) -> None:
    """Wait until every request the page issued so far has been seen: a fetch issued now
    is reported after them (Chromium reports a page's requests in the order it sends them).
    Instead of a sleep before asserting that something did NOT happen."""
    with page.expect_response(lambda r: "/closeloop-barrier" in r.url, timeout=TIMEOUT):
        page.evaluate("() => { fetch('/closeloop-barrier').catch(() => {}); }")


def ask_settled(page, action) -> int | None:
    """Run `action`, which makes the loader ask /e/prompt; wait for the answer's body (or the
    failure: the browser refuses an answer without CORS headers), then one turn of the page's
    event loop, so the loader's handler has run. Returns the status, None when refused."""
    with page.expect_request(lambda r: r.url.endswith("/e/prompt"), timeout=TIMEOUT) as asked:
        action()
    response = asked.value.response()  # waits for the response or the failure
    if response is not None:
        response.finished()
    page.evaluate("() => new Promise(r => setTimeout(r, 0))")
    return response.status if response is not None else None


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
    asks = requests_to(page, "/e/prompt")
    page.goto(origin + "/checkout")
    page.wait_for_function("!!(window.Closeloop && window.Closeloop.show)", timeout=TIMEOUT)
    barrier(page)  # the loader decided when it ran; any ask it made is reported by now
    assert asks == []
    assert page.locator("iframe[title=Feedback]").count() == 0
    assert count(app, Impression) == 1
    page.close()


def test_slide_in_speaks_the_pages_language(browser, live, host):
    """`data-lang="tr"`: the slide-in's region, its frame and its close button are labelled
    in Turkish, and the prompt inside it is Turkish."""
    app, base = live
    pages, origin = host
    site = make_site(app, [origin])
    pages["/tr"] = shop_page(base, f'data-site="{site.public_key}" data-moment="delivery" '
                                   'data-lang="tr"')
    page = browser.new_page()
    page.goto(origin + "/tr")
    page.get_by_role("complementary", name="Geri bildirim").wait_for(timeout=TIMEOUT)
    frame = page.frame_locator("iframe[title='Geri bildirim']")
    frame.get_by_text("Bizi bir arkadaşınıza önerme olasılığınız nedir?").wait_for(
        timeout=TIMEOUT)
    assert frame.locator("html").get_attribute("lang") == "tr"
    page.get_by_role("button", name="Geri bildirimi kapat").click()
    assert page.locator("iframe").count() == 0
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
    assert ask_settled(page, lambda: page.goto(origin + "/foreign")) is None  # 403, no CORS
    assert page.locator("iframe").count() == 0 and errors == []
    assert count(app, Impression) == 0
    good = verified_token(mine, moment="checkout")
    bad = verified_token(theirs, moment="checkout")
    loaded = "onload=\"this.dataset.loaded='1'\""  # the host page has no CSP of its own
    pages["/frames"] = (f'<iframe name="good" {loaded} src="{base}/p/{good}"></iframe>'
                        f'<iframe name="bad" {loaded} src="{base}/p/{bad}"></iframe>')
    page.goto(origin + "/frames")
    page.frame_locator("iframe[name=good]").locator("form").wait_for(timeout=TIMEOUT)
    # Both frames have finished loading (the refused one shows Chromium's error page).
    page.locator("iframe[name=bad][data-loaded]").wait_for(state="attached", timeout=TIMEOUT)
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
    assert ask_settled(page, lambda: page.goto(origin + "/bogus")) is None  # 400, no CORS
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


# -- links from emails: a GET shows the choice, the POST records it (DESIGN rule 13) ---------

SHOTS = Path(os.environ.get("CLOSELOOP_SHOTS", "/tmp/shots"))


def check_page(page, name: str) -> None:
    """No axe-core violations on this page; screenshots at desktop and phone widths."""
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:
        need("axe-playwright-python", False, "the package is not installed")
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    for label, width, height in (("desktop", 1280, 800), ("phone", 390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=SHOTS / f"{name}-{label}.png", full_page=True)
    if size:
        page.set_viewport_size(size)


def no_frame_js(context) -> None:
    """Keep frame.js from loading: the page stays as it is shown without JavaScript, while
    Playwright can still run axe in it."""
    context.route("**/static/frame.js*", lambda route: route.abort())


def resolved_case(app, base: str, site) -> tuple[int, dict[str, str]]:
    """An answered and resolved case; returns its id and its verification links."""
    from app.loop import cases
    from app.models import Case

    token = verified_token(site, moment="checkout", customer="c-5")
    assert app.test_client().post(f"/p/{token}", data={"rating": "2"},
                                  base_url=base).status_code == 303
    with app.app_context():
        case_id = db.session.scalar(select(Case.id))
        cases.transition(case_id, "resolved", "agent@shop.example", resolution="Refunded")
        links = cases.verify_links(db.session.get(Case, case_id))
    assert all(url.startswith(base + "/v/") for url in links.values())
    return case_id, links


def case_state(app, case_id: int) -> tuple[str, list[str]]:
    """The case's status and the customer's events on its timeline."""
    from app.models import Case, CaseEvent

    with app.app_context():
        db.session.expire_all()
        kinds = db.session.scalars(select(CaseEvent.kind).where(
            CaseEvent.case_id == case_id, CaseEvent.actor == "customer").order_by(CaseEvent.id)
        ).all()
        return db.session.get(Case, case_id).status, kinds


def test_one_click_link_with_javascript_records_once(browser, live):
    """A star link opened in a browser with JavaScript: the page sends the rating by itself
    (one POST), lands on the thank-you page, and the comment there is added to the answer."""
    app, base = live
    site = make_site(app)
    token = verified_token(site, moment="checkout", customer="c-1", n="browser-star-0001")
    context = browser.new_context()
    page = context.new_page()
    posts = requests_to(page, f"/p/{token}")
    page.goto(f"{base}/p/{token}?rating=2")
    page.get_by_role("heading", name="We are sorry").wait_for(timeout=TIMEOUT)
    assert len(posts) == 1 and "/t/" in page.url
    with app.app_context():
        assert db.session.scalars(select(Response.rating)).all() == [2]
    check_page(page, "one-click-thanks")
    page.get_by_label("What went wrong?").fill("The strap broke on day two")
    page.get_by_role("button", name="Send").click()
    page.get_by_text("We have your comment").wait_for(timeout=TIMEOUT)
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert (r.rating, r.comment) == (2, "The strap broke on day two")
    assert len(posts) == 1 and context.cookies() == []
    context.close()


def test_one_click_link_without_javascript_one_button(browser, live):
    """Without JavaScript a star link shows the rating chosen and stores nothing; one button,
    "Send my rating", stores it (once)."""
    app, base = live
    site = make_site(app)
    token = verified_token(site, moment="delivery", customer="c-2", n="browser-star-0002")
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    posts = requests_to(page, f"/p/{token}")
    page.goto(f"{base}/p/{token}?rating=9")  # returns after the load event
    assert page.locator("#rating-9").is_checked()
    assert page.get_by_role("button").count() == 1
    assert posts == [] and count(app, Response) == 0
    page.get_by_role("button", name="Send my rating").click()
    page.get_by_role("heading", name="Thank you!").wait_for(timeout=TIMEOUT)
    assert len(posts) == 1
    with app.app_context():
        assert db.session.scalars(select(Response.rating)).all() == [9]
    context.close()
    # The same page, looked at: axe and screenshots (frame.js kept away so it stays).
    context = browser.new_context()
    no_frame_js(context)
    page = context.new_page()
    page.goto(f"{base}/p/{verified_token(site, moment='delivery', n='browser-star-0003')}"
              "?rating=9")
    check_page(page, "one-click-confirm")
    context.close()


def test_verification_link_both_ways(browser, live):
    """"Not resolved" opened with JavaScript reopens the case with one POST; after the next
    resolution, "resolved" opened without JavaScript changes nothing until its one button is
    pressed; a second press says the answer is already recorded."""
    app, base = live
    site = make_site(app, support_contact="help@shop.example")
    case_id, links = resolved_case(app, base, site)
    context = browser.new_context()
    page = context.new_page()
    posts = requests_to(page, "/v/")
    page.goto(links["no"])
    page.get_by_role("heading", name="Sorry it is not resolved yet").wait_for(timeout=TIMEOUT)
    assert len(posts) == 1
    assert case_state(app, case_id) == ("reopened", ["reopened"])
    check_page(page, "verify-reopened")
    context.close()

    from app.loop import cases
    from app.models import Case

    with app.app_context():
        cases.transition(case_id, "resolved", "agent@shop.example", resolution="Replaced")
        links = cases.verify_links(db.session.get(Case, case_id))
    context = browser.new_context(java_script_enabled=False)
    page, second_tab = context.new_page(), context.new_page()  # the link opened twice
    posts = requests_to(page, "/v/")
    for p in (page, second_tab):
        p.goto(links["yes"])
        p.get_by_role("heading", name="Is it resolved for you?").wait_for(timeout=TIMEOUT)
    assert posts == [] and case_state(app, case_id) == ("resolved", ["reopened"])
    assert page.get_by_role("button").count() == 1
    page.get_by_role("button", name="Yes, it is resolved").click()
    page.get_by_role("heading", name="Thank you for confirming").wait_for(timeout=TIMEOUT)
    assert len(posts) == 1
    assert case_state(app, case_id) == ("verified", ["reopened", "verified"])
    second_tab.get_by_role("button", name="Yes, it is resolved").click()
    second_tab.get_by_role("heading", name="We already have your answer").wait_for(
        timeout=TIMEOUT)
    assert case_state(app, case_id) == ("verified", ["reopened", "verified"])
    context.close()

    context = browser.new_context()
    no_frame_js(context)
    page = context.new_page()
    page.goto(links["no"])
    check_page(page, "verify-already")
    with app.app_context():
        cases.transition(case_id, "reopened", "agent@shop.example")
        cases.transition(case_id, "resolved", "agent@shop.example", resolution="Again")
        links = cases.verify_links(db.session.get(Case, case_id))
    page.goto(links["yes"])
    page.get_by_role("heading", name="Is it resolved for you?").wait_for(timeout=TIMEOUT)
    check_page(page, "verify-confirm")
    context.close()


def test_second_comment_in_chromium(browser, live):
    """Reopening an answered link, choosing a rating and writing a second comment stores it
    (the page says so and the row has both); once the team has started, a third comment is
    refused on a page that says why and gives the text back."""
    from app.loop import cases
    from app.models import Case

    app, base = live
    site = make_site(app, support_contact="help@shop.example")
    token = verified_token(site, moment="delivery", customer="c-3", n="browser-cmt-0001")
    page = browser.new_page()
    for rating, text in ((6, "Two days late"), (4, "And the box was crushed")):
        page.goto(f"{base}/p/{token}")
        page.locator(f"label[for=rating-{rating}]").click()
        page.get_by_label("Tell us more").fill(text)
        page.get_by_role("button", name="Send").click()
        page.get_by_role("heading", name="We are sorry").wait_for(timeout=TIMEOUT)
    page.get_by_text("We have your comment. Thank you.").wait_for(timeout=TIMEOUT)
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert (r.rating, r.comment) == (4, "Two days late\n\nAnd the box was crushed")
        cases.transition(db.session.scalar(select(Case.id)), "acknowledged", "agent@shop.example")
    check_page(page, "second-comment-stored")
    page.goto(f"{base}/p/{token}")
    page.locator("label[for=rating-1]").click()
    page.get_by_label("Tell us more").fill("Still nothing from you")
    with page.expect_response(lambda resp: resp.request.method == "POST") as sent:
        page.get_by_role("button", name="Send").click()
    assert sent.value.status == 409
    page.get_by_role("heading", name="Your comment was not added").wait_for(timeout=TIMEOUT)
    assert page.get_by_text("Still nothing from you").is_visible()
    assert page.get_by_text("We have your comment").count() == 0
    with app.app_context():
        r = db.session.scalars(select(Response)).one()
        assert (r.rating, r.comment) == (4, "Two days late\n\nAnd the box was crushed")
    check_page(page, "second-comment-refused")
    page.close()
