"""CLI commands, configuration safety, the staff sign-in and response list, the demo shop."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from app import create_app
from app.extensions import db
from app.models import Moment, Site, StaffUser

from .conftest import base_config, login, public_prompt


def test_sites_create_prints_keys(app, runner):
    """`flask sites create` stores the site with default moments and prints key + secret."""
    out = runner.invoke(args=["sites", "create", "--name", "Shop", "--origin",
                              "https://shop.example", "--origin", "https://www.shop.example/",
                              "--review-url", "https://reviews.example/x"])
    assert out.exit_code == 0, out.output
    assert "public key:" in out.output and "signing secret: sk_" in out.output
    assert "<script src=" in out.output
    with app.app_context():
        site = db.session.scalars(select(Site)).one()
        assert site.allowed_origins == ["https://shop.example", "https://www.shop.example"]
        keys = set(db.session.scalars(select(Moment.key).where(Moment.site_id == site.id)))
        assert {"checkout", "post_chat", "delivery", "product_page"} <= keys


@pytest.mark.parametrize("origin", ["shop.example", "https://a.example/path", "https://*.x",
                                    "javascript:alert(1)", "https://a.example;frame-src"])
def test_sites_create_refuses_bad_origins(runner, origin):
    """Origins must be scheme://host[:port]: anything else would weaken CSP/CORS."""
    out = runner.invoke(args=["sites", "create", "--name", "S", "--origin", origin])
    assert out.exit_code != 0


def test_staff_create_and_login(app, client, runner):
    """Staff accounts use argon2id (OWASP: m=19 MiB, t=2, p=1); wrong passwords are refused;
    next= stays local."""
    out = runner.invoke(args=["staff", "create", "lead@shop.example", "--role", "lead",
                              "--password", "a long enough password"])
    assert out.exit_code == 0, out.output
    with app.app_context():
        assert db.session.scalars(select(StaffUser)).one().password_hash.startswith(
            "$argon2id$v=19$m=19456,t=2,p=1$")
    assert client.get("/admin/").status_code == 302
    bad = login(client, "lead@shop.example", "wrong password!!")
    assert bad.status_code == 200 and "Wrong email or password" in bad.get_data(as_text=True)
    ok = login(client, "LEAD@shop.example", "a long enough password")
    assert ok.status_code == 302 and ok.headers["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_login_needs_csrf_and_is_rate_limited(app, client, runner):
    """A sign-in POST without the CSRF token is refused; the 11th attempt gets 429."""
    r = client.post("/admin/login", data={"email": "a@b.example", "password": "x"})
    assert r.status_code == 400 and "CSRF" in r.get_data(as_text=True)
    codes = [login(client, "nobody@shop.example", f"guess-{i}").status_code for i in range(11)]
    assert codes[:9] == [200] * 9 and codes[-1] == 429


def test_open_redirect_blocked(app, client, runner):
    """next=//evil.example after login stays on this site."""
    runner.invoke(args=["staff", "create", "a@shop.example", "--password", "a long password!"])
    import re

    page = client.get("/admin/login?next=//evil.example").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    r = client.post("/admin/login?next=//evil.example", data={
        "email": "a@shop.example", "password": "a long password!", "csrf_token": token})
    assert r.headers["Location"] == "/admin/"


def test_demo_command_and_pages(app, client, runner):
    """`flask demo` seeds the demo site and prints a working staff login; each demo page
    embeds the script tag for its moment."""
    out = runner.invoke(args=["demo", "--origin", "http://localhost"])
    assert out.exit_code == 0, out.output
    email, password = out.output.split("staff login:")[1].split()[1::2][:2]
    assert login(client, email, password).status_code == 302
    for page, moment in (("product", "product_page"), ("checkout", "checkout"),
                         ("tracking", "delivery")):
        html = client.get(f"/demo/{page}").get_data(as_text=True)
        assert f'data-moment="{moment}"' in html and 'data-site="pk_demo"' in html
    assert "Closeloop.show" not in client.get("/demo/chat").get_data(as_text=True)
    site = type("S", (), {"public_key": "pk_demo"})
    assert public_prompt(client, site, "post_chat", origin="http://localhost")
    # The tracking page's moment takes voice notes: the demo shows the recorder.
    delivery = client.get(public_prompt(client, site, "delivery", origin="http://localhost"))
    assert "data-voice" in delivery.get_data(as_text=True)
    # Running it again keeps one demo site and resets the demo login.
    assert runner.invoke(args=["demo"]).exit_code == 0
    with app.app_context():
        assert len(db.session.scalars(select(Site)).all()) == 1


def test_demo_disabled_by_default(make_app):
    """Production apps do not serve the demo shop."""
    app = make_app(DEMO_ENABLED=False)
    assert app.test_client().get("/demo/").status_code == 404


def test_refuses_to_start_without_secret():
    """No SECRET_KEY, no app: nothing is ever signed with a default secret."""
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app(base_config(SECRET_KEY=None))


def test_database_down_is_503():
    """An unreachable database gives a retryable 503 with Retry-After, not a 500."""
    from itsdangerous import URLSafeTimedSerializer

    app = create_app(base_config(
        SQLALCHEMY_DATABASE_URI="postgresql+psycopg://nobody@127.0.0.1:1/x",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 1}}))
    token = URLSafeTimedSerializer("k", salt="s").dumps({"site": "pk_x", "moment": "checkout"})
    r = app.test_client().post(f"/p/{token}", data={"rating": "5"})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
    assert "briefly unavailable" in r.get_data(as_text=True)
    with app.app_context(), pytest.raises(OperationalError):
        db.session.execute(select(1))


