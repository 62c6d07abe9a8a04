"""A worker killed with SIGKILL in the middle of sending an email: RQ hands the abandoned job
out again and exactly one email arrives."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from redis import Redis
from rq import Queue
from rq.registry import StartedJobRegistry
from sqlalchemy import select

from app.extensions import db
from app.loop import jobs
from app.models import Case, EmailMessage, Site, Team

from .conftest import make_site, verified_token

ROOT = Path(__file__).resolve().parent.parent


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


def _worker(pg_url: str, redis_url: str, mail_port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SECRET_KEY": "test-secret-key", "DATABASE_URL": pg_url,
           "REDIS_URL": redis_url, "CLOSELOOP_MAIL_SERVER": "127.0.0.1",
           "CLOSELOOP_MAIL_PORT": str(mail_port), "CLOSELOOP_MAIL_FROM": "loop@closeloop.example",
           # Real SMTP even where `make run` wrote a console backend into instance/config.py.
           "CLOSELOOP_MAIL_BACKEND": "smtp"}
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker", "--burst",
                             "--simple"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def test_sigkill_mid_send_sends_exactly_once(make_app, pg_url, redis_url, smtp_server):
    """SIGKILL while the SMTP conversation hangs: the row lock dies with the connection, RQ's
    abandoned-job cleanup requeues the job, the next worker sends it; one email in all."""
    port, box = smtp_server
    tarpit = Tarpit()
    app = make_app("postgres", REDIS_URL=redis_url, JOBS_RETRY_INTERVALS=[0, 0, 0],
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
        assert jobs.route_response(db.session.scalar(select(Case.response_id))) == "routed"
        email_id = db.session.scalar(select(EmailMessage.id))

    first = _worker(pg_url, redis_url, tarpit.port)
    try:
        assert tarpit.accepted.wait(30), "the worker never reached the SMTP server"
        time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        tarpit.close()
    assert box.messages == []
    with app.app_context():
        db.session.expire_all()
        row = db.session.get(EmailMessage, email_id)
        assert (row.status, row.sent_at) == ("pending", None)  # the send's transaction died

    # RQ's maintenance finds the job abandoned once its heartbeat lapses; do it now.
    redis = Redis.from_url(redis_url)
    registry = StartedJobRegistry(queue=Queue("closeloop", connection=redis))
    assert len(registry.get_job_ids(cleanup=False)) == 1
    registry.cleanup(timestamp=time.time() + 10_000)
    redis.close()

    second = _worker(pg_url, redis_url, port)
    assert second.wait(60) == 0
    assert len(box.messages) == 1
    assert box.messages[0][1] == ["oncall@shop.example"]
    with app.app_context():
        db.session.expire_all()
        row = db.session.get(EmailMessage, email_id)
        assert row.status == "sent" and row.attempts == 1
