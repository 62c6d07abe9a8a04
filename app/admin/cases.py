"""The case view: one answer with all its context, its SLA stages and timeline, and the actions
that work the case. Views stay thin: every change goes through app/loop/cases.py (the same
functions the CLI calls), every read through the permission helpers, every action is audited.

Each action form carries the case's version (its `updated_at`); a POST made from a page that is
out of date changes nothing and shows the case as it is now with "this case changed meanwhile".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import or_, select
from werkzeug.wrappers import Response as WerkzeugResponse

from .. import audit, storage
from ..extensions import db
from ..loop import cases as loop_cases
from ..loop import replies
from ..loop.rules import PRIORITIES
from ..loop.sla import STAGES
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
    VoiceNote,
    WebhookDelivery,
    team_members,
    utcnow,
)
from . import bp
from .permissions import ACTIONS, can, get_scoped_or_404, requires, scoped

STAGE_LABELS = {"ack": "Acknowledge", "ack_late": "Acknowledge (second target)",
                "followup": "Follow up", "close": "Close", "loop": "Whole loop (verified)"}
# The timeline shows the latest entries; "Show the whole timeline" (?timeline=all) the rest.
TIMELINE_LIMIT = 100
# How each scale's ratings read next to an answer on the case page.
SCALE_RANGES = {"nps": "0–10", "csat": "1–5", "ces": "1–5", "emoji": "1–5",
                "thumbs": "0 (no) / 1 (yes)"}


@dataclass(frozen=True)
class Stage:
    """One SLA stage of the case as the page shows it."""

    key: str
    label: str
    due: datetime | None
    done: datetime | None
    state: str  # met, late, overdue, due, none
    text: str


@dataclass(frozen=True)
class Entry:
    """One line of the timeline: a case event, an email or a webhook delivery."""

    at: datetime
    kind: str  # event, email, webhook
    obj: Any


def _span(delta: timedelta) -> str:
    minutes = int(abs(delta).total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def sla_stages(case: Case, now: datetime) -> list[Stage]:
    """The state of each stage with a due time: met, done late, overdue by …, due in …."""
    out = []
    for key, (done_col, due_col, _target) in STAGES.items():
        due, done = getattr(case, due_col.key), getattr(case, done_col.key)
        if due is None:
            out.append(Stage(key, STAGE_LABELS[key], None, done, "none", "no due time"))
        elif done is not None:
            late = done > due
            out.append(Stage(key, STAGE_LABELS[key], due, done, "late" if late else "met",
                             f"done {_span(done - due)} late" if late else "met"))
        elif now > due:
            out.append(Stage(key, STAGE_LABELS[key], due, None, "overdue",
                             f"overdue by {_span(now - due)}"))
        else:
            out.append(Stage(key, STAGE_LABELS[key], due, None, "due",
                             f"due in {_span(due - now)}"))
    return out


def _timeline(case: Case, limit: int | None) -> tuple[list[Entry], bool]:
    """The case's events, emails and webhook deliveries, oldest first: the latest `limit`
    of them (None: all), and whether older ones were left out. Each kind is read newest
    first with at most limit + 1 rows, so a case with thousands of entries costs what one
    with a hundred does."""
    kinds: tuple[tuple[str, Any], ...] = (
        ("event", CaseEvent), ("email", EmailMessage), ("webhook", WebhookDelivery))
    entries: list[Entry] = []
    for kind, model in kinds:
        q = (select(model).where(model.case_id == case.id)
             .order_by(model.created_at.desc(), model.id.desc()))
        if limit is not None:
            q = q.limit(limit + 1)
        entries += [Entry(row.created_at, kind, row) for row in db.session.scalars(q)]
    order = {"event": 0, "email": 1, "webhook": 2}
    entries.sort(key=lambda e: (e.at, order[e.kind], e.obj.id))
    if limit is not None and len(entries) > limit:
        return entries[-limit:], True
    return entries, False


def _related(answer: Response) -> list[tuple[Response, Case, Moment]]:
    """Other answers of the same customer or order on the same site (newest first)."""
    same = []
    if answer.customer_ref:
        same.append(Response.customer_ref == answer.customer_ref)
    if answer.order_ref:
        same.append(Response.order_ref == answer.order_ref)
    if not same:
        return []
    rows = db.session.execute(scoped(
        select(Response, Case, Moment).join(Case, Case.response_id == Response.id)
        .join(Moment, Moment.id == Response.moment_id)
        .where(Response.site_id == answer.site_id, Response.id != answer.id, or_(*same))
        .order_by(Response.created_at.desc(), Response.id.desc()).limit(20),
        Response.site_id, "cases.view")).all()
    return [(r, c, m) for r, c, m in rows]


def _workers(site_id: int) -> list[StaffUser]:
    """Active members of the site whose role works cases (who a case can be assigned to)."""
    return list(db.session.scalars(
        select(StaffUser).join(SiteMembership, SiteMembership.staff_id == StaffUser.id)
        .where(SiteMembership.site_id == site_id, StaffUser.active.is_(True),
               SiteMembership.role.in_(sorted(ACTIONS["cases.resolve"])))
        .order_by(StaffUser.email)))


def _on_my_team(case: Case, user: StaffUser) -> bool:
    """Whether the person may act on this case as far as teams go: a case of no team, of a
    team they are a member of, or assigned to them; else only roles with `cases.any_team`."""
    if case.team is None or case.assignee_id == user.id or can(user, case.site_id,
                                                                "cases.any_team"):
        return True
    return db.session.scalar(
        select(Team.id).join(team_members, team_members.c.team_id == Team.id)
        .where(Team.site_id == case.site_id, Team.key == case.team,
               team_members.c.staff_user_id == user.id)) is not None


def _page(case: Case, status: int = 200, stale: bool = False,
          error: str | None = None) -> tuple[str, int]:
    answer = db.session.get(Response, case.response_id)
    assert answer is not None
    moment = db.session.get(Moment, answer.moment_id)
    assignee = db.session.get(StaffUser, case.assignee_id) if case.assignee_id else None
    teams = db.session.scalars(select(Team).where(Team.site_id == case.site_id)
                               .order_by(Team.key)).all()
    user = current_user._get_current_object()  # type: ignore[attr-defined]
    team_ok = _on_my_team(case, user)
    allowed = {a: team_ok and can(user, case.site_id, a) for a in
               ("cases.acknowledge", "cases.resolve", "cases.reopen", "cases.note", "cases.tag",
                "cases.priority", "cases.assign")}
    whole = request.method == "GET" and request.args.get("timeline") == "all"
    timeline, cut = _timeline(case, None if whole else TIMELINE_LIMIT)
    html = render_template(
        "admin/case.html", case=case, answer=answer, moment=moment, assignee=assignee,
        teams=teams, workers=_workers(case.site_id) if allowed["cases.assign"] else [],
        stages=sla_stages(case, utcnow()), timeline=timeline, timeline_cut=cut,
        related=_related(answer),
        voice=db.session.scalar(select(VoiceNote).where(VoiceNote.response_id == answer.id))
        if answer.has_voice else None,
        allowed=allowed, team_ok=team_ok, works=can(user, case.site_id, "cases.note"),
        version=loop_cases.version(case), next_steps=_next_steps(case),
        priorities=PRIORITIES, scale_range=SCALE_RANGES.get(answer.scale, ""),
        stale=stale, error=error, **_reply_parts(case, answer, allowed["cases.resolve"]))
    return html, status


def _reply_parts(case: Case, answer: Response, resolving: bool) -> dict[str, Any]:
    """The resolve form's root-cause categories and templates: the site's templates in the
    case's locale (else the site's default locale), the one chosen by `?template=<key>` or
    else the routing rule's `Case.template` preselected, its body filled in for the case."""
    site = db.session.get(Site, case.site_id)
    assert site is not None
    if not resolving:
        return {"categories": replies.categories(site), "templates": [], "chosen": None,
                "message": ""}
    templates = replies.for_case(site, answer.locale)
    wanted = request.args.get("template") if request.method == "GET" else None
    key = case.template if wanted is None else wanted
    chosen = next((t for t in templates if t.key == key), None)
    message = replies.render(chosen.body, replies.context_for(case, answer)) if chosen else ""
    return {"categories": replies.categories(site), "templates": templates, "chosen": chosen,
            "message": message}


