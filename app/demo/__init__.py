"""A demo shop whose pages embed the script tag at each moment (enabled by DEMO_ENABLED)."""

from flask import Blueprint, abort, current_app, render_template

bp = Blueprint("demo", __name__, url_prefix="/demo")

PAGES = {
    "product": ("Product page", "product_page"),
    "checkout": ("Order confirmation", "checkout"),
    "tracking": ("Delivery tracking", "delivery"),
    "chat": ("Support chat", "post_chat"),
}


@bp.before_request
def _enabled() -> None:
    if not current_app.config.get("DEMO_ENABLED"):
        abort(404)


@bp.get("/")
def index() -> str:
    """The demo shop's front page: links to each moment."""
    return render_template("demo/index.html", pages=PAGES)


@bp.get("/<page>")
def page(page: str) -> str:
    """One demo page, embedding the widget for its moment."""
    if page not in PAGES:
        abort(404)
    title, moment = PAGES[page]
    return render_template(f"demo/{page}.html", title=title, moment=moment, pages=PAGES,
                           site_key=current_app.config["DEMO_SITE_KEY"])
