"""Scheduled jobs of the loop, registered with app.jobs (`flask cron` schedules them on RQ;
without Redis the served process's runner does). Each is safe
to run twice: what it sends is unique per subject, what it deletes is gone already."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import delete, select

from .. import jobs, metrics, voice
from ..extensions import db
from ..models import (
    Case,
    CaseEvent,
    EmailMessage,
    Impression,
    Outbox,
    Response,
    Site,
    Team,
    WebhookDelivery,
    utcnow,
)
from . import notify, sla


def _now(now: str | datetime | None) -> datetime:
    if isinstance(now, str):
        return datetime.fromisoformat(now)
    return now or utcnow()


@jobs.task("retry_due", every=60)
def retry_due(now: str | datetime | None = None) -> int:
    """Dispatch emails and webhook deliveries whose retry time has come."""
    return notify.retry_due(_now(now))


@jobs.task("sla_scan", every=300)
def sla_scan(now: str | datetime | None = None) -> dict[str, int]:
    """Reminders before a stage is due, breach alerts after (each once)."""
    return sla.scan(_now(now))


def week_of(now: datetime) -> tuple[datetime, datetime, str]:
    """The last complete ISO week before `now`: (Monday 00:00, next Monday 00:00, label)."""
    monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0,
                                                           microsecond=0)
    start = monday - timedelta(days=7)
    year, week, _ = start.isocalendar()
    return start, monday, f"{year}-W{week:02d}"


def digest_figures(site: Site, team: str, start: datetime, end: datetime,
                   now: datetime) -> dict[str, Any]:
    """Everything the weekly digest shows for one team and week, with the week before."""
    prev = metrics.summary(site.id, start - timedelta(days=7), start, team)
    return {
        "current": metrics.summary(site.id, start, end, team),
        "previous": prev,
        "top_skus": metrics.top_negative(site.id, start, end, "sku", team),
        "top_moments": metrics.top_negative(site.id, start, end, "moment", team),
        "sla": sla.attainment(site, start, end, now=now, team=team).get(None, {}),
        "comments": metrics.sample_comments(site.id, start, end, team),
    }


def team_active(site_id: int, team: str, start: datetime, end: datetime) -> bool:
    """Whether the team had answers or any case activity (a timeline event) in [start, end)."""
    answered = select(Response.id).join(Case, Case.response_id == Response.id).where(
        Case.site_id == site_id, Case.team == team, Response.created_at >= start,
        Response.created_at < end).limit(1)
    worked = select(CaseEvent.id).join(Case, Case.id == CaseEvent.case_id).where(
        Case.site_id == site_id, Case.team == team, CaseEvent.created_at >= start,
        CaseEvent.created_at < end).limit(1)
    return (db.session.scalar(answered) is not None
            or db.session.scalar(worked) is not None)


@jobs.task("weekly_digest", cron="0 7 * * 1")  # Mondays 07:00 UTC
def weekly_digest(now: str | datetime | None = None) -> int:
    """One digest per team and week to the team's addresses; returns how many were queued."""
    now = _now(now)
    start, end, label = week_of(now)
    effects: notify.Dispatch = []
    teams = db.session.execute(
        select(Team, Site).join(Site, Site.id == Team.site_id)
        .where(Team.weekly_digest.is_(True))
    ).all()
    for team, site in teams:
        recipients = team.recipients()
        ref = f"team:{team.id}:{label}"
        if not recipients or notify.already_queued("digest", ref):  # skip the figures' queries
            continue
        if not team_active(site.id, team.key, start, end):  # an empty week sends no digest
            continue
        figures = digest_figures(site, team.key, start, end, now)
        effects += notify.email(site, "digest", ref, recipients, team.locale,
                                {"team": team, "week": label, "start": start,
                                 "end": end - timedelta(days=1), **figures})
    db.session.commit()  # hands the digests over
    return len(effects)


@jobs.task("purge", cron="30 3 * * *")
def purge(now: str | datetime | None = None) -> dict[str, int]:
    """Delete answers (with their cases, events, emails and voice notes, whose audio is deleted
    from storage first), impressions, emails, finished
    outbox rows and webhook deliveries older than RETENTION_DAYS (0 keeps everything); and,
    whatever RETENTION_DAYS says, SMS short links whose prompt has expired."""
    from ..models import ShortLink

    gone = db.session.execute(delete(ShortLink).where(ShortLink.expires_at <= _now(now))
                              .execution_options(synchronize_session=False))
    out = {"short_links": gone.rowcount}  # type: ignore[attr-defined]
    db.session.commit()
    days = int(current_app.config["RETENTION_DAYS"])
    if days <= 0:
        return out
    cutoff = _now(now) - timedelta(days=days)
    # The audio of the answers that go leaves storage first: their voice_notes rows, which
    # hold the keys, only go (by cascade) once that worked.
    out["voice_notes"] = voice.delete_audio_of(select(Response.id).where(
        Response.created_at < cutoff))
    # Children go by ON DELETE CASCADE (SQLite enforces it: PRAGMA foreign_keys=ON).
    for name, stmt in (
        ("responses", delete(Response).where(Response.created_at < cutoff)),
        ("impressions", delete(Impression).where(Impression.created_at < cutoff)),
        ("webhook_deliveries", delete(WebhookDelivery).where(WebhookDelivery.created_at < cutoff)),
        # Digests quote comments and belong to no case: they age out on their own.
        ("emails", delete(EmailMessage).where(EmailMessage.created_at < cutoff)),
        ("outbox", delete(Outbox).where(Outbox.created_at < cutoff, Outbox.done_at.is_not(None))),
    ):
        done = db.session.execute(stmt.execution_options(synchronize_session=False))
        out[name] = done.rowcount  # type: ignore[attr-defined]  # a DELETE's CursorResult
    db.session.commit()
    return out
