"""Errors and logs: only an unreachable database is a 503; every other failure is a 500 logged
with its traceback and request id; one log line per request and per job, JSON on request."""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from app import create_app, logs
from app.config import env_overrides
from app.errors import is_connection_error
from app.extensions import db

from .conftest import ORIGIN, base_config, verified_token

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root_logging():
    """Restore the root logger's handlers and level after a test that configures them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def _prompt_body(site) -> str:
    return json.dumps({"site": site.public_key, "moment": "checkout", "vid": "v-1"})


def test_missing_table_is_a_logged_500_not_a_503(make_app, caplog):
    """A missing migration on SQLite (a table the code needs is not there) answers 500 with
    a request id, and the log has the traceback naming the table under that request id."""
    from .conftest import make_site

    app = make_app(PROPAGATE_EXCEPTIONS=False)
    site = make_site(app)
    with app.app_context():
        db.session.execute(sa.text("DROP TABLE impressions"))  # as if its migration never ran
        db.session.commit()
    caplog.set_level(logging.INFO)
    r = app.test_client().post("/e/prompt", data=_prompt_body(site),
                               headers={"Origin": ORIGIN, "Content-Type": "text/plain"})
    assert r.status_code == 500
    rid = r.headers["X-Request-ID"]
    assert r.json == {"error": "internal_error", "message": "Something went wrong on our side.",
                      "request_id": rid}
    assert "Retry-After" not in r.headers
    errors = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].request_id == rid and errors[0].exc_info is not None
    assert "Traceback" in caplog.text and "no such table: impressions" in caplog.text
    assert not [rec for rec in caplog.records if "unavailable" in rec.getMessage()]


def test_unreachable_database_is_still_503():
    """PostgreSQL refusing connections stays a retryable 503 with Retry-After, also with
    exceptions not propagated (as in production)."""
    app = create_app(base_config(
        PROPAGATE_EXCEPTIONS=False,
        SQLALCHEMY_DATABASE_URI="postgresql+psycopg://nobody@127.0.0.1:1/x",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 1}}))
    r = app.test_client().post("/e/prompt", data=json.dumps({"site": "pk_x", "moment": "c"}),
                               headers={"Origin": ORIGIN, "Content-Type": "text/plain"})
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.json["error"] == "unavailable"


def test_connection_errors_are_told_from_bugs(pg_url, tmp_path):
    """Connection-level errors (PostgreSQL backend terminated, connection refused; SQLite
    locked or not openable) are "unavailable"; a missing table, a cancelled statement or a
    constraint violation are not."""
    engine = sa.create_engine(pg_url)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    found: dict[str, BaseException] = {}
    with engine.connect() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as a:
            a.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(OperationalError) as terminated:
            conn.execute(sa.text("SELECT 1"))
        found["terminated"] = terminated.value
    with engine.connect() as conn:
        with pytest.raises(sa.exc.ProgrammingError) as missing:
            conn.execute(sa.text("SELECT * FROM no_such_table"))
        found["missing table"] = missing.value
    with engine.connect() as conn:
        conn.execute(sa.text("SET statement_timeout = 10"))
        with pytest.raises(OperationalError) as cancelled:
            conn.execute(sa.text("SELECT pg_sleep(1)"))
        found["cancelled"] = cancelled.value
    refused = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/x")
    with pytest.raises(OperationalError) as refused_exc:
        refused.connect()
    found["refused"] = refused_exc.value
    engine.dispose()
    admin.dispose()

    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("SELECT * FROM t")
    with pytest.raises(sqlite3.OperationalError) as no_table:
        holder.execute("SELECT * FROM nowhere")
    with pytest.raises(sqlite3.OperationalError) as cannot_open:
        sqlite3.connect(tmp_path / "no" / "dir.sqlite3")
    holder.close()
    other.close()
    for name, orig in (("locked", locked.value), ("no such table", no_table.value),
                       ("cannot open", cannot_open.value)):
        found["sqlite " + name] = OperationalError("SELECT", {}, orig)

    verdict = {name: is_connection_error(exc) for name, exc in found.items()}
    assert verdict == {"terminated": True, "missing table": False, "cancelled": False,
                       "refused": True, "sqlite locked": True, "sqlite no such table": False,
                       "sqlite cannot open": True}


def test_one_line_per_request_with_its_id(app, site, caplog):
    """Each request logs one line (method, path with the token cut short, no query string,
    status, duration) under its request id; a sane X-Request-ID is kept and echoed, anything
    else is replaced by a fresh id."""
    caplog.set_level(logging.INFO)
    client = app.test_client()
    token = verified_token(site)
    r = client.get(f"/p/{token}?o=https%3A%2F%2Fshop.example",
                   headers={"X-Request-ID": "lb-4f2a.77"})
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "lb-4f2a.77"
    lines = [rec for rec in caplog.records if rec.name == "app.request"]
    assert len(lines) == 1
    line = lines[0]
    assert (line.method, line.status, line.request_id) == ("GET", 200, "lb-4f2a.77")
    assert line.path == f"/p/{token[:6]}…" and line.duration_ms >= 0
    assert token[:20] not in caplog.text and "shop.example" not in caplog.text

    caplog.clear()
    for bad in ("two words", "x" * 200, "\u00e9t\u00e9", "<script>"):
        r = client.get("/healthz", headers={"X-Request-ID": bad})
        assert r.headers["X-Request-ID"] != bad and len(r.headers["X-Request-ID"]) == 32
    r = client.get("/admin/login")
    assert len(r.headers["X-Request-ID"]) == 32
    assert [rec.request_id for rec in caplog.records if rec.name == "app.request"
            and rec.path == "/admin/login"] == [r.headers["X-Request-ID"]]


def test_json_lines_when_log_format_is_json(make_app, root_logging):
    """LOG_FORMAT=json: every line is one JSON object with level, logger, pid, message and the
    request's fields; the unprefixed LOG_FORMAT/LOG_LEVEL env names are read too."""
    assert env_overrides({"LOG_FORMAT": "json", "LOG_LEVEL": "debug"}) == {
        "LOG_FORMAT": "json", "LOG_LEVEL": "debug"}
    assert env_overrides({"LOG_FORMAT": "json", "CLOSELOOP_LOG_FORMAT": "text"}) == {}
    root_logging.handlers[:] = []  # no one configured logging: the app does
    app = make_app(LOG_FORMAT="json")
    handler = next(h for h in root_logging.handlers if isinstance(h, logs.Handler))
    stream = io.StringIO()
    handler.setStream(stream)
    r = app.test_client().get("/admin/login", headers={"X-Request-ID": "req-1"})
    assert r.status_code == 200
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1, lines
    line = lines[0]
    assert {k: line[k] for k in ("level", "logger", "pid", "request_id", "method", "path",
                                 "status")} == {
        "level": "INFO", "logger": "app.request", "pid": os.getpid(), "request_id": "req-1",
        "method": "GET", "path": "/admin/login", "status": 200}
    assert isinstance(line["duration_ms"], float) and line["time"]


