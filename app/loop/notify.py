"""Side effects of the loop, each at most once: emails and webhook deliveries.

Deciding an effect inserts its row (UNIQUE per subject and kind) and an outbox row in the
caller's transaction; after commit the caller dispatches the returned jobs. The send jobs lock
their row, skip it if already done, and record success or schedule a retry with backoff; the
`retry_due` cron job re-dispatches retries that fell due.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta
from typing import Any

from flask import current_app, has_request_context, url_for
from sqlalchemy import select

from .. import queue
from ..extensions import db
from ..models import (
    Case,
    EmailMessage,
    Outbox,
    Response,
    Site,
    Team,
    WebhookDelivery,
    utcnow,
)
from . import mail, webhooks

log = logging.getLogger(__name__)
SEND_EMAIL, DELIVER_WEBHOOK = "send_email", "deliver_webhook"
Dispatch = list[tuple[str, int]]


def _outbox(topic: str, ref_id: int, now: datetime) -> None:
    db.session.add(Outbox(topic=topic, ref_id=ref_id, created_at=now, attempts=0))


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute URL for emails: from PUBLIC_BASE_URL in jobs and the CLI (no request)."""
    if has_request_context() and not current_app.config.get("PUBLIC_BASE_URL"):
        return url_for(endpoint, _external=True, **values)
    base = current_app.config.get("PUBLIC_BASE_URL") or "http://127.0.0.1:5000"
    with current_app.test_request_context(base_url=base):
        return url_for(endpoint, _external=True, **values)


def dispatch_all(items: Dispatch) -> None:
    """After commit: hand each new effect to the job backend (the outbox covers a loss)."""
    for topic, ref_id in items:
        queue.dispatch(topic, ref_id)


# -- deciding effects --------------------------------------------------------------------------

def email(site: Site, kind: str, ref_key: str, recipients: list[str], locale: str,
          context: dict[str, Any], case_id: int | None = None) -> Dispatch:
    """Queue one email unless this (kind, ref_key) exists already; renders it now."""
    recipients = [r for r in dict.fromkeys(recipients) if mail.valid_address(r)]
    if not recipients:
        return []
    exists = db.session.scalar(select(EmailMessage.id).where(
        EmailMessage.kind == kind, EmailMessage.ref_key == ref_key))
    if exists is not None:
        return []
    subject, text, html = mail.render(kind, locale, site=site, **context)
    domain = current_app.config["MAIL_FROM"].rpartition("@")[2] or "closeloop.invalid"
    now = utcnow()
    msg = EmailMessage(site_id=site.id, case_id=case_id, kind=kind, ref_key=ref_key,
                       recipients=recipients, locale=locale, subject=subject, body_text=text,
                       body_html=html, message_id=f"<{kind}.{ref_key.replace(':', '.')}@{domain}>",
                       created_at=now)
    db.session.add(msg)
    db.session.flush()
    _outbox(SEND_EMAIL, msg.id, now)
    return [(SEND_EMAIL, msg.id)]


def webhook(site: Site, event: str, dedupe_key: str, data: dict[str, Any],
            team: str | None = None) -> Dispatch:
    """Queue `event` for every endpoint that wants it, once per (endpoint, dedupe_key)."""
    team_id = None
    if team is not None:
        team_id = db.session.scalar(select(Team.id).where(Team.site_id == site.id,
                                                          Team.key == team))
    out: Dispatch = []
    now = utcnow()
    body = webhooks.payload(event, data, now)
    for endpoint in webhooks.endpoints_for(site.id, event, team_id):
        exists = db.session.scalar(select(WebhookDelivery.id).where(
            WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.dedupe_key == dedupe_key))
        if exists is not None:
            continue
        delivery = WebhookDelivery(endpoint_id=endpoint.id, site_id=site.id, event=event,
                                   dedupe_key=dedupe_key, payload=body, created_at=now)
        db.session.add(delivery)
        db.session.flush()
        _outbox(DELIVER_WEBHOOK, delivery.id, now)
        out.append((DELIVER_WEBHOOK, delivery.id))
    return out


def response_data(response: Response, moment_key: str) -> dict[str, Any]:
    """The public shape of a response in webhooks."""
    return {"id": response.public_id, "moment": moment_key, "scale": response.scale,
            "rating": response.rating, "segment": response.segment,
            "comment": response.comment, "channel": response.channel,
            "skus": list(response.skus or []), "order": response.order_ref,
            "customer": response.customer_ref, "locale": response.locale,
            "created_at": response.created_at.isoformat()}


def case_data(case: Case, response: Response, moment_key: str) -> dict[str, Any]:
    """The public shape of a case (with its response) in webhooks."""
    def iso(v: datetime | None) -> str | None:
        return v.isoformat() if v else None

    return {"id": case.id, "status": case.status, "priority": case.priority, "team": case.team,
            "tags": list(case.tags or []), "resolution": case.resolution,
            "ack_due_at": iso(case.ack_due_at), "acknowledged_at": iso(case.acknowledged_at),
            "followup_due_at": iso(case.followup_due_at),
            "followed_up_at": iso(case.followed_up_at),
            "close_due_at": iso(case.close_due_at), "closed_at": iso(case.closed_at),
            "verified_at": iso(case.verified_at),
            "response": response_data(response, moment_key)}


