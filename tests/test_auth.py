"""Staff sign-in hardening (issue 8): argon2id with rehash of old scrypt hashes, per-account
lockout with backoff, a fresh session on sign-in, sign-out everywhere, password reset by a
signed, expiring, single-use email link, CSRF on every form. Driven through the real forms."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.security import generate_password_hash

from app import staff
from app.extensions import db
from app.models import EmailMessage, StaffUser

from .conftest import login

EMAIL = "lead@shop.example"
PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"
WRONG = "Wrong email or password."
# The per-IP limit is tested in test_cli_admin; here it must not get in the lockout's way.
CFG = {"LIMIT_LOGIN": "1000 per minute", "LIMIT_PASSWORD_RESET": "1000 per minute"}


def _user(app) -> StaffUser:
    with app.app_context():
        user = db.session.scalars(select(StaffUser)).one()
        db.session.expunge(user)
        return user


def _create(app, email: str = EMAIL, password: str = PASSWORD) -> None:
    with app.app_context():
        staff.create(email, password, "lead")


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def signed_in_as(client: FlaskClient) -> str | None:
    """Whom the client's session signs in (the admin header names them), or None."""
    page = client.get("/admin/login").get_data(as_text=True)
    m = re.search(r"<span>([^<]+)</span> <button>Sign out</button>", page)
    return m.group(1) if m else None


def _flash(resp) -> str:
    return re.search(r'<p class="flash" role="alert">([^<]*)</p>', resp.get_data(as_text=True)
                     ).group(1)


def _emails(app) -> list[EmailMessage]:
    with app.app_context():
        return list(db.session.scalars(select(EmailMessage).order_by(EmailMessage.id)))


# -- lockout ----------------------------------------------------------------------------------

def test_lockout_after_five_failures_with_doubling_backoff(make_app, db_kind, clock):
    """Five wrong passwords lock the account for 1 min (even the right password is refused,
    with the same message an unknown email gets); each further failure after the lock
    doubles it, capped at 15 min; a successful sign-in clears it."""
    app = make_app(db_kind, **CFG)
    _create(app)
    client = app.test_client()
    unknown = _flash(login(client, "nobody@shop.example", "whatever it is"))
    for i in range(5):
        r = login(client, EMAIL, f"wrong password {i}")
        assert r.status_code == 200 and _flash(r) == unknown
    user = _user(app)
    assert user.failed_logins == 5 and user.locked_until == clock.now + timedelta(seconds=60)

    r = login(client, EMAIL, PASSWORD)  # locked: refused, same answer, not counted
    assert r.status_code == 200 and _flash(r) == unknown and unknown.startswith(WRONG)
    assert signed_in_as(client) is None and _user(app).failed_logins == 5

    clock.advance(timedelta(seconds=61))  # the lock ran out; one more failure: 2 min
    login(client, EMAIL, "wrong again, sixth")
    assert _user(app).locked_until == clock.now + timedelta(seconds=120)
    for expected in (240, 480, 900, 900):
        clock.advance(timedelta(seconds=901))
        login(client, EMAIL, "wrong once more")
        assert _user(app).locked_until == clock.now + timedelta(seconds=expected)

    clock.advance(timedelta(seconds=901))
    r = login(client, EMAIL, PASSWORD)
    assert r.status_code == 302 and signed_in_as(client) == EMAIL
    user = _user(app)
    assert (user.failed_logins, user.locked_until) == (0, None)
    # counting starts again from zero: four failures lock nothing
    other = app.test_client()
    for i in range(4):
        login(other, EMAIL, f"wrong {i}")
    assert _user(app).locked_until is None
    assert login(other, EMAIL, PASSWORD).status_code == 302


def test_unknown_email_locks_nothing_and_answers_alike(app, client):
    """Failures for an email without an account write nothing and read like any other."""
    _create(app)
    for i in range(7):
        assert _flash(login(client, "ghost@shop.example", f"guess number {i}")).startswith(WRONG)
    assert _user(app).failed_logins == 0
    assert login(client, EMAIL, PASSWORD).status_code == 302


# -- hashes -----------------------------------------------------------------------------------