def _next_steps(case: Case) -> set[str]:
    return set(loop_cases.TRANSITIONS.get(case.status, ()))


@bp.get("/cases/<int:case_id>")
@requires("cases.view")
def case_view(case_id: int) -> tuple[str, int]:
    """Case #id: the answer in full, its SLA stages, timeline and the actions on it."""
    case = get_scoped_or_404(Case, case_id)
    return _page(case)


@bp.get("/cases/<int:case_id>/voice")
@requires("voice.play")
def case_voice(case_id: int) -> WerkzeugResponse:
    """The case's voice note for the page's player: ranges (seeking), nosniff, an inline
    ASCII file name (app/storage.send_stored); 404 when the case has none."""
    case = get_scoped_or_404(Case, case_id)
    note = db.session.scalar(select(VoiceNote).where(VoiceNote.response_id == case.response_id))
    if note is None:
        abort(404)
    ext = note.storage_key.rsplit(".", 1)[-1]
    return storage.send_stored(note.storage_key, note.content_type,
                               f"voice-note-case-{case.id}.{ext}")


def _act(case_id: int, action: str, details: dict[str, Any],
         change: Callable[[str, str], Case], done: str) -> WerkzeugResponse | tuple[str, int]:
    """Run one action on a case the person may act on (the view's @requires action): audit
    it in the change's own transaction, redirect on success; a stale form or a refused change
    shows the page as it is now (409 / 400) and changes nothing."""
    case = get_scoped_or_404(Case, case_id)
    if not _on_my_team(case, current_user._get_current_object()):  # type: ignore[attr-defined]
        abort(403)  # an agent works the cases of their teams (and those assigned to them)
    site_id = case.site_id
    actor = current_user.email  # type: ignore[attr-defined]
    audit.record(action, object_type="case", object_id=case_id, site_id=site_id,
                 details=details)
    try:
        change(actor, request.form.get("version", ""))
    except loop_cases.StaleCase:
        db.session.expire_all()
        fresh = get_scoped_or_404(Case, case_id)
        return _page(fresh, 409, stale=True)
    except loop_cases.TransitionError as exc:
        db.session.rollback()
        return _page(get_scoped_or_404(Case, case_id), 400, error=str(exc))
    flash(done, "ok")
    return redirect(url_for("admin.case_view", case_id=case_id) + "#timeline")


