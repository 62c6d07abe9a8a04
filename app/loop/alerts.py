"""Alerts that someone hears: who gets a team's alert, what the case timeline records, and a
bound on alert floods from public prompts.

Who: the team's addresses; a team that does not exist, has no addresses or has critical alerts
off falls back to the site's support contact (when it is an email address), then to the site's
owners (active staff with the `owner` role on the site). If nobody can be
reached the case gets an `alert_unheard` event and a warning is logged; otherwise an `alerted`
event lists the recipients and why a fallback was used.

Floods: a public (unverified) prompt is gated only by Origin, so a script can post many
negative answers. Per site and team, at most ALERT_BURST alert emails go out individually in
each fixed window of ALERT_BURST_WINDOW seconds; further alerts for unverified answers in that
window are *held*: stored as `alert_held` email rows that are never sent, with an
`alert_held` event on the case. Once the window has ended, the SLA scan (every 5 minutes)
sends one `alert_summary` email per team and window (UNIQUE ref_key) listing the held cases
with links, and records `alerted` on each. Alerts for verified answers are never held. Every
case is routed and on the timeline either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, select

from ..extensions import db
from ..models import (
    Case,
    CaseEvent,
    EmailMessage,
    Moment,
    Response,
    Site,
    SiteMembership,
    StaffUser,
    Team,
    utcnow,
)
from . import mail, notify
from . import rules as rules_mod

log = logging.getLogger(__name__)
HELD, SUMMARY = "alert_held", "alert_summary"
SUMMARY_MAX_LISTED = 200
# Windows are summarised this long after they end, so a slightly slow clock in a worker
# cannot add a held alert to a window whose summary went out already.
SUMMARY_GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class Audience:
    """Who hears a team's alert: `via` is "team", "support_contact", "owners" or "nobody";
    `reason` says why the team itself was not used (None when it was)."""

    team_key: str | None
    team: Team | None
    recipients: list[str]
    via: str
    reason: str | None = None

    def data(self) -> dict[str, Any]:
        """The timeline's record of it."""
        out: dict[str, Any] = {"team": self.team_key, "recipients": self.recipients,
                               "via": self.via}
        if self.reason:
            out["reason"] = self.reason
        return out


def owners(site_id: int) -> list[str]:
    """The site's owners: active staff with the `owner` role on it (app/admin/permissions)."""
    return list(db.session.scalars(
        select(StaffUser.email)
        .join(SiteMembership, SiteMembership.staff_id == StaffUser.id)
        .where(SiteMembership.site_id == site_id, SiteMembership.role == "owner",
               StaffUser.active.is_(True))
        .order_by(StaffUser.email)))


def why_unreachable(team_key: str | None, team: Team | None, flag: str = "alert_critical"
                    ) -> str | None:
    """Why a team's own addresses do not get this alert (None: they do)."""
    if team is None:
        return f"there is no team {team_key!r}"
    if not getattr(team, flag):
        return f"team {team_key!r} has alerts turned off"
    if not [a for a in team.recipients() if mail.valid_address(a)]:
        return f"team {team_key!r} has no addresses"
    return None


def audience(site: Site, team_key: str | None, flag: str = "alert_critical") -> Audience:
    """The team's recipients, else the support contact, else the site's owners, else nobody."""
    team_key = team_key or rules_mod.FALLBACK_TEAM
    team = db.session.scalar(select(Team).where(Team.site_id == site.id, Team.key == team_key))
    reason = why_unreachable(team_key, team, flag)
    if reason is None:
        assert team is not None
        return Audience(team_key, team, team.recipients(), "team")
    contact = site.support_contact
    if contact is not None and mail.valid_address(contact):
        return Audience(team_key, team, [contact], "support_contact", reason)
    found = owners(site.id)
    if found:
        return Audience(team_key, team, found, "owners", reason)
    return Audience(team_key, team, [], "nobody", reason)


def _event(case: Case, kind: str, aud: Audience, about: str, **extra: Any) -> None:
    who = ", ".join(aud.recipients) or "nobody"
    note = {"alerted": f"Alerted {who}", "alert_held": f"Held back for the summary to {who}",
            "alert_unheard": "Nobody could be alerted"}[kind]
    if aud.reason:
        note += f" ({aud.reason})"
    db.session.add(CaseEvent(case_id=case.id, kind=kind, note=note + ".", created_at=utcnow(),
                             data={**aud.data(), "about": about, **extra}))


def _unheard(case: Case, aud: Audience, about: str) -> None:
    log.warning("case %s (site %s): %s alert unheard: %s, no support contact email and no "
                "site owners", case.id, case.site_id, about, aud.reason)
    _event(case, "alert_unheard", aud, about)


