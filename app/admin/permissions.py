"""Who may do what on which site: the one permission table, the one view decorator, and the
one way to scope a staff query.

Access comes only from `SiteMembership` (a role per staff member and site); the global
`StaffUser.role` grants nothing. Every admin view is decorated with `@requires(action)` and
reads data only through `scoped(...)` (lists) or `get_scoped_or_404(...)` (one object), which
default to the decorator's action. Another site's object answers 404, exactly like a missing
one; 403 only when the person is a member of that site but their role lacks the action.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import abort, g, has_request_context
from flask_login import current_user, login_required
from sqlalchemy import ColumnElement, Select, false, select

from .. import audit
from ..extensions import db
from ..models import SITE_ROLES, Site, SiteMembership, StaffUser

ROLES = SITE_ROLES  # owner > lead > agent > viewer

_ALL = frozenset(ROLES)
_WORKERS = frozenset({"owner", "lead", "agent"})
_MANAGERS = frozenset({"owner", "lead"})
_OWNERS = frozenset({"owner"})

# The one table: action -> roles allowed. Add an entry here before adding a view that needs it.
# Agents act on cases; that their inbox shows their teams' cases first is a filter, not a right
# (`cases.any_team` says who may act on another team's case). Viewers read and change nothing.
ACTIONS: dict[str, frozenset[str]] = {
    "responses.view": _ALL,        # answers and their cases, read-only
    "cases.view": _ALL,
    "voice.play": _ALL,            # a case's voice note, streamed to the case page's player
    "cases.acknowledge": _WORKERS,
    "cases.assign": _WORKERS,
    "cases.resolve": _WORKERS,
    "cases.reopen": _WORKERS,
    "cases.note": _WORKERS,
    "cases.tag": _WORKERS,
    "cases.priority": _WORKERS,
    "cases.any_team": _MANAGERS,   # act on cases of teams one is not a member of
    "templates.use": _WORKERS,     # pick and edit a template in a customer message
    "templates.manage": _MANAGERS,
    "rules.manage": _MANAGERS,
    "teams.manage": _MANAGERS,
    "moments.manage": _MANAGERS,
    "site.settings": _MANAGERS,    # name, origins, locale, URLs, contact, SLA targets
    "webhooks.manage": _MANAGERS,  # endpoints, delivery log, redeliver
    "kiosks.manage": _MANAGERS,    # in-store tablets: add, revoke
    "site.keys": _OWNERS,          # signing-secret rotation, the embed secret shown once
    "staff.manage": _OWNERS,       # invitations, memberships, roles
    "audit.read": _OWNERS,
    "export.csv": _MANAGERS,       # bulk download of customer data: more than reading a page
}


def _roles(action: str) -> frozenset[str]:
    """Roles allowed to do `action`; an unknown action is a programming error, never 'no'."""
    try:
        return ACTIONS[action]
    except KeyError:
        raise KeyError(f"unknown action {action!r}: add it to ACTIONS") from None


def _user(user: Any = None) -> StaffUser | None:
    """The given or signed-in staff member, if active."""
    if user is None and has_request_context():
        user = current_user._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(user, StaffUser) or not user.active:
        return None
    return user


def _action(action: str | None) -> str:
    action = action or g.get("permission_action")
    if action is None:
        raise RuntimeError("no action given and the view has no @requires(action)")
    return action


def role_on(user: StaffUser | None, site_id: int) -> str | None:
    """The person's role on this site, or None when they are not a member."""
    user = _user(user)
    if user is None:
        return None
    return db.session.scalar(select(SiteMembership.role).where(
        SiteMembership.staff_id == user.id, SiteMembership.site_id == site_id))


def can(user: StaffUser | None, site_id: int, action: str) -> bool:
    """True when `user` is an active member of the site with a role allowed to do `action`."""
    roles = _roles(action)
    return role_on(user, site_id) in roles


def _member_sites(user: StaffUser | None, action: str) -> Select[Any]:
    """SELECT of the ids of the sites where the person may do `action` (none for nobody)."""
    user = _user(user)
    stmt = select(SiteMembership.site_id).where(SiteMembership.role.in_(sorted(_roles(action))))
    return stmt.where(SiteMembership.staff_id == user.id if user is not None else false())


def sites_for(user: StaffUser | None, action: str | None = None) -> list[int]:
    """Ids of the sites where `user` may do `action` (any role at all when action is None)."""
    if action is None:
        user = _user(user)
        if user is None:
            return []
        return list(db.session.scalars(select(SiteMembership.site_id).where(
            SiteMembership.staff_id == user.id).order_by(SiteMembership.site_id)))
    return list(db.session.scalars(_member_sites(user, action).order_by(SiteMembership.site_id)))


S = TypeVar("S", bound=Select)  # any select, whatever its columns


def scoped(stmt: S, site_column: ColumnElement[int] | Any, action: str | None = None,
           user: StaffUser | None = None) -> S:
    """`stmt` limited to rows whose `site_column` is a site where the signed-in person (or
    `user`) may do `action` (default: the view's @requires action). One subquery, no extra
    round trip; a person without memberships gets no rows."""
    return stmt.where(site_column.in_(_member_sites(user, _action(action))))


