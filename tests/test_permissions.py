"""Site memberships and the one permission table: every role × action × own/other site, the
scoped /admin/ list, the grant/revoke commands and the append-only audit log."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select
from werkzeug.exceptions import Forbidden, NotFound

from app import audit, staff
from app.admin import permissions
from app.admin.permissions import ACTIONS, ROLES, can, get_scoped_or_404, scoped, sites_for
from app.extensions import db
from app.models import AuditEvent, Case, Response, Site, SiteMembership, StaffUser

from .conftest import login, make_site, public_prompt

PASSWORD = "a long enough password"

# What issue 8 says each role may do, written out independently of ACTIONS.
# Reading an answer includes listening to its voice note (issue 9).
VIEW = {"responses.view", "cases.view", "voice.play"}
CASE_WORK = {"cases.acknowledge", "cases.assign", "cases.resolve", "cases.reopen",
             "cases.note", "cases.tag", "cases.priority", "templates.use"}
EXPECTED = {
    "owner": set(ACTIONS),
    "lead": set(ACTIONS) - {"site.keys", "staff.manage", "audit.read"},
    "agent": VIEW | CASE_WORK,
    "viewer": VIEW,
}
ADMIN_ACTIONS = {  # the admin actions issue 8 lists, each must be in the table
    "responses.view", "cases.view", *CASE_WORK, "templates.manage", "rules.manage",
    "teams.manage", "moments.manage", "site.settings", "webhooks.manage", "staff.manage",
    "site.keys", "audit.read", "export.csv",
}


def answer(client, site: Site, comment: str) -> None:
    """One customer answer with a comment, through the public prompt."""
    path = public_prompt(client, site, "checkout")
    assert client.post(path, data={"rating": "2", "comment": comment}).status_code == 303


def member(app, email: str, site: Site | None, role: str | None, global_role: str = "agent"
           ) -> int:
    """A staff account, with `role` on `site` when given; returns its id."""
    with app.app_context():
        user = staff.create(email, PASSWORD, global_role)
        if site is not None and role is not None:
            permissions.grant(user, db.session.get(Site, site.id), role)
        return user.id


def test_table_matches_the_roles_of_issue_8():
    """ACTIONS covers every admin action and gives each role exactly what issue 8 describes:
    owner everything, lead all but staff/keys/audit, agent case work, viewer read only."""
    assert set(ROLES) == {"owner", "lead", "agent", "viewer"}
    assert ADMIN_ACTIONS <= set(ACTIONS)
    for role in ROLES:
        assert {a for a, roles in ACTIONS.items() if role in roles} == EXPECTED[role], role
    with pytest.raises(KeyError, match="unknown action"):
        can(None, 1, "cases.delete_everything")


def test_permission_matrix(make_app, db_kind):
    """Every role × every action × own site / other site: can(), sites_for(), scoped() and
    get_scoped_or_404() agree with the table; the other site is always denied, and its
    objects answer 404 (never 403, never the object)."""
    app = make_app(db_kind)
    client = app.test_client()
    own, other = make_site(app, name="Own"), make_site(app, name="Other")
    answer(client, own, "own answer")
    answer(client, other, "other answer")
    users = {role: member(app, f"{role}@shop.example", own, role) for role in ROLES}
    # A member of the other site, so it has members of its own (and the scope must hold).
    member(app, "else@shop.example", other, "owner")
    with app.app_context():
        own_case = db.session.scalar(select(Case.id).where(Case.site_id == own.id))
        other_case = db.session.scalar(select(Case.id).where(Case.site_id == other.id))
        own_answer = db.session.scalar(select(Response.id).where(Response.site_id == own.id))
        checked = 0
        for role, uid in users.items():
            user = db.session.get(StaffUser, uid)
            for action, _roles in ACTIONS.items():
                allowed = action in EXPECTED[role]
                assert can(user, own.id, action) is allowed, (role, action)
                assert can(user, other.id, action) is False, (role, action)
                assert sites_for(user, action) == ([own.id] if allowed else [])
                ids = db.session.scalars(scoped(select(Response.id), Response.site_id, action,
                                                user=user)).all()
                assert ids == ([own_answer] if allowed else []), (role, action)
                sites = db.session.scalars(scoped(select(Site.id), Site.id, action,
                                                  user=user)).all()
                assert sites == ([own.id] if allowed else [])
                with pytest.raises(NotFound):
                    get_scoped_or_404(Case, other_case, action, user=user)
                with pytest.raises(NotFound):
                    get_scoped_or_404(Site, other.id, action, user=user)
                with pytest.raises(NotFound):
                    get_scoped_or_404(Case, 10**9, action, user=user)
                if allowed:
                    assert get_scoped_or_404(Case, own_case, action, user=user).id == own_case
                else:
                    with pytest.raises(Forbidden):
                        get_scoped_or_404(Case, own_case, action, user=user)
                checked += 1
            assert sites_for(user) == [own.id]
        assert checked == len(ROLES) * len(ACTIONS)
        # A deactivated member can do nothing anywhere.
        owner = db.session.get(StaffUser, users["owner"])
        owner.active = False
        db.session.commit()
        assert not can(owner, own.id, "responses.view")
        assert sites_for(owner, "responses.view") == [] and sites_for(owner) == []


def test_admin_list_shows_only_member_sites(make_app, db_kind):
    """Through the real sign-in form, /admin/ lists the answers of the person's sites only;
    a grant adds a site's answers, a revoke takes them away at the next request."""
    app = make_app(db_kind)
    client = app.test_client()
    own, other = make_site(app, name="Own shop"), make_site(app, name="Other shop")
    answer(client, own, "visible-own-comment")
    answer(client, other, "secret-other-comment")
    member(app, "agent@shop.example", own, "agent")
    runner = app.test_cli_runner()
    assert login(client, "agent@shop.example", PASSWORD).status_code == 302
    page = client.get("/admin/").get_data(as_text=True)
    assert "visible-own-comment" in page and "Own shop" in page
    assert "secret-other-comment" not in page and "Other shop" not in page

    out = runner.invoke(args=["staff", "grant", "agent@shop.example", other.public_key,
                              "--role", "viewer"])
    assert out.exit_code == 0, out.output
    page = client.get("/admin/").get_data(as_text=True)
    assert "visible-own-comment" in page and "secret-other-comment" in page

    out = runner.invoke(args=["staff", "revoke", "agent@shop.example", own.public_key])
    assert out.exit_code == 0, out.output
    page = client.get("/admin/").get_data(as_text=True)
    assert "visible-own-comment" not in page and "secret-other-comment" in page


