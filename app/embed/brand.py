"""The shop's logo for the customer pages: public content under an unguessable, immutable URL."""

from __future__ import annotations

import re

from flask import Response, abort

from .. import branding, storage
from .. import sites as site_ops
from . import bp

_NAME = re.compile(r"[A-Za-z0-9_-]{16,64}\.(?:png|webp)")
_PUBLIC_KEY = re.compile(r"[A-Za-z0-9_-]{1,40}")
YEAR = 365 * 24 * 3600


@bp.get("/brand/<public_key>/<name>")  # and HEAD
def brand_logo(public_key: str, name: str) -> Response:
    """The site's current logo; 404 for an unknown site, a replaced logo or a forged name.

    Cached for a year as immutable: a new upload gets a new name, so the URL never changes
    meaning, and a logo is public (it is on every customer page)."""
    if not _PUBLIC_KEY.fullmatch(public_key) or not _NAME.fullmatch(name):
        abort(404)
    site = site_ops.by_key(public_key)
    if site is None or branding.logo_file(site) != name or not site.logo_content_type \
            or not site.logo_key:
        abort(404)
    return storage.send_stored(site.logo_key, site.logo_content_type,
                               f"logo.{name.rsplit('.', 1)[1]}", max_age=YEAR)
