"""The customer's pages in the customer's language (issue 9, languages): every customer-facing
text has a complete translation in tr, ru and et, and the prompt, its errors, the one-click
confirmation, the thank-you pages and the broken-link pages rendered in each of them have no
English left over — checked against the English source texts themselves, not a list typed
here. The admin stays English whatever the browser asks for."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po
from flask import render_template
from sqlalchemy import select, update

from app import i18n
from app.extensions import db
from app.loop import cases
from app.models import Case, Moment, Site

from .conftest import make_site, verified_token

ROOT = Path(__file__).resolve().parent.parent
TRANSLATED = ("tr", "ru", "et")
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None,
            "lazy_ngettext": (1, 2),
            "N_": None}
# What a customer reads: the embed pages, the customer emails, the answer rules' messages.
CUSTOMER_SOURCES = [
    *sorted((ROOT / "app/templates/embed").glob("*.html")),
    *[p for p in sorted((ROOT / "app/templates/email").iterdir())
      if p.name.split(".")[0] in ("thanks", "resolution", "verification", "_thanks_body",
                                  "_verify_links", "_layout")],
    ROOT / "app/responses.py",
    ROOT / "app/audio.py",  # why a voice note was refused
    ROOT / "app/sites.py",  # the default moments' questions
    *sorted((ROOT / "app/templates/channels").iterdir()),  # the email snippet
    *sorted((ROOT / "app/embed").glob("*.py")),
]
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def customer_messages() -> dict[str | tuple[str, str], str]:
    """msgid (or singular/plural pair) → the source file it came from."""
    found: dict[str | tuple[str, str], str] = {}
    for path in CUSTOMER_SOURCES:
        method = "python" if path.suffix == ".py" else "jinja2"
        for _line, msg, _comments, _ctx in extract_from_file(method, str(path),
                                                             keywords=KEYWORDS):
            key = msg if isinstance(msg, str) else tuple(m for m in msg if m)
            if isinstance(key, tuple) and len(key) == 1:
                key = key[0]
            found[key] = path.name
    return found


def catalog(lang: str):
    with open(ROOT / "app/translations" / lang / "LC_MESSAGES/messages.po", "rb") as f:
        return read_po(f, locale=lang)


def test_customer_texts_are_extracted():
    """The extraction sees the pages' texts at all (so the checks below cannot pass empty)."""
    found = customer_messages()
    for text in ("Tell us more", "Send my rating", "1, very dissatisfied",
                 "Please choose a rating.", "This feedback link is not valid",
                 "Yes, it is resolved",
                 ("our team reviews every answer like yours within %(num)s hour.",
                  "our team reviews every answer like yours within %(num)s hours.")):
        assert text in found, text


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_customer_text_is_translated(lang):
    """No customer-facing text is missing, empty or fuzzy in `lang`'s catalog, every plural
    form is there, and a translation keeps exactly the placeholders of its source."""
    cat = catalog(lang)
    problems = []
    for key, source in customer_messages().items():
        msgid = key[0] if isinstance(key, tuple) else key
        msg = cat.get(msgid)
        if msg is None:
            problems.append(f"{source}: {msgid!r} is not in the catalog (make translations)")
            continue
        forms = msg.string if isinstance(msg.string, tuple) else (msg.string,)
        if msg.fuzzy or not all(forms):
            problems.append(f"{source}: {msgid!r} is {'fuzzy' if msg.fuzzy else 'untranslated'}")
            continue
        if isinstance(key, tuple) and len(forms) != cat.num_plurals:
            problems.append(f"{source}: {msgid!r} has {len(forms)} of {cat.num_plurals} forms")
        wanted = set(PLACEHOLDER.findall(msgid))
        for form in forms:
            if set(PLACEHOLDER.findall(form)) != wanted:
                problems.append(f"{source}: {msgid!r} → {form!r} changes the placeholders")
    assert not problems, "\n".join(problems)


# -- the pages, rendered ------------------------------------------------------------------------


