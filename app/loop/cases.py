"""The case lifecycle: new → acknowledged → in progress → resolved → verified (or reopened).

Every change is a CaseEvent (actor, time, note) and fires its effects in the same transaction:
`case.updated` (and `case.resolved`) webhooks, the "here is what we did" email when the agent
writes to the customer, and the verification email with signed one-click links.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from .. import signing
from ..extensions import db
from ..models import Case, CaseEvent, Moment, Response, Site, StaffUser, Team, utcnow
from ..responses import FAMILY
from . import alerts, notify, replies
from .rules import PRIORITIES

TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"acknowledged", "in_progress", "resolved"}),
    "acknowledged": frozenset({"in_progress", "resolved"}),
    "in_progress": frozenset({"resolved"}),
    "resolved": frozenset({"verified", "reopened"}),
    "verified": frozenset({"reopened"}),
    "reopened": frozenset({"acknowledged", "in_progress", "resolved"}),
}
OPEN = ("new", "acknowledged", "in_progress", "reopened")
MAX_TEXT = 5000


class TransitionError(ValueError):
    """A change the lifecycle does not allow (the message says why)."""


class StaleCase(TransitionError):
    """The case changed after the form was shown: nothing was changed."""


@dataclass(frozen=True)
class Loaded:
    """A case locked for update with what its effects need."""

    case: Case
    response: Response
    moment: Moment
    site: Site


def load(case_id: int) -> Loaded | None:
    """Lock a case (PostgreSQL: FOR UPDATE) and fetch its response, moment and site."""
    row = db.session.execute(
        select(Case, Response, Moment, Site)
        .join(Response, Response.id == Case.response_id)
        .join(Moment, Moment.id == Response.moment_id)
        .join(Site, Site.id == Case.site_id)
        .where(Case.id == case_id)
        .with_for_update(of=Case)
    ).first()
    return Loaded(*row) if row else None


def version(case: Case) -> str:
    """The case's version as forms carry it: its updated_at (every write moves it)."""
    return case.updated_at.isoformat()


def _claim(case_id: int, expected: str | None) -> None:
    """With a version from a form: take the case's write lock only if it still has that
    version (one conditional UPDATE: PostgreSQL re-checks it after a concurrent commit, SQLite
    serialises writers on it), else roll back and raise StaleCase."""
    if expected is None:
        return
    try:
        when = datetime.fromisoformat(expected)
    except ValueError:
        when = None
    claimed = False
    if when is not None and when.tzinfo is not None:
        result = db.session.execute(
            update(Case).where(Case.id == case_id, Case.updated_at == when)
            .values(updated_at=Case.updated_at)
            .execution_options(synchronize_session=False))
        claimed = result.rowcount == 1  # type: ignore[attr-defined]  # an UPDATE's CursorResult
    if not claimed:
        db.session.rollback()
        if db.session.get(Case, case_id) is None:
            raise LookupError(f"no case {case_id}")
        raise StaleCase("this case changed meanwhile")


def _touch(case: Case, now: datetime) -> None:
    """A new version, strictly later than the last one even when the clock stands still."""
    case.updated_at = max(now, case.updated_at + timedelta(microseconds=1))


