"""Staff settings (issue 8): owners list a site's members and invitations, change roles and
remove members (never the last owner), invite by email with a signed, expiring, single-use,
revocable link; the link's GET changes nothing, its POST creates the account or adds the
membership. Every route: owners only, another site's ids 404, CSRF, audited."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import unquote

import pytest
from itsdangerous.encoding import base64_encode
from sqlalchemy import func, select

from app import signing
from app.admin import permissions
from app.extensions import db
from app.models import AuditEvent, EmailMessage, Invitation, Site, SiteMembership, StaffUser

from .conftest import login, make_site
from .test_case_view import PASSWORD, XSS, Tags, member, signed_in
from .test_settings import audits, settings_app, url

NEW_PASSWORD = "a brand new passphrase"
INVITE_PATH = re.compile(r"https://feedback\.example(/admin/invite/[^\s\"<]+)")


def csrf(page: str) -> str:
    """The CSRF token in a page (raw hidden inputs and WTForms' rendering alike)."""
    return re.search(r'name="csrf_token"[^>]*? value="([^"]+)"', page).group(1)


def any_csrf(client) -> str:
    """A valid CSRF token of the client's session (from the sign-in form)."""
    return csrf(client.get("/admin/login").get_data(as_text=True))


def staff_url(site_id: int, rest: str = "") -> str:
    return url(site_id, "staff" + (f"/{rest}" if rest else ""))


def page_post(client, page_url: str, action_url: str, **form):
    """POST a form of `page_url` with its CSRF token."""
    page = client.get(page_url).get_data(as_text=True)
    return client.post(action_url, data={"csrf_token": csrf(page), **form})


def invite(client, site_id: int, email: str, role: str = "agent"):
    return page_post(client, staff_url(site_id), staff_url(site_id, "invite"),
                     email=email, role=role)


def last_link(app, email: str | None = None) -> str:
    """The invitation path in the newest invitation email (to `email`)."""
    with app.app_context():
        stmt = select(EmailMessage).where(EmailMessage.kind == "staff_invite")
        msgs = [m for m in db.session.scalars(stmt.order_by(EmailMessage.id))
                if email is None or email in m.recipients]
    return INVITE_PATH.search(msgs[-1].body_text).group(1)


def invitation(app, email: str) -> Invitation | None:
    with app.app_context():
        inv = db.session.scalar(select(Invitation).where(Invitation.email == email))
        db.session.expunge_all()
        return inv


def state(app) -> tuple:
    """Everything an invitation link or a staff change could alter."""
    with app.app_context():
        def rows(*cols) -> list[tuple]:
            return sorted((tuple(r) for r in db.session.execute(select(*cols))), key=repr)

        return (rows(SiteMembership.staff_id, SiteMembership.site_id, SiteMembership.role),
                rows(StaffUser.email, StaffUser.session_version, StaffUser.active),
                rows(Invitation.id, Invitation.role, Invitation.nonce_hash, Invitation.used_at,
                     Invitation.revoked_at, Invitation.expires_at, Invitation.sends),
                rows(EmailMessage.id))


def signed_in_as(client) -> str | None:
    page = client.get("/admin/login").get_data(as_text=True)
    m = re.search(r"<span>([^<]+)</span> <button>Sign out</button>", page)
    return m.group(1) if m else None


def accept_form(client, link: str, name: str = "New Person", password: str = NEW_PASSWORD,
                confirm: str | None = None):
    page = client.get(link)
    assert page.status_code == 200, page.status_code
    return client.post(link, data={"name": name, "password": password,
                                   "confirm": password if confirm is None else confirm,
                                   "csrf_token": csrf(page.get_data(as_text=True))})


def membership_id(app, email: str, site_id: int) -> int:
    with app.app_context():
        return db.session.scalar(
            select(SiteMembership.id).join(StaffUser, StaffUser.id == SiteMembership.staff_id)
            .where(StaffUser.email == email, SiteMembership.site_id == site_id))


# -- who may do what --------------------------------------------------------------------------

# (method, path under /admin/sites/<id>/settings/staff, placeholders: i invitation, m member)
ROUTES = [("GET", ""), ("POST", "invite"), ("POST", "invitations/{i}/resend"),
          ("POST", "invitations/{i}/revoke"), ("POST", "members/{m}/role"),
          ("POST", "members/{m}/remove")]


def test_only_owners_reach_staff_routes_and_other_sites_are_404(make_app, db_kind):
    """Owners reach every staff page and change; leads, agents and viewers get 403 on their
    own site; another site's page, invitation or member is 404 for everyone (also through
    the own site's URL) and changes nothing; signed out goes to the sign-in page."""
    app = settings_app(make_app, db_kind)
    site, other = make_site(app, name="Own"), make_site(app, name="Other")
    for role in ("owner", "lead", "agent", "viewer"):
        member(app, f"{role}@shop.example", site, role)
    member(app, "stranger@shop.example", other, "owner")
    member(app, "otheragent@shop.example", other, "agent")
    assert invite(signed_in(app, "owner@shop.example"), site.id,
                  "pending@shop.example").status_code == 302
    assert invite(signed_in(app, "stranger@shop.example"), other.id,
                  "theirs@shop.example").status_code == 302
    refs = {"own": {"i": invitation_id(app, site.id),
                    "m": membership_id(app, "viewer@shop.example", site.id)},
            "other": {"i": invitation_id(app, other.id),
                      "m": membership_id(app, "otheragent@shop.example", other.id)}}

    anonymous = app.test_client()
    r = anonymous.get(staff_url(site.id))
    assert r.status_code == 302 and "/admin/login" in r.headers["Location"]

    for role in ("lead", "agent", "viewer", "owner"):
        client = signed_in(app, f"{role}@shop.example")
        token = csrf(client.get("/admin/").get_data(as_text=True))
        for method, path in ROUTES:
            for target in (staff_url(other.id, path.format(**refs["other"])),
                           staff_url(site.id, path.format(**refs["other"]))
                           if "{" in path else None):
                if target is None:
                    continue
                before = state(app)
                resp = (client.get(target) if method == "GET" else
                        client.post(target, data={"csrf_token": token, "role": "owner",
                                                  "email": "x@shop.example"}))
                expected = 404 if role == "owner" or target.split("/")[3] == str(other.id) \
                    else 403
                assert resp.status_code == expected, (role, method, target)
                assert state(app) == before, (role, method, target)
            own = staff_url(site.id, path.format(**refs["own"]))
            before = state(app)
            if role != "owner":
                resp = (client.get(own) if method == "GET"
                        else client.post(own, data={"csrf_token": token, "role": "owner"}))
                assert resp.status_code == 403, (role, method, path)
                assert state(app) == before
    # The owner's own-site changes, each with a real effect.
    owner = signed_in(app, "owner@shop.example")
    assert owner.get(staff_url(site.id)).status_code == 200
    for path, form in (("invitations/{i}/resend", {}), ("members/{m}/role", {"role": "agent"}),
                       ("invitations/{i}/revoke", {}), ("members/{m}/remove", {}),
                       ("invite", {"email": "new@shop.example", "role": "viewer"})):
        resp = page_post(owner, staff_url(site.id), staff_url(site.id, path.format(**refs["own"])),
                         **form)
        assert resp.status_code == 302, path
    assert invitation(app, "pending@shop.example").revoked_at is not None
    assert membership_id(app, "viewer@shop.example", site.id) is None
    with app.app_context():
        actions = [a for a, in db.session.execute(select(AuditEvent.action).where(
            AuditEvent.site_id == site.id, AuditEvent.actor == "owner@shop.example"))]
    assert {"invitation.create", "invitation.resend", "invitation.revoke", "membership.grant",
            "membership.revoke"} <= set(actions)


def invitation_id(app, site_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(Invitation.id).where(Invitation.site_id == site_id))


def test_staff_page_lists_members_and_invitations(make_app, db_kind):
    """The page names each member with role, state and last sign-in, and each open
    invitation with role, inviter and expiry; the sub-navigation shows Staff to owners."""
    app = settings_app(make_app, db_kind)
    site = make_site(app, name="Shop")
    member(app, "owner@shop.example", site, "owner")
    member(app, "agent@shop.example", site, "agent")
    with app.app_context():
        db.session.scalar(select(StaffUser).filter_by(email="agent@shop.example")).active = False
        db.session.commit()
    owner = signed_in(app, "owner@shop.example")
    invite(owner, site.id, "Later@Shop.example", "lead")
    page = owner.get(staff_url(site.id)).get_data(as_text=True)
    members = re.search(r'<table class="staff-table members">.*?</table>', page, re.S).group(0)
    assert "owner@shop.example" in members and "(you)" in members
    assert "agent@shop.example" in members and "deactivated" in members
    assert re.search(r"Last sign-in.*?<time datetime=", members, re.S)
    assert "The only owner" in members
    invs = re.search(r'<table class="staff-table invitations">.*?</table>', page, re.S).group(0)
    assert "later@shop.example" in invs and "role-lead" in invs
    assert "owner@shop.example" in invs and "<time datetime=" in invs
    assert re.search(r'aria-current="page">Staff<', page)
    member(app, "lead@shop.example", site, "lead")
    lead_nav = signed_in(app, "lead@shop.example").get(url(site.id, "site")).get_data(
        as_text=True)
    assert ">Site</a>" in lead_nav and ">Staff</a>" not in lead_nav


def test_last_owner_is_never_demoted_or_removed(make_app, db_kind):
    """The only owner cannot demote or remove themselves (a friendly 400, nothing changes);
    with a second owner either change works, and each is audited."""
    app = settings_app(make_app, db_kind)
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    member(app, "lead@shop.example", site, "lead")
    owner = signed_in(app, "owner@shop.example")
    mine = membership_id(app, "owner@shop.example", site.id)
    before = state(app)
    for path, form in ((f"members/{mine}/role", {"role": "lead"}),
                       (f"members/{mine}/remove", {})):
        resp = page_post(owner, staff_url(site.id), staff_url(site.id, path), **form)
        assert resp.status_code == 400
        assert "A site needs at least one owner" in resp.get_data(as_text=True)
        assert state(app) == before
    bad = page_post(owner, staff_url(site.id), staff_url(site.id, f"members/{mine}/role"),
                    role="admin")
    assert bad.status_code == 400 and "Choose a role" in bad.get_data(as_text=True)
    lead = membership_id(app, "lead@shop.example", site.id)
    assert page_post(owner, staff_url(site.id), staff_url(site.id, f"members/{lead}/role"),
                     role="owner").status_code == 302
    demoted = page_post(owner, staff_url(site.id), staff_url(site.id, f"members/{mine}/role"),
                        role="viewer")
    assert demoted.status_code == 302  # no longer allowed on the staff page: to settings
    assert owner.get(staff_url(site.id)).status_code == 403
    new_owner = signed_in(app, "lead@shop.example")
    last = page_post(new_owner, staff_url(site.id),
                     staff_url(site.id, f"members/{lead}/remove"))
    assert last.status_code == 400
    assert page_post(new_owner, staff_url(site.id),
                     staff_url(site.id, f"members/{mine}/remove")).status_code == 302
    assert membership_id(app, "owner@shop.example", site.id) is None
    grants = [(a.details["email"], a.details["role"], a.details["previous"])
              for a in audits(app, "membership.grant") if a.actor != "cli"]
    assert grants == [("lead@shop.example", "owner", "lead"),
                      ("owner@shop.example", "viewer", "owner")]
    assert [a.details["email"] for a in audits(app, "membership.revoke")] == [
        "owner@shop.example"]


# -- invitations ------------------------------------------------------------------------------


def test_invite_by_email_then_accept_with_a_new_account(make_app, db_kind, smtp_server):
    """Owner invites an address: the email (real SMTP) names the inviter, the shop and the
    role and links under PUBLIC_BASE_URL; GET of the link changes nothing; POST checks the
    password policy, then creates the account and membership, uses up the invitation and
    signs the person in with a fresh session; the link then answers 404."""
    port, box = smtp_server
    app = settings_app(make_app, db_kind, MAIL_SERVER="127.0.0.1", MAIL_PORT=port,
                       MAIL_FROM="loop@closeloop.example")
    site = make_site(app, name="Tea Shop")
    member(app, "owner@shop.example", site, "owner")
    owner = signed_in(app, "owner@shop.example")
    with app.app_context():
        db.session.scalar(select(StaffUser)).name = "Olivia Owner"
        db.session.commit()
    resp = invite(owner, site.id, " New.Person@Shop.example ", "agent")
    assert resp.status_code == 302
    assert "Invitation sent to new.person@shop.example" in owner.get(
        resp.headers["Location"]).get_data(as_text=True)
    [msg] = box.to("new.person@shop.example")
    assert msg["Subject"] == "Olivia Owner invited you to Tea Shop on Closeloop"
    text = msg.get_body(("plain",)).get_content()
    assert "as agent" in text and "owner@shop.example" in text and "7 days" in text
    link = INVITE_PATH.search(text).group(1)
    assert link in msg.get_body(("html",)).get_content()
    with app.app_context():
        inv = db.session.scalar(select(Invitation))
        assert inv.nonce_hash and inv.nonce_hash not in link  # only a hash is stored
        assert (inv.email, inv.role, inv.invited_by_email) == (
            "new.person@shop.example", "agent", "owner@shop.example")

    newcomer = app.test_client()
    before = state(app)
    page = newcomer.get(link)
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "Olivia Owner" in body and "Tea Shop" in body and "as <strong>agent</strong>" in body
    assert "Create your account" in body
    assert state(app) == before  # a mail scanner's GET changes nothing

    short = accept_form(newcomer, link, password="too short")
    assert short.status_code == 200 and "At least 12 characters." in short.get_data(as_text=True)
    differ = accept_form(newcomer, link, confirm="something else entirely")
    assert "The two passwords differ." in differ.get_data(as_text=True)
    nameless = accept_form(newcomer, link, name="")
    assert nameless.status_code == 200
    assert state(app) == before

    with newcomer.session_transaction() as sess:
        sess["planted"] = "by an attacker"  # session fixation: nothing survives sign-in
    done = accept_form(newcomer, link)
    assert done.status_code == 302 and done.headers["Location"] == "/admin/"
    with newcomer.session_transaction() as sess:
        assert "planted" not in sess
    inbox = newcomer.get("/admin/")
    assert inbox.status_code == 200 and "Welcome to Tea Shop" in inbox.get_data(as_text=True)
    assert signed_in_as(newcomer) == "new.person@shop.example"
    with app.app_context():
        user = db.session.scalar(select(StaffUser).filter_by(email="new.person@shop.example"))
        assert user.name == "New Person" and user.password_hash.startswith("$argon2id$")
        assert permissions.role_on(user, site.id) == "agent"
        inv = db.session.scalar(select(Invitation))
        assert inv.used_at is not None and inv.used_by_id == user.id and inv.nonce_hash is None
    assert [a.details["new_account"] for a in audits(app, "invitation.accept")] == [True]
    assert len(audits(app, "staff.create")) == 1

    again = app.test_client()
    gone = again.get(link)
    assert gone.status_code == 404 and "no longer works" in gone.get_data(as_text=True)
    token = any_csrf(again)
    assert again.post(link, data={"name": "X", "password": NEW_PASSWORD,
                                  "confirm": NEW_PASSWORD,
                                  "csrf_token": token}).status_code == 404
    assert login(app.test_client(), "new.person@shop.example", NEW_PASSWORD).status_code == 302
    # The page no longer lists it; the member list has the new person with their name.
    page = owner.get(staff_url(site.id)).get_data(as_text=True)
    assert "No open invitations." in page and "New Person" in page


def test_existing_account_signs_in_first_then_joins(make_app, db_kind):
    """An invitation for an existing account: signed out, or signed in as someone else, the
    link says to sign in first (with ?next= back to it) and a POST changes nothing; signed in
    as that account, POST adds the membership with the invited role."""
    app = settings_app(make_app, db_kind)
    site, other = make_site(app, name="Tea Shop"), make_site(app, name="Coffee")
    member(app, "owner@shop.example", site, "owner")
    member(app, "elsewhere@shop.example", other, "agent")
    member(app, "someone@shop.example", other, "agent")
    invite(signed_in(app, "owner@shop.example"), site.id, "elsewhere@shop.example", "lead")
    link = last_link(app)
    before = state(app)

    anonymous = app.test_client()
    page = anonymous.get(link).get_data(as_text=True)
    assert "Sign in first" in page
    login_href = re.search(r'href="(/admin/login\?next=[^"]+)"', page).group(1)
    assert unquote(login_href.split("next=", 1)[1]) == link
    token = any_csrf(anonymous)
    assert anonymous.post(link, data={"csrf_token": token, "name": "X",
                                      "password": NEW_PASSWORD,
                                      "confirm": NEW_PASSWORD}).status_code == 200
    wrong = signed_in(app, "someone@shop.example")
    page = wrong.get(link).get_data(as_text=True)
    assert "You are signed in as someone@shop.example" in page
    assert wrong.post(link, data={"csrf_token": csrf(page)}).status_code == 200
    assert state(app) == before

    right = app.test_client()
    form = right.get(f"/admin/login?next={link}").get_data(as_text=True)
    back = right.post(f"/admin/login?next={link}", data={
        "email": "elsewhere@shop.example", "password": PASSWORD,
        "csrf_token": re.search(r'name="csrf_token" type="hidden" value="([^"]+)"',
                                form).group(1)})
    assert back.status_code == 302 and back.headers["Location"] == link
    page = right.get(link).get_data(as_text=True)
    assert "Join Tea Shop as lead" in page
    assert state(app) == before
    joined = right.post(link, data={"csrf_token": csrf(page)})
    assert joined.status_code == 302 and joined.headers["Location"] == "/admin/"
    with app.app_context():
        user = db.session.scalar(select(StaffUser).filter_by(email="elsewhere@shop.example"))
        assert permissions.role_on(user, site.id) == "lead"
        assert permissions.role_on(user, other.id) == "agent"
    assert right.get(link).status_code == 404
    assert [a.details["new_account"] for a in audits(app, "invitation.accept")] == [False]


def test_deactivated_accounts_are_refused(make_app, db_kind):
    """A deactivated account cannot be invited (a friendly 400); one deactivated after its
    invitation was sent gets a clear refusal from the link (403), and nothing changes."""
    app = settings_app(make_app, db_kind)
    site, other = make_site(app), make_site(app)
    member(app, "owner@shop.example", site, "owner")
    member(app, "gone@shop.example", other, "agent")
    member(app, "later@shop.example", other, "agent")
    owner = signed_in(app, "owner@shop.example")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["staff", "deactivate", "gone@shop.example"]).exit_code == 0
    refused = invite(owner, site.id, "gone@shop.example")
    assert refused.status_code == 400
    assert "has a deactivated account" in refused.get_data(as_text=True)
    assert invitation(app, "gone@shop.example") is None

    assert invite(owner, site.id, "later@shop.example").status_code == 302
    link = last_link(app)
    assert runner.invoke(args=["staff", "deactivate", "later@shop.example"]).exit_code == 0
    before = state(app)
    client = app.test_client()
    page = client.get(link)
    assert page.status_code == 403 and "is deactivated" in page.get_data(as_text=True)
    assert client.post(link, data={"csrf_token": any_csrf(client), "name": "N",
                                   "password": NEW_PASSWORD,
                                   "confirm": NEW_PASSWORD}).status_code == 403
    assert state(app) == before
    # Members cannot be invited either.
    member(app, "agent@shop.example", site, "agent")
    dup = invite(owner, site.id, "agent@shop.example")
    assert dup.status_code == 400 and "already a member" in dup.get_data(as_text=True)
    bad = invite(owner, site.id, "not an address")
    assert bad.status_code == 400 and "valid email address" in bad.get_data(as_text=True)


