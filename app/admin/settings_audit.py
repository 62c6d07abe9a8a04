"""The owners' audit-log page (issue 8, point 1): a site's AuditEvent rows, newest first, in
keyset pages on id (no OFFSET: the index (site_id, id) serves every page alike), filtered by
the query string (actor, action prefix, date range) and downloadable as a streamed CSV of the
same filter. Read-only: the log is append-only (app/audit.py), so there is no form that
changes it, and reading it writes nothing either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, render_template, request, stream_with_context, url_for
from sqlalchemy import Select, select
from werkzeug.datastructures import MultiDict

from ..extensions import db
from ..models import AuditEvent, Site, SiteMembership, StaffUser, utcnow
from . import bp
from .inbox import csv_line, db_id
from .permissions import get_scoped_or_404, requires, scoped

ACTION_PREFIX = re.compile(r"^[a-z0-9_.:-]{1,64}$")
SYSTEM_ACTORS = ("cli", "system")  # what app/audit.py records when no staff member acted
CSV_COLUMNS = ("id", "at", "actor", "action", "object_type", "object_id", "remote_addr",
               "details")
FIELDS = ("actor", "action", "from", "to")


class AuditFilterError(ValueError):
    """A filter value the page does not understand: which field, and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class AuditFilters:
    """The page's filters, validated from the query string."""

    actor: str | None = None
    action: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    after: int | None = None

    def query_args(self) -> list[tuple[str, str]]:
        """The filters as query-string pairs (without the page cursor)."""
        out = [("actor", self.actor), ("action", self.action),
               ("from", self.date_from.isoformat() if self.date_from else None),
               ("to", self.date_to.isoformat() if self.date_to else None)]
        return [(k, v) for k, v in out if v]


def _date(args: MultiDict[str, str], name: str, label: str) -> date | None:
    value = args.get(name, "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise AuditFilterError(name, f"{label} “{value}” is not a date like 2026-11-29."
                               ) from None


def parse(args: MultiDict[str, str]) -> AuditFilters:
    """Validate the query string; AuditFilterError (shown with a 400) for a bad value."""
    f = AuditFilters()
    for name in (*FIELDS, "after"):
        if len(args.getlist(name)) > 1:
            raise AuditFilterError(name, f"Give “{name}” once.")
    actor = args.get("actor", "").strip().lower()
    if actor:
        if (len(actor) > 254 or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127
                                    for ch in actor)
                or ("@" not in actor and actor not in SYSTEM_ACTORS)):
            raise AuditFilterError("actor", "Who: give a staff email address, “cli” or "
                                            "“system”.")
        f.actor = actor
    action = args.get("action", "").strip().lower()
    if action:
        if not ACTION_PREFIX.match(action):
            raise AuditFilterError("action", "Action: give the start of an action name, like "
                                             "“case.” or “webhook.remove” (letters, digits, "
                                             "_ . : -).")
        f.action = action
    f.date_from = _date(args, "from", "From")
    f.date_to = _date(args, "to", "To")
    if f.date_from and f.date_to and f.date_from > f.date_to:
        raise AuditFilterError("to", "The date range ends before it starts.")
    raw = args.get("after", "")
    if raw:
        f.after = db_id(raw)
        if f.after is None:
            raise AuditFilterError("after", "This page link is damaged: start again from the "
                                            "first page.")
    return f


def _like_prefix(text: str) -> str:
    """A LIKE pattern for values starting with `text` (its % and _ taken literally)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def query(site_id: int, f: AuditFilters) -> Select[Any]:
    """The site's events matching the filters, newest first (no limit, no cursor)."""
    stmt = select(AuditEvent).where(AuditEvent.site_id == site_id)
    if f.actor:
        stmt = stmt.where(AuditEvent.actor == f.actor)
    if f.action:
        stmt = stmt.where(AuditEvent.action.like(_like_prefix(f.action), escape="\\"))
    if f.date_from:
        stmt = stmt.where(AuditEvent.at >= datetime.combine(f.date_from, datetime.min.time(),
                                                            UTC))
    if f.date_to:
        stmt = stmt.where(AuditEvent.at < datetime.combine(f.date_to + timedelta(days=1),
                                                           datetime.min.time(), UTC))
    return scoped(stmt.order_by(AuditEvent.id.desc()), AuditEvent.site_id, "audit.read")


