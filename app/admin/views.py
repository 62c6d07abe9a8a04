"""Admin views: sign-in, sign-out, password reset (the inbox is in inbox.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from .. import staff
from ..extensions import limiter, login_manager
from . import bp
from .forms import LoginForm, LogoutForm, NewPasswordForm, ResetRequestForm

login_manager.login_view = "admin.login"
login_manager.session_protection = "strong"  # another address or browser: session deleted


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
    """Staff sign-in form: a fresh session on success; one answer for every failure (wrong
    email, wrong password, locked or deactivated account), so none of them is revealed."""
    form = LoginForm()
    if form.validate_on_submit():
        user = staff.authenticate(form.email.data or "", form.password.data or "")
        if user is not None:
            target = _safe_next(request.args.get("next"))
            staff.start_session(user)
            login_user(user)
            return redirect(target)
        flash("Wrong email or password. After several failed attempts an account waits a "
              "few minutes before it can sign in again.")
    return render_template("admin/login.html", form=form)


@bp.post("/logout")
@login_required
def logout() -> Response:
    """Sign out (POST, CSRF-protected); with `everywhere`, every session of the account."""
    form = LogoutForm()
    staff.sign_out(current_user, everywhere=bool(form.everywhere.data))
    logout_user()
    session.clear()
    return redirect(url_for("admin.login"))


@bp.route("/reset", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LIMIT_PASSWORD_RESET"], methods=["POST"])
def reset_request() -> Response | str:
    """Ask for a password-reset link: the same answer whether or not the account exists."""
    form = ResetRequestForm()
    if form.validate_on_submit():
        staff.request_reset(form.email.data or "")
        return render_template("admin/reset_sent.html")
    return render_template("admin/reset_request.html", form=form)


@bp.route("/reset/<token>", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LIMIT_PASSWORD_RESET"], methods=["POST"])
def reset_password(token: str) -> Response | tuple[str, int] | str:
    """A reset link: GET shows the new-password form (and changes nothing), POST sets it;
    afterwards the link, and every session of the account, no longer work."""
    user = staff.user_for_reset(token)
    if user is None:
        return render_template("admin/reset_invalid.html"), 404
    form = NewPasswordForm()
    if form.validate_on_submit():
        staff.reset_password(user, form.password.data or "")
        session.clear()
        flash("Your password was changed. Sign in with the new one.")
        return redirect(url_for("admin.login"))
    return render_template("admin/reset_password.html", form=form,
                           min_chars=staff.MIN_PASSWORD_CHARS)
