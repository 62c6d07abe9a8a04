"""Side effects of the loop, each at most once: emails and webhook deliveries.

Deciding an effect inserts its row (UNIQUE per subject and kind) and an outbox row in the
caller's transaction; after commit the caller dispatches the returned jobs. The send jobs lock
their row, skip it if already done, and record success or schedule a retry with backoff; the
`retry_due` cron job re-dispatches retries that fell due.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
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
from ..security import public_url
from . import mail, webhooks

log = logging.getLogger(__name__)
SEND_EMAIL, DELIVER_WEBHOOK = "send_email", "deliver_webhook"
Dispatch = list[tuple[str, int]]


def _outbox(topic: str, ref_id: int, now: datetime) -> None:
    db.session.add(Outbox(topic=topic, ref_id=ref_id, created_at=now, attempts=0))


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute URL for emails, under PUBLIC_BASE_URL (never the request's Host)."""
    return public_url(endpoint, **values)


def case_url(case_id: int) -> str:
    """Where staff open a case (the admin's response list until the case view lands)."""
    return external_url("admin.responses") + f"#case-{case_id}"


def dispatch_all(items: Dispatch) -> None:
    """After commit: hand each new effect to the job backend (the outbox covers a loss)."""
    for topic, ref_id in items:
        queue.dispatch(topic, ref_id)


# -- deciding effects --------------------------------------------------------------------------

def already_queued(kind: str, ref_key: str) -> bool:
    """Whether the email (kind, ref_key) was decided already (it is unique)."""
    return db.session.scalar(select(EmailMessage.id).where(
        EmailMessage.kind == kind, EmailMessage.ref_key == ref_key)) is not None


def email(site: Site, kind: str, ref_key: str, recipients: list[str], locale: str,
          context: dict[str, Any], case_id: int | None = None,
          template: str | None = None) -> Dispatch:
    """Queue one email unless this (kind, ref_key) exists already; renders it now from
    `email/<template or kind>.*`."""
    recipients = [r for r in dict.fromkeys(recipients) if mail.valid_address(r)]
    if not recipients:
        return []
    if already_queued(kind, ref_key):
        return []
    subject, text, html = mail.render(template or kind, locale, site=site, **context)
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
    endpoints = webhooks.endpoints_for(site.id, event, team)
    if not endpoints:
        return []
    out: Dispatch = []
    now = utcnow()
    body = webhooks.payload(event, data, now)
    done = set(db.session.scalars(select(WebhookDelivery.endpoint_id).where(
        WebhookDelivery.endpoint_id.in_([e.id for e in endpoints]),
        WebhookDelivery.dedupe_key == dedupe_key)))
    for endpoint in endpoints:
        if endpoint.id in done:
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


def _perform(model: type[EmailMessage] | type[WebhookDelivery], topic: str, row_id: int,
             act: Callable[[Any, datetime], str | None], done_status: str,
             max_attempts: int, schedule: list[int],
             ready: Callable[[Any], bool] = lambda row: True) -> str:
    """Run one attempt of an effect row at most once: lock the row (a second run of the job
    waits, then finds it done), skip it unless it is due, call `act` (None = success, else
    the error), record the outcome or the next retry, mark the outbox row done, commit."""
    session = db.session
    row = session.scalar(select(model).where(model.id == row_id).with_for_update(of=model))
    now = utcnow()
    if row is None:
        session.rollback()
        return "unknown"
    if _due(row, now) and ready(row):
        row.attempts += 1
        error = act(row, now)
        if error is None:
            row.status, row.last_error, row.next_attempt_at = done_status, None, None
        else:
            _failed(row, error, now, max_attempts, schedule)
    _finish_outbox(topic, row_id, now)
    session.commit()
    return row.status


def send_email(email_id: int) -> str:
    """Send one stored email once. The row stays locked while SMTP runs; a worker killed
    mid-send rolls back and the message is sent by the next run."""
    cfg = current_app.config

    def act(msg: EmailMessage, now: datetime) -> str | None:
        site = db.session.get(Site, msg.site_id)
        customer_facing = msg.kind in ("thanks", "resolution", "verification")
        reply_to = site.support_contact if site and customer_facing else None
        try:
            mail.send(mail.build(msg, from_name=site.name if site else None, reply_to=reply_to))
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("email %s (%s) failed: %s", msg.id, msg.kind, exc)
            return f"{type(exc).__name__}: {exc}"
        msg.sent_at = now
        return None

    return _perform(EmailMessage, SEND_EMAIL, email_id, act, "sent",
                    cfg["MAIL_MAX_ATTEMPTS"], cfg["MAIL_RETRY_SECONDS"])


def deliver_webhook(delivery_id: int) -> str:
    """Attempt one webhook delivery (signed, SSRF-guarded, bounded by WEBHOOK_TIMEOUT)."""
    cfg = current_app.config

    def act(delivery: WebhookDelivery, now: datetime) -> str | None:
        result = webhooks.attempt(delivery, db.session.get(Site, delivery.site_id))
        if not result.ok:
            return result.error or f"HTTP {result.status}"
        delivery.delivered_at = utcnow()
        return None

    return _perform(WebhookDelivery, DELIVER_WEBHOOK, delivery_id, act, "succeeded",
                    cfg["WEBHOOK_MAX_ATTEMPTS"], cfg["WEBHOOK_RETRY_SECONDS"],
                    ready=lambda d: d.endpoint.active)  # a disabled endpoint waits


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
