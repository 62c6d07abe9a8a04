"""RQ: enqueueing, the job entry points, the forking worker and the cron process.

Every outbox topic runs through one entry point, `perform_item(topic, ref_id)`, and every
scheduled task through `perform_task(name)`: RQ stores these two import paths, and the handler
registry decides the rest. The worker runs each job inside the app context; a forked work horse
dies with its parent (PR_SET_PDEATHSIG), and the `flask worker` / `flask cron` processes
reconnect with backoff when Redis goes away instead of exiting.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from flask import Flask
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker, Worker
from rq.executions import Execution
from rq.job import Job, get_current_job

from . import Item, job_id, perform, run_task

if TYPE_CHECKING:
    from . import Backend

log = logging.getLogger(__name__)
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)


def _current_job_id() -> str | None:
    job = get_current_job()
    return job.id if job is not None else None


def perform_item(topic: str, ref_id: int) -> Any:
    """RQ entry point of every outbox item."""
    from flask import current_app

    return perform(topic, ref_id, _current_job_id(),
                   follow_up=float(current_app.config["JOBS_FOLLOW_UP_SECONDS"]))


def perform_task(name: str) -> Any:
    """RQ entry point of every scheduled task."""
    return run_task(name, _current_job_id())


def enqueue_many(jobs: Backend, items: list[Item]) -> int:
    """Enqueue items in one pipelined round trip (deterministic job ids)."""
    queue = jobs.rq_queue
    with jobs.redis.pipeline(transaction=False) as pipe:
        for topic, ref_id in items:
            queue.enqueue(perform_item, topic, ref_id, job_id=job_id(topic, ref_id),
                          job_timeout=int(jobs.app.config["JOBS_TIMEOUT"]), result_ttl=3600,
                          failure_ttl=7 * 24 * 3600, pipeline=pipe,
                          description=f"{topic}:{ref_id}")
        pipe.execute()
    return len(items)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies, so a killed worker leaves no horse
    behind (elsewhere: nothing; the horse ends with its job)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _AppContextMixin:
    app: Flask
    _parent_pid: int

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        from ..extensions import db

        if os.getpid() != self._parent_pid:
            _die_with_parent()
            # A forked work horse must not share the parent's pooled DB connections.
            with self.app.app_context():
                db.engine.dispose(close=False)
        with self.app.app_context():  # the handler logs its own line (app.logs.job_log)
            return super().perform_job(job, queue, execution)  # type: ignore[misc]


class AppWorker(_AppContextMixin, Worker):
    """Forking worker (production): a crashed job cannot take the worker down."""

    def __init__(self, *args: Any, app: Flask, **kwargs: Any):
        self.app = app
        self._parent_pid = os.getpid()
        super().__init__(*args, **kwargs)


class AppSimpleWorker(_AppContextMixin, SimpleWorker):
    """In-process worker (job-level tests, and platforms without fork)."""

    def __init__(self, *args: Any, app: Flask, **kwargs: Any):
        self.app = app
        self._parent_pid = os.getpid()
        super().__init__(*args, **kwargs)


def _backoff(attempt: int) -> float:
    return float(min(2 ** attempt, 30))


def run_worker(app: Flask, burst: bool = False, simple: bool = False,
               echo: Any = print) -> None:
    """`flask worker`: sweep the outbox, then work; when Redis goes away, wait with backoff,
    reconnect, sweep again and go on (a process manager is not needed to survive an outage)."""
    from . import warm_up
    from .outbox import sweep

    jobs = app.extensions["closeloop.jobs"]
    cls = AppSimpleWorker if simple else AppWorker
    warm_up(app)  # once, before any fork
    failures = 0
    while True:
        try:
            with app.app_context():
                try:
                    echo(f"outbox sweep at start: {sweep()} item(s) dispatched")
                except REDIS_DOWN:
                    raise
                except Exception as exc:  # noqa: BLE001 - database away: work anyway
                    log.warning("outbox sweep at start failed: %s", exc)
            worker = cls([jobs.rq_queue], connection=jobs.redis, app=app,
                         maintenance_interval=int(app.config["JOBS_MAINTENANCE_SECONDS"]))
            failures = 0
            worker.work(burst=burst, with_scheduler=False, logging_level="INFO")
            return
        except REDIS_DOWN as exc:
            failures += 1
            wait = _backoff(failures)
            log.warning("Redis unreachable (%s); reconnecting in %.0f s", exc, wait)
            time.sleep(wait)


def run_cron(app: Flask, interval: int, echo: Any = print) -> None:
    """`flask cron`: RQ's cron scheduler for every registered task; reconnects when Redis goes
    away. Tasks scheduled every <= 60 s run every `interval` seconds instead."""
    from rq.cron import CronScheduler

    from . import tasks

    jobs = app.extensions["closeloop.jobs"]
    failures = 0
    while True:
        try:
            scheduler = CronScheduler(connection=jobs.redis)
            for t in tasks().values():
                every = t.every
                if every is not None and every <= 60:
                    every = interval
                scheduler.register(perform_task, queue_name=jobs.rq_queue.name, args=(t.name,),
                                   interval=every, cron=t.cron, job_timeout=600, name=t.name)
                if failures == 0:
                    echo(f"scheduled {t.name}: {t.cron or f'every {every} s'}")
            failures = 0
            scheduler.start()
            return
        except REDIS_DOWN as exc:
            failures += 1
            wait = _backoff(failures)
            log.warning("Redis unreachable (%s); cron reconnecting in %.0f s", exc, wait)
            time.sleep(wait)


