"""Webhooks: endpoints (SSRF-checked when saved and when sent), Standard Webhooks signing,
and one delivery attempt with its log row.

Signature (https://www.standardwebhooks.com): `webhook-signature: v1,<base64 HMAC-SHA256 of
"{webhook-id}.{webhook-timestamp}.{body}" keyed with the base64-decoded secret>`. The
`webhook-id` is the delivery's, the same on every retry and manual redelivery, so receivers can
deduplicate.

Targets follow `safehttp`'s address policy; a site's `webhooks_allow_private` opens RFC 1918 and
IPv6 ULA addresses only. Tests reach their receiver on 127.0.0.1 through the test-only setting
WEBHOOK_LOOPBACK_PORTS_FOR_TESTS (a list of ports), honoured only when the app is TESTING and
never set by any shipped configuration.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, or_, select

from ..extensions import db
from ..models import DeliveryAttempt, Site, Team, WebhookDelivery, WebhookEndpoint, utcnow
from . import safehttp

EVENTS = ("response.created", "case.updated", "case.resolved", "sla.breached")


class EndpointError(ValueError):
    """An endpoint that cannot be saved."""


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header value for one message."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _reach(site: Site) -> dict[str, Any]:
    """The address policy for this site's targets (keyword arguments of safehttp)."""
    ports = current_app.config.get("WEBHOOK_LOOPBACK_PORTS_FOR_TESTS") or ()
    return {"allow_private": bool(site.webhooks_allow_private),
            "loopback_ports_for_tests": frozenset(ports) if current_app.testing else frozenset()}


def create_endpoint(site: Site, url: str, events: list[str], team_id: int | None = None,
                    description: str | None = None) -> WebhookEndpoint:
    """Save an endpoint after checking its URL and event filter."""
    if not events:
        events = list(EVENTS)
    bad = set(events) - set(EVENTS)
    if bad:
        raise EndpointError(f"unknown events: {', '.join(sorted(bad))}")
    if len(url) > 2000:
        raise EndpointError("URL longer than 2000 characters")
    try:
        safehttp.check_url(url, **_reach(site))
    except safehttp.UnsafeTarget as exc:
        raise EndpointError(f"URL refused: {exc}") from None
    endpoint = WebhookEndpoint(site_id=site.id, url=url, events=sorted(set(events)),
                               team_id=team_id, description=description)
    db.session.add(endpoint)
    db.session.commit()
    return endpoint


def endpoints_of(site: Site) -> list[tuple[WebhookEndpoint, str | None, int]]:
    """A site's endpoints with their team key (None = site-wide) and number of pending
    deliveries, oldest first."""
    pending = (select(func.count(WebhookDelivery.id))
               .where(WebhookDelivery.endpoint_id == WebhookEndpoint.id,
                      WebhookDelivery.status.in_(("pending", "sending")))
               .scalar_subquery())
    rows = db.session.execute(
        select(WebhookEndpoint, Team.key, pending)
        .outerjoin(Team, Team.id == WebhookEndpoint.team_id)
        .where(WebhookEndpoint.site_id == site.id).order_by(WebhookEndpoint.id)
    ).all()
    return [(e, key, n) for e, key, n in rows]


def _endpoint(endpoint_id: int) -> WebhookEndpoint:
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise LookupError(f"no webhook endpoint {endpoint_id}")
    return endpoint


def set_active(endpoint_id: int, active: bool) -> tuple[WebhookEndpoint, int]:
    """Disable or enable an endpoint (commits); returns it and how many deliveries are
    pending. A disabled endpoint is sent nothing: it gets no deliveries for new events, and
    its pending deliveries wait (the send job puts them back untried). Enabling hands every
    pending delivery over again, oldest first (the send job keeps one case's in order);
    one that is backing off after a failure still waits for its retry time."""
    from ..jobs import outbox
    from .notify import DELIVER_WEBHOOK  # notify imports this module

    endpoint = _endpoint(endpoint_id)
    endpoint.active = active
    pending = db.session.scalars(
        select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint.id,
                                         WebhookDelivery.status == "pending")
        .order_by(WebhookDelivery.id)).all()
    if active:
        for delivery_id in pending:
            outbox.rearm(DELIVER_WEBHOOK, delivery_id)
    db.session.commit()
    return endpoint, len(pending)


def remove_endpoint(endpoint_id: int) -> tuple[WebhookEndpoint, int]:
    """Delete an endpoint for good (commits), with its signing secret, its pending
    deliveries and its delivery log; returns it and the number of deliveries deleted.
    Disable an endpoint instead to stop sending but keep its log."""
    endpoint = _endpoint(endpoint_id)
    ids = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint.id)
    count = db.session.scalar(select(func.count()).select_from(ids.subquery())) or 0
    db.session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(ids)))
    db.session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    db.session.delete(endpoint)
    db.session.commit()
    return endpoint, count


def payload(event: str, data: dict[str, Any], at: datetime) -> str:
    """The exact body sent for an event (compact JSON, stored so retries are byte-identical)."""
    return json.dumps({"type": event, "timestamp": at.isoformat(), "data": data},
                      separators=(",", ":"), ensure_ascii=False, default=str)


def endpoints_for(site_id: int, event: str, team: str | None) -> list[WebhookEndpoint]:
    """Active endpoints of a site that want this event: site-wide ones, and the owning
    team's (by team key) for that team's cases."""
    rows = db.session.scalars(
        select(WebhookEndpoint)
        .outerjoin(Team, Team.id == WebhookEndpoint.team_id)
        .where(WebhookEndpoint.site_id == site_id, WebhookEndpoint.active.is_(True),
               or_(WebhookEndpoint.team_id.is_(None), Team.key == team))
    ).all()
    return [e for e in rows if event in e.events]


def attempt(delivery: WebhookDelivery, site: Site) -> safehttp.HttpResult:
    """POST the delivery once, log the attempt on it (the caller commits)."""
    cfg = current_app.config
    now = utcnow()
    ts = int(now.timestamp())
    endpoint = delivery.endpoint
    headers = {
        "content-type": "application/json",
        "webhook-id": delivery.msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(endpoint.secret, delivery.msg_id, ts, delivery.payload),
    }
    try:
        result = safehttp.post(endpoint.url, delivery.payload.encode(), headers,
                               timeout=float(cfg["WEBHOOK_TIMEOUT"]), **_reach(site))
    except safehttp.UnsafeTarget as exc:
        result = safehttp.HttpResult(status=None, error=f"refused: {exc}", duration_ms=0,
                                     body_excerpt="")
    db.session.add(DeliveryAttempt(delivery_id=delivery.id, attempted_at=now,
                                   status_code=result.status,
                                   error=(result.error or "")[:500] or None,
                                   duration_ms=result.duration_ms))
    delivery.last_status_code = result.status
    return result
