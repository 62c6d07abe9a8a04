"""JOBS_RELAY: web requests only commit the outbox row; the workers' relay enqueues each row
once, even with several relays at the same time, and routing then runs exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from redis import Redis
from sqlalchemy import func, insert, select

from app.extensions import db
from app.loop.outbox import relay
from app.models import Case, Outbox, utcnow

from .conftest import make_site, public_prompt, run_worker

ROOT = Path(__file__).resolve().parent.parent


def _queued(redis_url: str) -> list[str]:
    r = Redis.from_url(redis_url)
    try:
        return [j.decode() for j in r.lrange("rq:queue:closeloop", 0, -1)]
    finally:
        r.close()


def test_web_leaves_enqueue_to_the_relay(make_app, db_kind, redis_url):
    """With JOBS_RELAY the answer's request touches no queue; one relay pass enqueues each
    answer once, a second pass nothing, and the worker routes every answer."""
    app = make_app(db_kind, REDIS_URL=redis_url, JOBS_RELAY=True, JOBS_DISPATCH_ASYNC=False)
    site = make_site(app)
    client = app.test_client()
    for rating in (1, 3, 5, 4, 2):
        path = public_prompt(client, site, "checkout")
        assert client.post(path, data={"rating": str(rating)}).status_code == 303
    assert _queued(redis_url) == []
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Outbox.attempts == 0)) == 5
        assert relay() == 5
        assert relay() == 0
    assert len(set(_queued(redis_url))) == 5
    assert run_worker(app) == 5
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Case.routed_at.is_not(None))) == 5
        assert db.session.scalar(select(func.count()).where(Outbox.done_at.is_(None))) == 0


def test_concurrent_relays_never_take_the_same_rows(make_app, redis_url):
    """Four relays draining 400 rows at once on PostgreSQL enqueue each row exactly once."""
    app = make_app("postgres", REDIS_URL=redis_url, JOBS_RELAY=True)
    now = utcnow()
    with app.app_context():
        db.session.execute(insert(Outbox), [
            {"topic": "route_response", "ref_id": i, "created_at": now, "attempts": 0}
            for i in range(1, 401)])
        db.session.commit()
    counts: list[int] = []
    barrier = threading.Barrier(4)

    def drain() -> None:
        total = 0
        with app.app_context():
            barrier.wait()
            while moved := relay(limit=25):
                total += moved
        counts.append(total)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(counts) == 400
    queued = _queued(redis_url)
    assert len(queued) == 400 and len(set(queued)) == 400


def test_worker_command_relays_at_start(make_app, tmp_path, redis_url):
    """`flask worker --burst` with JOBS_RELAY relays what the web committed, then routes it."""
    app = make_app("sqlite", REDIS_URL=redis_url, JOBS_RELAY=True)
    db_url = app.config["SQLALCHEMY_DATABASE_URI"]  # the subprocess opens the same file
    site = make_site(app)
    client = app.test_client()
    for _ in range(3):
        assert client.post(public_prompt(client, site, "checkout"),
                           data={"rating": "2"}).status_code == 303
    env = {**os.environ, "SECRET_KEY": "test-secret-key", "DATABASE_URL": db_url,
           "REDIS_URL": redis_url, "CLOSELOOP_JOBS_RELAY": "true"}
    out = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "worker", "--burst",
                          "--simple"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "outbox relay at start: 3 item(s) enqueued" in out.stdout
    with app.app_context():
        db.session.expire_all()
        assert db.session.scalar(select(func.count()).where(Case.routed_at.is_not(None))) == 3