class _Text(HTMLParser):
    """Text a person (or a screen reader) meets: text nodes and labelling attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self.lang: str | None = None
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        if tag in ("script", "style"):
            self._skip += 1
        for name, value in a.items():
            # Labelling attributes, and the data-l-* texts a script shows (voice.js).
            if value and (name in ("aria-label", "title", "placeholder", "alt")
                          or name.startswith("data-l-")):
                self.chunks.append(value.strip())

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.chunks.append(" ".join(data.split()))


def english_left(html: str, sources: list[str]) -> list[str]:
    """The English source texts still visible in a rendered page."""
    parser = _Text()
    parser.feed(html)
    text = "\n".join(parser.chunks)
    left = []
    for src in sources:
        pattern = re.escape(" ".join(src.split()))
        pattern = re.sub(r"%\\\(\w+\\\)s", ".+?", pattern)
        # Short texts ("No", "Send") only as a whole chunk; longer ones anywhere.
        whole = len(src) < 12
        if re.search(rf"(?m)^{pattern}$" if whole else pattern, text):
            left.append(src)
    return left


def _pages(app, site: Site, lang: str) -> dict[str, str]:
    """Every page a customer can meet on the prompt path, in `lang`."""
    client = app.test_client()
    pages: dict[str, str] = {}
    with app.app_context():
        moments = {m.key: m for m in db.session.scalars(select(Moment).where(
            Moment.site_id == site.id))}
    for key, m in moments.items():
        token = verified_token(site, moment=key, locale=lang, customer="c-1", order=f"o-{key}")
        pages[f"prompt-{m.scale}-{key}"] = page = client.get(f"/p/{token}").get_data(
            as_text=True)
        pages.setdefault(f"prompt-{m.scale}", page)
        r = client.post(f"/p/{token}", data={"comment": "x"})
        assert r.status_code == 400
        pages[f"no-rating-{m.scale}-{key}"] = r.get_data(as_text=True)
        if m.voice_enabled:  # the recorder's texts, and a voice note refused for its bytes
            assert "data-voice" in page
            r = client.post(f"/p/{token}", data={
                "rating": "2", "voice": (io.BytesIO(b"<html><script>x</script></html>"),
                                         "voice.webm", "audio/webm")},
                content_type="multipart/form-data")
            assert r.status_code == 400 and 'id="voice-err"' in r.get_data(as_text=True)
            pages[f"voice-refused-{key}"] = r.get_data(as_text=True)
    token = verified_token(site, moment="delivery", locale=lang, customer="c-2", order="o-2")
    r = client.get(f"/p/{token}?rating=9")
    assert r.status_code == 200
    pages["one-click"] = r.get_data(as_text=True)
    r = client.post(f"/p/{token}", data={"rating": "9", "comment": "y" * 5000})
    assert r.status_code == 400
    pages["too-long"] = r.get_data(as_text=True)
    # detractor, passive, promoter, and an anonymous detractor (asked "may we contact you?")
    for rating, customer in ((2, "c-3"), (7, None), (10, "c-4"), (1, None)):
        token = verified_token(site, moment="delivery", locale=lang,
                               **({"customer": customer} if customer else {}),
                               order=f"o-r{rating}")
        r = client.post(f"/p/{token}", data={"rating": str(rating)})
        assert r.status_code == 303, r.get_data(as_text=True)
        thanks = client.get(r.headers["Location"])
        pages[f"thanks-{rating}"] = thanks.get_data(as_text=True)
        if rating == 2:  # a comment on a case the team has started: refused, text given back
            with app.app_context():
                case_id = db.session.scalar(select(Case.id).order_by(Case.id.desc()))
                cases.transition(case_id, "acknowledged", "agent@shop.example")
            r = client.post(r.headers["Location"], data={"comment": "It broke again"})
            pages["refused"] = r.get_data(as_text=True)
    r = client.get("/p/not-a-token", headers={"Accept-Language": f"{lang};q=0.9,en;q=0.5"})
    assert r.status_code in (400, 404)
    pages["invalid"] = r.get_data(as_text=True)
    with app.test_request_context(headers={"Accept-Language": lang}):
        i18n.use(None)
        pages["expired"] = render_template("embed/invalid.html", expired=True)
    return pages


@pytest.mark.parametrize("lang", [*TRANSLATED, "en"])
def test_pages_have_no_english_left(make_app, lang):
    """Each page rendered in tr, ru and et says `lang` in <html lang> and shows none of the
    English source texts; in English the same check finds them (it can fail)."""
    app = make_app(PUBLIC_BASE_URL="http://localhost")
    site = make_site(app, support_contact="help@shop.example",
                     review_url="https://reviews.example/shop",
                     referral_url="https://shop.example/friends")
    with app.app_context():
        # A merchant's own moment: its question in each language is the merchant's text.
        db.session.add(Moment(site_id=site.id, key="m-own", scale="csat", question="How was it?",
                              questions={"tr": "Nasıldı?", "ru": "Как всё прошло?",
                                         "et": "Kuidas läks?"}))
        # Voice notes on one moment: the recorder and its refusals are on the pages too.
        db.session.execute(update(Moment).where(Moment.site_id == site.id,
                                                Moment.key == "checkout")
                           .values(voice_enabled=True))
        db.session.commit()
    sources = sorted({k[0] if isinstance(k, tuple) else k for k in customer_messages()}
                     | {k[1] for k in customer_messages() if isinstance(k, tuple)})
    pages = _pages(app, site, lang)
    assert {"prompt-ces", "prompt-csat", "prompt-nps", "prompt-thumbs", "prompt-emoji",
            "voice-refused-checkout"} <= set(pages)
    leftovers = {}
    for name, html in pages.items():
        parser = _Text()
        parser.feed(html)
        assert parser.lang == lang, (name, parser.lang)
        left = english_left(html, sources + ["How was it?"])
        if left:
            leftovers[name] = sorted(left)
    if lang == "en":
        assert len(leftovers) == len(pages)  # every page shows English texts in English
        assert "Tell us more" in leftovers["prompt-csat"]
        assert "Please choose a rating." in leftovers["no-rating-nps-delivery"]
        assert "How was it?" in leftovers["prompt-csat-m-own"]
        assert "Or leave a voice note" in leftovers["prompt-ces-checkout"]
        assert "Voice note deleted." in leftovers["prompt-ces-checkout"]  # a script's text
    else:
        assert not leftovers, leftovers


def test_plural_forms_follow_the_language(make_app):
    """Russian has three plural forms: 1 час, 2 часа, 5 часов (one, few, many)."""
    app = make_app()
    with app.test_request_context():
        i18n.use("ru")
        from flask_babel import ngettext

        def hours(n):
            return ngettext("our team reviews every answer like yours within %(num)s hour.",
                            "our team reviews every answer like yours within %(num)s hours.", n)
        assert [hours(n).split("срок — ")[1] for n in (1, 2, 5, 21, 22, 11)] == [
            "1 час.", "2 часа.", "5 часов.", "21 час.", "22 часа.", "11 часов."]


def test_the_locale_order(make_app):
    """The token's locale wins; an unsupported one falls to the browser's language, then to
    the site's default; the admin stays English whatever the browser asks for."""
    app = make_app()
    site = make_site(app, locale="et")
    client = app.test_client()
    for locale, accept, want in (("tr-TR", "ru", "tr"), ("de", "ru,en;q=0.5", "ru"),
                                 ("de", "fr", "et"), ("ru_RU", None, "ru")):
        token = verified_token(site, locale=locale)
        headers = {"Accept-Language": accept} if accept else {}
        page = client.get(f"/p/{token}", headers=headers).get_data(as_text=True)
        assert f'<html lang="{want}">' in page, (locale, accept)
    login = client.get("/admin/login", headers={"Accept-Language": "tr"}).get_data(as_text=True)
    assert "Sign in" in login


