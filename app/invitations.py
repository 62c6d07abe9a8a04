"""Staff invitations: an owner invites an email address to a site with a role; the person
follows the emailed link, creates an account (or signs in to theirs) and becomes a member.

The link is a signed token (app/signing.py, salt STAFF_INVITE, max age STAFF_INVITE_MAX_AGE)
carrying the invitation id and a random nonce; the row keeps only a SHA-256 of the nonce.
Re-sending puts a new nonce in (the older link dies), and accepting or revoking clears it,
so every link works once. One row per (site, email): inviting a pending address again
re-sends that row instead of adding another. Accepting claims the row with one conditional
UPDATE, so two clicks at once cannot both create a membership. Every change is audited in
its own transaction; the views (app/admin/settings_staff.py) and `flask staff invite` call
these functions."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from . import audit, signing, staff
from .extensions import db
from .loop import mail
from .models import SITE_ROLES as ROLES
from .models import Invitation, Site, SiteMembership, StaffUser, utcnow


class InviteError(ValueError):
    """An invitation that cannot be made or used as asked (the message is safe to show)."""


class InvitationGone(Exception):
    """The invitation was used, revoked or expired meanwhile (or its link is stale)."""


def _digest(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def _max_age() -> int:
    return int(current_app.config["STAFF_INVITE_MAX_AGE"])


def _token(invitation: Invitation, nonce: str) -> str:
    return signing.dumps(signing.app_keys(), signing.STAFF_INVITE,
                         {"i": invitation.id, "n": nonce})


def listed(site_id: int) -> list[Invitation]:
    """The site's invitations neither used nor revoked (pending or expired), newest first."""
    return list(db.session.scalars(
        select(Invitation).where(Invitation.site_id == site_id, Invitation.used_at.is_(None),
                                 Invitation.revoked_at.is_(None))
        .order_by(Invitation.sent_at.desc(), Invitation.id.desc())))


def _is_member(user: StaffUser, site_id: int) -> bool:
    return db.session.scalar(select(SiteMembership.id).where(
        SiteMembership.staff_id == user.id, SiteMembership.site_id == site_id)) is not None


def _send(invitation: Invitation, site: Site, actor: StaffUser | str) -> None:
    """A new nonce (the previous link dies), a fresh expiry, and the email, queued in the
    caller's transaction."""
    from .loop import notify

    nonce = secrets.token_urlsafe(24)
    now = utcnow()
    invitation.nonce_hash = _digest(nonce)
    invitation.sent_at = now
    invitation.expires_at = now + timedelta(seconds=_max_age())
    if isinstance(actor, StaffUser):
        invitation.invited_by_id = actor.id
        invitation.invited_by_email = actor.email
    else:
        invitation.invited_by_id, invitation.invited_by_email = None, actor
    db.session.flush()
    inviter = actor.name or actor.email if isinstance(actor, StaffUser) else None
    link = notify.external_url("admin.invite_accept", token=_token(invitation, nonce))
    days = max(1, round(_max_age() / 86400))
    # A new nonce is a new email: the dedupe key names it (re-sending sends again).
    notify.email(None, "staff_invite", f"invite-{invitation.id}-{invitation.nonce_hash[:16]}",
                 [invitation.email], "en",
                 {"link": link, "shop": site.name, "role": invitation.role, "days": days,
                  "inviter": inviter, "inviter_email": invitation.invited_by_email,
                  "email": invitation.email})


def invite(site: Site, email: str, role: str, *, actor: StaffUser | str
           ) -> tuple[Invitation, bool]:
    """Invite `email` to `site` as `role` and email the link; returns the invitation and
    whether it is new (False: the address's invitation was sent again, with this role and a
    new link). InviteError for an invalid address or role, an existing member or a
    deactivated account. Commits."""
    email = (email or "").strip().lower()
    if not mail.valid_address(email):
        raise InviteError("Enter a valid email address (name@example.com).")
    if role not in ROLES:
        raise InviteError(f"Choose a role: {', '.join(ROLES)}.")
    user = staff.find(email)
    if user is not None and not user.active:
        raise InviteError(f"{email} has a deactivated account: it cannot be invited until "
                          "it is activated again (flask staff activate).")
    if user is not None and _is_member(user, site.id):
        raise InviteError(f"{email} is already a member of {site.name}: change their role "
                          "in the list of members.")
    invitation = db.session.scalar(select(Invitation).where(
        Invitation.site_id == site.id, Invitation.email == email).with_for_update())
    created = invitation is None
    if invitation is None:
        invitation = Invitation(site_id=site.id, email=email, role=role, sends=1,
                                invited_by_email="", expires_at=utcnow())
        db.session.add(invitation)
    else:  # pending, expired, used or revoked earlier: this row again, as a new invitation
        invitation.role = role
        invitation.used_at = invitation.revoked_at = None
        invitation.used_by_id = None
        invitation.sends = Invitation.sends + 1
    try:
        _send(invitation, site, actor)
    except IntegrityError:  # the same address invited at the same moment by someone else
        db.session.rollback()
        raise InviteError(f"{email} was invited meanwhile: see the list below.") from None
    audit.record("invitation.create" if created else "invitation.resend", actor=actor,
                 object_type="invitation", object_id=invitation.id, site_id=site.id,
                 details={"email": email, "role": role})
    db.session.commit()
    return invitation, created


