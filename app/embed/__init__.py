"""Embed surface: the script-tag loader, prompt issuance, the prompt form and thank-you page."""

from flask import Blueprint

bp = Blueprint("embed", __name__)

from . import brand, views  # noqa: E402,F401
