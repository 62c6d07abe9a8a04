"""The embedded default (no Redis): one runner thread per served process runs handed-over
items and, on a timer, every scheduled task — whether or not requests arrive."""

from __future__ import annotations

import logging
import os
import queue as stdqueue
import threading
from datetime import UTC, datetime, timedelta

from croniter import croniter
from flask import Flask

from . import Item, Task, run_here, run_task, tasks

log = logging.getLogger(__name__)


def next_run(t: Task, after: datetime, interval: int | None = None) -> datetime:
    """When `t` runs next after `after` (UTC); `interval` replaces a short `every`."""
    if t.cron:
        nxt = croniter(t.cron, after.replace(tzinfo=None)).get_next(datetime)
        return nxt.replace(tzinfo=UTC)
    every = t.every or 60
    if interval is not None and every <= 60:
        every = interval
    return after + timedelta(seconds=every)


class Runner:
    """A daemon thread fed by the hand-over; it also runs the scheduled tasks when due."""

    def __init__(self, app: Flask):
        self.app = app
        self._items: stdqueue.Queue[list[Item]] = stdqueue.Queue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stop = threading.Event()

    def start(self) -> None:
        """Start (or restart after a fork) the thread of this process."""
        self._pid = os.getpid()
        self._items = stdqueue.Queue()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="closeloop-jobs", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        """Whether this process's thread is running (a forked child has none until start)."""
        return (self._thread is not None and self._pid == os.getpid()
                and self._thread.is_alive())

    def put(self, items: list[Item]) -> None:
        """Queue committed items for the thread."""
        self._items.put(items)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current item (tests, shutdown)."""
        self._stop.set()
        self._items.put([])
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        interval = int(self.app.config["JOBS_SWEEP_SECONDS"])
        now = datetime.now(UTC)
        # The first pass of the short-interval tasks (the sweep first of all) comes soon after
        # start, so work a previous process left behind is picked up.
        due = {t.name: (now + timedelta(seconds=1) if (t.every or 61) <= 60
                        else next_run(t, now, interval)) for t in tasks().values()}
        while not self._stop.is_set():
            wait = max(0.0, (min(due.values(), default=now + timedelta(seconds=interval))
                             - datetime.now(UTC)).total_seconds())
            try:
                items = self._items.get(timeout=wait)
            except stdqueue.Empty:
                items = None
            if items:
                run_here(self.app, items)
            now = datetime.now(UTC)
            for name, at in list(due.items()):
                if at <= now and not self._stop.is_set():
                    due[name] = next_run(tasks()[name], now, interval)
                    self._task(name)

    def _task(self, name: str) -> None:
        with self.app.app_context():
            from ..extensions import db

            try:
                run_task(name)
            except Exception:  # noqa: BLE001 - logged by job_log; runs again at its next time
                db.session.rollback()