def test_no_membership_sees_an_empty_list(app, client):
    """A staff member without memberships (even a global `admin`) sees no answers at all and
    is told why, not every site's answers."""
    site = make_site(app)
    answer(client, site, "nobody-should-see-this")
    member(app, "admin@shop.example", None, None, global_role="admin")
    assert login(client, "admin@shop.example", PASSWORD).status_code == 302
    r = client.get("/admin/")
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    assert "nobody-should-see-this" not in page and "not a member of any site" in page


def test_requires_decorator_checks_the_site_of_the_url(make_app):
    """A view with a site_id in its URL: anonymous → sign-in, another site → 404, a member
    whose role lacks the action → 403, an allowed role → the view."""
    from app.admin.permissions import requires

    app = make_app()

    @app.get("/t/site/<int:site_id>/rules")
    @requires("rules.manage")
    def rules_page(site_id: int) -> str:
        return f"rules of {site_id}"

    own, other = make_site(app, name="Own"), make_site(app, name="Other")
    member(app, "lead@shop.example", own, "lead")
    member(app, "viewer@shop.example", own, "viewer")
    anon = app.test_client()
    assert anon.get(f"/t/site/{own.id}/rules").status_code == 302
    lead, viewer = app.test_client(), app.test_client()
    assert login(lead, "lead@shop.example", PASSWORD).status_code == 302
    assert login(viewer, "viewer@shop.example", PASSWORD).status_code == 302
    r = lead.get(f"/t/site/{own.id}/rules")
    assert r.status_code == 200 and r.get_data(as_text=True) == f"rules of {own.id}"
    assert lead.get(f"/t/site/{other.id}/rules").status_code == 404
    assert lead.get("/t/site/999999/rules").status_code == 404
    assert viewer.get(f"/t/site/{own.id}/rules").status_code == 403
    assert viewer.get(f"/t/site/{other.id}/rules").status_code == 404