def test_inviting_again_resends_the_same_invitation(make_app, db_kind):
    """Inviting a pending address again updates its one invitation (new role, new link,
    new expiry) and sends again; the earlier link dies; Re-send does the same."""
    app = settings_app(make_app, db_kind)
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    owner = signed_in(app, "owner@shop.example")
    invite(owner, site.id, "new@shop.example", "viewer")
    first = last_link(app)
    again = invite(owner, site.id, "NEW@shop.example", "lead")
    assert again.status_code == 302
    assert "was invited already" in owner.get(again.headers["Location"]).get_data(as_text=True)
    second = last_link(app)
    with app.app_context():
        assert db.session.scalar(select(func.count(Invitation.id))) == 1
        assert db.session.scalar(select(Invitation.role)) == "lead"
        assert db.session.scalar(select(func.count(EmailMessage.id))) == 2
    client = app.test_client()
    assert client.get(first).status_code == 404 and client.get(second).status_code == 200
    inv_id = invitation(app, "new@shop.example").id
    assert page_post(owner, staff_url(site.id),
                     staff_url(site.id, f"invitations/{inv_id}/resend")).status_code == 302
    third = last_link(app)
    assert client.get(second).status_code == 404 and client.get(third).status_code == 200
    assert invitation(app, "new@shop.example").sends == 3
    assert [a.action for a in audits(app, "invitation.resend")] == ["invitation.resend"] * 2


