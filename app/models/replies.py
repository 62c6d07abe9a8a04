"""Response templates: a site's canned customer messages per key and locale (lead-managed)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from . import UTCDateTime, utcnow


class ResponseTemplate(db.Model):  # type: ignore[name-defined]
    """One customer-message template: `key` is what routing rules' `template` names; one body
    per locale. Placeholders ({customer_name}, {order}, {sku}, {case_link}) are filled by
    app/loop/replies.py, never by str.format."""

    __tablename__ = "response_templates"
    __table_args__ = (UniqueConstraint("site_id", "key", "locale"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
