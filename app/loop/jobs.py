"""RQ entry points. Each takes ids, re-fetches, commits itself and is safe to run twice."""

from __future__ import annotations

from sqlalchemy import select

from ..extensions import db
from ..models import Case, CaseEvent, Moment, Outbox, Response, Site, utcnow
from ..responses import ROUTE_TOPIC
from . import routing


def route_response(response_id: int) -> str:
    """Route a response's case (priority, team, due times) once per version of the answer."""
    session = db.session
    outbox = session.scalar(
        select(Outbox)
        .where(Outbox.topic == ROUTE_TOPIC, Outbox.ref_id == response_id)
        .with_for_update()  # serialises two runs of the same job on PostgreSQL
    )
    if outbox is None:
        return "unknown"
    if outbox.done_at is not None:
        session.rollback()
        return "already done"
    row = session.execute(
        select(Response, Case, Moment, Site)
        .join(Case, Case.response_id == Response.id)
        .join(Moment, Moment.id == Response.moment_id)
        .join(Site, Site.id == Response.site_id)
        .where(Response.id == response_id)
    ).first()
    if row is None:  # purged meanwhile: nothing left to route
        outbox.done_at = utcnow()
        session.commit()
        return "gone"
    response, case, moment, site = row
    if case.status == "new":
        route = routing.decide(response, moment, site)
        rerouted = case.routed_at is not None
        routing.apply(case, route)
        case.routed_at = utcnow()
        session.add(CaseEvent(
            case_id=case.id,
            kind="rerouted" if rerouted else "routed",
            data={"priority": route.priority, "team": route.team, "segment": response.segment},
        ))
    outbox.done_at = utcnow()
    outbox.last_error = None
    session.commit()
    return "routed"


def sweep_outbox() -> int:
    """Cron entry point: re-dispatch outbox items that were never done."""
    from .outbox import sweep

    return sweep()
