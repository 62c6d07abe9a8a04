"""Settings of the loop (issue 8, point 4): a site's teams and their members, and its routing
rules edited as YAML/JSON with a preview against the last 100 answers before saving.

Views stay thin: rules are parsed, validated and stored by app/loop/rules.py (the same
`parse` + `replace` as `flask rules import`, all or nothing), the preview runs
app/loop/routing.py `decide` (what the routing job runs) on the proposed rules without saving
them, and who hears a team's alerts is app/loop/alerts.py `check_site`/`describe` (what
`flask doctor` prints). Every change is a POST with CSRF, audited in its own transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response as WerkzeugResponse

from .. import audit
from ..extensions import db
from ..loop import alerts, mail, routing
from ..loop import rules as rules_mod
from ..models import (
    Case,
    Moment,
    Response,
    Site,
    SiteMembership,
    StaffUser,
    Team,
    VoiceNote,
)
from . import bp
from .permissions import requires, scoped

PREVIEW_ANSWERS = 100
LOCALES = ("en", "et", "ru", "tr")
FLAGS = {"alert_critical": "Critical alerts", "sla_alerts": "SLA reminders",
         "weekly_digest": "Weekly digest"}
_SPLIT = re.compile(r"[\s,;]+")


# -- teams -------------------------------------------------------------------------------------


def _site(site_id: int) -> Site:
    site = db.session.get(Site, site_id)
    if site is None:  # @requires already answered 404 for a site the person is not a member of
        abort(404)
    return site


def _team(site_id: int, team_id: int) -> Team:
    """The site's team with this id; another site's team is 404 like a missing one."""
    team = db.session.scalar(select(Team).where(Team.id == team_id, Team.site_id == site_id))
    if team is None:
        abort(404)
    return team


def _site_staff(site_id: int) -> list[StaffUser]:
    """Staff who are members of the site (any role): who can be put in one of its teams."""
    return list(db.session.scalars(
        select(StaffUser).join(SiteMembership, SiteMembership.staff_id == StaffUser.id)
        .where(SiteMembership.site_id == site_id).order_by(StaffUser.email)))


def _teams_page(site: Site, status: int = 200, error: str | None = None,
                form: dict[str, Any] | None = None) -> tuple[str, int]:
    teams = db.session.scalars(select(Team).where(Team.site_id == site.id)
                               .order_by(Team.key)).all()
    findings = alerts.check_site(site)  # what `flask doctor` reports for the site
    by_team: dict[str, alerts.Finding | None] = {f.team: f for f in findings}
    for team in teams:  # a team no rule routes to yet: the same check on its own
        if team.key not in by_team:
            aud = alerts.audience(site, team.key)
            by_team[team.key] = (alerts.Finding(team.key, [], aud.reason, aud)
                                 if aud.reason is not None else None)
    html = render_template(
        "admin/settings_teams.html", site=site, site_id=site.id, teams=teams,
        staff=_site_staff(site.id), findings=findings, by_team=by_team,
        describe=alerts.describe, flags=FLAGS, locales=LOCALES, error=error, form=form or {})
    return html, status


def _addresses(raw: str) -> tuple[list[str], list[str]]:
    """(valid, invalid) addresses of a free-text list (one per line, or comma-separated)."""
    items = [a for a in _SPLIT.split(raw or "") if a]
    good = list(dict.fromkeys(a for a in items if mail.valid_address(a)))
    return good, [a for a in items if not mail.valid_address(a)]


def _team_fields(form: Any) -> tuple[dict[str, Any], str | None]:
    """The editable fields of a team from a form, and the first problem with them."""
    name = (form.get("name") or "").strip()
    emails, bad = _addresses(form.get("emails", ""))
    locale = form.get("locale", "en")
    fields = {"name": name, "emails": emails, "locale": locale,
              **{flag: flag in form for flag in FLAGS}}
    if not name or len(name) > 200:
        return fields, "The team needs a name of at most 200 characters."
    if bad:
        return fields, f"Not an email address: {', '.join(bad)}."
    if locale not in LOCALES:
        return fields, f"Unknown locale (one of {', '.join(LOCALES)})."
    return fields, None


@bp.get("/sites/<int:site_id>/settings/teams")
@requires("teams.manage")
def settings_teams(site_id: int) -> tuple[str, int]:
    """The site's teams: addresses, members, alert flags, locale, and who hears their alerts."""
    return _teams_page(_site(site_id))


