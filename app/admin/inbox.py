"""The inbox: the admin home page. One row per case with its answer, filters in the query
string (bookmarkable), saved views with counts in the navigation, keyset pagination, bulk
actions on the selected rows and a streamed CSV export of the current filter.

Every read goes through `scoped(...)`; every bulk action checks the person's role on each
case's site, and ids of cases the person cannot see are ignored (never acted on).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import (
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    func,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.orm import aliased
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as BaseResponse

from .. import audit
from ..extensions import db
from ..loop import cases as case_ops
from ..loop.rules import PRIORITIES
from ..models import (
    SORT_DUE,
    Case,
    Moment,
    ResponseSku,
    Site,
    SiteMembership,
    StaffUser,
    UTCDateTime,
    utcnow,
)
from ..models import Response as Answer
from ..prompts import CHANNELS
from . import bp
from .cases import _on_my_team as on_my_team
from .permissions import ACTIONS, requires, scoped, sites_for

STATUSES = tuple(case_ops.TRANSITIONS)
SEGMENTS = {  # a family name matches its members, as in routing rules
    "negative": ("negative", "detractor"), "neutral": ("neutral", "passive"),
    "positive": ("positive", "promoter"), "detractor": ("detractor",),
    "passive": ("passive",), "promoter": ("promoter",),
}
SORTS = ("due", "newest")
MORE_FILTERS = ("segment", "moment", "channel", "sku", "team", "assignee", "comment", "voice",
                "verified", "from", "to")  # folded under "More filters" unless one is set
DUE = ("overdue", "soon")
YES_NO = ("yes", "no")
KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
SKU = re.compile(r"^[^\x00-\x1f\x7f*]{1,100}\*?$")
MAX_QUERY = 200
EXCERPT = 140
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NAV_COUNT_CAP = 999  # the navigation says "999+" beyond


def db_id(raw: str) -> int | None:
    """An id from a form or query string: ASCII digits that fit an INTEGER column, else None
    (so "²", "-1" or 10**20 are refused, not a 500)."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > 2**31 - 1:
        return None
    return int(raw)


class FilterError(ValueError):
    """A filter value the inbox does not understand (the message says which and why)."""


@dataclass
class Filters:
    """The inbox's filters, parsed and validated from the query string."""

    sites: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)  # "open" = every open status
    segments: list[str] = field(default_factory=list)
    moments: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    skus: list[str] = field(default_factory=list)
    teams: list[str] = field(default_factory=list)
    priorities: list[str] = field(default_factory=list)
    assignee: str | None = None  # "mine", "none" or a staff id
    date_from: date | None = None
    date_to: date | None = None
    has_comment: str | None = None
    has_voice: str | None = None
    verified: str | None = None
    due: str | None = None
    q: str | None = None
    sort: str = "due"
    after: tuple[datetime, int] | None = None
    args: MultiDict[str, str] = field(default_factory=MultiDict)  # as given, without `after`

    @property
    def active(self) -> bool:
        """Whether any filter (not the sort) narrows the list."""
        return any(k not in ("sort", "after") for k in self.args)


def _one_of(args: MultiDict[str, str], name: str, allowed: Any, label: str) -> list[str]:
    values = [v for v in args.getlist(name) if v != ""]
    for v in values:
        if v not in allowed:
            raise FilterError(f"{label} “{v}” is not one of: {', '.join(allowed)}.")
    return values


def _choice(args: MultiDict[str, str], name: str, allowed: tuple[str, ...], label: str
            ) -> str | None:
    values = _one_of(args, name, allowed, label)
    if len(values) > 1:
        raise FilterError(f"Give {label} once.")
    return values[0] if values else None


def _date(args: MultiDict[str, str], name: str, label: str) -> date | None:
    value = args.get(name, "")
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FilterError(f"{label} “{value}” is not a date like 2026-11-29.") from None