M = TypeVar("M")


def get_scoped_or_404(model: type[M], ident: Any, action: str | None = None,
                      user: StaffUser | None = None) -> M:
    """The object with this id if the person may do `action` on its site. 404 when it does not
    exist or belongs to a site they are not a member of (the same answer: nothing leaks);
    403 when they are a member whose role lacks the action."""
    action = _action(action)
    roles = _roles(action)
    obj = db.session.get(model, ident)
    if obj is None:
        abort(404)
    site_id = obj.id if isinstance(obj, Site) else obj.site_id  # type: ignore[attr-defined]
    role = role_on(user, site_id)
    if role is None:
        abort(404)
    if role not in roles:
        abort(403)
    return obj


def requires(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """View decorator: signed in, and the view's data is read for `action` (the scoping helpers
    default to it). A view with a `site_id` argument is also checked here: 404 for a site the
    person is not a member of, 403 for a member whose role lacks the action."""
    roles = _roles(action)

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            g.permission_action = action
            if "site_id" in kwargs:
                role = role_on(None, kwargs["site_id"])
                if role is None:
                    abort(404)
                if role not in roles:
                    abort(403)
            return view(*args, **kwargs)

        return login_required(wrapped)

    return decorate


# -- memberships (the CLI and the staff settings page) -----------------------------------------


def grant(user: StaffUser, site: Site, role: str, *, actor: StaffUser | str = "cli"
          ) -> tuple[SiteMembership, str | None]:
    """Give `user` `role` on `site` (or change their role there), audited in the same
    transaction; returns the membership and the previous role (None if new). Commits."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    membership = db.session.scalar(select(SiteMembership).where(
        SiteMembership.staff_id == user.id, SiteMembership.site_id == site.id))
    previous = membership.role if membership is not None else None
    if membership is None:
        membership = SiteMembership(staff_id=user.id, site_id=site.id, role=role)
        db.session.add(membership)
    else:
        membership.role = role
    if previous != role:
        audit.record("membership.grant", actor=actor, object_type="staff", object_id=user.id,
                     site_id=site.id, details={"email": user.email, "role": role,
                                               "previous": previous})
    db.session.commit()
    return membership, previous


def revoke(user: StaffUser, site: Site, *, actor: StaffUser | str = "cli") -> str:
    """Remove `user`'s membership of `site` (LookupError if none), audited; returns the role
    they had. Commits."""
    membership = db.session.scalar(select(SiteMembership).where(
        SiteMembership.staff_id == user.id, SiteMembership.site_id == site.id))
    if membership is None:
        raise LookupError(f"{user.email} is not a member of {site.public_key}")
    role = membership.role
    db.session.delete(membership)
    audit.record("membership.revoke", actor=actor, object_type="staff", object_id=user.id,
                 site_id=site.id, details={"email": user.email, "role": role})
    db.session.commit()
    return role


class LastOwner(ValueError):
    """The change would leave a site without an owner (the message is safe to show)."""


def _keep_an_owner(membership: SiteMembership) -> None:
    """LastOwner if `membership` is its site's only owner. Locks the site's owner rows
    (PostgreSQL) and re-reads them, so two owners demoting each other at once cannot both
    pass: the second sees the first one's change once it commits."""
    owners = db.session.scalars(
        select(SiteMembership).where(SiteMembership.site_id == membership.site_id,
                                     SiteMembership.role == "owner")
        .with_for_update().execution_options(populate_existing=True)).all()
    if membership.role == "owner" and [m.id for m in owners] == [membership.id]:
        raise LastOwner("A site needs at least one owner: make someone else owner first.")


def change_role(membership: SiteMembership, role: str, *, actor: StaffUser | str
                ) -> str | None:
    """Give a member another role on their site, never demoting its last owner (LastOwner);
    audited like `grant`, returns the previous role. Commits."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if role != "owner":
        _keep_an_owner(membership)
    user = db.session.get(StaffUser, membership.staff_id)
    site = db.session.get(Site, membership.site_id)
    assert user is not None and site is not None  # foreign keys
    _m, previous = grant(user, site, role, actor=actor)
    return previous


def remove_member(membership: SiteMembership, *, actor: StaffUser | str) -> str:
    """Remove a member from their site, never its last owner (LastOwner); audited like
    `revoke`, returns the role they had. Commits."""
    _keep_an_owner(membership)
    user = db.session.get(StaffUser, membership.staff_id)
    site = db.session.get(Site, membership.site_id)
    assert user is not None and site is not None
    return revoke(user, site, actor=actor)


def memberships(user_ids: list[int] | None = None) -> dict[int, list[tuple[str, str]]]:
    """staff id -> [(site public key, role)], ordered by site id."""
    stmt = (select(SiteMembership.staff_id, Site.public_key, SiteMembership.role)
            .join(Site, Site.id == SiteMembership.site_id).order_by(Site.id))
    if user_ids is not None:
        stmt = stmt.where(SiteMembership.staff_id.in_(user_ids))
    out: dict[int, list[tuple[str, str]]] = {}
    for staff_id, key, role in db.session.execute(stmt):
        out.setdefault(staff_id, []).append((key, role))
    return out