def test_staff_create_twice_is_one_line_without_the_hash(app, runner):
    """A second `staff create` for an email prints one `error:` line naming it, exit 1, and
    never the IntegrityError with its SQL parameters (the new password hash)."""
    args = ["staff", "create", "lead@shop.example", "--password", "a long enough password"]
    assert runner.invoke(args=args).exit_code == 0
    out = runner.invoke(args=[*args[:2], "LEAD@shop.example", *args[3:]])
    assert out.exit_code == 1
    assert out.output.splitlines() == [
        "error: a staff account with email lead@shop.example already exists"]
    with app.app_context():
        assert len(db.session.scalars(select(StaffUser)).all()) == 1


def test_staff_list_deactivate_and_set_password(app, client, runner):
    """`staff list` shows each account; `staff deactivate` refuses its sign-ins and ends its
    open session; `staff set-password` replaces the password under the same policy."""
    for email, role in (("a@shop.example", "lead"), ("b@shop.example", "agent")):
        assert runner.invoke(args=["staff", "create", email, "--role", role,
                                   "--password", "first password!!"]).exit_code == 0
    lines = runner.invoke(args=["staff", "list"]).output.splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        ["a@shop.example", "lead", "active"], ["b@shop.example", "agent", "active"]]

    assert login(client, "b@shop.example", "first password!!").status_code == 302
    assert client.get("/admin/").status_code == 200
    out = runner.invoke(args=["staff", "deactivate", "B@shop.example"])
    assert out.exit_code == 0 and out.output == "deactivated b@shop.example\n"
    assert client.get("/admin/").status_code == 302  # the open session no longer counts
    assert login(client, "b@shop.example", "first password!!").status_code == 200
    assert runner.invoke(args=["staff", "list"]).output.splitlines()[1].split("\t")[2] == (
        "deactivated")

    short = runner.invoke(args=["staff", "set-password", "a@shop.example", "--password", "short"])
    assert short.exit_code == 1
    assert short.output == "error: passwords need at least 12 characters\n"
    out = runner.invoke(args=["staff", "set-password", "a@shop.example"],
                        env={"CLOSELOOP_STAFF_PASSWORD": "second password!"})
    assert out.exit_code == 0, out.output
    other = app.test_client()
    assert login(other, "a@shop.example", "first password!!").status_code == 200
    assert login(other, "a@shop.example", "second password!").status_code == 302

    for cmd in (["deactivate", "nobody@shop.example"],
                ["set-password", "nobody@shop.example", "--password", "long enough pass"]):
        out = runner.invoke(args=["staff", *cmd])
        assert out.exit_code == 1
        assert out.output == "error: no staff account with email nobody@shop.example\n"


def test_unexpected_cli_error_is_one_line(monkeypatch):
    """Any command's unexpected exception is one `error:` line and exit 1, with no traceback
    and no SQL; `flask --debug` (FLASK_DEBUG=1) lets the exception through."""
    app = create_app(base_config(
        SQLALCHEMY_DATABASE_URI="postgresql+psycopg://nobody@127.0.0.1:1/x",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 1}}))
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    out = app.test_cli_runner().invoke(args=["sites", "list"])
    assert out.exit_code == 1
    [line] = out.output.splitlines()
    assert line.startswith("error: OperationalError: connection ") and "[SQL" not in line
    assert line.endswith("(flask --debug ... shows the traceback)")
    monkeypatch.setenv("FLASK_DEBUG", "1")
    out = app.test_cli_runner().invoke(args=["sites", "list"])
    assert isinstance(out.exception, OperationalError)


def test_real_flask_command_fails_in_one_line(tmp_path):
    """Through the real `flask` executable: a duplicate `staff create` writes exactly one line
    to stderr, without a traceback or the password hash."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "CLOSELOOP_"))}
    env.update(SECRET_KEY="cli-test", CLOSELOOP_INSTANCE_PATH=str(tmp_path),
               CLOSELOOP_PUBLIC_BASE_URL="https://feedback.example",
               DATABASE_URL=f"sqlite:///{tmp_path}/cli.sqlite3",
               CLOSELOOP_STAFF_PASSWORD="a long enough password")

    def flask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert flask("db", "upgrade").returncode == 0
    assert flask("staff", "create", "x@shop.example").returncode == 0
    again = flask("staff", "create", "x@shop.example")
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr == "error: a staff account with email x@shop.example already exists\n"