def test_old_scrypt_hash_is_rehashed_to_argon2id(make_app, db_kind):
    """An account still holding werkzeug's scrypt hash signs in, and from then on holds an
    argon2id hash (OWASP parameters) of the same password; a wrong password still fails."""
    app = make_app(db_kind, **CFG)
    with app.app_context():
        old = generate_password_hash(PASSWORD, method="scrypt:131072:8:1")
        db.session.add(StaffUser(email=EMAIL, password_hash=old, role="lead"))
        db.session.commit()
    client = app.test_client()
    assert _flash(login(client, EMAIL, "not the password")).startswith(WRONG)
    assert _user(app).password_hash == old
    assert login(client, EMAIL, PASSWORD).status_code == 302
    new = _user(app).password_hash
    assert new.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    again = app.test_client()
    assert login(again, EMAIL, PASSWORD).status_code == 302
    assert _user(app).password_hash == new  # not rehashed again
    assert _flash(login(app.test_client(), EMAIL, "not the password")).startswith(WRONG)


# -- sessions ---------------------------------------------------------------------------------

def test_sign_in_starts_a_fresh_session(app, client):
    """A value planted in the session before sign-in (session fixation) is gone after it,
    and the signed session cookie is a new one."""
    _create(app)
    client.get("/admin/login")
    with client.session_transaction() as sess:
        sess["planted"] = "attacker's value"
    before = client.get_cookie("session").value
    assert login(client, EMAIL, PASSWORD).status_code == 302
    with client.session_transaction() as sess:
        assert "planted" not in sess
        assert sess["_user_id"] == str(_user(app).id)
    assert client.get_cookie("session").value != before


def test_secure_session_cookie_has_the_host_prefix(make_app):
    """In production (Secure cookies) the session cookie is `__Host-session`: Secure, Path=/,
    no Domain, so a sibling subdomain or a plain-http page cannot plant one; signing in over
    HTTPS works with it."""
    app = make_app(SESSION_COOKIE_SECURE=True, PUBLIC_BASE_URL="https://localhost")
    assert app.config["SESSION_COOKIE_NAME"] == "__Host-session"
    _create(app)
    client = app.test_client()
    # Over HTTPS Flask-WTF also wants a same-origin Referer, as a browser sends it.
    r = login(client, EMAIL, PASSWORD, base_url="https://localhost",
              headers={"Referer": "https://localhost/admin/login"})
    assert r.status_code == 302
    header = next(h for h in r.headers.getlist("Set-Cookie") if h.startswith("__Host-session="))
    attrs = [a.strip().lower() for a in header.split(";")[1:]]
    assert "secure" in attrs and "path=/" in attrs and "httponly" in attrs
    assert not any(a.startswith("domain=") for a in attrs)
    page = client.get("/admin/", base_url="https://localhost")
    assert page.status_code == 200 and EMAIL in page.get_data(as_text=True)
    # Only where every cookie is Secure: development keeps the plain name.
    assert make_app(ENV_NAME="development").config["SESSION_COOKIE_NAME"] == "session"


def test_set_password_signs_out_every_session(app, runner):
    """`flask staff set-password` ends the sessions of every browser signed in as that
    account; the new password then works, the old one does not."""
    _create(app)
    _create(app, "agent@shop.example")
    first, second, bystander = app.test_client(), app.test_client(), app.test_client()
    for c in (first, second):
        assert login(c, EMAIL, PASSWORD).status_code == 302
    assert login(bystander, "agent@shop.example", PASSWORD).status_code == 302
    assert signed_in_as(first) == signed_in_as(second) == EMAIL

    out = runner.invoke(args=["staff", "set-password", EMAIL, "--password", NEW_PASSWORD])
    assert out.exit_code == 0, out.output
    assert signed_in_as(first) is None and signed_in_as(second) is None
    assert first.get("/admin/").status_code == 302
    assert signed_in_as(bystander) == "agent@shop.example"  # other accounts are untouched
    assert _flash(login(first, EMAIL, PASSWORD)).startswith(WRONG)
    assert login(first, EMAIL, NEW_PASSWORD).status_code == 302


