"""Staff surface. For now: sign-in and a read-only list of responses and their cases."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")

from . import (  # noqa: E402,F401
    cases,
    inbox,
    settings,
    settings_audit,
    settings_branding,
    settings_kiosks,
    settings_loop,
    settings_replies,
    settings_staff,
    views,
)
