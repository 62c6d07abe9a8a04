"""Access: who belongs to which site with which role, and the audit log of staff actions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from . import UTCDateTime, utcnow

SITE_ROLES = ("owner", "lead", "agent", "viewer")


class SiteMembership(db.Model):  # type: ignore[name-defined]
    """A staff member's role on one site: the only thing admin access is decided by
    (app/admin/permissions.py). `StaffUser.role` (agent/lead/admin) is the account's global
    label for the CLI and the alert fallback to owners; it grants no site access, not even
    `admin` — without a membership a person sees nothing."""

    __tablename__ = "site_memberships"
    __table_args__ = (UniqueConstraint("staff_id", "site_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id", ondelete="CASCADE"))
    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Invitation(db.Model):  # type: ignore[name-defined]
    """An invitation to join a site with a role, sent by email (app/invitations.py).

    One row per (site, email): inviting the same address again re-sends this row with a new
    nonce (the old link dies) instead of adding another. The link is a signed token carrying
    the id and the nonce; only a SHA-256 of the nonce is stored (`nonce_hash`), and it is
    cleared when the invitation is used or revoked, so a link works once."""

    __tablename__ = "invitations"
    __table_args__ = (UniqueConstraint("site_id", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(16))
    invited_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff_users.id", ondelete="SET NULL"))
    invited_by_email: Mapped[str] = mapped_column(String(254))  # as it was when sent
    nonce_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sends: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_by_id: Mapped[int | None] = mapped_column(Integer)  # no FK: history, like the log
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def state(self, now: datetime) -> str:
        """pending, expired, used or revoked."""
        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "revoked"
        return "pending" if self.expires_at > now else "expired"


class AuditEvent(db.Model):  # type: ignore[name-defined]
    """One staff (or CLI, or system) action: who, what, on which object, when, from where.
    Append-only: app/audit.py refuses any UPDATE or DELETE of these rows through the ORM.
    No foreign keys on purpose: the log outlives the accounts, sites and objects it names,
    and no cascade may rewrite it. Not purged by RETENTION_DAYS (it holds no answers)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_site_at", "site_id", "at"),
        # The owners' audit page: a site's rows newest first, keyset-paged on id.
        Index("ix_audit_events_site_id_id", "site_id", "id"),
        Index("ix_audit_events_actor_at", "actor_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # A staff account: its id and its email at the time; otherwise actor is "cli" or "system".
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(64))
    site_id: Mapped[int | None] = mapped_column(Integer)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
