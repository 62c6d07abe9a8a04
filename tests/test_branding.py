"""Whose survey is this (issue 9, point 7): a lead uploads a logo (judged by its bytes,
re-encoded without metadata, bounded in bytes and pixels) and picks an accent colour (WCAG
contrast checked); the customer pages show both under a CSP that allows exactly that style;
the logo is public under an unguessable name, everything else about it is the settings'."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin
from sqlalchemy import select

from app import branding
from app.extensions import db
from app.models import AuditEvent, Site

from .conftest import make_site, verified_token
from .test_inbox import csrf, member, signed_in

ACCENT = "#1a4d8f"


# -- images made here, with Pillow -------------------------------------------------------------


def _picture(size: tuple[int, int] = (600, 200), mode: str = "RGBA") -> Image.Image:
    """A logo-like picture: a round mark and three word-like bars on a transparent (or
    white) background, filling the frame as a real logo does."""
    from PIL import ImageDraw

    im = Image.new(mode, size, (0, 0, 0, 0) if mode == "RGBA" else (255, 255, 255))
    draw = ImageDraw.Draw(im)
    w, h = size
    side = min(w, h)
    draw.ellipse((0, (h - side) // 2, side - 1, (h + side) // 2 - 1), fill=(26, 77, 143))
    draw.ellipse((side // 4, h // 2 - side // 4, side * 3 // 4, h // 2 + side // 4),
                 fill=(245, 179, 66))
    if w > h:  # a wordmark beside the mark
        x, bar = side + side // 5, max(4, h // 7)
        for i, length in enumerate((0.9, 0.6, 0.75)):
            y = h // 2 - bar * 2 + i * bar * 3 // 2
            draw.rounded_rectangle((x, y, x + int((w - x) * length), y + bar), radius=bar // 2,
                                   fill=(27, 31, 36))
    return im


def png_bytes(size: tuple[int, int] = (600, 200)) -> bytes:
    """A PNG with a text chunk and an ICC profile that must not survive the re-encoding."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Someone's laptop")
    out = io.BytesIO()
    _picture(size).save(out, "PNG", pnginfo=info, icc_profile=b"fake-icc-profile-bytes")
    return out.getvalue()


def jpeg_bytes() -> bytes:
    """A JPEG with EXIF (a camera model and an orientation: rotate 90°) and a GPS-ish tag."""
    exif = Image.Exif()
    exif[0x0110] = "Secret Camera 3000"  # Model
    exif[0x0112] = 6  # Orientation: the picture is stored rotated, to be turned 90° right
    out = io.BytesIO()
    _picture((200, 600), "RGB").save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def webp_bytes() -> bytes:
    out = io.BytesIO()
    _picture((400, 400)).save(out, "WEBP", quality=80)
    return out.getvalue()


def noise_png(size: tuple[int, int]) -> bytes:
    """A PNG that does not compress: about 3 bytes per pixel."""
    import random

    rnd = random.Random(7)
    out = io.BytesIO()
    Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3)).save(out, "PNG")
    return out.getvalue()


def bomb_png() -> bytes:
    """A decompression bomb: 12 000 × 12 000 pixels (144 megapixels) in a few kilobytes."""
    out = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(out, "PNG", optimize=True)
    return out.getvalue()


# -- helpers -------------------------------------------------------------------------------------


def branding_app(make_app, tmp_path: Path, db_kind: str = "sqlite"):
    """An app storing in its own folder (so "nothing stored" can be checked)."""
    return make_app(db_kind, STORAGE_URL=(tmp_path / "media").as_uri())


def stored(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "media").rglob("*") if p.is_file())


def page_url(site_id: int, rest: str = "") -> str:
    return f"/admin/sites/{site_id}/settings/branding{rest}"


def multipart(**fields: Any) -> dict[str, Any]:
    """A multipart body built in memory (the test client spools one over 500 kB to a temporary
    file it never closes)."""
    from werkzeug.test import encode_multipart

    boundary, body = encode_multipart(fields)
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}