def _locale(site: Site, aud: Audience) -> str:
    return aud.team.locale if aud.team else site.default_locale


def window_of(at: datetime) -> tuple[datetime, datetime]:
    """The fixed ALERT_BURST_WINDOW that `at` falls in: [start, end)."""
    seconds = int(current_app.config["ALERT_BURST_WINDOW"])
    stamp = int(at.timestamp()) // seconds * seconds
    start = datetime.fromtimestamp(stamp, UTC)
    return start, start + timedelta(seconds=seconds)


def _flooded(site: Site, team_key: str | None, now: datetime) -> bool:
    """Whether ALERT_BURST alerts for this team went out individually in this window."""
    burst = int(current_app.config["ALERT_BURST"])
    if burst <= 0:
        return False
    # Serialise the count-then-insert of one site's public alerts (PostgreSQL; SQLite has a
    # single writer anyway). FOR NO KEY UPDATE does not block answers' foreign-key checks.
    db.session.execute(select(Site.id).where(Site.id == site.id).with_for_update(key_share=True))
    start, _end = window_of(now)
    sent = db.session.scalar(
        select(func.count(EmailMessage.id)).join(Case, Case.id == EmailMessage.case_id)
        .where(EmailMessage.kind == "alert", EmailMessage.created_at >= start,
               Case.site_id == site.id, Case.team == team_key))
    return (sent or 0) >= burst


def _hold(site: Site, case: Case, ref: str, aud: Audience, context: dict[str, Any],
          now: datetime) -> None:
    """Store the alert that would have gone out, unsent, for the window's summary."""
    subject, text, html = mail.render("alert", _locale(site, aud), site=site, **context)
    domain = current_app.config["MAIL_FROM"].rpartition("@")[2] or "closeloop.invalid"
    db.session.add(EmailMessage(
        site_id=site.id, case_id=case.id, kind=HELD, ref_key=ref, recipients=aud.recipients,
        locale=_locale(site, aud), subject=subject, body_text=text, body_html=html,
        message_id=f"<{HELD}.{ref.replace(':', '.')}@{domain}>", status="held",
        created_at=now))
    start, end = window_of(now)
    _event(case, "alert_held", aud, "critical", summary=summary_ref(site.id, case.team, start),
           window_end=end.isoformat())


def critical_alert(case: Case, response: Response, moment: Moment, site: Site
                   ) -> notify.Dispatch:
    """Alert whoever hears the case's team (once per case), or hold it for the summary when
    public answers flood the team, or record that nobody can hear it."""
    ref = f"case:{case.id}"
    if notify.already_queued("alert", ref) or notify.already_queued(HELD, ref):
        return []
    aud = audience(site, case.team)
    if not aud.recipients:
        _unheard(case, aud, "critical")
        return []
    context = {"case": case, "response": response, "moment": moment, "team": aud.team,
               "case_url": notify.case_url(case.id), "fallback_reason": aud.reason,
               "fallback_team": case.team, "public_key": site.public_key,
               "transcript": response.transcript}
    now = utcnow()
    if not response.verified and _flooded(site, case.team, now):
        _hold(site, case, ref, aud, context, now)
        return []
    out = notify.email(site, "alert", ref, aud.recipients, _locale(site, aud), context,
                       case_id=case.id)
    _event(case, "alerted", aud, "critical")
    return out


def reopened_alert(case: Case, response: Response, moment: Moment, site: Site,
                   note: str | None) -> notify.Dispatch:
    """Tell the case's team (same fallback) that the customer says it is not resolved."""
    aud = audience(site, case.team)
    if not aud.recipients:
        _unheard(case, aud, "reopened")
        return []
    out = notify.email(site, "reopened", f"case:{case.id}:{case.cycle}", aud.recipients,
                       _locale(site, aud),
                       {"case": case, "response": response, "moment": moment, "team": aud.team,
                        "case_url": notify.case_url(case.id), "fallback_reason": aud.reason,
                        "fallback_team": case.team, "public_key": site.public_key,
                        "note": note, "transcript": response.transcript},
                       case_id=case.id)
    if out:
        _event(case, "alerted", aud, "reopened")
    return out


# -- summaries of held alerts -------------------------------------------------------------------

def summary_ref(site_id: int, team_key: str | None, start: datetime) -> str:
    """The summary email's UNIQUE ref_key for one site, team and window."""
    return f"alerts:{site_id}:{team_key}:{start:%Y%m%dT%H%M%S}"