def test_invitation_expires(make_app, db_kind, clock):
    """A link works until STAFF_INVITE_MAX_AGE has passed (7 days): afterwards GET and POST
    answer 404 and change nothing; the page lists it as expired and Re-send revives it."""
    app = settings_app(make_app, db_kind)
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    owner = signed_in(app, "owner@shop.example")
    invite(owner, site.id, "new@shop.example")
    link = last_link(app)
    client = app.test_client()
    clock.advance(timedelta(days=7) - timedelta(minutes=1))
    page = client.get(link)
    assert page.status_code == 200
    clock.advance(timedelta(minutes=2))
    before = state(app)
    assert client.get(link).status_code == 404
    r = client.post(link, data={"csrf_token": csrf(page.get_data(as_text=True)),
                                "name": "N", "password": NEW_PASSWORD,
                                "confirm": NEW_PASSWORD})
    assert r.status_code == 404 and state(app) == before
    listed = owner.get(staff_url(site.id)).get_data(as_text=True)
    assert re.search(r'<span class="badge off">expired</span>', listed)
    inv_id = invitation(app, "new@shop.example").id
    assert page_post(owner, staff_url(site.id),
                     staff_url(site.id, f"invitations/{inv_id}/resend")).status_code == 302
    assert client.get(last_link(app)).status_code == 200