def upload(client, site_id: int, data: bytes, filename: str = "logo.png",
           content_type: str = "image/png"):
    token = csrf(client.get(page_url(site_id)).get_data(as_text=True))
    from werkzeug.datastructures import FileStorage

    return client.post(page_url(site_id, "/logo"), **multipart(
        csrf_token=token, logo=FileStorage(io.BytesIO(data), filename,
                                           content_type=content_type)))


def set_accent(client, site_id: int, value: str, **extra: str):
    token = csrf(client.get(page_url(site_id)).get_data(as_text=True))
    return client.post(page_url(site_id, "/accent"),
                       data={"csrf_token": token, "accent": value, **extra})


def site_row(app, site_id: int) -> Site:
    with app.app_context():
        s = db.session.get(Site, site_id)
        db.session.expunge(s)
        return s


def audit_actions(app, site_id: int) -> list[str]:
    """The site's audit rows about its settings (not the memberships the fixtures grant)."""
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.site_id == site_id, AuditEvent.action.like("site.%"))
            .order_by(AuditEvent.id)))


@pytest.fixture
def shop(make_app, tmp_path):
    """An app, a site with an owner signed in, and the storage folder."""
    app = branding_app(make_app, tmp_path)
    site = make_site(app, name="Nordic Lamps")
    member(app, "lead@shop.example", site, "lead")
    return app, site, signed_in(app, "lead@shop.example")


# -- uploads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "kind", "stored_type"), [
    (png_bytes, "PNG", "image/png"), (jpeg_bytes, "JPEG", "image/webp"),
    (webp_bytes, "WEBP", "image/webp"),
])
def test_upload_valid_logo(shop, tmp_path, make, kind, stored_type):
    """PNG, JPEG and WebP are accepted by their bytes, scaled to fit 320 × 96, re-encoded
    without metadata (no EXIF, ICC, text), stored under a random key; audited; the site's
    settings_version moves so every process's cache sees it."""
    app, site, lead = shop
    before = site_row(app, site.id).settings_version
    data = make()
    assert Image.open(io.BytesIO(data)).format == kind
    resp = upload(lead, site.id, data, filename="../../x.png")
    assert resp.status_code == 302, resp.get_data(as_text=True)
    row = site_row(app, site.id)
    assert row.logo_content_type == stored_type
    assert re.fullmatch(r"logo/[A-Za-z0-9_-]{32}\.(png|webp)", row.logo_key)
    assert row.settings_version > before
    files = stored(tmp_path)
    assert [p.relative_to(tmp_path / "media").as_posix() for p in files] == [row.logo_key]
    im = Image.open(io.BytesIO(files[0].read_bytes()))
    assert im.format == stored_type.split("/")[1].upper()
    assert im.width <= 320 and im.height <= 96
    assert not {"exif", "icc_profile", "Author", "xmp"} & set(im.info)
    assert b"Secret Camera" not in files[0].read_bytes()
    assert b"Someone's laptop" not in files[0].read_bytes()
    if kind == "JPEG":  # stored 200 × 600 with "rotate 90°": a wide logo after turning
        assert im.width > im.height
    if kind == "PNG":
        assert im.mode == "RGBA" and im.getpixel((0, 0))[3] == 0  # transparency kept
    assert audit_actions(app, site.id)[-1] == "site.logo"
    page = lead.get(page_url(site.id)).get_data(as_text=True)
    assert "Logo saved" in page and f'src="/brand/{site.public_key}/' in page


