"""RQ workers that run each job inside the Flask app context (the jobs use db.session)."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from rq import Queue, SimpleWorker, Worker
from rq.executions import Execution
from rq.job import Job

from .extensions import db


class _AppContextMixin:
    app: Flask
    _parent_pid: int

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        if os.getpid() != self._parent_pid:
            # A forked work horse must not share the parent's pooled DB connections.
            with self.app.app_context():
                db.engine.dispose(close=False)
        with self.app.app_context():
            return super().perform_job(job, queue, execution)  # type: ignore[misc]


class AppWorker(_AppContextMixin, Worker):
    """Forking worker (production): a crashed job cannot take the worker down."""

    def __init__(self, *args: Any, app: Flask, **kwargs: Any):
        self.app = app
        self._parent_pid = os.getpid()
        super().__init__(*args, **kwargs)


class AppSimpleWorker(_AppContextMixin, SimpleWorker):
    """In-process worker (tests, and platforms without fork)."""

    def __init__(self, *args: Any, app: Flask, **kwargs: Any):
        self.app = app
        self._parent_pid = os.getpid()
        super().__init__(*args, **kwargs)