def test_signed_token_max_age_also_applies(make_app, monkeypatch):
    """The token's own signature age is checked too (itsdangerous max_age), not only the
    row's expiry: a link signed longer ago than STAFF_INVITE_MAX_AGE is 404."""
    from itsdangerous.timed import TimestampSigner

    app = settings_app(make_app, STAFF_INVITE_MAX_AGE=600)
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    invite(signed_in(app, "owner@shop.example"), site.id, "new@shop.example")
    link = last_link(app)
    client = app.test_client()
    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + 590)
    assert client.get(link).status_code == 200
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + 601)
    assert client.get(link).status_code == 404


def test_revoked_invitation_link_is_dead(make_app, db_kind):
    """Revoke: the link answers 404 at once and its POST changes nothing; revoking twice is
    a friendly error."""
    app = settings_app(make_app, db_kind)
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    owner = signed_in(app, "owner@shop.example")
    invite(owner, site.id, "new@shop.example")
    link = last_link(app)
    client = app.test_client()
    page = client.get(link).get_data(as_text=True)
    inv_id = invitation(app, "new@shop.example").id
    revoke = staff_url(site.id, f"invitations/{inv_id}/revoke")
    assert page_post(owner, staff_url(site.id), revoke).status_code == 302
    before = state(app)
    assert client.get(link).status_code == 404
    assert client.post(link, data={"csrf_token": csrf(page), "name": "N",
                                   "password": NEW_PASSWORD,
                                   "confirm": NEW_PASSWORD}).status_code == 404
    assert state(app) == before
    twice = page_post(owner, staff_url(site.id), revoke)
    assert twice.status_code == 400 and "already used or revoked" in twice.get_data(as_text=True)
    assert len(audits(app, "invitation.revoke")) == 1
    # Inviting the address again makes the same row a fresh invitation.
    invite(owner, site.id, "new@shop.example", "viewer")
    assert client.get(last_link(app)).status_code == 200
    with app.app_context():
        assert db.session.scalar(select(func.count(Invitation.id))) == 1