def resend(invitation: Invitation, *, actor: StaffUser | str) -> None:
    """Send a pending or expired invitation again: a new link (the old one dies), a new
    expiry. Commits."""
    site = db.session.get(Site, invitation.site_id)
    assert site is not None
    if invitation.used_at is not None or invitation.revoked_at is not None:
        raise InviteError("This invitation was used or revoked: invite the address again.")
    invitation.sends = Invitation.sends + 1
    _send(invitation, site, actor)
    audit.record("invitation.resend", actor=actor, object_type="invitation",
                 object_id=invitation.id, site_id=site.id,
                 details={"email": invitation.email, "role": invitation.role})
    db.session.commit()


def revoke(invitation: Invitation, *, actor: StaffUser | str) -> None:
    """Revoke an invitation: its link stops working at once. Commits."""
    if invitation.used_at is not None or invitation.revoked_at is not None:
        raise InviteError("This invitation was already used or revoked.")
    invitation.revoked_at = utcnow()
    invitation.nonce_hash = None
    audit.record("invitation.revoke", actor=actor, object_type="invitation",
                 object_id=invitation.id, site_id=invitation.site_id,
                 details={"email": invitation.email, "role": invitation.role})
    db.session.commit()


def for_token(token: str) -> tuple[Invitation, str] | None:
    """The pending invitation a link token is for, with its nonce; None when the token is
    forged, garbled or too old, or the invitation was used, revoked, re-sent or expired."""
    try:
        data: dict[str, Any] = signing.loads(signing.app_keys(), signing.STAFF_INVITE, token,
                                             _max_age())
    except signing.TokenInvalid:
        return None
    ident, nonce = data.get("i"), data.get("n")
    if (not isinstance(ident, int) or isinstance(ident, bool) or not 0 < ident < 2**31
            or not isinstance(nonce, str)):
        return None
    invitation = db.session.get(Invitation, ident)
    if (invitation is None or invitation.nonce_hash is None
            or not hmac.compare_digest(invitation.nonce_hash, _digest(nonce))
            or invitation.state(utcnow()) != "pending"):
        return None
    return invitation, nonce


def _claim(invitation: Invitation, nonce: str, user: StaffUser) -> None:
    """Mark the invitation used, if it still is pending with this nonce (one UPDATE, so of
    two acceptances at once only one gets it); InvitationGone otherwise."""
    now = utcnow()
    claimed = db.session.execute(
        update(Invitation).where(
            Invitation.id == invitation.id, Invitation.nonce_hash == _digest(nonce),
            Invitation.used_at.is_(None), Invitation.revoked_at.is_(None),
            Invitation.expires_at > now)
        .values(used_at=now, used_by_id=user.id, nonce_hash=None)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]  # an UPDATE's CursorResult
    if claimed != 1:
        db.session.rollback()
        raise InvitationGone()


def _join(invitation: Invitation, user: StaffUser, nonce: str, new_account: bool) -> str:
    """Claim the invitation and add the membership (an existing one keeps its role); returns
    the role the person has on the site now. Commits."""
    _claim(invitation, nonce, user)
    membership = db.session.scalar(select(SiteMembership).where(
        SiteMembership.staff_id == user.id, SiteMembership.site_id == invitation.site_id))
    if membership is None:
        membership = SiteMembership(staff_id=user.id, site_id=invitation.site_id,
                                    role=invitation.role)
        db.session.add(membership)
        audit.record("membership.grant", actor=user, object_type="staff", object_id=user.id,
                     site_id=invitation.site_id,
                     details={"email": user.email, "role": invitation.role, "previous": None,
                              "invitation": invitation.id})
    audit.record("invitation.accept", actor=user, object_type="invitation",
                 object_id=invitation.id, site_id=invitation.site_id,
                 details={"email": invitation.email, "role": membership.role,
                          "new_account": new_account})
    try:
        db.session.commit()
    except IntegrityError:  # the account or the membership was created meanwhile
        db.session.rollback()
        raise InvitationGone() from None
    return membership.role


def accept_new(invitation: Invitation, nonce: str, name: str, password: str) -> StaffUser:
    """Create the invited person's account (password policy checked: ValueError, its message
    safe to show) and their membership, and use up the invitation. Commits."""
    user = staff.add(invitation.email, password, "agent", name=name.strip()[:200] or None)
    try:
        db.session.flush()
    except IntegrityError:  # created meanwhile (a second tab): that account signs in instead
        db.session.rollback()
        raise ValueError(f"a staff account with email {invitation.email} already exists"
                         ) from None
    audit.record("staff.create", actor=user, object_type="staff", object_id=user.id,
                 site_id=invitation.site_id,
                 details={"email": user.email, "invitation": invitation.id})
    _join(invitation, user, nonce, new_account=True)
    return user


def accept_existing(invitation: Invitation, nonce: str, user: StaffUser) -> str:
    """Make the signed-in account (whose email the invitation names) a member and use up the
    invitation; returns their role on the site. Commits."""
    if not user.active:
        raise InviteError("This account is deactivated.")
    if user.email != invitation.email:
        raise InviteError("This invitation is for another email address.")
    return _join(invitation, user, nonce, new_account=False)