def _cursor(value: str) -> tuple[datetime, int]:
    try:
        stamp, _, ident = value.rpartition(",")
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None:
            raise ValueError
        last_id = db_id(ident)
        if last_id is None:
            raise ValueError
        return when.astimezone(UTC), last_id
    except ValueError:
        raise FilterError("This page link is damaged: start again from the first page."
                          ) from None


def parse(args: MultiDict[str, str], member_sites: list[int]) -> Filters:
    """Validate the query string into Filters; FilterError (a 400) for anything unknown."""
    f = Filters(args=MultiDict([(k, v) for k, v in args.items(multi=True)
                                if k != "after" and v != ""]))
    for raw in args.getlist("site"):
        if raw == "":
            continue
        site_id = db_id(raw)
        if site_id is None or site_id not in member_sites:
            raise FilterError(f"Site “{raw}” is not one of your sites.")
        f.sites.append(site_id)
    f.statuses = _one_of(args, "status", ("open", *STATUSES), "Status")
    f.segments = _one_of(args, "segment", tuple(SEGMENTS), "Segment")
    f.channels = _one_of(args, "channel", CHANNELS, "Channel")
    f.priorities = _one_of(args, "priority", PRIORITIES, "Priority")
    for name, out in (("moment", f.moments), ("team", f.teams)):
        for v in args.getlist(name):
            if v and not KEY.match(v):
                raise FilterError(f"{name.capitalize()} “{v}” is not a valid key.")
            if v:
                out.append(v)
    for v in args.getlist("sku"):
        if v and not SKU.match(v):
            raise FilterError(f"SKU “{v}”: give an SKU, or a prefix ending in * (TV-*).")
        if v:
            f.skus.append(v)
    assignees = [v for v in args.getlist("assignee") if v != ""]
    if len(assignees) > 1:
        raise FilterError("Give Assignee once.")
    if assignees and assignees[0] not in ("mine", "none") and not (
            db_id(assignees[0]) is not None):
        raise FilterError(f"Assignee “{assignees[0]}” is not mine, none or a person.")
    f.assignee = assignees[0] if assignees else None
    f.date_from, f.date_to = _date(args, "from", "From"), _date(args, "to", "To")
    if f.date_from and f.date_to and f.date_from > f.date_to:
        raise FilterError("The date range ends before it starts.")
    f.has_comment = _choice(args, "comment", YES_NO, "Has comment")
    f.has_voice = _choice(args, "voice", YES_NO, "Has voice note")
    f.verified = _choice(args, "verified", YES_NO, "Verified customer")
    f.due = _choice(args, "due", DUE, "Due")
    q = args.get("q", "").strip()
    if len(q) > MAX_QUERY:
        raise FilterError(f"Search for at most {MAX_QUERY} characters.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in q):
        raise FilterError("Search for text on one line, without control characters.")
    f.q = q or None
    f.sort = _choice(args, "sort", SORTS, "Sort") or "due"
    if args.get("after"):
        f.after = _cursor(args["after"])
    return f


def _like(text: str) -> str:
    """A LIKE pattern matching `text` literally (backslash escapes)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _yes_no(value: str | None, cond: ColumnElement[bool]) -> list[ColumnElement[bool]]:
    if value is None:
        return []
    return [cond if value == "yes" else ~cond]


def conditions(f: Filters, now: datetime) -> list[ColumnElement[bool]]:
    """The WHERE conditions of the filters (the site scope is added by `scoped`)."""
    out: list[ColumnElement[bool]] = []
    if f.sites:
        out.append(Case.site_id.in_(f.sites))
    if f.statuses:
        statuses = {s for v in f.statuses for s in (case_ops.OPEN if v == "open" else (v,))}
        out.append(Case.status.in_(sorted(statuses)))
    if f.segments:
        out.append(Answer.segment.in_(sorted({s for v in f.segments for s in SEGMENTS[v]})))
    if f.moments:
        out.append(Moment.key.in_(f.moments))
    if f.channels:
        out.append(Answer.channel.in_(f.channels))
    if f.skus:
        sku_match = [ResponseSku.sku.like(_like(s[:-1]) + "%", escape="\\") if s.endswith("*")
                     else ResponseSku.sku == s for s in f.skus]
        out.append(exists().where(ResponseSku.response_id == Answer.id,
                                  ResponseSku.site_id == Answer.site_id, or_(*sku_match)))
    if f.teams:
        out.append(Case.team.in_(f.teams))
    if f.priorities:
        out.append(Case.priority.in_(f.priorities))
    if f.assignee == "mine":
        out.append(Case.assignee_id == current_user.id)
    elif f.assignee == "none":
        out.append(Case.assignee_id.is_(None))
    elif f.assignee is not None:
        out.append(Case.assignee_id == int(f.assignee))
    if f.date_from:
        out.append(Case.created_at >= datetime.combine(f.date_from, datetime.min.time(), UTC))
    if f.date_to:
        out.append(Case.created_at < datetime.combine(f.date_to + timedelta(days=1),
                                                      datetime.min.time(), UTC))
    out += _yes_no(f.has_comment, and_(Answer.comment.is_not(None), Answer.comment != ""))
    out += _yes_no(f.has_voice, Answer.has_voice.is_(True))
    out += _yes_no(f.verified, Answer.verified.is_(True))
    # SORT_DUE is NEXT_DUE with "none" far in the future: the same rows, and it is indexed.
    if f.due == "overdue":
        out.append(SORT_DUE < now)
    elif f.due == "soon":
        out.append(and_(SORT_DUE >= now, SORT_DUE < now + timedelta(hours=1)))
    if f.q:
        # What the customer said, typed or spoken (the transcript's copy on the answer: one
        # table, so PostgreSQL can walk the page's index for a common word or OR the two
        # trigram indexes for a rare one; migration d4a7f2c9e8b1).
        pattern = "%" + _like(f.q) + "%"
        out.append(or_(Answer.comment.ilike(pattern, escape="\\"),
                       Answer.transcript.ilike(pattern, escape="\\")))
    return out


def _order(f: Filters) -> tuple[Any, list[Any]]:
    """(the sort key column, ORDER BY) for the filter's sort; ids break ties."""
    if f.sort == "newest":
        return Case.created_at, [Case.created_at.desc(), Case.id.desc()]
    return SORT_DUE, [SORT_DUE.asc(), Case.id.asc()]


def query(f: Filters, now: datetime, action: str = "cases.view") -> Select[Any]:
    """One SELECT of the filtered, scoped cases with their answer, moment key and site name,
    in the filter's order (no page limit and no cursor)."""
    key, order = _order(f)
    assignee = aliased(StaffUser)
    stmt = (select(Case, Answer, Moment.key, Site.name, assignee.email.label("assignee"),
                   key.label("sort_key"))
            .join(Answer, Answer.id == Case.response_id)
            .join(Moment, Moment.id == Answer.moment_id)
            .join(Site, Site.id == Case.site_id)
            .outerjoin(assignee, assignee.id == Case.assignee_id)
            .where(*conditions(f, now))
            .order_by(*order))
    return scoped(stmt, Case.site_id, action)


def page(f: Filters, now: datetime, size: int) -> tuple[list[Any], str | None]:
    """One page of rows after the filter's cursor (keyset: no OFFSET) and the cursor of the
    next page, or None on the last one. One query."""
    stmt = query(f, now)
    if f.after is not None:
        key, _ = _order(f)
        last, last_id = f.after
        # A row comparison, which PostgreSQL's planner turns into where an index scan on
        # (key, id) starts (an OR of the two would scan from the first row on every page).
        after = tuple_(key, Case.id), tuple_(literal(last, UTCDateTime), literal(last_id))
        stmt = stmt.where(after[0] < after[1] if f.sort == "newest" else after[0] > after[1])
    rows = list(db.session.execute(stmt.limit(size + 1)).all())
    more = len(rows) > size
    rows = rows[:size]
    cursor = None
    if more:
        last_row = rows[-1]
        cursor = f"{last_row.sort_key.astimezone(UTC).isoformat()},{last_row[0].id}"
    return rows, cursor


# -- the SLA state of a row ---------------------------------------------------------------------


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{max(minutes, 1)} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} d"


