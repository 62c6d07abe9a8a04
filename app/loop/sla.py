"""Service levels: attainment of each target over any period and slice (in SQL), and the scan
that raises reminders before a stage is due and alerts when it is breached (each once).

Attainment of a stage over the cases created in [start, end): met / eligible, where a case is
eligible once the stage is done or its due time has passed (a case still inside its window is
neither met nor missed yet), and met when it was done no later than its due time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, literal, or_, select

from ..extensions import db
from ..models import (
    Case,
    CaseAlert,
    Moment,
    Response,
    ResponseSku,
    Site,
    UTCDateTime,
    utcnow,
)
from . import alerts, notify

# stage -> (done column, due column, the site's target attribute or None)
STAGES: dict[str, tuple[Any, Any, str | None]] = {
    "ack": (Case.acknowledged_at, Case.ack_due_at, "sla_ack_target"),
    "ack_late": (Case.acknowledged_at, Case.ack_late_due_at, "sla_ack_late_target"),
    "followup": (Case.followed_up_at, Case.followup_due_at, None),
    "close": (Case.closed_at, Case.close_due_at, "sla_close_target"),
    "loop": (Case.verified_at, Case.loop_due_at, None),
}
SLICES = {
    "team": Case.team,
    "priority": Case.priority,
    "segment": Response.segment,
    "channel": Response.channel,
    "moment": Moment.key,
    "sku": ResponseSku.sku,
}


@dataclass(frozen=True)
class Attainment:
    """One stage's figures for one slice."""

    stage: str
    met: int
    eligible: int
    target: float | None

    @property
    def rate(self) -> float | None:
        """Share met, or None with nothing eligible yet."""
        return self.met / self.eligible if self.eligible else None

    @property
    def on_target(self) -> bool | None:
        """Whether the rate reaches the site's target (None: no target or no data)."""
        if self.target is None or self.rate is None:
            return None
        return self.rate >= self.target


Report = dict[str | None, dict[str, "Attainment"]]


def attainment(site: Site, start: datetime, end: datetime, *, now: datetime | None = None,
               group_by: str | None = None, **filters: str) -> Report:
    """Attainment per stage for cases created in [start, end), optionally filtered on and
    grouped by a slice (team, priority, segment, channel, moment, sku). One query."""
    for name in [*filters, *([group_by] if group_by else [])]:
        if name not in SLICES:
            raise ValueError(f"unknown slice {name!r}; one of {', '.join(SLICES)}")
    now_lit = literal(now or utcnow(), UTCDateTime)
    cols = []
    for name, (done, due, _t) in STAGES.items():
        cols.append(func.sum(case((and_(done.is_not(None), done <= due), 1), else_=0))
                    .label(f"{name}_met"))
        cols.append(func.sum(case((and_(due.is_not(None),
                                        or_(done.is_not(None), due <= now_lit)), 1), else_=0))
                    .label(f"{name}_eligible"))
    key = SLICES[group_by].label("slice") if group_by else literal(None).label("slice")
    q = (select(key, *cols).select_from(Case)
         .join(Response, Response.id == Case.response_id)
         .join(Moment, Moment.id == Response.moment_id)
         .where(Case.site_id == site.id, Case.created_at >= start, Case.created_at < end,
                Case.routed_at.is_not(None)))
    if group_by == "sku" or "sku" in filters:
        q = q.join(ResponseSku, ResponseSku.response_id == Response.id)
    for name, value in filters.items():
        q = q.where(SLICES[name] == value)
    if group_by:
        q = q.group_by(SLICES[group_by])
    out: dict[str | None, dict[str, Attainment]] = {}
    for row in db.session.execute(q).mappings():
        out[row["slice"]] = {
            name: Attainment(name, int(row[f"{name}_met"] or 0), int(row[f"{name}_eligible"] or 0),
                             getattr(site, t) if t else None)
            for name, (_d, _due, t) in STAGES.items()
        }
    return out


# -- reminders and breaches --------------------------------------------------------------------

# Stages that get reminders and breach alerts while a case is open, with their columns.
ALERT_STAGES = ("ack", "followup", "close")
MAX_LEAD = timedelta(days=1)


def scan(now: datetime | None = None, limit: int = 1000) -> dict[str, int]:
    """Cron: raise each due reminder and breach once (UNIQUE case/stage/kind/cycle). First,
    send the summaries of alerts held back by the flood bound in windows that ended."""
    now = now or utcnow()
    alerts.flush_summaries(now)  # its own transaction
    counts = {"reminder": 0, "breach": 0}
    effects: notify.Dispatch = []
    for stage in ALERT_STAGES:
        done, due, _t = STAGES[stage]
        # The alert this scan would raise (breach once due, else reminder) must not exist yet.
        owed = case((due <= now, literal("breach")), else_=literal("reminder"))
        already = exists().where(CaseAlert.case_id == Case.id, CaseAlert.stage == stage,
                                 CaseAlert.kind == owed, CaseAlert.cycle == Case.cycle)
        rows = db.session.execute(
            select(Case, Response, Moment, Site)
            .join(Response, Response.id == Case.response_id)
            .join(Moment, Moment.id == Response.moment_id)
            .join(Site, Site.id == Case.site_id)
            .where(done.is_(None), due.is_not(None), due <= now + MAX_LEAD,
                   Case.status.in_(("new", "acknowledged", "in_progress", "reopened")),
                   ~already)
            .order_by(due).limit(limit)
        ).all()
        for c, response, moment, site in rows:
            due_at = getattr(c, due.key)
            if now >= due_at:
                kind = "breach"
            elif now >= due_at - timedelta(minutes=site.sla_reminder_minutes):
                kind = "reminder"
            else:
                continue
            db.session.add(CaseAlert(case_id=c.id, stage=stage, kind=kind, cycle=c.cycle,
                                     due_at=due_at, created_at=now))
            counts[kind] += 1
            effects += _alert_effects(c, response, moment, site, stage, kind, due_at)
    db.session.commit()  # hands the alerts over
    return counts


def _alert_effects(c: Case, response: Response, moment: Moment, site: Site, stage: str,
                   kind: str, due_at: datetime) -> notify.Dispatch:
    ref = f"case:{c.id}:{stage}:{c.cycle}"
    team, recipients = notify.team_recipients(site.id, c.team, "sla_alerts")
    out = notify.email(site, f"sla_{kind}", ref, recipients,
                       team.locale if team else site.default_locale,
                       {"case": c, "response": response, "moment": moment, "stage": stage,
                        "due_at": due_at, "team": team, "alert": kind,
                        "case_url": notify.case_url(c.id),
                        "transcript": response.transcript},
                       case_id=c.id, template="sla_alert")
    if kind == "breach":
        data = {**notify.case_data(c, response, moment.key), "stage": stage,
                "due_at": due_at.isoformat()}
        out += notify.webhook(site, "sla.breached", ref, data, c.team, case_id=c.id)
    return out