def test_forged_and_garbled_tokens_are_404(make_app, db_kind):
    """Tampered, garbled, wrong-purpose, lone-surrogate and oddly shaped tokens answer the
    friendly 404 page on GET and POST, never 500, and change nothing."""
    app = settings_app(make_app, db_kind, LIMIT_PASSWORD_RESET="1000 per minute")
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    invite(signed_in(app, "owner@shop.example"), site.id, "new@shop.example")
    good = last_link(app).rsplit("/", 1)[1]
    inv_id = invitation(app, "new@shop.example").id
    with app.app_context():
        keys = signing.app_keys()
        shaped = [signing.dumps(keys, signing.STAFF_INVITE, payload) for payload in (
            {"i": inv_id, "n": "not-the-nonce"}, {"i": str(inv_id), "n": "x"},
            {"i": True, "n": "x"}, {"i": 10**12, "n": "x"}, {"i": -1, "n": "x"},
            {"i": inv_id}, {"n": "x"}, {"i": inv_id, "n": "PLACEHOLDER"})]
        # A genuinely signed token whose nonce is a lone surrogate (valid JSON, invalid text).
        raw = base64_encode(f'{{"i": {inv_id}, "n": "x\\ud800"}}'.encode())
        surrogate = signing._serializer(tuple(keys), signing.STAFF_INVITE).make_signer(
            signing.STAFF_INVITE).sign(raw).decode()
        wrong_purpose = signing.dumps(keys, signing.PASSWORD_RESET, {"i": inv_id, "n": "x"})
        other_key = signing.dumps(["another-key"], signing.STAFF_INVITE, {"i": inv_id, "n": "x"})
    tokens = [good[:-2] + ("AA" if not good.endswith("AA") else "BB"), "x", "a.b.c",
              "%ED%A0%80", "%F0%9F%98%80", "A" * 5000, "%00", good + "x",
              wrong_purpose, other_key, surrogate, *shaped]
    client = app.test_client()
    token = any_csrf(client)
    before = state(app)
    for t in tokens:
        r = client.get(f"/admin/invite/{t}")
        assert r.status_code == 404, t[:40]
        assert "This invitation no longer works" in r.get_data(as_text=True)
        assert client.post(f"/admin/invite/{t}", data={
            "csrf_token": token, "name": "N", "password": NEW_PASSWORD,
            "confirm": NEW_PASSWORD}).status_code == 404, t[:40]
    assert state(app) == before
    assert client.get(f"/admin/invite/{good}").status_code == 200


