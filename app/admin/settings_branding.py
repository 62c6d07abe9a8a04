"""Settings: branding (owners and leads): the logo and accent colour customers see on the
prompt, thank-you, verification and kiosk pages. Thin over app/branding.py, which checks,
stores, audits and commits."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response as WerkzeugResponse

from .. import branding
from ..extensions import db
from ..models import Site
from ..security import allow_inline_style
from . import bp
from .permissions import get_scoped_or_404, requires

Page = tuple[str, int, dict[str, str]]


def _page(site: Site, status: int = 200, logo_error: str | None = None,
          accent_error: str | None = None, accent_value: str | None = None) -> Page:
    # The saved colour (a refused one is never shown as if it were), for the preview.
    css = branding.style_css(site)  # None without a (well-formed) colour
    preview = f":root{{--preview:{site.accent_color}}}" if css else None
    if preview:
        allow_inline_style(branding.csp_hash(preview))
    ratio = branding.contrast_ratio(site.accent_color, branding.WHITE) \
        if site.accent_color else None
    html = render_template(
        "admin/settings_branding.html", site=site, logo=branding.logo_url(site),
        logo_error=logo_error, accent_error=accent_error,
        accent_value=site.accent_color or "" if accent_value is None else accent_value,
        preview=preview, ratio=ratio, min_ratio=branding.MIN_CONTRAST,
        max_mb=branding.LOGO_MAX_BYTES // (1024 * 1024), box=branding.LOGO_BOX)
    return html, status, {"Cache-Control": "no-store"}


def _actor() -> Any:
    return current_user._get_current_object()  # type: ignore[attr-defined]


@bp.get("/sites/<int:site_id>/settings/branding")
@requires("site.settings")
def settings_branding(site_id: int) -> Page:
    """The logo and accent colour with a preview, and forms to change them."""
    return _page(get_scoped_or_404(Site, site_id))


@bp.post("/sites/<int:site_id>/settings/branding/logo")
@requires("site.settings")
def settings_branding_logo(site_id: int) -> WerkzeugResponse | Page:
    """POST (multipart): a new logo, judged by its bytes; the old one is deleted."""
    site = get_scoped_or_404(Site, site_id)
    upload = request.files.get("logo")
    if upload is None or not upload.filename:
        return _page(site, 400, logo_error="Choose a PNG, JPEG or WebP file to upload.")
    # One byte past the limit is enough to know it is too large.
    data = upload.stream.read(branding.LOGO_MAX_BYTES + 1)
    try:
        logo = branding.set_logo(site, data, _actor())
    except branding.BrandingRejected as exc:
        db.session.rollback()
        return _page(site, 400, logo_error=str(exc))
    except OSError:
        db.session.rollback()
        return _page(site, 503, logo_error="The logo could not be stored just now; nothing "
                                           "changed. Please try again in a minute.")
    flash(f"Logo saved ({logo.width} × {logo.height} px).", "ok")
    return redirect(url_for("admin.settings_branding", site_id=site.id))


@bp.post("/sites/<int:site_id>/settings/branding/logo/remove")
@requires("site.settings")
def settings_branding_logo_remove(site_id: int) -> WerkzeugResponse:
    """POST: remove the logo; the pages show the shop's name alone again."""
    site = get_scoped_or_404(Site, site_id)
    removed = branding.remove_logo(site, _actor())
    flash("Logo removed." if removed else "There was no logo to remove.", "ok")
    return redirect(url_for("admin.settings_branding", site_id=site.id))


@bp.post("/sites/<int:site_id>/settings/branding/accent")
@requires("site.settings")
def settings_branding_accent(site_id: int) -> WerkzeugResponse | Page:
    """POST: set the accent colour (#rrggbb with enough contrast), or clear it."""
    site = get_scoped_or_404(Site, site_id)
    value = "" if request.form.get("default") == "y" else request.form.get("accent", "")
    try:
        changed = branding.set_accent(site, value, _actor())
    except branding.BrandingRejected as exc:
        db.session.rollback()
        return _page(site, 400, accent_error=str(exc), accent_value=value)
    if not changed:
        flash("Nothing changed.", "ok")
    elif site.accent_color:
        flash(f"Accent colour {site.accent_color} saved.", "ok")
    else:
        flash("The default colour is used again.", "ok")
    return redirect(url_for("admin.settings_branding", site_id=site.id))
