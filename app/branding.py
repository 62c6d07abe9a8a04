"""Whose survey is this: a site's logo and accent colour on the customer pages.

- A logo is judged by its bytes, never by a name or a Content-Type: PNG, JPEG or WebP that
  Pillow decodes completely, within LOGO_MAX_BYTES and LOGO_MAX_PIXELS (a decompression bomb is
  refused before it is decoded). It is re-encoded from its pixels alone (no EXIF, ICC, text
  chunks: nothing the shop's camera or editor wrote), scaled to fit LOGO_BOX, and stored under a
  new random key (app/storage.py); the old object is deleted once the row points at the new one.
- An accent colour is accepted only when white text on it (buttons, the chosen rating) and it as
  text on the page background (links) both reach WCAG's 4.5:1.
- On the pages it becomes CSS custom properties in one small <style> element whose SHA-256 is
  added to the response's CSP (app/security.py), so style-src stays without 'unsafe-inline'.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from flask import Flask, url_for
from markupsafe import Markup
from PIL import Image, ImageOps, UnidentifiedImageError

from . import audit, storage
from .extensions import db
from .models import Site, StaffUser

LOGO_MAX_BYTES = 1024 * 1024
# Decoded size bounds: a 1 MB PNG can hold a 30 000 × 30 000 image of one colour (3.6 GB of
# pixels); anything beyond these is refused before decoding.
LOGO_MAX_SIDE = 8000
LOGO_MAX_PIXELS = 16_000_000
# Stored at most this big (width, height): twice what the pages show, for sharp HiDPI screens.
LOGO_BOX = (320, 96)
_FORMATS = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}
_HEX = re.compile(r"#?([0-9A-Fa-f]{6})")

# What the customer pages (app/static/embed.css) put the accent against.
WHITE = "#ffffff"  # the text on a button and on the chosen rating
PAGE_BACKGROUND = "#ffffff"  # --bg in the light scheme: links in the accent stand on it
MIN_CONTRAST = 4.5  # WCAG 2.x AA for normal text


class BrandingRejected(ValueError):
    """A logo or colour that cannot be used; the message says why, for the person uploading."""


# -- the logo -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Logo:
    """A checked, re-encoded logo ready to store."""

    data: bytes
    content_type: str
    ext: str
    width: int
    height: int


def _sniff(data: bytes) -> str | None:
    """The format the bytes start like (PNG, JPEG, WEBP), else None."""
    for name, magic in _FORMATS.items():
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def process_logo(data: bytes) -> Logo:
    """Check an uploaded logo by its bytes and re-encode it; BrandingRejected says why not."""
    if len(data) > LOGO_MAX_BYTES:
        raise BrandingRejected(f"The file is larger than {LOGO_MAX_BYTES // (1024 * 1024)} MB.")
    kind = _sniff(data)
    if kind is None:
        raise BrandingRejected("Not a PNG, JPEG or WebP image (SVG and other formats are not "
                               "accepted).")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[kind]) as im:
                width, height = im.size
                if (width > LOGO_MAX_SIDE or height > LOGO_MAX_SIDE
                        or width * height > LOGO_MAX_PIXELS):
                    raise BrandingRejected(_too_big(f"{width} × {height} pixels"))
                im.load()  # decodes everything: a truncated or corrupt file fails here
                # A phone photo's rotation, applied before its EXIF is dropped.
                pixels = _pixels(ImageOps.exif_transpose(im))
    except BrandingRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refused it from the header, before decoding: a decompression bomb.
        raise BrandingRejected(_too_big("far too many pixels")) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BrandingRejected(f"The {kind} file is damaged or incomplete ({exc}).") from None
    pixels.thumbnail(LOGO_BOX, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if kind == "PNG":
        pixels.save(out, "PNG", optimize=True)
        content_type, ext = "image/png", "png"
    else:
        pixels.save(out, "WEBP", quality=90, method=6)
        content_type, ext = "image/webp", "webp"
    return Logo(out.getvalue(), content_type, ext, pixels.width, pixels.height)


def _too_big(what: str) -> str:
    return (f"The image has {what}: at most {LOGO_MAX_SIDE} on a side and "
            f"{LOGO_MAX_PIXELS // 1_000_000} megapixels, please.")


def _pixels(im: Image.Image) -> Image.Image:
    """The image's first frame as plain RGB or RGBA pixels in a new image with no metadata."""
    alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    mode = "RGBA" if alpha else "RGB"
    converted = im.convert(mode)
    # A fresh image from the raw pixels: nothing of im.info (EXIF, ICC, text, XMP) comes along.
    return Image.frombytes(mode, converted.size, converted.tobytes())


def set_logo(site: Site, data: bytes, actor: StaffUser | str | None = None) -> Logo:
    """Check, re-encode and store a new logo for `site`, replacing (and deleting) the old one."""
    logo = process_logo(data)
    backend = storage.storage()
    key = storage.new_key("logo", logo.ext)
    backend.put(key, logo.data, logo.content_type)
    old = site.logo_key
    site.logo_key, site.logo_content_type = key, logo.content_type
    audit.record("site.logo", actor=actor, object_type="site", object_id=site.id,
                 site_id=site.id, details={"content_type": logo.content_type,
                                           "width": logo.width, "height": logo.height,
                                           "bytes": len(logo.data), "uploaded_bytes": len(data)})
    try:
        db.session.commit()
    except BaseException:
        db.session.rollback()
        backend.delete(key)  # the row still names the old logo: the new object is nobody's
        raise
    _forget(site)
    if old:
        _delete_quietly(old)
    return logo


