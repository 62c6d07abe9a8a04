"""The loop's job handlers (registered with app.jobs). Each takes an id, re-fetches, commits
itself and is safe to run twice; the effects it decides are handed over by its commit."""

from __future__ import annotations

from sqlalchemy import select, update

from .. import jobs, transcribe
from ..extensions import db
from ..jobs import outbox as app_outbox
from ..models import Case, CaseEvent, Moment, Outbox, Response, Site, utcnow
from ..responses import ROUTE_TOPIC
from . import alerts, notify, routing


@jobs.handler(ROUTE_TOPIC)
def route_response(response_id: int) -> str:
    """Route a response's case (priority, team, due times) once per version of the answer."""
    session = db.session
    # A write first: it serialises two runs of this job (PostgreSQL: the row lock; SQLite: the
    # database write lock), and the second then finds the row done.
    claimed = session.execute(
        update(Outbox)
        .where(Outbox.topic == ROUTE_TOPIC, Outbox.ref_id == response_id)
        .values(attempts=Outbox.attempts)
        .returning(Outbox.id, Outbox.done_at)
    ).first()
    if claimed is None:
        session.rollback()
        return "unknown"
    if claimed.done_at is not None:
        session.rollback()
        return "already done"
    outbox = session.get(Outbox, claimed.id)
    assert outbox is not None
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
        note = transcribe.note_of(response.id)
        deadline = transcribe.wait_deadline(note, response.created_at)
        if deadline is not None and utcnow() < deadline:
            # The voice note's transcript may hold what the rules look for: wait for it. Its
            # job hands routing over when it settles; the sweep does at the deadline if not.
            app_outbox.defer(ROUTE_TOPIC, response_id, deadline)
            session.commit()
            return "waiting for the transcript"
        route = routing.decide(response, moment, site,
                               transcript=note.transcript if note is not None else None)
        rerouted = case.routed_at is not None
        routing.apply(case, route)
        case.routed_at = utcnow()
        event = CaseEvent(
            case_id=case.id,
            kind="rerouted" if rerouted else "routed",
            data={"priority": route.priority, "team": route.team, "segment": response.segment,
                  "tags": route.tags, "rules": route.matched},
        )
        session.add(event)
        session.flush()
        _routed_effects(case, response, moment, site, event, route)
    outbox.done_at = utcnow()
    outbox.last_error = None
    session.commit()  # hands the effects over
    return "routed"


def _routed_effects(case: Case, response: Response, moment: Moment, site: Site,
                    event: CaseEvent, route: routing.Route) -> notify.Dispatch:
    """Webhooks, the team alert and the customer's thank-you email of a routed answer."""
    data = notify.case_data(case, response, moment.key)
    out = notify.webhook(site, "response.created", f"response:{response.id}",
                         notify.response_data(response, moment.key), case.team, case_id=case.id)
    out += notify.webhook(site, "case.updated", f"case-event:{event.id}", data, case.team,
                          case_id=case.id)
    ctx = {"case": case, "response": response, "moment": moment}
    if route.priority == "critical" or route.notify:
        # Never unheard: falls back past a missing or address-less team, records who heard it,
        # and holds public alert floods for one summary per team and window (app/loop/alerts).
        out += alerts.critical_alert(case, response, moment, site)
    if response.customer_email:
        out += notify.email(site, "thanks", f"response:{response.id}", [response.customer_email],
                            response.locale, ctx, case_id=case.id)
    return out