def test_sign_out_everywhere_button(app):
    """"Sign out everywhere" ends this and every other session of the account; plain
    "Sign out" ends only this one."""
    _create(app)
    a, b, c = app.test_client(), app.test_client(), app.test_client()
    for x in (a, b, c):
        login(x, EMAIL, PASSWORD)
    page = a.get("/admin/login").get_data(as_text=True)
    assert a.post("/admin/logout", data={"csrf_token": _csrf(page)}).status_code == 302
    assert signed_in_as(a) is None and signed_in_as(b) == EMAIL
    page = b.get("/admin/login").get_data(as_text=True)
    r = b.post("/admin/logout", data={"csrf_token": _csrf(page), "everywhere": "y"})
    assert r.status_code == 302
    assert signed_in_as(b) is None and signed_in_as(c) is None
    assert login(c, EMAIL, PASSWORD).status_code == 302 and signed_in_as(c) == EMAIL


# -- password reset ---------------------------------------------------------------------------

def _ask_reset(client: FlaskClient, email: str) -> str:
    page = client.get("/admin/reset").get_data(as_text=True)
    r = client.post("/admin/reset", data={"email": email, "csrf_token": _csrf(page)})
    assert r.status_code == 200
    return r.get_data(as_text=True)


def _set_new(client: FlaskClient, path: str, password: str, confirm: str | None = None):
    page = client.get(path)
    assert page.status_code == 200
    return client.post(path, data={"password": password, "confirm": confirm or password,
                                   "csrf_token": _csrf(page.get_data(as_text=True))})


def test_password_reset_by_email_link_works_once(make_app, db_kind, smtp_server):
    """The reset form answers alike for known and unknown emails; the known one gets an
    email (real SMTP) with a link under PUBLIC_BASE_URL; GET of the link changes nothing;
    POST sets the password, ends the account's sessions, and the link then no longer works."""
    port, box = smtp_server
    app = make_app(db_kind, MAIL_SERVER="127.0.0.1", MAIL_PORT=port,
                   MAIL_FROM="loop@closeloop.example", **CFG)
    _create(app)
    client, elsewhere = app.test_client(), app.test_client()
    assert login(elsewhere, EMAIL, PASSWORD).status_code == 302

    answer_known = _ask_reset(client, "Lead@Shop.example")
    answer_unknown = _ask_reset(client, "nobody@shop.example")
    assert answer_known == answer_unknown and "If an account exists" in answer_known
    assert [m["To"] for m in box.to(EMAIL)] == [EMAIL] and len(box.messages) == 1
    msg = box.to(EMAIL)[0]
    assert msg["Subject"] == "Reset your Closeloop password"
    text = msg.get_body(("plain",)).get_content()
    link = re.search(r"http://localhost(/admin/reset/\S+)", text).group(1)
    assert link in msg.get_body(("html",)).get_content()
    with app.app_context():
        assert db.session.scalar(select(EmailMessage.site_id)) is None

    before = _user(app)
    page = client.get(link)
    assert page.status_code == 200 and "Choose a new password" in page.get_data(as_text=True)
    after = _user(app)
    assert (after.password_hash, after.session_version) == (before.password_hash,
                                                             before.session_version)

    short = _set_new(client, link, "too short")
    assert short.status_code == 200 and "At least 12 characters." in short.get_data(as_text=True)
    differ = _set_new(client, link, NEW_PASSWORD, "something else entirely")
    assert "The two passwords differ." in differ.get_data(as_text=True)
    assert _user(app).password_hash == before.password_hash

    done = _set_new(client, link, NEW_PASSWORD)
    assert done.status_code == 302 and done.headers["Location"] == "/admin/login"
    assert signed_in_as(elsewhere) is None
    assert _user(app).session_version == before.session_version + 1
    again = client.get(link)
    assert again.status_code == 404 and "no longer works" in again.get_data(as_text=True)
    page = client.get("/admin/login").get_data(as_text=True)
    assert client.post(link, data={"password": "yet another passphrase",
                                   "confirm": "yet another passphrase",
                                   "csrf_token": _csrf(page)}).status_code == 404
    assert _flash(login(client, EMAIL, PASSWORD)).startswith(WRONG)
    assert login(client, EMAIL, NEW_PASSWORD).status_code == 302


def _link(app) -> str:
    body = _emails(app)[-1].body_text
    return re.search(r"http://localhost(/admin/reset/\S+)", body).group(1)


