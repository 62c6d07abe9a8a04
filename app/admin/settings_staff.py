"""Staff settings (issue 8, points 1 and 4): a site's members and its invitations, for owners
("staff.manage"); and the invitation link itself, /admin/invite/<token>.

Views stay thin: members change through app/admin/permissions.py (`change_role`,
`remove_member`: never the site's last owner), invitations through app/invitations.py (what
`flask staff invite` calls). Every change is a POST with CSRF, audited in its own
transaction; another site's member or invitation id answers 404 and changes nothing. The link
page changes nothing on GET (mail scanners open links); its POST creates the account or adds
the membership.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user
from sqlalchemy import func, select
from werkzeug.wrappers import Response as WerkzeugResponse

from .. import invitations, staff
from ..extensions import db, limiter
from ..models import AuditEvent, Invitation, Site, SiteMembership, StaffUser, utcnow
from . import bp
from .forms import InviteAcceptForm, InviteJoinForm
from .permissions import ROLES, LastOwner, change_role, remove_member, requires

ROLE_HELP = {
    "owner": "everything, including staff, invitations and the signing secret",
    "lead": "rules, teams, moments, templates, site settings and every case",
    "agent": "works the cases of their teams: notes, replies, resolutions",
    "viewer": "reads cases and answers, changes nothing",
}


def _site(site_id: int) -> Site:
    site = db.session.get(Site, site_id)
    if site is None:  # @requires already answered 404 for a site the person is not a member of
        abort(404)
    return site


def _me() -> StaffUser:
    return current_user._get_current_object()  # type: ignore[attr-defined,no-any-return]


def _last_sign_ins(staff_ids: list[int]) -> dict[int, datetime]:
    """staff id -> their latest sign-in, from the audit log (ix_audit_events_actor_at)."""
    if not staff_ids:
        return {}
    rows = db.session.execute(
        select(AuditEvent.actor_id, func.max(AuditEvent.at))
        .where(AuditEvent.actor_id.in_(staff_ids), AuditEvent.action == "staff.login")
        .group_by(AuditEvent.actor_id))
    return {staff_id: at for staff_id, at in rows if staff_id is not None}


def _staff_page(site: Site, status: int = 200, error: str | None = None,
                values: dict[str, str] | None = None) -> tuple[str, int]:
    rank = {role: i for i, role in enumerate(ROLES)}
    members = sorted(db.session.execute(
        select(SiteMembership, StaffUser).join(StaffUser, StaffUser.id == SiteMembership.staff_id)
        .where(SiteMembership.site_id == site.id)).all(),
        key=lambda mu: (rank.get(mu[0].role, 99), mu[1].email))
    owners = sum(1 for m, _u in members if m.role == "owner")
    html = render_template(
        "admin/settings_staff.html", site=site, members=members, owners=owners,
        last_sign_in=_last_sign_ins([u.id for _m, u in members]),
        invitations=invitations.listed(site.id), now=utcnow(), roles=ROLES,
        role_help=ROLE_HELP, me=_me(), error=error, invite_failed=values is not None,
        values=values or {"email": "", "role": "agent"},
        max_days=max(1, round(current_app.config["STAFF_INVITE_MAX_AGE"] / 86400)))
    return html, status


def _membership(site: Site, membership_id: int) -> SiteMembership:
    """The site's membership with this id; another site's is 404 like a missing one."""
    m = db.session.scalar(select(SiteMembership).where(SiteMembership.id == membership_id,
                                                       SiteMembership.site_id == site.id))
    if m is None:
        abort(404)
    return m


def _invitation(site: Site, invitation_id: int) -> Invitation:
    inv = db.session.scalar(select(Invitation).where(Invitation.id == invitation_id,
                                                     Invitation.site_id == site.id))
    if inv is None:
        abort(404)
    return inv


def _invite_key() -> str:
    """Invitations count per signed-in account (each is an email to a stranger)."""
    return f"staff-invite:{current_user.get_id()}"


_invite_limit = limiter.shared_limit(lambda: current_app.config["LIMIT_STAFF_INVITE"],
                                     scope="staff-invite", key_func=_invite_key)


@bp.get("/sites/<int:site_id>/settings/staff")
@requires("staff.manage")
def settings_staff(site_id: int) -> tuple[str, int]:
    """The site's members (role, state, last sign-in) and pending invitations; invite."""
    return _staff_page(_site(site_id))