def test_replacing_and_removing_delete_the_old_object(shop, tmp_path):
    """A new logo gets a new key and the old file goes; "Remove" clears the row and the file;
    the old URL is 404 at once."""
    app, site, lead = shop
    assert upload(lead, site.id, png_bytes()).status_code == 302
    first = site_row(app, site.id).logo_key
    old_url = f"/brand/{site.public_key}/{first.rsplit('/', 1)[1]}"
    assert app.test_client().get(old_url).status_code == 200
    assert upload(lead, site.id, webp_bytes(), "l.webp", "image/webp").status_code == 302
    second = site_row(app, site.id).logo_key
    assert second != first
    assert [p.name for p in stored(tmp_path)] == [second.rsplit("/", 1)[1]]
    assert app.test_client().get(old_url).status_code == 404
    token = csrf(lead.get(page_url(site.id)).get_data(as_text=True))
    assert lead.post(page_url(site.id, "/logo/remove"),
                     data={"csrf_token": token}).status_code == 302
    row = site_row(app, site.id)
    assert row.logo_key is None and row.logo_content_type is None
    assert stored(tmp_path) == []
    assert audit_actions(app, site.id)[-3:] == ["site.logo", "site.logo", "site.logo_removed"]


def _truncated_png() -> bytes:
    data = noise_png((300, 100))
    return data[: len(data) // 2]


@pytest.mark.parametrize(("name", "data", "filename", "content_type", "message"), [
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="9" '
            b'height="9"/></svg>', "logo.svg", "image/svg+xml", "Not a PNG, JPEG or WebP"),
    ("html as png", b"<!doctype html><html><script>alert(1)</script></html>", "logo.png",
     "image/png", "Not a PNG, JPEG or WebP"),
    ("truncated png", None, "logo.png", "image/png", "damaged or incomplete"),
    ("bomb", None, "logo.png", "image/png", "far too many pixels"),
    ("absurd shape", None, "logo.png", "image/png", "9000 × 4 pixels"),
    ("2 MB", None, "logo.png", "image/png", "larger than 1 MB"),
    ("empty", b"", "logo.png", "image/png", "Not a PNG, JPEG or WebP"),
    ("png magic, garbage", b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "logo.png", "image/png",
     "damaged or incomplete"),
])
def test_refused_uploads_store_nothing(shop, tmp_path, name, data, filename, content_type,
                                       message):
    """SVG, HTML posted as image/png, a truncated PNG, a decompression bomb, absurd
    dimensions, a 2 MB file: each a 400 with a clear message next to the field; no file
    stored, the row and its settings_version unchanged, no audit row."""
    app, site, lead = shop
    data = {"truncated png": _truncated_png, "bomb": bomb_png,
            "absurd shape": lambda: png_bytes((9000, 4)),
            "2 MB": lambda: noise_png((820, 820))}.get(name, lambda: data)()
    if name == "2 MB":
        assert len(data) > 2_000_000
    if name == "bomb":
        assert len(data) < 100_000
    before = site_row(app, site.id)
    resp = upload(lead, site.id, data, filename, content_type)
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    assert 'role="alert"' in page and "Not saved" in page
    assert message in page.replace("&#39;", "'"), page
    assert 'aria-invalid="true"' in page
    assert stored(tmp_path) == []
    after = site_row(app, site.id)
    assert (after.logo_key, after.settings_version) == (None, before.settings_version)
    assert audit_actions(app, site.id) == []


def test_no_file_chosen(shop):
    app, site, lead = shop
    token = csrf(lead.get(page_url(site.id)).get_data(as_text=True))
    resp = lead.post(page_url(site.id, "/logo"), data={"csrf_token": token})
    assert resp.status_code == 400
    assert "Choose a PNG, JPEG or WebP file" in resp.get_data(as_text=True)


def test_upload_needs_csrf(shop, tmp_path):
    app, site, lead = shop
    resp = lead.post(page_url(site.id, "/logo"), content_type="multipart/form-data",
                     data={"logo": (io.BytesIO(png_bytes()), "logo.png", "image/png")})
    assert resp.status_code == 400
    assert stored(tmp_path) == [] and site_row(app, site.id).logo_key is None


# -- the accent colour -----------------------------------------------------------------------