def test_job_log_names_the_outbox_row(caplog):
    """job_log: one INFO line per job with id, row, duration and outcome; records inside carry
    the job id; a failure is an ERROR naming topic:ref_id with the traceback, re-raised."""
    caplog.set_level(logging.INFO)
    with logs.job_log("send_email", 42, "job-1") as job:
        logging.getLogger("app.loop.notify").info("sending")
        job.outcome = "sent"
    with pytest.raises(ZeroDivisionError), logs.job_log("deliver_webhook", 7, "job-2"):
        1 / 0  # noqa: B018 - the failure under test
    inner, done, failed = caplog.records
    assert inner.job_id == "job-1" and inner.getMessage() == "sending"
    assert done.levelno == logging.INFO and done.job_id == "job-1"
    assert (done.outbox_row, done.outcome) == ("send_email:42", "sent")
    assert done.duration_ms >= 0 and "send_email:42 sent in" in done.getMessage()
    assert failed.levelno == logging.ERROR and failed.job_id == "job-2"
    assert failed.outcome == "failed" and "outbox row deliver_webhook:7" in failed.getMessage()
    assert failed.exc_info[0] is ZeroDivisionError
    assert "Traceback" in caplog.text
    assert logs.current("job_id") is None  # unbound after the block


def test_processes_log_info_without_any_setup(tmp_path):
    """A fresh process that builds the app (gunicorn worker, `flask worker`, `flask cron`)
    writes INFO lines to stderr, as JSON with LOG_FORMAT=json: nothing is lost."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "CLOSELOOP_"))}
    env.update(SECRET_KEY="k", CLOSELOOP_INSTANCE_PATH=str(tmp_path),
               CLOSELOOP_PUBLIC_BASE_URL="http://127.0.0.1:1", LOG_FORMAT="json")
    code = ("import logging; from app import create_app; create_app(); "
            "logging.getLogger('app.jobs').info('worker started')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [(x["level"], x["logger"], x["message"]) for x in lines] == [
        ("INFO", "app.jobs", "worker started")]


@pytest.mark.postgres
def test_postgres_connections_fail_fast_when_the_peer_vanishes(make_app):
    """Every PostgreSQL connection the app opens carries a connect timeout, TCP keepalives and
    a bound on unacknowledged writes (libpq accepted them: they are on the live connection),
    and explicit settings win over the defaults."""
    app = make_app("postgres", SQLALCHEMY_ENGINE_OPTIONS={
        "pool_pre_ping": True, "connect_args": {"connect_timeout": 3}})
    with app.app_context():
        raw = db.session.connection().connection.driver_connection
        params = raw.info.get_parameters()
    assert params["connect_timeout"] == "3"
    assert params["keepalives"] == "1" and params["keepalives_idle"] == "30"
    assert params["keepalives_interval"] == "10" and params["keepalives_count"] == "3"
    assert params["tcp_user_timeout"] == "30000"