def test_staff_changes_need_csrf(make_app):
    """Invite, re-send, revoke, role, remove and accepting a link without the session's
    CSRF token are refused (400) and change nothing; GET on a change URL is 405."""
    app = settings_app(make_app)
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    member(app, "agent@shop.example", site, "agent")
    owner = signed_in(app, "owner@shop.example")
    invite(owner, site.id, "new@shop.example")
    link = last_link(app)
    refs = {"i": invitation(app, "new@shop.example").id,
            "m": membership_id(app, "agent@shop.example", site.id)}
    before = state(app)
    for _method, path in ROUTES[1:]:
        target = staff_url(site.id, path.format(**refs))
        assert owner.post(target, data={"email": "x@shop.example",
                                        "role": "owner"}).status_code == 400
        assert owner.post(target, data={"csrf_token": "forged", "role": "owner"}
                          ).status_code == 400
        assert owner.get(target).status_code == 405
    newcomer = app.test_client()
    newcomer.get(link)
    assert newcomer.post(link, data={"name": "N", "password": NEW_PASSWORD,
                                     "confirm": NEW_PASSWORD}).status_code == 400
    assert state(app) == before


def test_invitations_are_rate_limited(make_app):
    """Sending invitations (new and again) counts against LIMIT_STAFF_INVITE per account."""
    app = settings_app(make_app, LIMIT_STAFF_INVITE="3 per hour")
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    owner = signed_in(app, "owner@shop.example")
    codes = [invite(owner, site.id, f"x{i}@shop.example").status_code for i in range(3)]
    inv_id = invitation(app, "x0@shop.example").id
    codes.append(page_post(owner, staff_url(site.id),
                           staff_url(site.id, f"invitations/{inv_id}/resend")).status_code)
    assert codes == [302, 302, 302, 429]
    with app.app_context():
        assert db.session.scalar(select(func.count(EmailMessage.id))) == 3