def _status_route(name: str, to: str, action: str, done: str) -> None:
    def view(case_id: int) -> WerkzeugResponse | tuple[str, int]:
        note = request.form.get("note") or None
        return _act(case_id, f"case.{name}", {"to": to},
                    lambda actor, v: loop_cases.transition(case_id, to, actor, note,
                                                           expected_version=v), done)

    view.__name__ = f"case_{name}"
    view.__doc__ = f"POST: {name} the case (a lifecycle step through loop.cases.transition)."
    bp.post(f"/cases/<int:case_id>/{name}", endpoint=f"case_{name}")(requires(action)(view))


_status_route("acknowledge", "acknowledged", "cases.acknowledge", "Case acknowledged.")
_status_route("start", "in_progress", "cases.acknowledge", "Work on the case started.")
_status_route("reopen", "reopened", "cases.reopen", "Case reopened.")


@bp.post("/cases/<int:case_id>/resolve")
@requires("cases.resolve")
def case_resolve(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: resolve with what was done, an optional root cause (free text, category, up to
    five whys) and customer message."""
    form = request.form
    message = form.get("customer_message") or None
    whys = [w for w in form.getlist("why") if w.strip()]
    category = form.get("root_cause_category") or None
    return _act(case_id, "case.resolve", {"customer_message": bool(message),
                                          "root_cause": form.get("root_cause") or None,
                                          "category": category, "whys": len(whys)},
                lambda actor, v: loop_cases.transition(
                    case_id, "resolved", actor, resolution=form.get("resolution"),
                    root_cause=form.get("root_cause") or None, customer_message=message,
                    expected_version=v, whys=whys or None, root_cause_category=category),
                "Case resolved." + (" The customer is being emailed." if message else ""))


@bp.post("/cases/<int:case_id>/note")
@requires("cases.note")
def case_note(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: an internal note on the timeline."""
    note = request.form.get("note", "")
    return _act(case_id, "case.note", {"length": len(note)},
                lambda actor, v: loop_cases.add_note(case_id, actor, note,
                                                     expected_version=v), "Note added.")


@bp.post("/cases/<int:case_id>/tags")
@requires("cases.tag")
def case_tags(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: add tags (comma-separated `add`) and/or remove tags (`remove`, repeated)."""
    add = [t for t in request.form.get("add", "").split(",") if t.strip()]
    remove = request.form.getlist("remove")
    return _act(case_id, "case.tags", {"add": add, "remove": remove},
                lambda actor, v: loop_cases.change_tags(case_id, actor, add=add, remove=remove,
                                                        expected_version=v), "Tags changed.")


@bp.post("/cases/<int:case_id>/priority")
@requires("cases.priority")
def case_priority(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: change the priority."""
    priority = request.form.get("priority", "")
    return _act(case_id, "case.priority", {"priority": priority},
                lambda actor, v: loop_cases.set_priority(case_id, actor, priority,
                                                         expected_version=v),
                "Priority changed.")


@bp.post("/cases/<int:case_id>/assign")
@requires("cases.assign")
def case_assign(case_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: assign to a person of the site (`assignee`, "" for nobody) and/or a team
    (`team`, "" for none); a field left out of the form is kept."""
    form = request.form
    kw: dict[str, Any] = {}
    if "assignee" in form:
        raw = form["assignee"]
        kw["assignee_id"] = int(raw) if raw.isdigit() else None
        if raw and not raw.isdigit():
            kw["assignee_id"] = -1  # refused by assign(): no such person
    if "team" in form:
        kw["team"] = form["team"] or None
    return _act(case_id, "case.assign", {k: v for k, v in kw.items()},
                lambda actor, v: loop_cases.assign(case_id, actor, expected_version=v, **kw),
                "Assignment changed.")