def sla_state(c: Case, now: datetime) -> tuple[str, str]:
    """(css class, text) of the case's next stage: "due in 40 min", "overdue by 2 h", "met"."""
    if c.routed_at is None and c.ack_due_at is None:
        return "pending", "routing…"
    for done, due, stage in ((c.acknowledged_at, c.ack_due_at, "ack"),
                             (c.followed_up_at, c.followup_due_at, "follow-up"),
                             (c.closed_at, c.close_due_at, "close")):
        if done is None and due is not None:
            if due < now:
                return "overdue", f"{stage} overdue by {_span(now - due)}"
            return ("soon" if due - now <= timedelta(hours=1) else "due",
                    f"{stage} due in {_span(due - now)}")
    if c.closed_at is not None and c.close_due_at is not None and c.closed_at > c.close_due_at:
        return "missed", "closed late"
    return "met", "met"


def excerpt(text: str | None, length: int = EXCERPT) -> str:
    """The first `length` characters of a comment, on one line."""
    text = " ".join((text or "").split())
    return text if len(text) <= length else text[: length - 1].rstrip() + "…"


# -- saved views in the navigation ----------------------------------------------------------------


SAVED_VIEWS = (  # label, filters
    ("My open", {"status": "open", "assignee": "mine"}),
    ("Overdue", {"status": "open", "due": "overdue"}),
    ("Critical", {"status": "open", "priority": "critical"}),
    ("Unassigned", {"status": "open", "assignee": "none"}),
)


