"""The transactional outbox: work is written in the transaction of the fact that caused it, and
the sweep hands over again whatever never finished (Redis was down, a process died after its
commit, Redis lost its data, a job failed)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..models import Outbox, utcnow
from . import Item, backend, job_id, on_commit, task

log = logging.getLogger(__name__)


def add(topic: str, ref_id: int, now: datetime | None = None) -> None:
    """Owe `topic` for `ref_id`: an outbox row in the current transaction, handed to the job
    backend when it commits."""
    db.session.add(Outbox(topic=topic, ref_id=ref_id, created_at=now or utcnow(), attempts=0))
    on_commit(topic, ref_id)


def rearm(topic: str, ref_id: int, now: datetime | None = None) -> None:
    """Owe an existing (topic, ref_id) again (e.g. an amended answer is routed again)."""
    db.session.execute(
        Outbox.__table__.update()
        .where(Outbox.topic == topic, Outbox.ref_id == ref_id)
        .values(done_at=None, failed_at=None, attempts=0, last_enqueued_at=None,
                created_at=now or utcnow())
    )
    on_commit(topic, ref_id)


def defer(topic: str, ref_id: int, until: datetime) -> None:
    """Owe a pending (topic, ref_id) again from `until` on, in the current transaction: the
    sweep hands it over at `until` (within JOBS_SWEEP_SECONDS) unless a hand-over (on_commit)
    brings it sooner. For a job that finds it has to wait for something with a deadline.

    `created_at` is when the row is owed from (rearm moves it to now as well); it is set the
    sweep's grace before `until`, because nothing else will hand the row over at `until`."""
    db.session.execute(
        Outbox.__table__.update()
        .where(Outbox.topic == topic, Outbox.ref_id == ref_id, Outbox.done_at.is_(None))
        .values(created_at=until - _grace(), last_enqueued_at=None)
    )


def _grace() -> timedelta:
    """OUTBOX_SWEEP_GRACE as a timedelta (an environment variable gives seconds)."""
    grace = current_app.config["OUTBOX_SWEEP_GRACE"]
    return grace if isinstance(grace, timedelta) else timedelta(seconds=float(grace))


def finish(topic: str, ref_id: int, now: datetime | None = None) -> None:
    """Mark (topic, ref_id) done in the current transaction."""
    db.session.execute(Outbox.__table__.update()
                       .where(Outbox.topic == topic, Outbox.ref_id == ref_id,
                              Outbox.done_at.is_(None))
                       .values(done_at=now or utcnow(), last_error=None))


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(30 * 2**attempts, 3600))


@task("sweep_outbox", every=60)
def sweep(now: datetime | None = None, grace: timedelta | None = None, limit: int = 1000) -> int:
    """Hand over pending outbox items older than `grace`; returns how many.

    Safe to run concurrently and repeatedly: items whose RQ job is still queued or running are
    left alone, and the handlers are idempotent.
    """
    now = now or utcnow()
    cfg = current_app.config
    grace = _grace() if grace is None else grace
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
    jobs = backend()
    if jobs.kind == "rq":
        due = _not_active(due)
    items: list[Item] = []
    for r in due:
        if r.attempts >= cfg["OUTBOX_MAX_ATTEMPTS"]:
            r.failed_at = now
            r.last_error = f"gave up after {r.attempts} dispatches"
            log.error("outbox %s:%s gave up after %d dispatches", r.topic, r.ref_id, r.attempts)
            continue
        r.attempts += 1
        r.last_enqueued_at = now
        items.append((r.topic, r.ref_id))
        on_commit(r.topic, r.ref_id)
    # The attempt is recorded in the same commit that hands the items over.
    db.session.commit()
    if items:
        log.info("outbox sweep handed over %d item(s)", len(items))
    return len(items)


def _not_active(rows: list[Outbox]) -> list[Outbox]:
    """Drop rows whose RQ job is queued or running (a job of a dead worker is first moved out
    of the started registry by RQ's own abandoned-job cleanup)."""
    from rq.job import Job, JobStatus
    from rq.registry import StartedJobRegistry

    jobs = backend()
    StartedJobRegistry(queue=jobs.rq_queue).cleanup()
    active = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}
    found = Job.fetch_many([job_id(r.topic, r.ref_id) for r in rows], connection=jobs.redis)
    return [row for row, job in zip(rows, found, strict=True)
            if job is None or job.get_status(refresh=False) not in active]