def page(site_id: int, f: AuditFilters, size: int) -> tuple[list[AuditEvent], int | None]:
    """One page after the cursor and the cursor of the next page (None on the last). One
    query: `size + 1` rows tell whether there is a next page."""
    stmt = query(site_id, f)
    if f.after is not None:
        stmt = stmt.where(AuditEvent.id < f.after)
    rows = list(db.session.scalars(stmt.limit(size + 1)))
    more = len(rows) > size
    rows = rows[:size]
    return rows, (rows[-1].id if more else None)


def detail_items(details: Any) -> list[tuple[str, str]]:
    """(key, text) pairs of an event's details for display: strings as they are, anything
    else as compact JSON. The template escapes them (details hold customer and staff text)."""
    if details is None or details == {}:
        return []
    if not isinstance(details, dict):
        return [("", _text(details))]
    return [(str(k), _text(v)) for k, v in details.items()]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _members(site_id: int) -> list[str]:
    """Emails of the site's members, for the Who field's suggestions."""
    return list(db.session.scalars(
        select(StaffUser.email).join(SiteMembership, SiteMembership.staff_id == StaffUser.id)
        .where(SiteMembership.site_id == site_id).order_by(StaffUser.email)))


def _values(args: MultiDict[str, str]) -> dict[str, str]:
    return {name: args.get(name, "") for name in FIELDS}


def _error_page(site: Site, exc: AuditFilterError) -> tuple[str, int]:
    """The page with the filter's error and no rows (400); the form keeps what was typed."""
    return render_template(
        "admin/settings_audit.html", site=site, rows=[], values=_values(request.args),
        error=str(exc), error_field=exc.field, members=_members(site.id),
        system_actors=SYSTEM_ACTORS, active=True, next_url=None,
        first_url=url_for("admin.settings_audit", site_id=site.id), csv_url=None,
        detail_items=detail_items), 400


@bp.get("/sites/<int:site_id>/settings/audit")
@requires("audit.read")
def settings_audit(site_id: int) -> tuple[str, int]:
    """The site's audit log for owners: newest first, filtered, keyset pages; read-only."""
    site = get_scoped_or_404(Site, site_id)
    here = url_for("admin.settings_audit", site_id=site.id)
    try:
        f = parse(request.args)
    except AuditFilterError as exc:
        return _error_page(site, exc)
    size = int(current_app.config.get("AUDIT_PAGE_SIZE", 50))
    rows, cursor = page(site.id, f, size)
    base = f.query_args()
    query_string = ("?" + urlencode(base)) if base else ""
    next_url = here + "?" + urlencode([*base, ("after", str(cursor))]) if cursor else None
    return render_template(
        "admin/settings_audit.html", site=site, rows=rows, values=_values(request.args),
        error=None, error_field=None, members=_members(site.id), system_actors=SYSTEM_ACTORS,
        active=bool(base), next_url=next_url,
        first_url=(here + query_string) if f.after else None,
        csv_url=url_for("admin.settings_audit_csv", site_id=site.id) + query_string,
        detail_items=detail_items), 200


def csv_rows(site_id: int, f: AuditFilters, batch: int = 500) -> Iterator[str]:
    """The CSV of the filter, line by line, rows fetched `batch` at a time; a cell that a
    spreadsheet would read as a formula is neutralised (as the inbox export does)."""
    yield csv_line(list(CSV_COLUMNS))
    stmt = query(site_id, f).execution_options(yield_per=batch)
    for e in db.session.scalars(stmt):
        yield csv_line([e.id, e.at.isoformat(), e.actor, e.action, e.object_type or "",
                        e.object_id or "", e.remote_addr or "",
                        "" if e.details is None else _text(e.details)])


@bp.get("/sites/<int:site_id>/settings/audit.csv")
@requires("audit.read")
def settings_audit_csv(site_id: int) -> Response | tuple[str, int]:
    """The page's current filter as CSV, streamed (every matching row, not one page)."""
    site = get_scoped_or_404(Site, site_id)
    try:
        f = parse(request.args)
    except AuditFilterError as exc:
        return _error_page(site, exc)
    f.after = None
    name = f"closeloop-audit-{site.public_key}-{utcnow():%Y%m%d-%H%M}.csv"
    return Response(stream_with_context(csv_rows(site.id, f)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "Cache-Control": "no-store"})