def saved_view_counts(now: datetime) -> list[tuple[str, str, int]]:
    """(label, inbox URL, count) of each saved view, from one statement. A count stops at
    NAV_COUNT_CAP + 1: every admin page shows them, and counting a backlog of 100,000 open
    cases exactly took ~0.5 s at a million answers (bench/RESULTS.md); capped, each count is
    an index range that ends early."""
    counts = []
    for _label, view in SAVED_VIEWS:
        f = parse(MultiDict(view), [])
        # The saved views filter on the case alone: no join to the answer.
        rows = scoped(select(Case.id).where(*conditions(f, now)), Case.site_id, "cases.view")
        counts.append(select(func.count()).select_from(rows.limit(NAV_COUNT_CAP + 1).subquery())
                      .scalar_subquery())
    found = db.session.execute(select(*counts)).one()
    return [(label, url_for("admin.responses") + "?" + urlencode(view), int(n))
            for (label, view), n in zip(SAVED_VIEWS, found, strict=True)]


@bp.app_context_processor
def _navigation() -> dict[str, Any]:
    """`inbox_nav()` for admin/base.html: computed only when a signed-in page calls it."""

    def inbox_nav() -> list[tuple[str, str, str]]:
        if not current_user.is_authenticated:
            return []
        return [(label, url, f"{n:,}" if n <= NAV_COUNT_CAP else f"{NAV_COUNT_CAP:,}+")
                for label, url, n in saved_view_counts(utcnow())]

    return {"inbox_nav": inbox_nav}


# -- views ----------------------------------------------------------------------------------


def _member_sites() -> list[tuple[int, str]]:
    return [(r.id, r.name) for r in db.session.execute(
        scoped(select(Site.id, Site.name).order_by(Site.name, Site.id), Site.id, "cases.view"))]


def _workers() -> list[tuple[int, str]]:
    """(id, email) of the active people who work cases on the person's sites: the assignee
    filter's and the bulk assign's choices. One query."""
    return [(r.id, r.email) for r in db.session.execute(scoped(
        select(StaffUser.id, StaffUser.email).distinct()
        .join(SiteMembership, SiteMembership.staff_id == StaffUser.id)
        .where(StaffUser.active.is_(True),
               SiteMembership.role.in_(sorted(ACTIONS["cases.resolve"])))
        .order_by(StaffUser.email, StaffUser.id), SiteMembership.site_id, "cases.view"))]