@pytest.mark.browser
@pytest.mark.parametrize("lang", TRANSLATED)
def test_translated_pages_in_chromium(make_app, lang):
    """The NPS prompt (the widest scale and the longest end labels), its error state and the
    detractor's thank-you page in `lang` in Chromium: no axe-core violations, screenshots at
    1280 and 390 px (looked at: labels fit, nothing overflows)."""

    from .conftest import free_port
    from .test_browser import check_page, chromium_serving, no_frame_js

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(PUBLIC_BASE_URL=base)
    site = make_site(app, support_contact="help@shop.example")
    token = verified_token(site, moment="delivery", locale=lang, customer="c-9")
    with chromium_serving(app, port) as (browser, _url):
        context = browser.new_context(viewport={"width": 390, "height": 844})
        no_frame_js(context)  # no auto-send: the page as a person fills it in
        page = context.new_page()
        page.goto(f"{base}/p/{token}")
        assert page.locator("html").get_attribute("lang") == lang
        check_page(page, f"prompt-{lang}")
        page.locator("button[type=submit]").click()
        page.locator("#rating-err").wait_for()
        check_page(page, f"prompt-error-{lang}")
        page.locator("label[for$='-2']").first.click()
        page.locator("button[type=submit]").click()
        page.locator("h1").wait_for()
        assert "/t/" in page.url
        check_page(page, f"thanks-{lang}")
        context.close()