def test_grant_revoke_cli_and_audit(app, runner):
    """`staff grant` adds or changes a membership, `staff revoke` removes it, `staff list`
    shows them; each change writes one audit row (actor cli) with the change's details."""
    site, second = make_site(app, name="One"), make_site(app, name="Two")
    member(app, "a@shop.example", None, None)
    grant = ["staff", "grant", "A@shop.example", site.public_key, "--role"]
    out = runner.invoke(args=[*grant, "agent"])
    assert (out.exit_code, out.output) == (0, f"a@shop.example is now agent of {site.public_key}\n")
    out = runner.invoke(args=[*grant, "lead"])
    assert out.output == f"a@shop.example is now lead of {site.public_key} (was agent)\n"
    assert runner.invoke(args=[*grant, "lead"]).exit_code == 0  # no change, no audit row
    out = runner.invoke(args=["staff", "grant", "a@shop.example", second.public_key,
                              "--role", "viewer"])
    assert out.exit_code == 0, out.output
    lines = runner.invoke(args=["staff", "list"]).output.splitlines()
    assert [line.split("\t")[4] for line in lines] == [
        f"{site.public_key}:lead {second.public_key}:viewer"]

    out = runner.invoke(args=["staff", "revoke", "a@shop.example", site.public_key])
    assert (out.exit_code, out.output) == (
        0, f"a@shop.example is no longer lead of {site.public_key}\n")
    again = runner.invoke(args=["staff", "revoke", "a@shop.example", site.public_key])
    assert again.exit_code == 1
    assert again.output == f"error: a@shop.example is not a member of {site.public_key}\n"
    assert runner.invoke(args=["staff", "list"]).output.split("\t")[4].strip() == (
        f"{second.public_key}:viewer")
    for args, message in (
        (["grant", "nobody@shop.example", site.public_key, "--role", "owner"],
         "error: no staff account with email nobody@shop.example\n"),
        (["grant", "a@shop.example", "pk_nope", "--role", "owner"],
         "error: no site with public key pk_nope\n"),
        (["revoke", "nobody@shop.example", site.public_key],
         "error: no staff account with email nobody@shop.example\n")):
        out = runner.invoke(args=["staff", *args])
        assert (out.exit_code, out.output) == (1, message)
    assert runner.invoke(args=[*grant, "admin"]).exit_code == 2  # not a site role

    with app.app_context():
        uid = db.session.scalar(select(StaffUser.id))
        rows = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        assert [(e.actor, e.actor_id, e.action, e.object_type, e.object_id, e.site_id,
                 e.details) for e in rows] == [
            ("cli", None, "membership.grant", "staff", str(uid), site.id,
             {"email": "a@shop.example", "role": "agent", "previous": None}),
            ("cli", None, "membership.grant", "staff", str(uid), site.id,
             {"email": "a@shop.example", "role": "lead", "previous": "agent"}),
            ("cli", None, "membership.grant", "staff", str(uid), second.id,
             {"email": "a@shop.example", "role": "viewer", "previous": None}),
            ("cli", None, "membership.revoke", "staff", str(uid), site.id,
             {"email": "a@shop.example", "role": "lead"}),
        ]
        assert all(e.at is not None and e.remote_addr is None for e in rows)
        assert len(db.session.scalars(select(SiteMembership)).all()) == 1


def test_audit_rows_commit_with_the_change_and_are_never_changed(app, client):
    """record() writes in the caller's transaction (a rollback takes it away too), fills who
    and from where inside a request, and the session refuses to update or delete a row."""
    member(app, "o@shop.example", None, None)
    with app.app_context():
        audit.record("test.rolled_back", actor="system")
        db.session.rollback()
        assert db.session.scalars(select(AuditEvent)).all() == []
        user = db.session.scalar(select(StaffUser))
        with app.test_request_context("/admin/", environ_base={"REMOTE_ADDR": "203.0.113.9"}):
            row = audit.record("test.done", actor=user, object_type="case", object_id=7,
                               site_id=3, details={"k": "v"})
            db.session.commit()
        assert (row.actor, row.actor_id, row.remote_addr, row.object_id) == (
            "o@shop.example", user.id, "203.0.113.9", "7")
        row.action = "test.rewritten"
        with pytest.raises(audit.AuditLogIsAppendOnly):
            db.session.commit()
        db.session.rollback()
        db.session.delete(db.session.scalar(select(AuditEvent)))
        with pytest.raises(audit.AuditLogIsAppendOnly):
            db.session.commit()
        db.session.rollback()
        with pytest.raises(audit.AuditLogIsAppendOnly):
            db.session.execute(delete(AuditEvent))
        db.session.rollback()
        assert [e.action for e in db.session.scalars(select(AuditEvent))] == ["test.done"]


def test_demo_account_owns_the_demo_site(app, client, runner):
    """`flask demo` makes the demo login owner of the demo site (once, also when re-run), so
    its /admin/ list shows the demo answers."""
    for _ in range(2):
        out = runner.invoke(args=["demo", "--origin", "http://localhost"])
        assert out.exit_code == 0, out.output
    email, password = out.output.split("staff login:")[1].split()[1::2][:2]
    assert runner.invoke(args=["staff", "list"]).output.split("\t")[4].strip() == "pk_demo:owner"
    site = type("S", (), {"public_key": "pk_demo"})
    path = public_prompt(client, site, "checkout", origin="http://localhost")
    assert client.post(path, data={"rating": "1", "comment": "demo-answer"}).status_code == 303
    assert login(client, email, password).status_code == 302
    assert "demo-answer" in client.get("/admin/").get_data(as_text=True)
