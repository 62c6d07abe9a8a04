"""The loop's tables: teams, routing rules, webhook endpoints and deliveries, emails, SLA alerts.

Every side effect (an email, a webhook delivery, an SLA alert) is a row with a UNIQUE key per
(case or response, kind): jobs may run twice, the effect happens once.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from . import StaffUser, UTCDateTime, utcnow

team_members = Table(
    "team_members",
    db.metadata,
    Column("team_id", ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("staff_user_id", ForeignKey("staff_users.id", ondelete="CASCADE"), primary_key=True,
           index=True),
)


class Team(db.Model):  # type: ignore[name-defined]
    """An owning team of a site: who gets its alerts, reminders and weekly digest."""

    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("site_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    # Extra addresses (a shared inbox) on top of the members' own.
    emails: Mapped[list[str]] = mapped_column(JSON, default=list)
    alert_critical: Mapped[bool] = mapped_column(Boolean, default=True)
    sla_alerts: Mapped[bool] = mapped_column(Boolean, default=True)
    weekly_digest: Mapped[bool] = mapped_column(Boolean, default=True)
    locale: Mapped[str] = mapped_column(String(16), default="en")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    members: Mapped[list[StaffUser]] = relationship(secondary=team_members, lazy="selectin")

    def recipients(self) -> list[str]:
        """Every address that hears from this team's notifications, deduplicated."""
        out: list[str] = []
        for addr in [*self.emails, *(m.email for m in self.members if m.active)]:
            if addr.lower() not in (a.lower() for a in out):
                out.append(addr)
        return out


class RoutingRule(db.Model):  # type: ignore[name-defined]
    """One ordered routing rule: conditions (all must hold) and actions. First match wins
    unless `continue_matching`; see app/loop/rules.py for the vocabulary."""

    __tablename__ = "routing_rules"
    __table_args__ = (Index("ix_routing_rules_site_position", "site_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    conditions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    actions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    continue_matching: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


def new_webhook_secret() -> str:
    """Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_message_id() -> str:
    """The `webhook-id` of a delivery: stable across retries and manual redelivery."""
    return "msg_" + uuid.uuid4().hex


class WebhookEndpoint(db.Model):  # type: ignore[name-defined]
    """A receiver of a site's events (optionally only for one team's cases)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"),
                                                index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(100), default=new_webhook_secret)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class _Effect:
    """Columns shared by every once-only side effect: its state and retry schedule."""

    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # status "sending": claimed by one worker until then; an expired lease is retried.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookDelivery(_Effect, db.Model):  # type: ignore[name-defined]
    """One event owed to one endpoint; `dedupe_key` makes it once per (subject, event)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "dedupe_key"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_case", "endpoint_id", "case_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    msg_id: Mapped[str] = mapped_column(String(40), unique=True, default=new_message_id)
    dedupe_key: Mapped[str] = mapped_column(String(120))
    # The exact bytes signed and sent, so a redelivery is byte-identical.
    payload: Mapped[str] = mapped_column(Text)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Deliveries of one case to one endpoint leave in id (= event) order.
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"))

    endpoint: Mapped[WebhookEndpoint] = relationship(lazy="joined")


class DeliveryAttempt(db.Model):  # type: ignore[name-defined]
    """The delivery log: one row per HTTP attempt."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class EmailMessage(_Effect, db.Model):  # type: ignore[name-defined]
    """One email, rendered when it was decided and sent by a job; UNIQUE (kind, ref_key)."""

    __tablename__ = "emails"
    __table_args__ = (
        UniqueConstraint("kind", "ref_key"),
        Index("ix_emails_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # NULL only for staff account emails (password reset), which belong to no site; typed
    # `int` because every loop email (each has a case or a site) has one.
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"),
                                         index=True, nullable=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"),
                                                index=True)
    kind: Mapped[str] = mapped_column(String(32))
    ref_key: Mapped[str] = mapped_column(String(120))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    locale: Mapped[str] = mapped_column(String(16), default="en")
    subject: Mapped[str] = mapped_column(String(300))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(200))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CaseAlert(db.Model):  # type: ignore[name-defined]
    """An SLA reminder or breach already raised for a case stage (each at most once)."""

    __tablename__ = "case_alerts"
    __table_args__ = (UniqueConstraint("case_id", "stage", "kind", "cycle"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    cycle: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