def _filter_error(message: str) -> tuple[str, int]:
    return render_template("admin/inbox_error.html", message=message), 400


@bp.get("/", endpoint="responses")
@requires("cases.view")
def inbox() -> str | tuple[str, int]:
    """The inbox: the person's cases, filtered by the query string, one keyset page."""
    now = utcnow()
    sites = _member_sites()
    try:
        f = parse(request.args, [s for s, _n in sites])
    except FilterError as exc:
        return _filter_error(str(exc))
    size = int(current_app.config.get("INBOX_PAGE_SIZE", 50))
    rows, cursor = page(f, now, size)
    base = list(f.args.items(multi=True))
    next_url = (url_for("admin.responses") + "?" + urlencode([*base, ("after", cursor)])
                if cursor else None)
    export_url = url_for("admin.export_csv") + ("?" + urlencode(base) if base else "")
    can_export = bool(sites_for(None, "export.csv"))
    return render_template(
        "admin/inbox.html", rows=[(r, sla_state(r[0], now)) for r in rows], f=f, sites=sites,
        next_url=next_url, export_url=export_url if can_export else None,
        first_url=(url_for("admin.responses") + "?" + urlencode(base)) if f.after else None,
        here=request.full_path, excerpt=excerpt, no_sites=not sites,
        more_active=sum(1 for k in MORE_FILTERS if f.args.get(k)), workers=_workers(),
        statuses=("open", *STATUSES), segments=tuple(SEGMENTS), channels=CHANNELS,
        priorities=PRIORITIES)


def _back(target: str | None) -> str:
    """Back to the inbox page the form was on (local paths only)."""
    home = url_for("admin.responses")
    if not target or not target.startswith(home) or urlsplit(target).netloc:
        return home
    return target


BULK = {"acknowledge": "cases.acknowledge", "tag": "cases.tag", "assign": "cases.assign"}


def _bulk_one(action: str, case_id: int, site_id: int, actor: str, value: Any) -> None:
    """One case of a bulk action, through the lifecycle functions of app/loop/cases.py, with
    its audit row in the same transaction (a refused change rolls both back)."""
    if action == "acknowledge":
        audit.record("case.acknowledge", object_type="case", object_id=case_id,
                     site_id=site_id, details={"bulk": True})
        case_ops.transition(case_id, "acknowledged", actor)
    elif action == "tag":
        audit.record("case.tags", object_type="case", object_id=case_id, site_id=site_id,
                     details={"add": [value], "remove": [], "bulk": True})
        case_ops.change_tags(case_id, actor, add=[value])
    else:
        audit.record("case.assign", object_type="case", object_id=case_id, site_id=site_id,
                     details={"assignee_id": value, "bulk": True})
        case_ops.assign(case_id, actor, assignee_id=value)


