"""Side effects of the loop, each at most once: emails and webhook deliveries.

Deciding an effect inserts its row (UNIQUE per subject and kind) and an outbox row in the
caller's transaction; its commit hands the job over (app/jobs). A send job claims its row with
a lease (`UPDATE … SET status='sending', lease_until=… WHERE due … RETURNING`), commits, does the
network I/O holding no lock, then records the outcome only if it still holds the lease. An
expired lease (a worker died mid-send) is due again; `retry_due` hands over retries and expired
leases. Receivers can drop the one duplicate a crash after "250 OK" can cause: the Message-ID
and `webhook-id` of a row never change.
"""

from __future__ import annotations

import logging
import smtplib
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import OperationalError

from .. import jobs
from ..extensions import db
from ..jobs import outbox
from ..models import (
    Case,
    EmailMessage,
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


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute URL for emails, under PUBLIC_BASE_URL (never the request's Host)."""
    return public_url(endpoint, **values)


def case_url(case_id: int) -> str:
    """Where staff open a case: its page in the admin (/admin/cases/<id>)."""
    return external_url("admin.case_view", case_id=case_id)


# -- deciding effects --------------------------------------------------------------------------

def already_queued(kind: str, ref_key: str) -> bool:
    """Whether the email (kind, ref_key) was decided already (it is unique)."""
    return db.session.scalar(select(EmailMessage.id).where(
        EmailMessage.kind == kind, EmailMessage.ref_key == ref_key)) is not None


def email(site: Site | None, kind: str, ref_key: str, recipients: list[str], locale: str,
          context: dict[str, Any], case_id: int | None = None,
          template: str | None = None) -> Dispatch:
    """Queue one email unless this (kind, ref_key) exists already; renders it now from
    `email/<template or kind>.*`. `site` is None for staff account emails (password reset)."""
    recipients = [r for r in dict.fromkeys(recipients) if mail.valid_address(r)]
    if not recipients:
        return []
    if already_queued(kind, ref_key):
        return []
    subject, text, html = mail.render(template or kind, locale, site=site, **context)
    domain = current_app.config["MAIL_FROM"].rpartition("@")[2] or "closeloop.invalid"
    now = utcnow()
    msg = EmailMessage(site_id=site.id if site else None, case_id=case_id, kind=kind,
                       ref_key=ref_key,
                       recipients=recipients, locale=locale, subject=subject, body_text=text,
                       body_html=html, message_id=f"<{kind}.{ref_key.replace(':', '.')}@{domain}>",
                       created_at=now)
    db.session.add(msg)
    db.session.flush()
    outbox.add(SEND_EMAIL, msg.id, now)
    return [(SEND_EMAIL, msg.id)]


def webhook(site: Site, event: str, dedupe_key: str, data: dict[str, Any],
            team: str | None = None, case_id: int | None = None) -> Dispatch:
    """Queue `event` for every endpoint that wants it, once per (endpoint, dedupe_key); the
    deliveries of one `case_id` to one endpoint leave in the order they were decided."""
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
                                   dedupe_key=dedupe_key, payload=body, created_at=now,
                                   case_id=case_id)
        db.session.add(delivery)
        db.session.flush()
        outbox.add(DELIVER_WEBHOOK, delivery.id, now)
        out.append((DELIVER_WEBHOOK, delivery.id))
    return out


def response_data(response: Response, moment_key: str) -> dict[str, Any]:
    """The public shape of a response in webhooks."""
    return {"id": response.public_id, "moment": moment_key, "scale": response.scale,
            "rating": response.rating, "segment": response.segment,
            "comment": response.comment, "channel": response.channel,
            "skus": list(response.skus or []), "order": response.order_ref,
            "customer": response.customer_ref, "locale": response.locale,
            "has_voice": bool(response.has_voice),
            # what the voice note said, once transcribed (routing waits for it, bounded)
            "transcript": response.transcript,
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


# -- doing effects (job handlers) ----------------------------------------------------------------

Effect = EmailMessage | WebhookDelivery


def _backoff(attempts: int, schedule: list[int]) -> timedelta:
    return timedelta(seconds=schedule[min(attempts - 1, len(schedule) - 1)])


def _due_clause(model: type[Effect], now: datetime) -> Any:
    """Rows an attempt may claim: pending and due, or claimed by a lease that ran out."""
    return or_(
        and_(model.status == "pending",
             or_(model.next_attempt_at.is_(None), model.next_attempt_at <= now)),
        and_(model.status == "sending", model.lease_until < now),
    )


def _claim(model: type[Effect], row_id: int, now: datetime) -> datetime | None:
    """Take the row for one attempt; returns the lease (the fencing value) or None."""
    lease = now + timedelta(seconds=int(current_app.config["EFFECT_LEASE_SECONDS"]))
    got = db.session.execute(
        update(model).where(model.id == row_id, _due_clause(model, now))
        .values(status="sending", lease_until=lease, attempts=model.attempts + 1)
        .returning(model.id)
    ).first()
    return lease if got else None


def _settle(model: type[Effect], row_id: int, lease: datetime, values: dict[str, Any]) -> bool:
    """Record an attempt's outcome if this attempt still holds the lease."""
    result = db.session.execute(
        update(model).where(model.id == row_id, model.status == "sending",
                            model.lease_until == lease)
        .values(lease_until=None, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]  # an UPDATE's CursorResult


def _outcome(row: Effect, error: str | None, done_status: str, now: datetime,
             max_attempts: int, schedule: list[int]) -> dict[str, Any]:
    if error is None:
        return {"status": done_status, "last_error": None, "next_attempt_at": None}
    if row.attempts >= max_attempts:
        return {"status": "failed", "last_error": error[:2000], "next_attempt_at": None}
    return {"status": "pending", "last_error": error[:2000],
            "next_attempt_at": now + _backoff(row.attempts, schedule)}


def _perform(model: type[Effect], topic: str, row_id: int,
             act: Callable[[Any, datetime], tuple[str | None, dict[str, Any]]],
             done_status: str, max_attempts: int, schedule: list[int],
             wait_for: Callable[[Any], datetime | None | bool] = lambda row: False) -> str:
    """One attempt of an effect row, at most one at a time: claim it with a lease and commit,
    run `act` (network I/O, no transaction or lock held; returns the error or None, and the
    columns to store), then record the outcome under the lease. `wait_for(row)` may hold the
    attempt back: False = go, None = wait until handed over again, a time = check again then."""
    session = db.session
    now = utcnow()
    lease = _claim(model, row_id, now)
    if lease is None:  # sent, failed, not due yet, or another worker holds a live lease
        outbox.finish(topic, row_id, now)
        session.commit()
        return session.scalar(select(model.status).where(model.id == row_id)) or "unknown"
    row: Effect = session.scalars(  # type: ignore[assignment]  # select(type[A | B])
        select(model).where(model.id == row_id).execution_options(populate_existing=True)
    ).one()
    hold = wait_for(row)
    if hold is not False:
        _settle(model, row_id, lease, {"status": "pending", "attempts": row.attempts - 1,
                                       "next_attempt_at": hold})
        outbox.finish(topic, row_id, now)
        session.commit()
        return "waiting"
    session.commit()  # the claim is visible to every worker before any I/O starts
    error, stored = act(row, now)
    values = {**_outcome(row, error, done_status, utcnow(), max_attempts, schedule), **stored}
    _record(model, topic, row_id, row, lease, values, now)
    return str(values["status"])


def _record(model: type[Effect], topic: str, row_id: int, row: Effect, lease: datetime,
            values: dict[str, Any], now: datetime) -> None:
    """Store an attempt's outcome under its lease. The I/O is done: if the database is away
    (a restart), try again with backoff while the lease lasts, rather than leave a sent row to
    be sent again when the lease runs out."""
    delay = 0.25
    while True:
        try:
            if not _settle(model, row_id, lease, values):
                log.warning("%s %s: lease lost during the attempt; its outcome is not recorded",
                            topic, row_id)
            outbox.finish(topic, row_id, now)
            if values["status"] != "pending":
                _release_next(model, row)
            db.session.commit()
            return
        except OperationalError:
            db.session.rollback()
            left = (lease - utcnow()).total_seconds() - delay
            if left <= 1:
                raise  # the lease is ending: the row is tried again (same Message-ID/webhook-id)
            log.warning("%s %s: database unavailable while recording the outcome; retrying in "
                        "%.2f s", topic, row_id, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


@jobs.handler(SEND_EMAIL)
def send_email(email_id: int) -> str:
    """Send one stored email (at most one attempt at a time; see `_perform`)."""
    cfg = current_app.config

    def act(msg: EmailMessage, now: datetime) -> tuple[str | None, dict[str, Any]]:
        site = db.session.get(Site, msg.site_id) if msg.site_id is not None else None
        customer_facing = msg.kind in ("thanks", "resolution", "verification")
        reply_to = site.support_contact if site and customer_facing else None
        mime = mail.build(msg, from_name=site.name if site else None, reply_to=reply_to)
        db.session.commit()  # end the read transaction: nothing is held during SMTP
        try:
            mail.send(mime)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("email %s (%s) failed: %s", msg.id, msg.kind, exc)
            return f"{type(exc).__name__}: {exc}", {}
        return None, {"sent_at": utcnow()}

    return _perform(EmailMessage, SEND_EMAIL, email_id, act, "sent",
                    cfg["MAIL_MAX_ATTEMPTS"], cfg["MAIL_RETRY_SECONDS"])


def _earlier_pending(delivery: WebhookDelivery) -> bool:
    """Whether an earlier delivery of the same case to the same endpoint is still owed."""
    if delivery.case_id is None:
        return False
    return db.session.scalar(select(WebhookDelivery.id).where(
        WebhookDelivery.endpoint_id == delivery.endpoint_id,
        WebhookDelivery.case_id == delivery.case_id,
        WebhookDelivery.id < delivery.id,
        WebhookDelivery.status.in_(("pending", "sending")),
    ).limit(1)) is not None


def _release_next(model: type[Effect], row: Effect) -> None:
    """A delivery is settled: hand over the next one of its case to the same endpoint."""
    if model is not WebhookDelivery or row.case_id is None:  # type: ignore[union-attr]
        return
    nxt = db.session.scalar(select(WebhookDelivery.id).where(
        WebhookDelivery.endpoint_id == row.endpoint_id,  # type: ignore[union-attr]
        WebhookDelivery.case_id == row.case_id,  # type: ignore[union-attr]
        WebhookDelivery.id > row.id,
        WebhookDelivery.status == "pending",
    ).order_by(WebhookDelivery.id).limit(1))
    if nxt is not None:
        db.session.execute(update(WebhookDelivery).where(WebhookDelivery.id == nxt)
                           .values(next_attempt_at=None))
        outbox.rearm(DELIVER_WEBHOOK, nxt)


@jobs.handler(DELIVER_WEBHOOK)
def deliver_webhook(delivery_id: int) -> str:
    """Attempt one webhook delivery (signed, SSRF-guarded, bounded by WEBHOOK_TIMEOUT); the
    deliveries of one case to one endpoint leave in the order their events happened."""
    cfg = current_app.config

    def wait_for(delivery: WebhookDelivery) -> datetime | None | bool:
        if not delivery.endpoint.active:
            return None  # a disabled endpoint's deliveries wait until it is enabled again
        if _earlier_pending(delivery):
            # Released by the earlier delivery when it settles; checked again meanwhile.
            return utcnow() + timedelta(seconds=int(cfg["WEBHOOK_ORDER_RECHECK_SECONDS"]))
        return False

    def act(delivery: WebhookDelivery, now: datetime) -> tuple[str | None, dict[str, Any]]:
        result = webhooks.attempt(delivery, db.session.get_one(Site, delivery.site_id))
        db.session.commit()  # the attempt's log row
        if not result.ok:
            return result.error or f"HTTP {result.status}", {}
        return None, {"delivered_at": utcnow()}

    return _perform(WebhookDelivery, DELIVER_WEBHOOK, delivery_id, act, "succeeded",
                    cfg["WEBHOOK_MAX_ATTEMPTS"], cfg["WEBHOOK_RETRY_SECONDS"], wait_for)


def redeliver(delivery_id: int) -> Dispatch:
    """Manual redelivery: the same `webhook-id` and body, a fresh series of attempts."""
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise LookupError(f"no delivery {delivery_id}")
    delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, None
    delivery.lease_until = None
    outbox.rearm(DELIVER_WEBHOOK, delivery.id)
    db.session.commit()
    return [(DELIVER_WEBHOOK, delivery.id)]


def retry_due(now: datetime | None = None, limit: int = 500) -> int:
    """Cron: hand over emails and deliveries whose retry time has come or whose lease ran out
    (the worker holding it died)."""
    now = now or utcnow()
    items: Dispatch = []
    for model, topic in ((EmailMessage, SEND_EMAIL), (WebhookDelivery, DELIVER_WEBHOOK)):
        ids = db.session.scalars(
            select(model.id).where(
                or_(and_(model.status == "pending", model.next_attempt_at.is_not(None),
                         model.next_attempt_at <= now),
                    and_(model.status == "sending", model.lease_until < now)))
            .order_by(model.id).limit(limit)
        ).all()
        items += [(topic, i) for i in ids]
    db.session.rollback()
    if items:
        jobs.backend().hand_over(items)
    return len(items)
