"""A worker killed with SIGKILL in the middle of sending an email: its lease runs out, the row
is handed out again and exactly one email arrives."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis import Redis
from rq import Queue
from sqlalchemy import select

from app.extensions import db
from app.loop import jobs, notify
from app.models import Case, EmailMessage, Site, Team

from .conftest import make_site, verified_token

ROOT = Path(__file__).resolve().parent.parent
LEASE = 2  # seconds: short, so the test does not wait long for it to run out


class Tarpit:
    """An SMTP port that accepts connections and never says hello: a send stuck mid-job."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


def _worker(pg_url: str, redis_url: str, mail_port: int,
            tmp_path: Path) -> subprocess.Popen[bytes]:
    """The shipped forking `flask worker`, configured only by its environment."""
    env = {**os.environ, "SECRET_KEY": "test-secret-key", "DATABASE_URL": pg_url,
           "REDIS_URL": redis_url, "CLOSELOOP_MAIL_SERVER": "127.0.0.1",
           "CLOSELOOP_MAIL_PORT": str(mail_port), "CLOSELOOP_MAIL_FROM": "loop@closeloop.example",
           "CLOSELOOP_EFFECT_LEASE_SECONDS": str(LEASE),
           "CLOSELOOP_PUBLIC_BASE_URL": "http://localhost",
           "CLOSELOOP_INSTANCE_PATH": str(tmp_path / "instance")}
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker", "--burst"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def test_sigkill_mid_send_sends_exactly_once(make_app, pg_url, redis_url, smtp_server, tmp_path):
    """SIGKILL to a forking `flask worker` while its work horse hangs in SMTP: the horse dies
    with it (no orphan keeps the connection), the row's lease runs out, `retry_due` hands it
    over again and the next worker sends it; one email in all, no lock held meanwhile."""
    port, box = smtp_server
    tarpit = Tarpit()
    app = make_app("postgres", REDIS_URL=redis_url, EFFECT_LEASE_SECONDS=LEASE,
                   MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_FROM="loop@closeloop.example")
    site = make_site(app)
    with app.app_context():
        team = db.session.scalar(select(Team).where(Team.site_id == site.id,
                                                    Team.key == "support"))
        team.emails = ["oncall@shop.example"]
        db.session.get(Site, site.id).name = "Kill test"
        db.session.commit()
    token = verified_token(site, moment="checkout", channel="email")
    assert app.test_client().post(f"/p/{token}", data={"rating": "1"}).status_code == 303
    with app.app_context():
        # Route here; the alert's send job goes to Redis for the subprocess worker.
        Queue("closeloop", connection=Redis.from_url(redis_url)).empty()
        assert jobs.route_response(db.session.scalar(select(Case.response_id))) == "routed"
        email_id = db.session.scalar(select(EmailMessage.id))

    first = _worker(pg_url, redis_url, tarpit.port, tmp_path)
    try:
        assert tarpit.accepted.wait(30), "the worker never reached the SMTP server"
        with app.app_context():  # claimed and committed before the I/O: no lock is held
            row = db.session.get(EmailMessage, email_id)
            assert (row.status, row.attempts) == ("sending", 1)
            row.last_error = "a concurrent write does not wait for the send"
            db.session.commit()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # The work horse died with its parent: its SMTP connection is closed.
        conn = tarpit.conns[0]
        conn.settimeout(10)
        assert conn.recv(1) == b""
    finally:
        if first.poll() is None:
            first.kill()
        tarpit.close()
    assert box.messages == []
    with app.app_context():
        row = db.session.get(EmailMessage, email_id)
        assert row.status == "sending" and row.sent_at is None
        lease = row.lease_until
        db.session.rollback()
        # Nothing is retried while the lease lasts; after it, retry_due hands the row over.
        assert notify.retry_due(lease - timedelta(seconds=0.5)) == 0
        assert notify.retry_due(lease + timedelta(seconds=0.5)) == 1
    while datetime.now(UTC) <= lease:  # the worker's own clock must see the lease expired
        time.sleep(0.05)

    second = _worker(pg_url, redis_url, port, tmp_path)
    assert second.wait(60) == 0
    assert len(box.messages) == 1
    assert box.messages[0][1] == ["oncall@shop.example"]
    with app.app_context():
        row = db.session.get(EmailMessage, email_id)
        assert row.status == "sent" and row.attempts == 2 and row.lease_until is None