@bp.post("/inbox/bulk")
@requires("cases.view")
def inbox_bulk() -> BaseResponse | tuple[str, int]:
    """Bulk acknowledge, tag or assign the selected cases. Each case is checked against the
    person's role on its site; ids of cases they cannot see are ignored, as if they did not
    exist; a case the change does not apply to is skipped, and the summary says why."""
    action = request.form.get("action", "")
    if action not in BULK:
        return _filter_error("Choose what to do with the selected cases.")
    ids = sorted({i for v in request.form.getlist("ids") if (i := db_id(v)) is not None})
    back = _back(request.form.get("next"))
    if not ids:
        flash("Select at least one case first.")
        return redirect(back)
    value: Any = None
    if action == "tag":
        value = " ".join(request.form.get("tag", "").split())
        if not value or len(value) > case_ops.MAX_TAG:
            return _filter_error(f"A tag is 1 to {case_ops.MAX_TAG} characters.")
    elif action == "assign":
        raw = request.form.get("assignee", "")
        if raw == "none":
            value = None
        elif db_id(raw) is not None:
            value = db_id(raw)
        else:
            return _filter_error("Choose the person to assign the selected cases to.")
    visible = db.session.scalars(scoped(select(Case).where(Case.id.in_(ids)).order_by(Case.id),
                                        Case.site_id, "cases.view")).all()
    allowed_sites = set(sites_for(None, BULK[action]))
    user = current_user._get_current_object()
    # The case view's rule, not a copy of it: an agent works the cases of their teams.
    workable = [(c.id, c.site_id) for c in visible
                if c.site_id in allowed_sites and on_my_team(c, user)]
    denied = len(visible) - len(workable)
    done = 0
    skipped: dict[str, list[int]] = {}
    actor = current_user.email
    db.session.rollback()  # end the read; each case's change is its own transaction
    for case_id, site_id in workable:
        try:
            _bulk_one(action, case_id, site_id, actor, value)
        except (case_ops.TransitionError, LookupError) as exc:
            db.session.rollback()
            skipped.setdefault(str(exc).strip("'\""), []).append(case_id)
            continue
        done += 1
    verb = {"acknowledge": "Acknowledged", "tag": f"Tagged “{value}” on",
            "assign": "Assigned"}[action]
    parts = [f"{verb} {done} case{'s' if done != 1 else ''}."]
    for reason, which in skipped.items():
        parts.append(f"Skipped {', '.join(f'#{i}' for i in which)}: {reason}.")
    if denied:
        parts.append(f"{denied} not yours to change (your role on their site, or another "
                     "team's case).")
    flash(" ".join(parts), "ok" if done and not skipped and not denied else "message")
    return redirect(back)


# -- CSV export -----------------------------------------------------------------------------

CSV_COLUMNS = ("case", "created_at", "site", "moment", "channel", "scale", "rating", "segment",
               "comment", "transcript", "skus", "order", "customer", "verified", "team",
               "assignee", "priority", "status", "next_due_at", "sla")


def neutralise(value: Any) -> Any:
    """A cell a spreadsheet would read as a formula gets a leading apostrophe."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


def csv_line(values: list[Any]) -> str:
    """One CSV line, every cell neutralised (the inbox and audit-log exports share it)."""
    buf = io.StringIO()
    csv.writer(buf).writerow([neutralise(v) for v in values])
    return buf.getvalue()


def export_rows(f: Filters, now: datetime, batch: int = 500) -> Iterator[str]:
    """The CSV of the filter, line by line; rows come from the database `batch` at a time."""
    yield csv_line(list(CSV_COLUMNS))
    stmt = query(f, now, "export.csv").execution_options(yield_per=batch)
    for c, r, moment, site_name, assignee, _key in db.session.execute(stmt):
        due = next((d for done, d in ((c.acknowledged_at, c.ack_due_at),
                                      (c.followed_up_at, c.followup_due_at),
                                      (c.closed_at, c.close_due_at))
                    if done is None and d is not None), None)
        yield csv_line([
            c.id, c.created_at.isoformat(), site_name, moment, r.channel, r.scale, r.rating,
            r.segment, r.comment or "", r.transcript or "", " ".join(r.skus), r.order_ref or "",
            r.customer_ref or "", "yes" if r.verified else "no", c.team or "", assignee or "",
            c.priority, c.status, due.isoformat() if due else "", sla_state(c, now)[1]])


@bp.get("/export.csv")
@requires("export.csv")
def export_csv() -> Response | tuple[str, int]:
    """The inbox's current filter as CSV, streamed (rows fetched in batches, never all at once),
    for sites where the person may export."""
    now = utcnow()
    allowed = sites_for(None, "export.csv")
    if not allowed:
        abort(403)
    try:
        f = parse(request.args, allowed)
    except FilterError as exc:
        return _filter_error(str(exc))
    f.after = None
    name = f"closeloop-cases-{now:%Y%m%d-%H%M}.csv"
    return Response(stream_with_context(export_rows(f, now)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "Cache-Control": "no-store"})