@bp.post("/sites/<int:site_id>/settings/teams")
@requires("teams.manage")
def settings_team_create(site_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: create a team (key, name, addresses, flags, locale)."""
    site = _site(site_id)
    key = (request.form.get("key") or "").strip()
    fields, error = _team_fields(request.form)
    if error is None and not rules_mod.valid_key(key):
        error = "The key must be lowercase letters, digits, _ . - (up to 64 characters)."
    if error is None and db.session.scalar(
            select(Team.id).where(Team.site_id == site_id, Team.key == key)) is not None:
        error = f"The site already has a team {key!r}."
    if error is not None:
        return _teams_page(site, 400, error, {**request.form, "new": True})
    team = Team(site_id=site_id, key=key, **fields)
    db.session.add(team)
    db.session.flush()
    audit.record("team.create", object_type="team", object_id=team.id, site_id=site_id,
                 details={"key": key, **fields})
    db.session.commit()
    flash(f"Team {key} created.", "ok")
    return redirect(url_for("admin.settings_teams", site_id=site_id) + f"#team-{team.id}")


@bp.post("/sites/<int:site_id>/settings/teams/<int:team_id>")
@requires("teams.manage")
def settings_team_edit(site_id: int, team_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: change a team's name, addresses, flags and locale (the key stays: rules name it)."""
    team = _team(site_id, team_id)
    fields, error = _team_fields(request.form)
    if error is not None:
        return _teams_page(_site(site_id), 400, f"{team.key}: {error}")
    before = {k: getattr(team, k) for k in fields}
    for k, v in fields.items():
        setattr(team, k, v)
    audit.record("team.update", object_type="team", object_id=team.id, site_id=site_id,
                 details={"key": team.key, "changed": {
                     k: v for k, v in fields.items() if before[k] != v}})
    db.session.commit()
    flash(f"Team {team.key} saved.", "ok")
    return redirect(url_for("admin.settings_teams", site_id=site_id) + f"#team-{team.id}")


@bp.post("/sites/<int:site_id>/settings/teams/<int:team_id>/members")
@requires("teams.manage")
def settings_team_add_member(site_id: int, team_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: add a member of the site (`staff_id`) to the team."""
    team = _team(site_id, team_id)
    raw = request.form.get("staff_id", "")
    user = next((u for u in _site_staff(site_id) if raw.isdigit() and u.id == int(raw)), None)
    if user is None:
        return _teams_page(_site(site_id), 400,
                           f"{team.key}: choose a staff member of this site.")
    if user not in team.members:
        team.members.append(user)
        audit.record("team.member_add", object_type="team", object_id=team.id,
                     site_id=site_id, details={"key": team.key, "email": user.email})
        db.session.commit()
    flash(f"{user.email} is in team {team.key}.", "ok")
    return redirect(url_for("admin.settings_teams", site_id=site_id) + f"#team-{team.id}")


@bp.post("/sites/<int:site_id>/settings/teams/<int:team_id>/members/<int:staff_id>/remove")
@requires("teams.manage")
def settings_team_remove_member(site_id: int, team_id: int, staff_id: int
                                ) -> WerkzeugResponse:
    """POST: take a person out of the team."""
    team = _team(site_id, team_id)
    user = next((u for u in team.members if u.id == staff_id), None)
    if user is None:
        abort(404)
    team.members.remove(user)
    audit.record("team.member_remove", object_type="team", object_id=team.id, site_id=site_id,
                 details={"key": team.key, "email": user.email})
    db.session.commit()
    flash(f"{user.email} left team {team.key}.", "ok")
    return redirect(url_for("admin.settings_teams", site_id=site_id) + f"#team-{team.id}")


# -- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewRow:
    """One recent answer and what the proposed rules would route it to."""

    answer: Response
    moment: Moment
    case: Case | None
    route: routing.Route
    sla_hours: dict[str, int]


def preview(site: Site, proposed: list[dict[str, Any]], limit: int = PREVIEW_ANSWERS
            ) -> list[PreviewRow]:
    """The site's last `limit` answers (newest first) with routing.decide's verdict under the
    proposed rules; reads only, saves nothing."""
    rows = db.session.execute(scoped(
        select(Response, Moment, Case, VoiceNote.transcript)
        .join(Moment, Moment.id == Response.moment_id)
        .outerjoin(Case, Case.response_id == Response.id)
        .outerjoin(VoiceNote, VoiceNote.response_id == Response.id)
        .where(Response.site_id == site.id)
        .order_by(Response.created_at.desc(), Response.id.desc()).limit(limit),
        Response.site_id, "rules.manage")).all()
    out = []
    for answer, moment, case, transcript in rows:
        # as the routing job decides: on the comment and the voice note's transcript
        route = routing.decide(answer, moment, site, rules=proposed, transcript=transcript)
        start = answer.created_at
        sla = {name: round((due - start).total_seconds() / 3600) for name, due in (
            ("ack", route.ack_due_at), ("follow-up", route.followup_due_at),
            ("close", route.close_due_at))}
        out.append(PreviewRow(answer, moment, case, route, sla))
    return out


def _rules_page(site: Site, text: str, status: int = 200, error: str | None = None,
                rows: list[PreviewRow] | None = None,
                missing: list[tuple[str, str]] | None = None, fmt: str | None = None
                ) -> tuple[str, int]:
    html = render_template(
        "admin/settings_rules.html", site=site, site_id=site.id, text=text, error=error,
        rows=rows, missing=missing or [], limit=PREVIEW_ANSWERS, fmt=fmt,
        stored=len(rules_mod.for_site(site.id)))
    return html, status


def _proposed(text: str) -> list[dict[str, Any]]:
    """The textarea's rules, validated exactly as `flask rules import` does (RuleError); YAML
    is a superset of JSON, so either is read."""
    return rules_mod.validate_all(rules_mod.parse(text))


@bp.get("/sites/<int:site_id>/settings/rules")
@requires("rules.manage")
def settings_rules(site_id: int) -> tuple[str, int]:
    """The site's routing rules as YAML (or `?format=json`) in a textarea, with preview and
    save."""
    site = _site(site_id)
    current = rules_mod.for_site(site_id)
    fmt = "json" if request.args.get("format") == "json" else "yaml"
    return _rules_page(site, rules_mod.dump(current, fmt), fmt=fmt,
                       missing=rules_mod.missing_teams(site_id, current))


@bp.post("/sites/<int:site_id>/settings/rules")
@requires("rules.manage")
def settings_rules_save(site_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: `preview` (test the textarea's rules against the last 100 answers, nothing is
    saved) or `save` (replace the site's rules, all or nothing; errors leave them as they
    were)."""
    site = _site(site_id)
    text = request.form.get("rules", "")
    try:
        proposed = _proposed(text)
    except rules_mod.RuleError as exc:
        return _rules_page(site, text, 400, str(exc))
    missing = rules_mod.missing_teams(site_id, proposed)
    if request.form.get("action") == "preview":
        return _rules_page(site, text, rows=preview(site, proposed), missing=missing)
    audit.record("rules.replace", object_type="rules", object_id=site_id, site_id=site_id,
                 details={"count": len(proposed), "names": [r["name"] for r in proposed]})
    try:
        n = rules_mod.replace(site_id, proposed)
    except rules_mod.RuleError as exc:  # pragma: no cover - validated above
        db.session.rollback()
        return _rules_page(site, text, 400, str(exc))
    flash(f"{n} rule(s) saved.", "ok")
    for name, team in missing:
        flash(f"Rule {name!r} routes to team {team!r}, which this site does not have: "
              "its alerts fall back (see Teams).", "warn")
    return redirect(url_for("admin.settings_rules", site_id=site_id))


@bp.post("/sites/<int:site_id>/settings/rules/defaults")
@requires("rules.manage")
def settings_rules_defaults(site_id: int) -> WerkzeugResponse:
    """POST: replace the site's rules with the playbook defaults (as `flask rules defaults`)."""
    _site(site_id)
    audit.record("rules.reset_defaults", object_type="rules", object_id=site_id,
                 site_id=site_id, details={"count": len(rules_mod.DEFAULT_RULES)})
    n = rules_mod.replace(site_id, rules_mod.DEFAULT_RULES)
    flash(f"Rules reset to the {n} default rules.", "ok")
    return redirect(url_for("admin.settings_rules", site_id=site_id))