def test_reset_link_expires(app, client, monkeypatch):
    """A reset link older than PASSWORD_RESET_MAX_AGE (1 h) is refused and changes nothing."""
    from itsdangerous.timed import TimestampSigner

    _create(app)
    _ask_reset(client, EMAIL)
    link = _link(app)
    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + 3540)
    assert client.get(link).status_code == 200  # 59 minutes later: still good
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + 3601)
    assert client.get(link).status_code == 404
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + 3540)
    before = _user(app).password_hash
    page = client.get(link).get_data(as_text=True)
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + 3601)
    r = client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD,
                                "csrf_token": _csrf(page)})
    assert r.status_code == 404 and _user(app).password_hash == before


def test_reset_link_dies_when_the_password_changes(app, client, runner, clock):
    """A link asked for before `flask staff set-password` no longer works after it; a
    forged or tampered token is refused alike; asking again within 5 min sends nothing new."""
    _create(app)
    _ask_reset(client, EMAIL)
    link = _link(app)
    _ask_reset(client, EMAIL)
    assert len(_emails(app)) == 1  # one email per account per 5 minutes
    assert client.get(link[:-2] + ("AA" if not link.endswith("AA") else "BB")).status_code == 404
    assert runner.invoke(args=["staff", "set-password", EMAIL, "--password",
                               NEW_PASSWORD]).exit_code == 0
    assert client.get(link).status_code == 404
    clock.advance(timedelta(minutes=5))
    _ask_reset(client, EMAIL)
    assert len(_emails(app)) == 2 and client.get(_link(app)).status_code == 200


def test_deactivated_account_gets_no_reset_email(app, client):
    """A deactivated account is answered alike but sent nothing, and its links stop working."""
    _create(app)
    _ask_reset(client, EMAIL)
    link = _link(app)
    with app.app_context():
        staff.set_active(EMAIL, False)
    assert "If an account exists" in _ask_reset(client, EMAIL)
    assert len(_emails(app)) == 1 and client.get(link).status_code == 404


# -- CSRF -------------------------------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["missing", "wrong"])
def test_forms_refuse_missing_or_wrong_csrf_token(app, client, token):
    """Sign-in, sign-out, reset request and new-password POSTs without the session's CSRF
    token are 400 and change nothing."""
    _create(app)
    extra = {} if token is None else {"csrf_token": token}
    client.get("/admin/login")
    r = client.post("/admin/login", data={"email": EMAIL, "password": PASSWORD, **extra})
    assert r.status_code == 400 and signed_in_as(client) is None
    r = client.post("/admin/login", data={"email": EMAIL, "password": "wrong one!!", **extra})
    assert r.status_code == 400 and _user(app).failed_logins == 0

    r = client.post("/admin/reset", data={"email": EMAIL, **extra})
    assert r.status_code == 400 and _emails(app) == []

    _ask_reset(client, EMAIL)  # a genuine link, used without the form's token
    link = _link(app)
    before = _user(app)
    r = client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD, **extra})
    assert r.status_code == 400
    after = _user(app)
    assert (after.password_hash, after.session_version) == (before.password_hash,
                                                             before.session_version)

    assert login(client, EMAIL, PASSWORD).status_code == 302
    r = client.post("/admin/logout", data={"everywhere": "y", **extra})
    assert r.status_code == 400 and signed_in_as(client) == EMAIL
    assert _user(app).session_version == before.session_version


def test_reset_request_is_rate_limited(make_app):
    """The reset form counts against LIMIT_PASSWORD_RESET per address (5 per 15 min)."""
    app = make_app()
    client = app.test_client()
    page = client.get("/admin/reset").get_data(as_text=True)
    codes = [client.post("/admin/reset", data={"email": f"x{i}@shop.example",
                                               "csrf_token": _csrf(page)}).status_code
             for i in range(6)]
    assert codes == [200] * 5 + [429]


# -- in a browser -----------------------------------------------------------------------------