def wcag_ratio(a: str, b: str) -> float:
    """WCAG 2.1's contrast ratio written out again here, independently of app/branding.py."""

    def lum(hex_color: str) -> float:
        rgb = [int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_contrast_formula():
    """Known reference pairs: black/white 21:1, white/white 1:1, #767676 on white ≈ 4.54
    (the lightest grey that passes AA), and agreement with the independent formula."""
    assert branding.contrast_ratio("#000000", "#ffffff") == pytest.approx(21)
    assert branding.contrast_ratio("#ffffff", "#ffffff") == pytest.approx(1)
    assert branding.contrast_ratio("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)
    assert branding.contrast_ratio("#777777", "#ffffff") < 4.5
    for color in ("#ffff00", ACCENT, "#2151d1", "#e4002b", "#008000", "#123456"):
        assert branding.contrast_ratio(color, "#ffffff") == pytest.approx(
            wcag_ratio(color, "#ffffff"), rel=1e-9)


def test_accent_refused_and_accepted(shop):
    """#ffff00 on white is refused with the ratio found; #1a4d8f is saved (normalised),
    audited and moves settings_version; a non-colour is refused; "default" clears it."""
    app, site, lead = shop
    resp = set_accent(lead, site.id, "#FFFF00")
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    expected = int(wcag_ratio("#ffff00", "#ffffff") * 100) / 100
    assert f"contrast ratio of {expected:.2f}:1" in page and "1.07:1" in page
    assert "at least 4.5:1" in page and 'aria-invalid="true"' in page
    assert 'value="#FFFF00"' in page  # the person's input is given back to correct
    assert site_row(app, site.id).accent_color is None
    for bad in ("red", "#12345", "#1234567", "javascript:alert(1)", "#1a4d8f;}body{"):
        assert set_accent(lead, site.id, bad).status_code == 400, bad
    version = site_row(app, site.id).settings_version
    assert set_accent(lead, site.id, " 1A4D8F ").status_code == 302
    row = site_row(app, site.id)
    assert row.accent_color == ACCENT and row.settings_version > version
    shown = lead.get(page_url(site.id)).get_data(as_text=True)
    assert f"{wcag_ratio(ACCENT, '#ffffff'):.2f}:1" in shown  # 8.39:1
    assert set_accent(lead, site.id, ACCENT).status_code == 302  # nothing changed
    assert set_accent(lead, site.id, "", default="y").status_code == 302
    assert site_row(app, site.id).accent_color is None
    assert audit_actions(app, site.id) == ["site.accent_color", "site.accent_color"]


# -- who may -------------------------------------------------------------------------------


def test_roles_and_sites(shop, tmp_path):
    """Another site's staff get 404 (and change nothing); an agent or a viewer of the site
    gets 403; an owner gets through like a lead."""
    app, site, _lead = shop
    other = make_site(app, name="Other shop")
    member(app, "owner@other.example", other, "owner")
    member(app, "agent@shop.example", site, "agent")
    member(app, "viewer@shop.example", site, "viewer")
    member(app, "owner@shop.example", site, "owner")
    stranger = signed_in(app, "owner@other.example")
    token = csrf(stranger.get(page_url(other.id)).get_data(as_text=True))
    assert stranger.get(page_url(site.id)).status_code == 404
    assert stranger.post(page_url(site.id, "/logo"), content_type="multipart/form-data",
                         data={"csrf_token": token, "logo": (io.BytesIO(png_bytes()),
                                                            "l.png")}).status_code == 404
    assert stranger.post(page_url(site.id, "/accent"),
                         data={"csrf_token": token, "accent": ACCENT}).status_code == 404
    for role in ("agent", "viewer"):
        client = signed_in(app, f"{role}@shop.example")
        token = csrf(client.get("/admin/").get_data(as_text=True))
        assert client.get(page_url(site.id)).status_code == 403
        assert client.post(page_url(site.id, "/accent"),
                           data={"csrf_token": token, "accent": ACCENT}).status_code == 403
        assert client.post(page_url(site.id, "/logo"), content_type="multipart/form-data",
                           data={"csrf_token": token, "logo": (io.BytesIO(png_bytes()),
                                                              "l.png")}).status_code == 403
    assert stored(tmp_path) == [] and site_row(app, site.id).accent_color is None
    owner = signed_in(app, "owner@shop.example")
    assert upload(owner, site.id, png_bytes()).status_code == 302


# -- the customer pages --------------------------------------------------------------------


def _style_allowed(resp) -> None:
    """The page's one inline <style> is allowed by its hash in the CSP, and nothing else is."""
    page = resp.get_data(as_text=True)
    styles = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert len(styles) == 1, styles
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    csp = resp.headers["Content-Security-Policy"]
    style_src = re.search(r"style-src ([^;]+)", csp).group(1).split()
    assert style_src == ["'self'", f"'sha256-{digest}'"], csp
    assert "unsafe-inline" not in csp


@pytest.fixture
def branded(shop):
    """The shop with a logo and an accent colour."""
    app, site, lead = shop
    assert upload(lead, site.id, png_bytes()).status_code == 302
    assert set_accent(lead, site.id, ACCENT).status_code == 302
    return app, site_row(app, site.id)


def _brand_on(resp, site: Site, framed: bool = False) -> str:
    assert resp.status_code in (200, 400), resp.status_code
    page = resp.get_data(as_text=True)
    logo = f"/brand/{site.public_key}/{site.logo_key.rsplit('/', 1)[1]}"
    assert f"--brand:{ACCENT};--brand-on:#fff" in page
    if framed:  # in the shop's own slide-in: the logo alone, named by its alt
        assert f'<img class="logo" src="{logo}" alt="{site.name}">' in page
    else:  # opened from a link: the logo beside the name, read once
        assert f'<p class="shop"><img class="logo" src="{logo}" alt="">{site.name}</p>' in page
    _style_allowed(resp)
    return page


def test_customer_pages_carry_logo_and_accent(branded):
    """Prompt (framed and as a link, blank and one-click), thank-you, verification and kiosk
    pages show the logo and use the accent, allowed by the CSP; a site without branding
    carries no <style> and the CSP is unchanged."""
    app, site = branded
    client = app.test_client()
    token = verified_token(site, moment="checkout", customer="c-1", n="branding-0001")
    for _ in range(2):  # the blank page is cached per process: the CSP must still allow it
        _brand_on(client.get(f"/p/{token}"), site)
        _brand_on(client.get(f"/p/{token}?o=https%3A%2F%2Fshop.example"), site, framed=True)
    _brand_on(client.get(f"/p/{token}?rating=4"), site)
    resp = client.post(f"/p/{token}", data={"rating": "2"})
    assert resp.status_code == 303
    _brand_on(client.get(resp.headers["Location"]), site)

    from app.loop import cases
    from app.models import Case
    with app.app_context():
        case_id = db.session.scalar(select(Case.id))
        cases.transition(case_id, "resolved", "agent@shop.example", resolution="Refunded")
        links = cases.verify_links(db.session.get(Case, case_id))
    _brand_on(client.get(links["yes"].split("localhost", 1)[1]), site)

    from app import kiosks
    with app.app_context():
        kiosk = kiosks.create(db.session.get(Site, site.id), "kiosk", "s-1", "Till 1",
                               "test")
        kiosk_token = kiosks.token(kiosk)
    _brand_on(client.get(f"/k/{kiosk_token}"), site)

    plain = make_site(app, name="Plain shop")
    resp = client.get(f"/p/{verified_token(plain, moment='checkout')}")
    assert "<style>" not in resp.get_data(as_text=True)
    assert "sha256" not in resp.headers["Content-Security-Policy"]
    assert 'class="logo"' not in resp.get_data(as_text=True)


def test_logo_url(branded):
    """The logo is public, immutable and nosniff; unknown sites, forged or old names and
    traversal attempts are 404."""
    app, site = branded
    client = app.test_client()
    name = site.logo_key.rsplit("/", 1)[1]
    resp = client.get(f"/brand/{site.public_key}/{name}")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in resp.headers
    assert Image.open(io.BytesIO(resp.data)).format == "PNG"
    etag = resp.headers["ETag"]
    assert client.get(f"/brand/{site.public_key}/{name}",
                      headers={"If-None-Match": etag}).status_code == 304
    other = make_site(app, name="Other")
    for path in (f"/brand/{other.public_key}/{name}", f"/brand/pk_nope/{name}",
                 f"/brand/{site.public_key}/{'A' * 32}.png",
                 f"/brand/{site.public_key}/{name[:-3]}webp",
                 f"/brand/{site.public_key}/..%2F..%2Fconfig.py",
                 f"/brand/{site.public_key}/%2e%2e", f"/brand/{site.public_key}/x.svg",
                 f"/brand/{'x' * 300}/{name}"):
        assert client.get(path).status_code == 404, path


# -- in a real browser -------------------------------------------------------------------------


def _shots(page: Any, name: str) -> None:
    """axe: no violations; screenshots at 1280 and 375 px."""
    from axe_playwright_python.sync_playwright import Axe

    from .test_browser import SHOTS

    SHOTS.mkdir(parents=True, exist_ok=True)
    for width, height in ((1280, 800), (375, 740)):
        page.set_viewport_size({"width": width, "height": height})
        results = Axe().run(page)
        assert results.violations_count == 0, results.generate_report()
        page.screenshot(path=SHOTS / f"branding-{name}-{width}.png", full_page=True)


@pytest.mark.browser
def test_branded_pages_in_chromium(make_app, tmp_path):
    """Chromium renders the prompt (as a link and in the slide-in's frame), the thank-you
    and the kiosk page with the logo loaded and the accent on the button and the chosen
    rating; the CSP lets the style through (no console error); axe finds nothing at 1280 and
    375 px."""
    from .conftest import free_port
    from .test_browser import chromium_serving

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(PUBLIC_BASE_URL=base, STORAGE_URL=(tmp_path / "media").as_uri())
    site = make_site(app, name="Nordic Lamps", origins=[base])
    with app.app_context():
        row = db.session.get(Site, site.id)
        branding.set_logo(row, png_bytes())
        branding.set_accent(row, ACCENT)
    token = verified_token(site, moment="checkout", customer="c-1", n="branding-browser-1")
    with chromium_serving(app, port) as (browser, _url):
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{base}/p/{token}")
        logo = page.locator("img.logo")
        assert logo.evaluate("img => img.complete && img.naturalWidth > 0")
        page.locator("label[for=rating-3]").click()
        chosen = page.locator("input:checked + label").evaluate(
            "e => getComputedStyle(e).backgroundColor")
        button = page.locator("button[type=submit]").evaluate(
            "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).color]")
        assert chosen == "rgb(26, 77, 143)" and button == ["rgb(26, 77, 143)",
                                                           "rgb(255, 255, 255)"]
        _shots(page, "prompt")
        page.emulate_media(color_scheme="dark")
        _shots(page, "prompt-dark")
        page.emulate_media(color_scheme="light")
        page.goto(f"{base}/p/{token}?o={base}")
        assert page.locator("img.logo").get_attribute("alt") == "Nordic Lamps"
        _shots(page, "prompt-framed")
        page.goto(f"{base}/p/{token}")
        page.locator("label[for=rating-2]").click()
        page.locator("button[type=submit]").click()
        page.wait_for_url(re.compile(r".*/t/.*"))
        assert page.locator("img.logo").evaluate("img => img.complete && img.naturalWidth > 0")
        _shots(page, "thanks")
        from app import kiosks
        with app.app_context():
            kiosk = kiosks.create(db.session.get(Site, site.id), "kiosk", "s-1", "Till 1",
                                  "test")
            kiosk_token = kiosks.token(kiosk)
        page.goto(f"{base}/k/{kiosk_token}")
        assert page.locator("img.logo").evaluate("img => img.complete && img.naturalWidth > 0")
        _shots(page, "kiosk")
        context.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors


@pytest.mark.browser
def test_branding_settings_in_chromium(make_app, tmp_path):
    """A lead in Chromium uploads a logo through the file input, is told why #ffff00 is
    refused (the ratio), saves #1a4d8f, and the preview shows both; axe finds nothing on the
    page (also with the error shown); screenshots at 1280 and 375 px."""
    from .conftest import free_port
    from .test_browser import chromium_serving, sign_in
    from .test_inbox import PASSWORD

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(PUBLIC_BASE_URL=base, STORAGE_URL=(tmp_path / "media").as_uri())
    site = make_site(app, name="Nordic Lamps")
    member(app, "lead@shop.example", site, "lead")
    logo_file = tmp_path / "logo.png"
    logo_file.write_bytes(png_bytes())
    with chromium_serving(app, port) as (browser, _url):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        sign_in(page, base, "lead@shop.example", PASSWORD)
        page.goto(base + page_url(site.id))
        page.get_by_label("Upload a logo").set_input_files(str(logo_file))
        page.get_by_role("button", name="Upload logo").click()
        page.get_by_text("Logo saved").wait_for()
        page.get_by_label("Colour", exact=True).fill("#ffff00")
        page.get_by_role("button", name="Save colour").click()
        page.get_by_text("contrast ratio of 1.07:1").wait_for()
        _shots(page, "settings-refused")
        page.get_by_label("Colour", exact=True).fill(ACCENT)
        page.get_by_role("button", name="Save colour").click()
        page.get_by_text(f"Accent colour {ACCENT} saved.").wait_for()
        button = page.locator(".preview-button").evaluate(
            "e => getComputedStyle(e).backgroundColor")
        assert button == "rgb(26, 77, 143)"
        assert page.locator(".preview-logo").evaluate("i => i.complete && i.naturalWidth > 0")
        _shots(page, "settings")
        page.close()
    row = site_row(app, site.id)
    assert row.accent_color == ACCENT and row.logo_key


def test_a_bad_stored_colour_never_reaches_the_page(branded):
    """A colour written around the settings (a hand-edited row) that is not #rrggbb is left
    out of the page's <style> rather than written into it."""
    app, site = branded
    with app.app_context():
        from sqlalchemy import update
        db.session.execute(update(Site).where(Site.id == site.id).values(
            accent_color="red}</style><script>alert(1)</script>"[:7]))
        db.session.commit()
        row = db.session.get(Site, site.id)
        assert branding.style_css(row) is None
        row.accent_color = "#1A4D8F"
        assert branding.style_css(row) is None  # not the normalised form set_accent stores


def test_cli_shares_the_checks(make_app, tmp_path):
    """`flask sites branding` sets a logo and a colour with the page's checks and audit rows;
    a refused colour or file exits non-zero saying why and changes nothing."""
    app = branding_app(make_app, tmp_path)
    site = make_site(app, name="Nordic Lamps")
    runner = app.test_cli_runner()
    good, bad = tmp_path / "logo.jpg", tmp_path / "logo.svg"
    good.write_bytes(jpeg_bytes())
    bad.write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    refused = runner.invoke(args=["sites", "branding", site.public_key, "--accent", "#ffff00"])
    assert refused.exit_code == 1 and "1.07:1" in refused.output
    refused = runner.invoke(args=["sites", "branding", site.public_key, "--logo", str(bad)])
    assert refused.exit_code == 1 and "Not a PNG, JPEG or WebP" in refused.output
    assert stored(tmp_path) == [] and audit_actions(app, site.id) == []
    result = runner.invoke(args=["sites", "branding", site.public_key, "--logo", str(good),
                                 "--accent", ACCENT])
    assert result.exit_code == 0, result.output
    assert "image/webp" in result.output and f"accent={ACCENT}" in result.output
    row = site_row(app, site.id)
    assert row.accent_color == ACCENT and row.logo_content_type == "image/webp"
    assert len(stored(tmp_path)) == 1
    result = runner.invoke(args=["sites", "branding", site.public_key, "--remove-logo",
                                 "--accent", ""])
    assert result.exit_code == 0 and "logo=none accent=default" in result.output
    assert stored(tmp_path) == []
    assert audit_actions(app, site.id) == ["site.accent_color", "site.logo",
                                           "site.accent_color", "site.logo_removed"]