def test_the_question_in_each_language(make_app):
    """A moment's own text for a language wins; without one, a default moment's question is
    the catalog's translation and a merchant's own question is shown as written; the cached
    blank page notices a changed text."""
    from app import sites

    app = make_app()
    site = make_site(app)
    client = app.test_client()

    def h1(moment: str, lang: str) -> str:
        page = client.get(f"/p/{verified_token(site, moment=moment, locale=lang)}")
        return re.search(r"<h1>(.*?)</h1>", page.get_data(as_text=True)).group(1)

    assert h1("delivery", "tr") == "Bizi bir arkadaşınıza önerme olasılığınız nedir?"
    assert h1("delivery", "en") == "How likely are you to recommend us to a friend?"
    with app.app_context():
        s = db.session.get(Site, site.id)
        moment = db.session.scalar(select(Moment).where(Moment.site_id == site.id,
                                                        Moment.key == "delivery"))
        sites.save_moment(s, moment, {"question": "Would you recommend Shop?",
                                      "questions": {"ru": "Порекомендуете Shop?", "tr": " "}})
    assert h1("delivery", "ru") == "Порекомендуете Shop?"
    assert h1("delivery", "tr") == "Would you recommend Shop?"  # own English text, as written
    with app.app_context():
        moment = db.session.scalar(select(Moment).where(Moment.key == "delivery",
                                                        Moment.site_id == site.id))
        assert moment.questions == {"ru": "Порекомендуете Shop?"}  # the blank one dropped
        with pytest.raises(sites.SettingsError) as err:
            sites.save_moment(db.session.get(Site, site.id), moment,
                              {"questions": {"et": "x" * 301}})
        assert err.value.errors == {"question_et": "At most 300 characters."}


def test_the_loader_gets_its_labels_in_the_prompts_language(make_app):
    """/e/prompt hands the loader its region and close-button labels in the prompt's
    language (public: data-lang / the page's lang / the browser's; verified: the token's)."""
    import json

    from .conftest import ORIGIN

    app = make_app()
    site = make_site(app)
    client = app.test_client()

    def labels(body):
        r = client.post("/e/prompt", data=json.dumps(body),
                        headers={"Origin": ORIGIN, "Content-Type": "text/plain"})
        assert r.status_code == 200 and r.json["show"] is True, r.json
        return r.json["labels"]

    public = {"site": site.public_key, "moment": "delivery"}
    assert labels({**public, "lang": "ru", "vid": "v1"}) == {
        "title": "Отзыв", "close": "Закрыть окно отзыва"}
    assert labels({**public, "vid": "v2"}) == {"title": "Feedback", "close": "Close feedback"}
    token = verified_token(site, locale="et", customer="c-et")
    assert labels({"token": token, "vid": "v3"}) == {"title": "Tagasiside",
                                                      "close": "Sulge tagasiside"}
