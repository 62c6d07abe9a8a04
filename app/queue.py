"""Background jobs: RQ on Redis when REDIS_URL is set, otherwise in this process after commit.

Callers only ever `dispatch(topic, ref_id)` after their transaction committed an Outbox row;
if the dispatch is lost (Redis down, process killed), the outbox sweeper re-dispatches it.
"""

from __future__ import annotations

import logging
import os
import queue as stdqueue
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, has_request_context
from redis import Redis
from rq import Queue, Retry

log = logging.getLogger(__name__)

# Outbox topic -> job function (dotted path, so RQ workers import it themselves).
JOBS: dict[str, str] = {
    "route_response": "app.loop.jobs.route_response",
    "send_email": "app.loop.notify.send_email",
    "deliver_webhook": "app.loop.notify.deliver_webhook",
}
SWEEP_INTERVAL = 60.0


def job_id(topic: str, ref_id: int) -> str:
    """Deterministic RQ job id, so the sweeper can see whether a job is already queued."""
    return f"{topic}-{ref_id}"


def resolve(path: str) -> Callable[..., Any]:
    """Import a job function from its dotted path."""
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


class Jobs:
    """Per-app job backend; lives in app.extensions['closeloop.jobs']."""

    def __init__(self, app: Flask):
        self.app = app
        cfg = app.config
        self.backend = cfg.get("JOBS_BACKEND") or ("rq" if cfg.get("REDIS_URL") else "inline")
        self.async_dispatch = bool(cfg.get("JOBS_DISPATCH_ASYNC", True))
        self.relay = self.backend == "rq" and bool(cfg.get("JOBS_RELAY", False))
        self._redis: Redis | None = None
        self._queue: Queue | None = None
        self._pending: stdqueue.Queue[tuple[str, int] | None] = stdqueue.Queue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    # -- Redis / RQ -------------------------------------------------------------------------
    @property
    def redis(self) -> Redis:
        """A Redis client with short timeouts: a dead Redis must fail fast, never hang."""
        if self._redis is None:
            url = self.app.config.get("REDIS_URL")
            if not url:
                raise RuntimeError("REDIS_URL is not configured")
            self._redis = Redis.from_url(
                url, socket_connect_timeout=1.0, socket_timeout=5.0, health_check_interval=30
            )
        return self._redis

    @property
    def rq_queue(self) -> Queue:
        """The RQ queue jobs go to."""
        if self._queue is None:
            self._queue = Queue(self.app.config["JOBS_QUEUE"], connection=self.redis)
        return self._queue

    def enqueue(self, topic: str, ref_id: int, pipeline: Any = None) -> None:
        """Put one job on RQ with retries; raises redis errors to the caller."""
        self.rq_queue.enqueue(
            JOBS[topic],
            ref_id,
            job_id=job_id(topic, ref_id),
            retry=Retry(max=len(self.app.config["JOBS_RETRY_INTERVALS"]),
                        interval=self.app.config["JOBS_RETRY_INTERVALS"]),
            job_timeout=120,
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
            pipeline=pipeline,
        )

    # -- dispatch -------------------------------------------------------------------------
    def dispatch(self, topic: str, ref_id: int) -> None:
        """Hand a committed outbox item to the backend; never raises into a request.

        With JOBS_RELAY on an RQ backend, web requests leave it to the workers' outbox
        relay (no Redis work at all in the web process); jobs and the CLI still enqueue."""
        if self.relay and has_request_context():
            return
        if self.async_dispatch:
            self._ensure_thread()
            self._pending.put((topic, ref_id))
        else:
            self._deliver(topic, ref_id)

    def _deliver(self, topic: str, ref_id: int) -> None:
        try:
            if self.backend == "rq":
                self.enqueue(topic, ref_id)
            else:
                with self.app.app_context():
                    resolve(JOBS[topic])(ref_id)
        except Exception:  # noqa: BLE001 - the outbox row stays pending; the sweeper retries
            log.warning("dispatch of %s:%s failed; left for the sweeper", topic, ref_id,
                        exc_info=True)

    def _ensure_thread(self) -> None:
        # Threads do not survive fork (gunicorn workers): start one per process, lazily.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pending = stdqueue.Queue()
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="closeloop-dispatch", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        pending = self._pending
        while True:
            try:
                item = pending.get(timeout=SWEEP_INTERVAL)
            except stdqueue.Empty:
                item = ("__sweep__", 0) if self.backend == "inline" else None
                if item is None:
                    continue
            try:
                if item[0] == "__sweep__":
                    from .loop.outbox import sweep

                    with self.app.app_context():
                        sweep()
                else:
                    self._deliver(*item)
            finally:
                pending.task_done()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every dispatched item was handed over (tests, shutdown)."""
        if self._thread is None:
            return
        done = threading.Event()

        def waiter() -> None:
            self._pending.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        done.wait(timeout)


def init_app(app: Flask) -> None:
    """Attach the job backend to the app."""
    app.extensions["closeloop.jobs"] = Jobs(app)


def jobs() -> Jobs:
    """The current app's job backend."""
    return current_app.extensions["closeloop.jobs"]


def dispatch(topic: str, ref_id: int) -> None:
    """Dispatch a committed outbox item of the current app."""
    jobs().dispatch(topic, ref_id)