def test_hostile_names_and_addresses_come_out_inert(make_app, db_kind):
    """Script tags, event handlers, SVG and javascript: URLs as a site name, a person's name
    and a typed-in address come out as text on the staff page, the link page and in the
    email's HTML: no element, no event attribute, no javascript: link."""
    app = settings_app(make_app, db_kind)
    hostile = " ".join(XSS)
    site = make_site(app, name=hostile[:200])
    member(app, "owner@shop.example", site, "owner")
    owner = signed_in(app, "owner@shop.example")
    with app.app_context():
        db.session.scalar(select(StaffUser)).name = hostile[:200]
        db.session.commit()
    bad = invite(owner, site.id, hostile)
    assert bad.status_code == 400
    invite(owner, site.id, "new@shop.example")
    link = last_link(app)
    accepted = accept_form(app.test_client(), link, name=hostile[:200])
    assert accepted.status_code == 302
    with app.app_context():
        html_mail = db.session.scalar(select(EmailMessage.body_html))
    pages = {"staff": owner.get(staff_url(site.id)).get_data(as_text=True),
             "error": bad.get_data(as_text=True), "email": html_mail}
    invite(owner, site.id, "other@shop.example")
    pages["link"] = app.test_client().get(last_link(app)).get_data(as_text=True)
    for name, html in pages.items():
        parser = Tags()
        parser.feed(html)
        assert not [t for t, _a in parser.found if t in ("script", "svg", "img")], name
        assert not [(t, a) for t, attrs in parser.found for a, _v in attrs
                    if a.startswith("on")], name
        assert not [(t, v) for t, attrs in parser.found for a, v in attrs
                    if a == "href" and v and v.lower().startswith("javascript")], name
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, name