def remove_logo(site: Site, actor: StaffUser | str | None = None) -> bool:
    """Remove the site's logo (row first, then the object); False when it had none."""
    old = site.logo_key
    if not old:
        return False
    site.logo_key = site.logo_content_type = None
    audit.record("site.logo_removed", actor=actor, object_type="site", object_id=site.id,
                 site_id=site.id)
    db.session.commit()
    _forget(site)
    _delete_quietly(old)
    return True


def _delete_quietly(key: str) -> None:
    # The row no longer names it, so a failure leaves an orphan object, never a broken page.
    try:
        storage.storage().delete(key)
    except OSError:
        import logging

        logging.getLogger(__name__).warning("could not delete old logo %s", key, exc_info=True)


def _forget(site: Site) -> None:
    from .prompts import forget_site

    forget_site(site.public_key)


def logo_file(site: Site) -> str | None:
    """The last part of the logo's URL (the key's file name), None without a logo."""
    return site.logo_key.rsplit("/", 1)[-1] if site.logo_key else None


def logo_url(site: Site | None) -> str | None:
    """The logo's (relative, same-origin) URL on the customer pages, None without one."""
    name = logo_file(site) if site is not None else None
    if not name or site is None:
        return None
    return url_for("embed.brand_logo", public_key=site.public_key, name=name)


# -- the accent colour ----------------------------------------------------------------------


def _channel(c: int) -> float:
    s = c / 255
    return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4


def _rgb(color: str) -> tuple[int, int, int]:
    m = _HEX.fullmatch(color.strip())
    if not m:
        raise BrandingRejected(f"{color!r} is not a colour: use #rrggbb, e.g. #1a4d8f.")
    h = m.group(1)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def relative_luminance(color: str) -> float:
    """WCAG 2.x relative luminance of #rrggbb (0 black … 1 white)."""
    r, g, b = (_channel(c) for c in _rgb(color))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: str, b: str) -> float:
    """WCAG 2.x contrast ratio of two #rrggbb colours (1 … 21)."""
    la, lb = relative_luminance(a), relative_luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def check_accent(value: str | None) -> str | None:
    """A normalised #rrggbb with enough contrast, None for "the default"; else BrandingRejected."""
    text = (value or "").strip()
    if not text:
        return None
    r, g, b = _rgb(text)
    color = f"#{r:02x}{g:02x}{b:02x}"
    for other, what in ((WHITE, "white button text"), (PAGE_BACKGROUND, "the page background")):
        ratio = contrast_ratio(color, other)
        # Floor to two places: 4.4999 must not print as "4.50" next to "needs 4.5".
        if ratio < MIN_CONTRAST:
            raise BrandingRejected(
                f"{color} has a contrast ratio of {int(ratio * 100) / 100:.2f}:1 against "
                f"{what}; at least {MIN_CONTRAST}:1 is needed so customers can read it. "
                "Try a darker shade.")
    return color


def set_accent(site: Site, value: str | None,
               actor: StaffUser | str | None = None) -> bool:
    """Set (or with an empty value, clear) the accent colour; False when nothing changed."""
    color = check_accent(value)
    if color == site.accent_color:
        return False
    old, site.accent_color = site.accent_color, color
    audit.record("site.accent_color", actor=actor, object_type="site", object_id=site.id,
                 site_id=site.id, details={"from": old, "to": color})
    db.session.commit()
    _forget(site)
    return True


def _tint(color: str, share: float = 0.08) -> str:
    """`color` mixed into white at `share`: a background for notes that keeps text readable."""
    return "#" + "".join(f"{round(255 + (c - 255) * share):02x}" for c in _rgb(color))


def style_css(site: Site | None) -> str | None:
    """The CSS custom properties for the site's accent (app/static/embed.css reads them)."""
    color = site.accent_color if site is not None else None
    # Checked again here: this goes into a <style> unescaped, whatever wrote the column.
    if not color or not re.fullmatch(r"#[0-9a-f]{6}", color):
        return None
    return f":root{{--brand:{color};--brand-on:#fff;--brand-tint:{_tint(color)}}}"


def csp_hash(css: str) -> str:
    """The CSP source expression that allows exactly this inline style."""
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return f"'sha256-{digest}'"


def style_tag(site: Site | None) -> Markup:
    """The <style> element for the site's accent, allowed in this response's CSP; "" without."""
    css = allow_style(site)
    return Markup(f"<style>{css}</style>") if css else Markup("")


def allow_style(site: Site | None) -> str | None:
    """Allow the site's accent style in this response's CSP (a cached page needs the view to
    call this); returns the CSS."""
    css = style_css(site)
    if css:
        from .security import allow_inline_style

        allow_inline_style(csp_hash(css))
    return css


def init_app(app: Flask) -> None:
    """The customer templates' helpers: brand_style(site), logo_url(site)."""
    app.jinja_env.globals.update(brand_style=style_tag, logo_url=logo_url)