def team_recipients(site_id: int, team_key: str | None, flag: str) -> tuple[Team | None, list[str]]:
    """The team row and its addresses, when its `flag` setting wants this kind of mail."""
    if team_key is None:
        return None, []
    team = db.session.scalar(select(Team).where(Team.site_id == site_id, Team.key == team_key))
    if team is None or not getattr(team, flag):
        return team, []
    return team, team.recipients()


# -- doing effects (RQ entry points) ------------------------------------------------------------

def _backoff(attempts: int, schedule: list[int]) -> timedelta:
    return timedelta(seconds=schedule[min(attempts - 1, len(schedule) - 1)])


def _finish_outbox(topic: str, ref_id: int, now: datetime) -> None:
    db.session.execute(Outbox.__table__.update()
                       .where(Outbox.topic == topic, Outbox.ref_id == ref_id,
                              Outbox.done_at.is_(None))
                       .values(done_at=now, last_error=None))


def _due(row: EmailMessage | WebhookDelivery, now: datetime) -> bool:
    return row.status == "pending" and (row.next_attempt_at is None or row.next_attempt_at <= now)


def _failed(row: EmailMessage | WebhookDelivery, error: str, now: datetime, max_attempts: int,
            schedule: list[int]) -> None:
    row.last_error = error[:2000]
    if row.attempts >= max_attempts:
        row.status = "failed"
        row.next_attempt_at = None
    else:
        row.next_attempt_at = now + _backoff(row.attempts, schedule)


def send_email(email_id: int) -> str:
    """Send one stored email once. The row stays locked while SMTP runs, so a second run of
    the same job waits and then finds it sent; a worker killed mid-send rolls back and the
    message is sent by the next run."""
    cfg = current_app.config
    session = db.session
    msg = session.scalar(select(EmailMessage).where(EmailMessage.id == email_id)
                         .with_for_update())
    now = utcnow()
    if msg is None:
        session.rollback()
        return "unknown"
    if not _due(msg, now):
        _finish_outbox(SEND_EMAIL, email_id, now)
        session.commit()
        return msg.status
    site = session.get(Site, msg.site_id)
    customer_facing = msg.kind in ("thanks", "resolution", "verification")
    reply_to = site.support_contact if site and customer_facing else None
    msg.attempts += 1
    try:
        mail.send(mail.build(msg, from_name=site.name if site else None, reply_to=reply_to))
    except (OSError, smtplib.SMTPException) as exc:
        _failed(msg, f"{type(exc).__name__}: {exc}", now, cfg["MAIL_MAX_ATTEMPTS"],
                cfg["MAIL_RETRY_SECONDS"])
        log.warning("email %s (%s) failed: %s", msg.id, msg.kind, exc)
    else:
        msg.status, msg.sent_at, msg.last_error, msg.next_attempt_at = "sent", now, None, None
    _finish_outbox(SEND_EMAIL, email_id, now)
    session.commit()
    return msg.status


def deliver_webhook(delivery_id: int) -> str:
    """Attempt one webhook delivery (signed, SSRF-guarded, bounded by WEBHOOK_TIMEOUT)."""
    cfg = current_app.config
    session = db.session
    delivery = session.scalar(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                              .with_for_update(of=WebhookDelivery))
    now = utcnow()
    if delivery is None:
        session.rollback()
        return "unknown"
    if not _due(delivery, now) or not delivery.endpoint.active:
        _finish_outbox(DELIVER_WEBHOOK, delivery_id, now)
        session.commit()
        return delivery.status
    site = session.get(Site, delivery.site_id)
    delivery.attempts += 1
    result = webhooks.attempt(delivery, site)
    if result.ok:
        delivery.status, delivery.delivered_at = "succeeded", utcnow()
        delivery.last_error, delivery.next_attempt_at = None, None
    else:
        _failed(delivery, result.error or f"HTTP {result.status}", now,
                cfg["WEBHOOK_MAX_ATTEMPTS"], cfg["WEBHOOK_RETRY_SECONDS"])
    _finish_outbox(DELIVER_WEBHOOK, delivery_id, now)
    session.commit()
    return delivery.status


def redeliver(delivery_id: int) -> Dispatch:
    """Manual redelivery: the same `webhook-id` and body, a fresh series of attempts."""
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise LookupError(f"no delivery {delivery_id}")
    delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, None
    db.session.commit()
    return [(DELIVER_WEBHOOK, delivery.id)]


def retry_due(now: datetime | None = None, limit: int = 500) -> int:
    """Cron: dispatch emails and deliveries whose retry time has come."""
    now = now or utcnow()
    items: Dispatch = []
    for model, topic in ((EmailMessage, SEND_EMAIL), (WebhookDelivery, DELIVER_WEBHOOK)):
        ids = db.session.scalars(
            select(model.id).where(model.status == "pending", model.next_attempt_at.is_not(None),
                                   model.next_attempt_at <= now)
            .order_by(model.next_attempt_at).limit(limit)
        ).all()
        items += [(topic, i) for i in ids]
    db.session.rollback()
    dispatch_all(items)
    return len(items)