@bp.post("/sites/<int:site_id>/settings/staff/invite")
@requires("staff.manage")
@_invite_limit
def settings_staff_invite(site_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: invite an email address with a role (again: the same invitation, re-sent)."""
    site = _site(site_id)
    values = {"email": request.form.get("email", "")[:254], "role": request.form.get("role", "")}
    try:
        inv, created = invitations.invite(site, values["email"], values["role"], actor=_me())
    except invitations.InviteError as exc:
        db.session.rollback()
        return _staff_page(site, 400, str(exc), values)
    flash(f"Invitation sent to {inv.email} ({inv.role})." if created else
          f"{inv.email} was invited already: the invitation was sent again ({inv.role}), "
          "and the earlier link no longer works.", "ok")
    return redirect(url_for("admin.settings_staff", site_id=site.id) + f"#inv-{inv.id}")


@bp.post("/sites/<int:site_id>/settings/staff/invitations/<int:invitation_id>/resend")
@requires("staff.manage")
@_invite_limit
def settings_staff_resend(site_id: int, invitation_id: int
                          ) -> WerkzeugResponse | tuple[str, int]:
    """POST: send an invitation again with a new link and a new expiry."""
    site = _site(site_id)
    inv = _invitation(site, invitation_id)
    try:
        invitations.resend(inv, actor=_me())
    except invitations.InviteError as exc:
        db.session.rollback()
        return _staff_page(site, 400, str(exc))
    flash(f"Invitation sent again to {inv.email}; the earlier link no longer works.", "ok")
    return redirect(url_for("admin.settings_staff", site_id=site.id) + f"#inv-{inv.id}")


@bp.post("/sites/<int:site_id>/settings/staff/invitations/<int:invitation_id>/revoke")
@requires("staff.manage")
def settings_staff_revoke(site_id: int, invitation_id: int
                          ) -> WerkzeugResponse | tuple[str, int]:
    """POST: revoke an invitation; its link stops working."""
    site = _site(site_id)
    inv = _invitation(site, invitation_id)
    try:
        invitations.revoke(inv, actor=_me())
    except invitations.InviteError as exc:
        db.session.rollback()
        return _staff_page(site, 400, str(exc))
    flash(f"Invitation for {inv.email} revoked.", "ok")
    return redirect(url_for("admin.settings_staff", site_id=site.id))


@bp.post("/sites/<int:site_id>/settings/staff/members/<int:membership_id>/role")
@requires("staff.manage")
def settings_staff_role(site_id: int, membership_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: give a member another role (never demoting the last owner)."""
    site = _site(site_id)
    m = _membership(site, membership_id)
    user = db.session.get(StaffUser, m.staff_id)
    assert user is not None
    role = request.form.get("role", "")
    if role not in ROLES:
        return _staff_page(site, 400, f"Choose a role: {', '.join(ROLES)}.")
    try:
        previous = change_role(m, role, actor=_me())
    except LastOwner as exc:
        db.session.rollback()
        return _staff_page(site, 400, str(exc))
    flash(f"{user.email} is now {role}." if previous != role else "Nothing changed.", "ok")
    if role != "owner" and user.id == _me().id:  # gave up their own staff rights
        return redirect(url_for("admin.settings_index"))
    return redirect(url_for("admin.settings_staff", site_id=site.id) + f"#m-{m.id}")


@bp.post("/sites/<int:site_id>/settings/staff/members/<int:membership_id>/remove")
@requires("staff.manage")
def settings_staff_remove(site_id: int, membership_id: int
                          ) -> WerkzeugResponse | tuple[str, int]:
    """POST: remove a member from the site (never its last owner); their access ends now."""
    site = _site(site_id)
    m = _membership(site, membership_id)
    user = db.session.get(StaffUser, m.staff_id)
    assert user is not None
    try:
        remove_member(m, actor=_me())
    except LastOwner as exc:
        db.session.rollback()
        return _staff_page(site, 400, str(exc))
    flash(f"{user.email} was removed from {site.name}.", "ok")
    if user.id == _me().id:
        return redirect(url_for("admin.responses"))
    return redirect(url_for("admin.settings_staff", site_id=site.id))


# -- the invitation link -------------------------------------------------------------------


def _invalid() -> tuple[str, int]:
    return render_template("admin/invite_invalid.html"), 404


@bp.route("/invite/<token>", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LIMIT_PASSWORD_RESET"], methods=["POST"])
def invite_accept(token: str) -> WerkzeugResponse | tuple[str, int]:
    """An invitation link: GET shows who invites whom to which site as what (and changes
    nothing); POST creates the account (no account yet) or adds the membership (signed in as
    the invited account), uses up the invitation and opens the inbox."""
    found = invitations.for_token(token)
    if found is None:
        return _invalid()
    inv, nonce = found
    site = db.session.get(Site, inv.site_id)
    assert site is not None
    inviter = db.session.get(StaffUser, inv.invited_by_id) if inv.invited_by_id else None
    account = staff.find(inv.email)
    me = current_user._get_current_object() if current_user.is_authenticated else None
    ctx: dict[str, Any] = {"inv": inv, "site": site, "inviter": inviter,
                           "role_help": ROLE_HELP.get(inv.role, "")}
    if account is not None and not account.active:
        return render_template("admin/invite_accept.html", state="deactivated", **ctx), 403
    if account is None:
        form = InviteAcceptForm()
        if form.validate_on_submit():
            try:
                user = invitations.accept_new(inv, nonce, form.name.data or "",
                                              form.password.data or "")
            except invitations.InvitationGone:
                return _invalid()
            except ValueError as exc:  # policy, or the account was created meanwhile
                db.session.rollback()
                form.password.errors = [str(exc).capitalize() + "."]
            else:
                return _signed_in(user, site)
        return render_template("admin/invite_accept.html", state="new", form=form,
                               min_chars=staff.MIN_PASSWORD_CHARS, **ctx), 200
    if me is None or me.id != account.id:
        login = url_for("admin.login", next=request.path)
        return render_template("admin/invite_accept.html", state="sign_in", me=me,
                               login_url=login, **ctx), 200
    join = InviteJoinForm()
    if join.validate_on_submit():
        try:
            role = invitations.accept_existing(inv, nonce, me)
        except (invitations.InvitationGone, invitations.InviteError):
            return _invalid()
        flash(f"You joined {site.name} as {role}.", "ok")
        return redirect(url_for("admin.responses"))
    return render_template("admin/invite_accept.html", state="join", form=join, **ctx), 200


def _signed_in(user: StaffUser, site: Site) -> WerkzeugResponse:
    """Sign the new account in as the sign-in form does (a fresh session) and open the
    inbox."""
    from .. import audit

    audit.record("staff.login", actor=user, object_type="staff", object_id=user.id,
                 details={"via": "invitation"})
    db.session.commit()
    staff.start_session(user)
    login_user(user)
    flash(f"Welcome to {site.name}: your account is ready.", "ok")
    return redirect(url_for("admin.responses"))