def flush_summaries(now: datetime | None = None, limit: int = 5000) -> int:
    """Cron (with the SLA scan): one summary email per site, team and ended window that held
    alerts back; marks the held rows summarised. Safe to run twice. Returns emails queued."""
    now = now or utcnow()
    cutoff, _ = window_of(now - SUMMARY_GRACE)
    rows = db.session.execute(
        select(EmailMessage, Case, Response, Moment)
        .join(Case, Case.id == EmailMessage.case_id)
        .join(Response, Response.id == Case.response_id)
        .join(Moment, Moment.id == Response.moment_id)
        .where(EmailMessage.kind == HELD, EmailMessage.status == "held",
               EmailMessage.created_at < cutoff)
        .order_by(EmailMessage.id).limit(limit)
        .with_for_update(of=EmailMessage)  # a concurrent run waits, then finds them done
    ).all()
    groups: dict[tuple[int, str | None, datetime], list[Any]] = {}
    for row in rows:
        held = row[0]
        groups.setdefault((held.site_id, row[1].team, window_of(held.created_at)[0]),
                          []).append(row)
    effects: notify.Dispatch = []
    for (site_id, team_key, start), items in groups.items():
        site = db.session.get_one(Site, site_id)  # held rows go with their site (CASCADE)
        aud = audience(site, team_key)
        ref = summary_ref(site_id, team_key, start)
        for held, c, _r, _m in items:
            held.status = "summarised"
            if aud.recipients:
                _event(c, "alerted", aud, "critical", summary=ref)
            else:
                _unheard(c, aud, "critical")
        if not aud.recipients:
            continue
        listed = [{"case": c, "response": r, "moment": m, "case_url": notify.case_url(c.id)}
                  for _h, c, r, m in items[:SUMMARY_MAX_LISTED]]
        effects += notify.email(
            site, SUMMARY, ref, aud.recipients, _locale(site, aud),
            {"team": aud.team, "team_key": team_key, "start": start,
             "end": start + timedelta(seconds=int(current_app.config["ALERT_BURST_WINDOW"])),
             "count": len(items), "listed": listed, "more": len(items) - len(listed),
             "burst": int(current_app.config["ALERT_BURST"]), "fallback_reason": aud.reason,
             "fallback_team": team_key, "public_key": site.public_key})
    db.session.commit()  # hands the summaries over
    return len(effects)


# -- the doctor ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """A team that rules can route to whose own addresses would not hear its alerts."""

    team: str
    rules: list[str]
    reason: str
    heard_by: Audience

    @property
    def unheard(self) -> bool:
        """Nobody at all would get the alert."""
        return not self.heard_by.recipients


def check_site(site: Site) -> list[Finding]:
    """Teams the site's enabled rules (and the fallback team) route to that cannot be alerted
    directly, with who would hear their alerts instead."""
    named: dict[str, list[str]] = {rules_mod.FALLBACK_TEAM: []}
    for rule in rules_mod.for_site(site.id):
        team = rule["actions"].get("team")
        if team and rule.get("enabled", True):
            named.setdefault(team, []).append(rule["name"])
    out = []
    for key in sorted(named):
        aud = audience(site, key)
        if aud.reason is not None:
            out.append(Finding(key, named[key], aud.reason, aud))
    return out


def describe(finding: Finding) -> str:
    """One line for the doctor and `sites create`."""
    where = (f" (rules: {', '.join(repr(r) for r in finding.rules)})" if finding.rules
             else " (cases no rule assigns)")
    if finding.unheard:
        return (f"UNHEARD  {finding.reason}{where}: no support contact email and no site "
                "owners either; critical alerts would reach nobody")
    to = {"support_contact": "the support contact", "owners": "the site's owners"}[
        finding.heard_by.via]
    return (f"fallback {finding.reason}{where}: alerts go to {to} "
            f"({', '.join(finding.heard_by.recipients)})")


def setup_notes(site: Site) -> list[str]:
    """What `sites create` says about alerts: which teams still need an address and who hears
    their alerts meanwhile."""
    findings = check_site(site)
    if not findings:
        return []
    lines = [f"teams that need an address: {', '.join(f.team for f in findings)}"]
    heard = findings[0].heard_by
    if heard.recipients:
        to = {"support_contact": "the support contact", "owners": "the site's owners"}[heard.via]
        lines.append(f"meanwhile their critical alerts go to {to}: {', '.join(heard.recipients)}")
    else:
        lines.append("WARNING: no support contact email either, so critical alerts reach nobody "
                     "until a team has an address")
    lines.append(f"add one:  flask --app app teams create {site.public_key} {findings[0].team} "
                 "--email team@example.com   (check any time: flask --app app doctor)")
    return lines