def test_flask_staff_invite(make_app):
    """`flask staff invite <site> <email> --role` sends the same invitation as the page
    (by public key or id), audited as the CLI; errors are one line, exit 1."""
    app = settings_app(make_app)
    runner = app.test_cli_runner()
    site = make_site(app)
    r = runner.invoke(args=["staff", "invite", site.public_key, "New@shop.example",
                            "--role", "lead"])
    assert r.exit_code == 0 and "invited new@shop.example as lead" in r.output
    r = runner.invoke(args=["staff", "invite", str(site.id), "new@shop.example"])
    assert r.exit_code == 0 and "invited again new@shop.example as agent" in r.output
    assert runner.invoke(args=["staff", "invite", "pk_nope", "x@shop.example"]).exit_code == 1
    bad = runner.invoke(args=["staff", "invite", site.public_key, "nope"])
    assert bad.exit_code == 1 and "valid email address" in bad.output
    assert [a.actor for a in audits(app, "invitation.create")] == ["cli"]
    assert app.test_client().get(last_link(app)).status_code == 200


# -- in a browser -----------------------------------------------------------------------------


@pytest.mark.browser
def test_owner_invites_and_newcomer_joins_in_chromium(make_app, smtp_server):
    """An owner invites an address on the Staff page; the link from the email (real SMTP)
    opens in another browser context, which creates the account and lands in the inbox;
    the owner then sees the new member. axe-core: no violations; screenshots 1280/390 px."""

    from .conftest import free_port
    from .test_browser import check_page, chromium_serving, sign_in

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    smtp_port, box = smtp_server
    app = make_app(PUBLIC_BASE_URL=base, TRUSTED_HOSTS=["127.0.0.1", "localhost"],
                   MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp_port,
                   MAIL_FROM="loop@closeloop.example")
    site = make_site(app, name="Tea Shop")
    member(app, "owner@shop.example", site, "owner")
    member(app, "agent@shop.example", site, "agent")
    with app.app_context():
        db.session.scalar(select(StaffUser).filter_by(email="owner@shop.example")).name = \
            "Olivia Owner"
        db.session.commit()
    wait = 10_000
    with chromium_serving(app, port) as (browser, _url):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        sign_in(page, base, "owner@shop.example", PASSWORD)
        page.get_by_role("link", name="Settings").click()
        page.get_by_role("link", name="Staff").click()
        page.get_by_role("heading", name="Staff", exact=True).wait_for(timeout=wait)
        page.get_by_label("Email").fill("newcomer@shop.example")
        page.get_by_label("Role", exact=True).select_option("lead")
        page.get_by_role("button", name="Send invitation").click()
        page.get_by_text("Invitation sent to newcomer@shop.example").wait_for(
            timeout=wait)
        check_page(page, "settings-staff")
        [msg] = box.to("newcomer@shop.example")
        link = re.search(rf"{re.escape(base)}/admin/invite/\S+",
                         msg.get_body(("plain",)).get_content()).group(0)

        context = browser.new_context(viewport={"width": 1280, "height": 800})
        newcomer = context.new_page()
        newcomer.goto(link)
        newcomer.get_by_role("heading", name="Join Tea Shop on Closeloop").wait_for(
            timeout=wait)
        check_page(newcomer, "invite-accept")
        newcomer.get_by_label("Your name").fill("Nadia Newcomer")
        newcomer.get_by_label("Password", exact=True).fill("short")
        newcomer.get_by_label("Repeat the password").fill("short")
        newcomer.get_by_role("button", name="Create the account and join").click()
        newcomer.locator("#password-error").wait_for(timeout=wait)
        check_page(newcomer, "invite-accept-error")
        newcomer.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
        newcomer.get_by_label("Repeat the password").fill(NEW_PASSWORD)
        newcomer.get_by_role("button", name="Create the account and join").click()
        newcomer.get_by_text("Welcome to Tea Shop").wait_for(timeout=wait)
        assert newcomer.url == f"{base}/admin/"
        newcomer.goto(link)
        newcomer.get_by_role("heading", name="This invitation no longer works"
                             ).wait_for(timeout=wait)
        check_page(newcomer, "invite-invalid")
        context.close()

        page.reload()
        page.get_by_role("cell", name=re.compile("Nadia Newcomer")).wait_for(
            timeout=wait)
        assert page.get_by_text("No open invitations.").count() == 1
    with app.app_context():
        user = db.session.scalar(select(StaffUser).filter_by(email="newcomer@shop.example"))
        assert permissions.role_on(user, site.id) == "lead"
        assert db.session.get(Site, site.id) is not None
