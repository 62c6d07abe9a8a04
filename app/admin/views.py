"""Admin views: sign-in, sign-out, responses."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import login_required, login_user, logout_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from .. import staff
from ..extensions import db, limiter, login_manager
from ..models import Case, Moment, Site
from ..models import Response as Answer
from . import bp
from .forms import LoginForm
from .permissions import requires, scoped, sites_for
from .permissions import requires, scoped, sites_for

login_manager.login_view = "admin.login"


def _safe_next(target: str | None) -> str:
    """Only local paths: `next=//evil.example` must not leave the site."""
    if not target:
        return url_for("admin.responses")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("admin.responses")
    return target


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LIMIT_LOGIN"], methods=["POST"])
def login() -> Response | str:
    """Staff sign-in form."""
    form = LoginForm()
    if form.validate_on_submit():
        user = staff.authenticate(form.email.data or "", form.password.data or "")
        if user is not None:
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        flash("Wrong email or password.")
    return render_template("admin/login.html", form=form)


@bp.post("/logout")
@login_required
def logout() -> Response:
    """Sign out (POST, CSRF-protected)."""
    logout_user()
    return redirect(url_for("admin.login"))


@bp.get("/")
@requires("responses.view")
def responses() -> str:
    """The newest responses of the signed-in person's sites, with their case state."""
    rows = db.session.execute(scoped(
        select(Answer, Case, Moment, Site)
        .join(Case, Case.response_id == Answer.id)
        .join(Moment, Moment.id == Answer.moment_id)
        .join(Site, Site.id == Answer.site_id)
        .order_by(Answer.created_at.desc(), Answer.id.desc())
        .limit(200), Answer.site_id)
    ).all()
    no_sites = not rows and not sites_for(None, "responses.view")
    return render_template("admin/responses.html", rows=rows, no_sites=no_sites)