def test_reset_pages_in_chromium(make_app):
    """Reset request, "check your email", the new-password form (with its errors) and the
    dead-link page: usable in Chromium, no axe-core violations, screenshots at 1280 and 390 px."""

    from .conftest import free_port
    from .test_browser import check_page, chromium_serving, sign_in

    port = free_port()
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", MAIL_BACKEND="console", **CFG)
    _create(app)
    wait = 10_000
    with chromium_serving(app, port) as (browser, base):
        page = browser.new_page()
        page.goto(f"{base}/admin/login")
        page.get_by_role("link", name="Forgot your password?").click()
        page.get_by_role("heading", name="Reset your password").wait_for(timeout=wait)
        check_page(page, "reset-request")
        page.get_by_label("Email").fill(EMAIL)
        page.get_by_role("button", name="Send the link").click()
        page.get_by_role("heading", name="Check your email").wait_for(timeout=wait)
        check_page(page, "reset-sent")

        with app.app_context():
            body = db.session.scalars(select(EmailMessage)).one().body_text
        link = re.search(rf"http://127\.0\.0\.1:{port}/admin/reset/\S+", body).group(0)
        page.goto(link)
        page.get_by_label("New password", exact=True).fill("short")
        page.get_by_label("Repeat the new password").fill("short")
        page.get_by_role("button", name="Set the new password").click()
        page.locator("#password-error").wait_for(timeout=wait)
        check_page(page, "reset-password-error")
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Set the new password").click()
        page.get_by_text("Your password was changed.").wait_for(timeout=wait)
        page.goto(link)
        page.get_by_role("heading", name="This link no longer works").wait_for(
            timeout=wait)
        check_page(page, "reset-invalid")
        sign_in(page, base, EMAIL, NEW_PASSWORD)
        page.get_by_role("button", name="Sign out everywhere").wait_for(timeout=wait)
    with app.app_context():
        assert db.session.scalar(select(func.count(StaffUser.id))) == 1


def test_sign_in_events_go_to_the_audit_log(app, client, runner):
    """Sign-ins, failures (unknown emails too), the lock, sign-out, sign-out everywhere, a
    reset request and the reset each leave one audit row, with the account and address."""
    from app.models import AuditEvent

    cfg = app.config
    cfg["LIMIT_LOGIN"] = "1000 per minute"
    _create(app)
    login(client, "ghost@shop.example", "whatever it is")
    for i in range(5):
        login(client, EMAIL, f"wrong password {i}")
    with app.app_context():
        db.session.execute(db.update(StaffUser).values(locked_until=None))
        db.session.commit()
    login(client, EMAIL, PASSWORD)
    page = client.get("/admin/login").get_data(as_text=True)
    client.post("/admin/logout", data={"csrf_token": _csrf(page)})
    login(client, EMAIL, PASSWORD)
    page = client.get("/admin/login").get_data(as_text=True)
    client.post("/admin/logout", data={"csrf_token": _csrf(page), "everywhere": "y"})
    _ask_reset(client, EMAIL)
    _set_new(client, _link(app), NEW_PASSWORD)
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        uid = db.session.scalars(select(StaffUser.id)).one()
        got = [(r.action, r.actor, r.object_id) for r in rows]
        assert got == [
            ("staff.login_failed", "system", None),
            *[("staff.login_failed", "system", str(uid))] * 5,
            ("staff.locked", "system", str(uid)),
            ("staff.login", EMAIL, str(uid)),
            ("staff.logout", EMAIL, str(uid)),
            ("staff.login", EMAIL, str(uid)),
            ("staff.logout_everywhere", EMAIL, str(uid)),
            ("staff.password_reset_requested", "system", str(uid)),
            ("staff.password_reset", EMAIL, str(uid)),
        ]
        assert rows[0].details == {"email": "ghost@shop.example"}
        assert rows[6].details == {"failures": 5, "seconds": 60}
        assert {r.remote_addr for r in rows} == {"127.0.0.1"}


def test_guessing_locks_yet_password_reset_still_works(app, client):
    """With the default limits, ten bad sign-ins lock the account and the 11th from that
    address gets 429; the reset form (its own limit) still works from the same address,
    and the new password lifts the lock (checklist 25)."""
    _create(app)
    codes = [login(client, EMAIL, f"guess number {i}").status_code for i in range(11)]
    assert codes == [200] * 10 + [429]
    assert _user(app).locked_until is not None
    assert "If an account exists" in _ask_reset(client, EMAIL)
    assert _set_new(client, _link(app), NEW_PASSWORD).status_code == 302
    user = _user(app)
    assert (user.failed_logins, user.locked_until) == (0, None)
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "127.0.0.2"
    assert login(elsewhere, EMAIL, NEW_PASSWORD).status_code == 302