def _text(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    value = value.replace("\x00", "").strip()
    if len(value) > MAX_TEXT:
        raise TransitionError(f"{name} is longer than {MAX_TEXT} characters")
    return value or None


def verify_links(case: Case) -> dict[str, str]:
    """Signed one-click links for the customer's verdict on this resolution."""
    out = {}
    for answer in ("yes", "no"):
        token = signing.dumps(signing.app_keys(), signing.VERIFY_LINK,
                              {"c": case.id, "n": case.cycle, "a": answer})
        out[answer] = notify.external_url("embed.verify", token=token)
    return out


def transition(case_id: int, to: str, actor: str, note: str | None = None, *,
               resolution: str | None = None, root_cause: str | None = None,
               customer_message: str | None = None, expected_version: str | None = None,
               whys: list[str] | tuple[str, ...] | None = None,
               root_cause_category: str | None = None) -> Case:
    """Move a case to `to`, recording the event and its effects; its commit hands them over.
    With `expected_version` (from a form) a case changed since raises StaleCase. Resolving
    may record "five whys" (up to 5 lines of up to 500 characters) and a root-cause category
    from the site's list (app/loop/replies.py)."""
    _claim(case_id, expected_version)
    loaded = load(case_id)
    if loaded is None:
        db.session.rollback()
        raise LookupError(f"no case {case_id}")
    case, response, moment, site = loaded.case, loaded.response, loaded.moment, loaded.site
    if to not in TRANSITIONS.get(case.status, ()):
        db.session.rollback()
        raise TransitionError(f"a {case.status} case cannot become {to}")
    note, resolution = _text(note, "note"), _text(resolution, "resolution")
    root_cause, customer_message = _text(root_cause, "root cause"), _text(customer_message,
                                                                          "customer message")
    if to == "resolved" and not resolution:
        db.session.rollback()
        raise TransitionError("say what was done (resolution) to resolve a case")
    if to != "resolved" and (whys or root_cause_category):
        db.session.rollback()
        raise TransitionError("whys and a root-cause category belong to a resolution")
    try:
        whys = replies.check_whys(whys)
        root_cause_category = replies.check_category(site, root_cause_category)
    except replies.ReplyError as exc:
        db.session.rollback()
        raise TransitionError(str(exc)) from None
    now = utcnow()
    before = case.status
    case.status = to
    _touch(case, now)
    if to in ("acknowledged", "in_progress", "resolved") and case.acknowledged_at is None:
        case.acknowledged_at = now
    if to in ("in_progress", "resolved") and case.followed_up_at is None:
        case.followed_up_at = now
    if to == "resolved":
        case.cycle += 1
        case.closed_at = now
        case.resolution, case.root_cause = resolution, root_cause
        case.customer_message = customer_message
        case.whys, case.root_cause_category = whys, root_cause_category
    elif to == "verified":
        case.verified_at = now
    elif to == "reopened":
        case.closed_at = case.verified_at = None
    event = CaseEvent(case_id=case.id, kind=to, actor=actor[:200], note=note, created_at=now,
                      data={"from": before, **({"root_cause": root_cause} if root_cause else {}),
                            **({"customer_message": True} if customer_message else {}),
                            **({"category": root_cause_category} if root_cause_category else {}),
                            **({"whys": whys} if whys else {})})
    db.session.add(event)
    db.session.flush()
    _effects(case, response, moment, site, event)
    db.session.commit()  # hands the effects over
    return case


def _change(case_id: int, kind: str, actor: str, expected_version: str | None,
            apply: Any) -> Case:
    """A change that is not a lifecycle step (note, tags, priority, assignment): lock the case
    (checking the form's version), let `apply(loaded)` change it and return (note, data) or
    raise TransitionError, record the event, fire `case.updated` as transitions do, commit."""
    _claim(case_id, expected_version)
    loaded = load(case_id)
    if loaded is None:
        db.session.rollback()
        raise LookupError(f"no case {case_id}")
    try:
        note, data = apply(loaded)
    except TransitionError:
        db.session.rollback()
        raise
    now = utcnow()
    case = loaded.case
    _touch(case, now)
    event = CaseEvent(case_id=case.id, kind=kind, actor=actor[:200], note=note, created_at=now,
                      data=data)
    db.session.add(event)
    db.session.flush()
    notify.webhook(loaded.site, "case.updated", f"case-event:{event.id}",
                   notify.case_data(case, loaded.response, loaded.moment.key), case.team,
                   case_id=case.id)
    db.session.commit()  # hands the effects over
    return case


def add_note(case_id: int, actor: str, note: str, *,
             expected_version: str | None = None) -> Case:
    """An internal note on the timeline (never shown to the customer)."""
    def apply(_loaded: Loaded) -> tuple[str | None, dict[str, Any] | None]:
        text = _text(note, "note")
        if not text:
            raise TransitionError("write a note first")
        return text, None

    return _change(case_id, "note", actor, expected_version, apply)


MAX_TAGS, MAX_TAG = 20, 64


def change_tags(case_id: int, actor: str, *, add: list[str] | tuple[str, ...] = (),
                remove: list[str] | tuple[str, ...] = (),
                expected_version: str | None = None) -> Case:
    """Add and/or remove tags (trimmed; at most 20 of at most 64 characters)."""
    def apply(loaded: Loaded) -> tuple[str | None, dict[str, Any] | None]:
        adding = [t for t in dict.fromkeys(_text(x, "tag") or "" for x in add) if t]
        if any(len(t) > MAX_TAG for t in adding):
            raise TransitionError(f"a tag has at most {MAX_TAG} characters")
        before = list(loaded.case.tags or [])
        after = [t for t in before if t not in set(remove)]
        after += [t for t in adding if t not in after]
        if len(after) > MAX_TAGS:
            raise TransitionError(f"a case has at most {MAX_TAGS} tags")
        if after == before:
            raise TransitionError("no tag changed")
        loaded.case.tags = after
        return None, {"added": [t for t in after if t not in before],
                      "removed": [t for t in before if t not in after]}

    return _change(case_id, "tags", actor, expected_version, apply)


def set_priority(case_id: int, actor: str, priority: str, *,
                 expected_version: str | None = None) -> Case:
    """Change the case's priority (critical, high, routine, low)."""
    def apply(loaded: Loaded) -> tuple[str | None, dict[str, Any] | None]:
        if priority not in PRIORITIES:
            raise TransitionError(f"priority must be one of {', '.join(PRIORITIES)}")
        before = loaded.case.priority
        if before == priority:
            raise TransitionError(f"the priority is {priority} already")
        loaded.case.priority = priority
        return None, {"from": before, "to": priority}

    return _change(case_id, "priority", actor, expected_version, apply)


KEEP: Any = object()  # assign(): leave this part of the assignment as it is


def assign(case_id: int, actor: str, *, assignee_id: int | None | Any = KEEP,
           team: str | None | Any = KEEP, expected_version: str | None = None) -> Case:
    """Assign the case to a person (a member of its site who may work cases; None: nobody)
    and/or a team of its site (None: no team)."""
    from ..admin.permissions import can  # who may work a site's cases: the one table

    def apply(loaded: Loaded) -> tuple[str | None, dict[str, Any] | None]:
        case, data = loaded.case, {}
        if assignee_id is not KEEP and assignee_id != case.assignee_id:
            person = db.session.get(StaffUser, assignee_id) if assignee_id is not None else None
            if assignee_id is not None and (person is None or not can(person, case.site_id,
                                                                      "cases.resolve")):
                raise TransitionError("assign the case to a member of its site who works cases")
            data["assignee"] = person.email if person else None
            case.assignee_id = assignee_id
        if team is not KEEP and team != case.team:
            if team is not None and db.session.scalar(select(Team.id).where(
                    Team.site_id == case.site_id, Team.key == team)) is None:
                raise TransitionError(f"the site has no team {team!r}")
            data["team"], data["from_team"] = team, case.team
            case.team = team
        if not data:
            raise TransitionError("the assignment did not change")
        return None, data

    return _change(case_id, "assigned", actor, expected_version, apply)


def worked_by_staff(case_id: int) -> bool:
    """Whether a staff member acknowledged the case or started work on it."""
    return db.session.scalar(select(CaseEvent.id).where(
        CaseEvent.case_id == case_id, CaseEvent.kind.in_(("acknowledged", "in_progress")),
        CaseEvent.actor.not_in(("system", "customer"))).limit(1)) is not None


def _asks_verification(case: Case, response: Response) -> bool:
    """"Is it resolved?" goes to every unhappy or neutral customer, but to a promoter only when
    staff worked the case: closing a happy customer's untouched case is not a question."""
    return FAMILY[response.segment] != "positive" or worked_by_staff(case.id)


def _effects(case: Case, response: Response, moment: Moment, site: Site,
             event: CaseEvent) -> notify.Dispatch:
    data = notify.case_data(case, response, moment.key)
    out = notify.webhook(site, "case.updated", f"case-event:{event.id}", data, case.team,
                         case_id=case.id)
    if case.status == "reopened" and event.actor == "customer":
        # "Not resolved", says the customer: the team hears it (same fallback as alerts).
        out += alerts.reopened_alert(case, response, moment, site, event.note)
    if case.status != "resolved":
        return out
    out += notify.webhook(site, "case.resolved", f"case:{case.id}:resolved:{case.cycle}", data,
                          case.team, case_id=case.id)
    if response.customer_email and (case.customer_message or _asks_verification(case, response)):
        kind = "resolution" if case.customer_message else "verification"
        out += notify.email(site, kind, f"case:{case.id}:{case.cycle}",
                            [response.customer_email], response.locale,
                            {"case": case, "response": response, "moment": moment,
                             "links": verify_links(case)}, case_id=case.id)
    return out


def _verdict_link(token: str) -> tuple[int, int, str]:
    """Check a verification link's signature and shape: (case id, cycle, "yes" | "no");
    raises signing.TokenInvalid (or TokenExpired) otherwise."""
    data = signing.loads(signing.app_keys(), signing.VERIFY_LINK, token,
                         current_app.config["VERIFY_LINK_MAX_AGE"])
    if not isinstance(data, dict) or data.get("a") not in ("yes", "no") or not all(
        isinstance(data.get(k), int) and not isinstance(data.get(k), bool) for k in ("c", "n")
    ):
        raise signing.TokenInvalid("malformed verification link")
    return data["c"], data["n"], data["a"]


def _verdict_state(case: Case | None, cycle: int) -> str:
    if case is None or case.cycle != cycle:
        return "stale"
    return "pending" if case.status == "resolved" else "already"


def peek_verdict(token: str) -> tuple[str, str, Case | None]:
    """What a verification link WOULD do, for the GET page: (state, answer, case) with state
    "pending" (awaiting this customer's answer), "already" or "stale". Reads only: a mail
    scanner opening the link changes nothing (DESIGN rule 13). Raises like customer_verdict."""
    case_id, cycle, answer = _verdict_link(token)
    case = db.session.get(Case, case_id)
    return _verdict_state(case, cycle), answer, case


def customer_verdict(token: str) -> tuple[str, Case | None]:
    """Apply a verification link (its POST): "verified", "reopened", "already" (this or the
    other answer is recorded, e.g. a second POST) or "stale" (a newer resolution exists);
    raises signing.TokenInvalid for forged or expired links."""
    case_id, cycle, answer = _verdict_link(token)
    loaded = load(case_id)
    state = _verdict_state(loaded.case if loaded else None, cycle)
    if state != "pending":
        db.session.rollback()
        return state, loaded.case if loaded else None
    # Still holding the row lock: transition() re-reads the same locked row, so a concurrent
    # "yes" and "no" cannot both apply (verified → reopened is otherwise allowed).
    to = "verified" if answer == "yes" else "reopened"
    note = None if to == "verified" else "The customer says it is not resolved."
    return to, transition(case_id, to, "customer", note)
