"""Typed models. Every timestamp is UTC; every foreign key and dashboard slice is indexed."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask_login import UserMixin
from sqlalchemy import (
    DDL,
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    case,
    event,
    func,
    literal,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

from ..extensions import db

_clock: list[Any] = []


def utcnow() -> datetime:
    """Timezone-aware now: the one clock of the app. Tests control it with `set_clock`."""
    return _clock[-1]() if _clock else datetime.now(UTC)


def set_clock(clock: Any | None) -> None:
    """Replace the clock by a callable returning an aware datetime (None restores it)."""
    _clock.clear()
    if clock is not None:
        _clock.append(clock)


class UTCDateTime(db.TypeDecorator):  # type: ignore[name-defined]
    """Stores UTC, always returns aware datetimes (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def new_public_key() -> str:
    """Public site key: safe to publish in a script tag."""
    return "pk_" + secrets.token_urlsafe(12)


def new_secret() -> str:
    """Signing secret for verified prompts: 256 bits."""
    return "sk_" + secrets.token_urlsafe(32)


def new_public_id() -> str:
    """Unguessable id for public URLs (thank-you page)."""
    return secrets.token_urlsafe(16)


class Site(db.Model):  # type: ignore[name-defined]
    """A merchant's shop: keys, allowed embedding origins, contacts and SLA targets."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    public_key: Mapped[str] = mapped_column(String(40), unique=True, default=new_public_key)
    # Oldest first, newest last (itsdangerous signs with the last, verifies with any).
    signing_secrets: Mapped[list[str]] = mapped_column(JSON, default=lambda: [new_secret()])
    allowed_origins: Mapped[list[str]] = mapped_column(JSON, default=list)
    default_locale: Mapped[str] = mapped_column(String(16), default="en")
    review_url: Mapped[str | None] = mapped_column(String(500))
    support_contact: Mapped[str | None] = mapped_column(String(200))
    referral_url: Mapped[str | None] = mapped_column(String(500))

    # SLA targets (PRODUCT.md defaults): share acknowledged within each window, closed within.
    sla_ack_hours: Mapped[int] = mapped_column(Integer, default=2)
    sla_ack_target: Mapped[float] = mapped_column(Float, default=0.60)
    sla_ack_late_hours: Mapped[int] = mapped_column(Integer, default=6)
    sla_ack_late_target: Mapped[float] = mapped_column(Float, default=0.85)
    sla_close_hours: Mapped[int] = mapped_column(Integer, default=48)
    sla_close_target: Mapped[float] = mapped_column(Float, default=0.95)
    sla_loop_hours: Mapped[int] = mapped_column(Integer, default=72)
    # Follow-up timing by segment family.
    followup_negative_hours: Mapped[int] = mapped_column(Integer, default=24)
    followup_neutral_hours: Mapped[int] = mapped_column(Integer, default=48)
    followup_positive_hours: Mapped[int] = mapped_column(Integer, default=168)
    # Reminders go out this long before a stage is due; breach alerts when it passes.
    sla_reminder_minutes: Mapped[int] = mapped_column(Integer, default=30)
    # Webhooks to private networks (RFC 1918, IPv6 ULA) are refused unless the site opts in
    # (an on-premise helpdesk); loopback, link-local and metadata never (app/loop/safehttp.py).
    webhooks_allow_private: Mapped[bool] = mapped_column(Boolean, default=False)
    # Bumped by every change to the site or its moments (app/sites.py), so each process's
    # cached copy (app/prompts.py) notices within SITE_CACHE_CHECK_SECONDS.
    settings_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Root-cause categories as [{"key", "label"}, ...] in order; NULL = the defaults
    # (app/loop/replies.py DEFAULT_CATEGORIES). Keys are fixed, labels editable.
    root_cause_categories: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    # Branding on the customer's pages: the logo's storage key (app/storage.py) and its
    # sniffed type, and an accent colour (#rrggbb) accepted only with enough contrast.
    logo_key: Mapped[str | None] = mapped_column(String(200))
    logo_content_type: Mapped[str | None] = mapped_column(String(64))
    accent_color: Mapped[str | None] = mapped_column(String(7))

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    moments: Mapped[list[Moment]] = relationship(back_populates="site", lazy="raise_on_sql")

    def allows_origin(self, origin: str | None) -> bool:
        """True when `origin` (scheme://host[:port]) is one of the site's embedding origins."""
        return bool(origin and origin.rstrip("/").lower() in {
            o.rstrip("/").lower() for o in self.allowed_origins
        })


class Moment(db.Model):  # type: ignore[name-defined]
    """A touchpoint where a site asks (checkout, delivery...): its scale, question and pacing."""

    __tablename__ = "moments"
    __table_args__ = (UniqueConstraint("site_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    scale: Mapped[str] = mapped_column(String(16), default="csat")
    question: Mapped[str] = mapped_column(String(300))
    # The question per language ({"tr": "...", "ru": "..."}), each optional; see question_in.
    questions: Mapped[dict[str, str] | None] = mapped_column(JSON)
    comment_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    voice_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    sampling_rate: Mapped[float] = mapped_column(Float, default=1.0)
    cooldown_hours: Mapped[int] = mapped_column(Integer, default=24 * 14)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    site: Mapped[Site] = relationship(back_populates="moments", lazy="raise_on_sql")

    def question_in(self, lang: str, own: bool = True) -> str:
        """The question in `lang`: the merchant's text for that language (unless `own` is
        False: what customers see without one), else the question as written — in the
        catalog's translation when it is one of the default moments' questions a site started
        with (app/sites.py), as the merchant left it otherwise."""
        from flask_babel import force_locale, gettext

        text = (self.questions or {}).get(lang) if own else None
        if text:
            return text
        with force_locale(lang):
            return gettext(self.question)


class Response(db.Model):  # type: ignore[name-defined]
    """One customer answer. `submission_id` makes retries and double clicks idempotent."""

    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("site_id", "submission_id"),
        Index("ix_responses_site_created", "site_id", "created_at"),
        Index("ix_responses_site_moment_created", "site_id", "moment_id", "created_at"),
        Index("ix_responses_site_channel_created", "site_id", "channel", "created_at"),
        Index("ix_responses_site_segment_created", "site_id", "segment", "created_at"),
        # The inbox's search (comment ILIKE '%word%'): trigrams on PostgreSQL; SQLite scans.
        Index("ix_responses_comment_trgm", "comment", postgresql_using="gin",
              postgresql_ops={"comment": "gin_trgm_ops"}).ddl_if(dialect="postgresql"),
        Index("ix_responses_transcript_trgm", "transcript", postgresql_using="gin",
              postgresql_ops={"transcript": "gin_trgm_ops"}).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    moment_id: Mapped[int] = mapped_column(ForeignKey("moments.id", ondelete="CASCADE"))
    submission_id: Mapped[str] = mapped_column(String(64), nullable=False)
    scale: Mapped[str] = mapped_column(String(16))
    rating: Mapped[int] = mapped_column(Integer)
    segment: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    # The voice note's transcript, copied here when it is stored (app/transcribe.py) so the
    # inbox search is one table's `comment ILIKE … OR transcript ILIKE …`, which PostgreSQL
    # serves with both trigram indexes (migration d4a7f2c9e8b1 says why).
    transcript: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(16))
    # Which store, till, agent or campaign of the channel (the token's `detail`).
    channel_detail: Mapped[str | None] = mapped_column(String(100))
    skus: Mapped[list[str]] = mapped_column(JSON, default=list)
    order_ref: Mapped[str | None] = mapped_column(String(100), index=True)
    customer_ref: Mapped[str | None] = mapped_column(String(100), index=True)
    # Only ever from a verified token: the address thank-you and loop emails go to.
    customer_email: Mapped[str | None] = mapped_column(String(254))
    has_voice: Mapped[bool] = mapped_column(Boolean, default=False)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    locale: Mapped[str] = mapped_column(String(16), default="en")
    page_url: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    moment: Mapped[Moment] = relationship(lazy="raise_on_sql")
    case: Mapped[Case] = relationship(back_populates="response", lazy="raise_on_sql")


# create_all (tests, `flask init-db`) needs pg_trgm before the comment index, as the migration.
event.listen(Response.__table__, "before_create",
             DDL("CREATE EXTENSION IF NOT EXISTS pg_trgm").execute_if(dialect="postgresql"))


class ShortLink(db.Model):  # type: ignore[name-defined]
    """A short link for an SMS: /s/<code> redirects to the verified prompt it stands for
    until the prompt's token expires (app/channels.py)."""

    __tablename__ = "short_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    token: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Kiosk(db.Model):  # type: ignore[name-defined]
    """An in-store tablet asking one moment (app/kiosks.py): its link is a long-lived signed
    token naming this row, which works until a lead revokes it."""

    __tablename__ = "kiosks"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    moment_key: Mapped[str] = mapped_column(String(64))
    store: Mapped[str] = mapped_column(String(100))  # recorded as the answers' channel detail
    label: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class VoiceNote(db.Model):  # type: ignore[name-defined]
    """A customer's recorded voice note: its audio lives in the storage backend under a random
    key; the row is written (unclaimed) before the bytes are stored, and claimed by its answer
    in the answer's transaction, so an upload whose answer never committed is swept."""

    __tablename__ = "voice_notes"
    __table_args__ = (Index("ix_voice_notes_unclaimed", "claimed_at", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    # NULL until the answer claims it; the answer's deletion (retention purge) deletes the
    # audio first, then this row goes with the answer.
    response_id: Mapped[int | None] = mapped_column(
        ForeignKey("responses.id", ondelete="CASCADE"), unique=True)
    storage_key: Mapped[str] = mapped_column(String(200), unique=True)
    content_type: Mapped[str] = mapped_column(String(64))  # judged from the bytes
    size_bytes: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    # pending → done | not_transcribed | failed (app/transcribe.py)
    transcript_status: Mapped[str] = mapped_column(String(16), default="pending")
    transcript: Mapped[str | None] = mapped_column(Text)
    transcript_lang: Mapped[str | None] = mapped_column(String(16))
    transcript_engine: Mapped[str | None] = mapped_column(String(32))
    transcribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ResponseSku(db.Model):  # type: ignore[name-defined]
    """One row per SKU a response is about, so dashboards can group and filter by SKU."""

    __tablename__ = "response_skus"
    __table_args__ = (Index("ix_response_skus_site_sku", "site_id", "sku"),)

    response_id: Mapped[int] = mapped_column(
        ForeignKey("responses.id", ondelete="CASCADE"), primary_key=True
    )
    sku: Mapped[str] = mapped_column(String(100), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))


class Impression(db.Model):  # type: ignore[name-defined]
    """A prompt shown to someone: the denominator of prompt engagement, and the cooldown memory."""

    __tablename__ = "impressions"
    __table_args__ = (
        Index("ix_impressions_site_visitor_created", "site_id", "visitor_hash", "created_at"),
        Index("ix_impressions_site_moment_created", "site_id", "moment_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    moment_id: Mapped[int] = mapped_column(ForeignKey("moments.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    # Keyed hash of the customer ref or the widget's anonymous id: never the raw value.
    visitor_hash: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


CASE_STATUSES = ("new", "acknowledged", "in_progress", "resolved", "verified", "reopened")


class Case(db.Model):  # type: ignore[name-defined]
    """The loop item every response opens: owner, priority and a due/done pair per stage."""

    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_site_status", "site_id", "status"),
        Index("ix_cases_site_team_status", "site_id", "team", "status"),
        Index("ix_cases_site_created", "site_id", "created_at"),
        Index("ix_cases_ack_due", "status", "ack_due_at"),
        Index("ix_cases_site_team_created", "site_id", "team", "created_at"),
        Index("ix_cases_created_id", "created_at", "id"),  # the inbox's "newest" keyset
        # The saved views' capped counts on every admin page: "My open", "Unassigned"; "Critical".
        Index("ix_cases_status_assignee", "status", "assignee_id"),
        Index("ix_cases_status_priority", "status", "priority"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(
        ForeignKey("responses.id", ondelete="CASCADE"), unique=True
    )
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="new")
    priority: Mapped[str] = mapped_column(String(16), default="routine")
    team: Mapped[str | None] = mapped_column(String(64))
    # The person working the case (a member of its site); the team stays as routed.
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff_users.id", ondelete="SET NULL"), index=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    template: Mapped[str | None] = mapped_column(String(64))
    resolution: Mapped[str | None] = mapped_column(Text)
    root_cause: Mapped[str | None] = mapped_column(Text)
    # "Five whys" at resolution: a key of the site's root-cause categories (what dashboards
    # count) and up to five "why" lines (app/loop/replies.py validates both).
    root_cause_category: Mapped[str | None] = mapped_column(String(64), index=True)
    whys: Mapped[list[str] | None] = mapped_column(JSON)
    customer_message: Mapped[str | None] = mapped_column(Text)
    # Bumped on every resolution, so each resolve/verify cycle gets its own emails.
    cycle: Mapped[int] = mapped_column(Integer, default=0)
    routed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ack_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ack_late_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    followup_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    followed_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    close_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    loop_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    response: Mapped[Response] = relationship(back_populates="case", lazy="raise_on_sql")
    events: Mapped[list[CaseEvent]] = relationship(
        back_populates="case", order_by="CaseEvent.id", lazy="raise_on_sql"
    )


# The next stage still to be done and its due time, in SQL (the inbox's sort and filters; the
# row's SLA state is the same in Python): the loop's order, acknowledge, follow up, close.
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)  # sorts cases without a next due time last
NEXT_DUE: ColumnElement[datetime] = case(
    (and_(Case.acknowledged_at.is_(None), Case.ack_due_at.is_not(None)), Case.ack_due_at),
    (and_(Case.followed_up_at.is_(None), Case.followup_due_at.is_not(None)),
     Case.followup_due_at),
    (and_(Case.closed_at.is_(None), Case.close_due_at.is_not(None)), Case.close_due_at),
    else_=literal(None, UTCDateTime),
)
SORT_DUE: ColumnElement[datetime] = func.coalesce(NEXT_DUE, literal(FAR_FUTURE, UTCDateTime))
# The inbox's keyset by due time, (SORT_DUE, id): PostgreSQL matches the expression (the
# query's parameters are planned as constants); SQLite's tiny databases sort.
Index("ix_cases_sort_due", SORT_DUE, Case.id).ddl_if(dialect="postgresql")


def compared_in_migrations(dialect: str) -> Callable[..., bool]:
    """Alembic's `include_object` when comparing the models with a `dialect` database
    (autogenerate, tests/test_migrations.py): it leaves out indexes made only on another
    database (`ddl_if`) and expression indexes, whose text PostgreSQL rewrites beyond what
    Alembic can compare (tests/test_inbox.py checks that the inbox's plans use them)."""

    def include(obj: Any, _name: str | None, type_: str, reflected: bool,
                compare_to: Any) -> bool:
        index = compare_to if reflected else obj
        if type_ != "index" or index is None:
            return True
        only = index._ddl_if.dialect if index._ddl_if is not None else None
        return (only is None or only == dialect) and all(
            isinstance(e, Column) for e in index.expressions)

    return include


class CaseEvent(db.Model):  # type: ignore[name-defined]
    """One entry of a case's timeline: who did what, when, with an optional note."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200), default="system")
    note: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    case: Mapped[Case] = relationship(back_populates="events", lazy="raise_on_sql")


class Outbox(db.Model):  # type: ignore[name-defined]
    """Work owed to the queue, written in the same transaction as the fact that caused it."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("topic", "ref_id"),
        Index("ix_outbox_pending", "done_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(String(64))
    ref_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class StaffUser(UserMixin, db.Model):  # type: ignore[name-defined]
    """A person who works the loop in the admin. What they may do on which site comes only
    from their SiteMembership rows (owner/lead/agent/viewer per site, app/models/access.py);
    `role` here is a global label kept for the CLI and the alert fallback to "owners"
    (app/loop/alerts.py) and grants no access of its own, `admin` included."""

    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="agent")
    name: Mapped[str | None] = mapped_column(String(200))  # as they gave it (invitations)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Sign-in hardening (app/staff.py): failed sign-ins in a row and the lock they earned;
    # session_version is stored in each session at sign-in and bumped by a password change
    # (or "sign out everywhere"), which ends every session holding an older one.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    session_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    @property
    def is_active(self) -> bool:  # flask-login
        return self.active


from .access import SITE_ROLES, AuditEvent, Invitation, SiteMembership  # noqa: E402
from .loop import (  # noqa: E402  (the loop's tables, split out to keep this file short)
    CaseAlert,
    DeliveryAttempt,
    EmailMessage,
    RoutingRule,
    Team,
    WebhookDelivery,
    WebhookEndpoint,
    team_members,
)
from .replies import ResponseTemplate  # noqa: E402

__all__ = [
    "CASE_STATUSES", "Case", "CaseAlert", "CaseEvent", "DeliveryAttempt", "EmailMessage",
    "Impression", "Moment", "Outbox", "Response", "ResponseSku", "RoutingRule", "Site",
    "StaffUser", "Team", "UTCDateTime", "WebhookDelivery", "WebhookEndpoint", "team_members",
    "new_public_id", "new_public_key", "new_secret", "set_clock", "utcnow",
    "SITE_ROLES", "AuditEvent", "Invitation", "SiteMembership", "ResponseTemplate", "VoiceNote",
]
