"""The audit log of staff actions: `record(...)` adds a row in the caller's transaction, so the
entry commits (or rolls back) with the change it describes. Rows are never changed or deleted
by the app: the session refuses it (there is no purge: the log holds staff actions, not answers,
so RETENTION_DAYS does not apply to it)."""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from .extensions import db
from .models import AuditEvent, StaffUser


class AuditLogIsAppendOnly(RuntimeError):
    """Something tried to update or delete an audit row."""


def _current_staff() -> StaffUser | None:
    if not has_request_context():
        return None
    from flask_login import current_user

    user = current_user._get_current_object()  # type: ignore[attr-defined]
    return user if isinstance(user, StaffUser) else None


def record(action: str, *, actor: StaffUser | str | None = None,
           object_type: str | None = None, object_id: str | int | None = None,
           site_id: int | None = None, details: dict[str, Any] | None = None,
           remote_addr: str | None = None) -> AuditEvent:
    """Add one audit row to the current session (no commit: it goes with the caller's change).
    `actor`: a staff account, or "cli"/"system"; default: the signed-in staff member in a
    request, else "system". `remote_addr` defaults to the request's client address."""
    if actor is None:
        actor = _current_staff() or "system"
    if remote_addr is None and has_request_context():
        remote_addr = request.remote_addr
    event_row = AuditEvent(
        actor_id=actor.id if isinstance(actor, StaffUser) else None,
        actor=actor.email if isinstance(actor, StaffUser) else actor,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        site_id=site_id,
        remote_addr=remote_addr,
        details=details,
    )
    db.session.add(event_row)
    return event_row


@event.listens_for(Session, "before_flush")
def _no_changes_to_audit_rows(session: Session, _ctx: Any, _instances: Any) -> None:
    """An audit row is written once: the ORM never flushes an update or a delete of one."""
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEvent) and (obj in session.deleted or session.is_modified(obj)):
            raise AuditLogIsAppendOnly("audit events are never updated or deleted")


@event.listens_for(Session, "do_orm_execute")
def _no_bulk_changes_to_audit_rows(state: ORMExecuteState) -> None:
    """Nor does an ORM-level UPDATE or DELETE statement on the audit table."""
    if (state.is_update or state.is_delete) and any(
            getattr(m, "class_", None) is AuditEvent for m in state.all_mappers):
        raise AuditLogIsAppendOnly("audit events are never updated or deleted")
