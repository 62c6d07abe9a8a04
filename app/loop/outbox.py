"""The outbox sweeper: re-dispatches committed work that never reached (or finished on) a
worker — Redis was down, the web process died after commit, Redis lost its data."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from rq.job import Job, JobStatus
from sqlalchemy import select

from .. import queue
from ..extensions import db
from ..models import Outbox, utcnow

log = logging.getLogger(__name__)
_ACTIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(30 * 2**attempts, 3600))


def sweep(now: datetime | None = None, grace: timedelta | None = None, limit: int = 1000) -> int:
    """Dispatch pending outbox items older than `grace`; returns how many were dispatched.

    Safe to run concurrently and repeatedly: items whose job is still queued or running are
    left alone, and the jobs themselves are idempotent.
    """
    now = now or utcnow()
    cfg = current_app.config
    grace = cfg["OUTBOX_SWEEP_GRACE"] if grace is None else grace
    rows = list(db.session.scalars(
        select(Outbox)
        .where(Outbox.done_at.is_(None), Outbox.failed_at.is_(None),
               Outbox.created_at <= now - grace)
        .order_by(Outbox.id)
        .limit(limit)
    ))
    due = [r for r in rows
           if r.last_enqueued_at is None or r.last_enqueued_at <= now - _backoff(r.attempts)]
    if not due:
        db.session.rollback()
        return 0
    jobs = queue.jobs()
    if jobs.backend == "rq":
        due = _not_active(jobs, due)
    ids = []
    for r in due:
        if r.attempts >= cfg["OUTBOX_MAX_ATTEMPTS"]:
            r.failed_at = now
            r.last_error = f"gave up after {r.attempts} dispatches"
            continue
        r.attempts += 1
        r.last_enqueued_at = now
        ids.append((r.topic, r.ref_id))
    # Record the attempt before dispatching, so a crash here can only under-count.
    db.session.commit()
    dispatched = _hand_over(jobs, ids)
    if dispatched:
        log.info("outbox sweep dispatched %d item(s)", dispatched)
    return dispatched


def _not_active(jobs: queue.Jobs, rows: list[Outbox]) -> list[Outbox]:
    """Drop rows whose RQ job is still queued or running (one Redis round trip)."""
    found = Job.fetch_many([queue.job_id(r.topic, r.ref_id) for r in rows],
                           connection=jobs.redis)
    out = []
    for row, job in zip(rows, found, strict=True):
        if job is not None and job.get_status(refresh=False) in _ACTIVE:
            continue
        out.append(row)
    return out


def relay(limit: int = 500) -> int:
    """Enqueue outbox items that no one has dispatched yet (JOBS_RELAY mode: web processes
    commit the outbox row and leave the enqueue to this relay, run by every `flask worker`).
    Concurrent relays never take the same rows (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite
    has one writer at a time). Returns how many were enqueued."""
    jobs = queue.jobs()
    now = utcnow()
    q = (select(Outbox)
         .where(Outbox.done_at.is_(None), Outbox.failed_at.is_(None), Outbox.attempts == 0)
         .order_by(Outbox.id).limit(limit))
    if db.session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    rows = list(db.session.scalars(q))
    if not rows:
        db.session.rollback()
        return 0
    items = [(r.topic, r.ref_id) for r in rows]
    for r in rows:
        r.attempts, r.last_enqueued_at = 1, now
    # Claimed before enqueueing: a crash in between leaves them to the sweeper's backoff.
    db.session.commit()
    return _hand_over(jobs, items)


def _hand_over(jobs: queue.Jobs, items: list[tuple[str, int]]) -> int:
    """Enqueue claimed items in one Redis pipeline, or run them here without Redis (a failed
    inline job stays pending for the next sweep); returns how many were handed over."""
    if jobs.backend == "rq":
        with jobs.redis.pipeline(transaction=False) as pipe:
            for topic, ref_id in items:
                jobs.enqueue(topic, ref_id, pipeline=pipe)
            pipe.execute()
        return len(items)
    done = 0
    for topic, ref_id in items:
        try:
            queue.resolve(queue.JOBS[topic])(ref_id)
            done += 1
        except Exception:  # noqa: BLE001 - stays pending for the next sweep
            db.session.rollback()
            log.exception("inline job %s:%s failed", topic, ref_id)
    return done


def run_relay(app: Any, interval: float, stop: threading.Event) -> None:
    """Relay loop for a worker process's background thread (until `stop` is set)."""
    while not stop.is_set():
        moved = 0
        try:
            with app.app_context():
                moved = relay()
        except Exception:  # noqa: BLE001 - Redis or the database away: try again shortly
            log.warning("outbox relay pass failed", exc_info=True)
        if not moved:
            stop.wait(interval)
