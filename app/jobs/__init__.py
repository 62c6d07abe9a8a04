"""Background work: a registry of handlers, the transactional outbox, and the two backends.

This package knows nothing of the loop. Domain code registers what it needs:

- `@handler("topic")` — a function of one id, run for each committed outbox row of that topic;
- `@task("name", every=60)` / `@task("name", cron="0 7 * * 1")` — a scheduled function.

Writing work is one call inside the caller's transaction: `outbox.add(topic, ref_id)` (or
`on_commit(topic, ref_id)` next to a row written with Core). When that transaction commits,
the session's hooks hand the items to the backend before `commit()` returns —
in a web request, an RQ job or a CLI command alike; no thread is involved that could die with a
forked work horse. Two backends:

- **rq** (REDIS_URL set): one pipelined enqueue per commit; `flask worker` runs the jobs,
  `flask cron` the scheduled tasks (the outbox sweep among them).
- **inline** (no Redis, the embedded default): a served process (`app.wsgi`) runs a runner
  thread for the jobs and a timer for the scheduled tasks; elsewhere (CLI, the test client)
  the items run right after the commit, in a fresh app context of the same thread.

A hand-over can still be lost (Redis down, process killed between commit and enqueue): the
outbox row stays pending and the sweep hands it over again. Handlers are idempotent on their id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from flask import Flask, current_app
from redis import Redis
from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

Item = tuple[str, int]
_HANDLERS: dict[str, Callable[[int], Any]] = {}
_TASKS: dict[str, Task] = {}
_WARMUPS: list[Callable[[Flask], Any]] = []
_HANDOVER = "closeloop.handover"  # session.info key: items owed once this transaction commits
_COMMITTED = "closeloop.committed"  # ... and committed, handed over when the transaction ends
REHEARSAL = "closeloop.rehearsal"  # session.info flag: commits are savepoints, hand nothing over


@dataclass(frozen=True)
class Task:
    """A scheduled function: every `every` seconds, or on a cron expression (UTC)."""

    name: str
    func: Callable[[], Any]
    every: int | None = None
    cron: str | None = None


def handler(topic: str) -> Callable[[Callable[[int], Any]], Callable[[int], Any]]:
    """Register the function that performs outbox items of `topic`."""
    def wrap(func: Callable[[int], Any]) -> Callable[[int], Any]:
        _HANDLERS[topic] = func
        return func
    return wrap


def task(name: str, every: int | None = None,
         cron: str | None = None) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register a scheduled function (exactly one of `every` seconds or `cron`)."""
    if (every is None) == (cron is None):
        raise ValueError("a task runs either every N seconds or on a cron expression")

    def wrap(func: Callable[[], Any]) -> Callable[[], Any]:
        _TASKS[name] = Task(name, func, every, cron)
        return func
    return wrap


def warmup(func: Callable[[Flask], Any]) -> Callable[[Flask], Any]:
    """Register a function that loads what jobs would otherwise load lazily (templates, language
    profiles...). `flask worker` runs them once before it forks: a forked work horse inherits
    them, where each horse would else pay for them again on every job."""
    if func not in _WARMUPS:
        _WARMUPS.append(func)
    return func


@contextmanager
def rehearsal() -> Iterator[Session]:
    """A session whose commits are savepoints of one transaction that is rolled back at the
    end, and which hands nothing over: for warm-ups that run real code paths (so statements
    get compiled once, before any fork) and leave no trace."""
    from ..extensions import db

    if db.engine.dialect.name != "postgresql":
        # pysqlite's default transaction handling turns SAVEPOINT/RELEASE into real commits.
        raise RuntimeError("rehearsals need PostgreSQL's savepoints")
    with db.engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint",
                          expire_on_commit=False, info={REHEARSAL: True})
        previous = db.session.registry()
        db.session.registry.set(session)  # type: ignore[arg-type]  # a plain ORM Session
        try:
            yield session
        finally:
            db.session.registry.set(previous)
            session.close()
            outer.rollback()


def warm_up(app: Flask) -> None:
    """Run every registered warm-up, then each handler once with id 0 (no row has it: the
    handler only prepares its first statements), inside an app context; failures only cost
    speed."""
    from ..extensions import db

    steps = [partial(f, app) for f in _WARMUPS] + [partial(h, 0) for h in _HANDLERS.values()]
    with app.app_context():
        for step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - a cold cache is slower, not wrong
                log.warning("warm-up %s failed", step.func.__name__, exc_info=True)
            db.session.rollback()


def topics() -> list[str]:
    """Registered outbox topics."""
    return sorted(_HANDLERS)


def tasks() -> dict[str, Task]:
    """Registered scheduled tasks by name."""
    return dict(_TASKS)


def perform(topic: str, ref_id: int, job: str | None = None,
            follow_up: float = 0.0) -> Any:
    """Run the handler of one outbox item (inside an app context), logging one line for it.

    With `follow_up` seconds, what the handler's commits hand over runs right here, in this
    process, until that budget is spent; the rest is enqueued (see Backend.hand_over)."""
    from ..logs import job_log

    try:
        func = _HANDLERS[topic]
    except KeyError:
        raise LookupError(f"no job handler for topic {topic!r}") from None
    with job_log(topic, ref_id, job):
        if follow_up <= 0 or getattr(_follow, "deadline", None) is not None:
            return func(ref_id)
        _follow.deadline = time.monotonic() + follow_up
        try:
            return func(ref_id)
        finally:
            _follow.deadline = None


def run_task(name: str, job: str | None = None) -> Any:
    """Run one scheduled task (inside an app context), logging one line for it."""
    from ..logs import job_log

    try:
        func = _TASKS[name].func
    except KeyError:
        raise LookupError(f"no scheduled task {name!r}") from None
    with job_log(name, None, job):
        return func()


def job_id(topic: str, ref_id: int) -> str:
    """Deterministic RQ job id, so the sweep can tell whether an item is queued or running."""
    return f"{topic}-{ref_id}"


# -- the hand-over at commit -------------------------------------------------------------------

def on_commit(topic: str, ref_id: int, session: Session | None = None) -> None:
    """Hand (topic, ref_id) to the backend when the current transaction commits (dropped on
    rollback). The caller wrote the outbox row in that same transaction."""
    if session is None:
        from ..extensions import db

        session = db.session()
    session.info.setdefault(_HANDOVER, []).append((topic, ref_id))


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    items = session.info.pop(_HANDOVER, None)
    if items and not session.info.get(REHEARSAL):
        session.info.setdefault(_COMMITTED, []).extend(items)


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: Any) -> None:
    # Once the transaction has ended its connection is back in the pool: an item run in this
    # thread (inline backend) then never holds two connections at once.
    if transaction.parent is not None:
        return
    items = session.info.pop(_COMMITTED, None)
    if items:
        try:
            backend().hand_over(items)
        except Exception:  # noqa: BLE001 - the rows are committed: the sweep covers a loss
            log.exception("hand-over of %d committed item(s) failed; left to the sweep",
                          len(items))


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_HANDOVER, None)


# -- backends ----------------------------------------------------------------------------------

class Backend:
    """Per-app job backend (app.extensions['closeloop.jobs'])."""

    def __init__(self, app: Flask):
        self.app = app
        cfg = app.config
        self.kind = cfg.get("JOBS_BACKEND") or ("rq" if cfg.get("REDIS_URL") else "inline")
        if self.kind not in ("rq", "inline"):
            raise RuntimeError(f"JOBS_BACKEND must be 'rq' or 'inline', not {self.kind!r}")
        self._redis: Redis | None = None
        self._queue: Any = None
        self.runner: Any = None  # inline.Runner of a served process

    def _enqueue(self, items: list[Item]) -> None:
        try:
            self.enqueue(items)
        except Exception as exc:  # noqa: BLE001 - redis errors of every kind
            log.warning("enqueue of %d item(s) failed (%s); left to the outbox sweep",
                        len(items), exc)

    # Redis and RQ ---------------------------------------------------------------------------
    @property
    def redis(self) -> Redis:
        """A Redis client with short timeouts: a dead Redis must fail fast, never hang."""
        if self._redis is None:
            url = self.app.config.get("REDIS_URL")
            if not url:
                raise RuntimeError("REDIS_URL is not configured")
            self._redis = Redis.from_url(
                url, socket_connect_timeout=0.5, socket_timeout=5.0, health_check_interval=30
            )
        return self._redis

    @property
    def rq_queue(self) -> Any:
        """The RQ queue every job goes to."""
        if self._queue is None:
            from rq import Queue

            self._queue = Queue(self.app.config["JOBS_QUEUE"], connection=self.redis)
        return self._queue

    def enqueue(self, items: Iterable[Item]) -> int:
        """Put items on RQ in one pipelined round trip; raises redis errors to the caller."""
        from .rqwork import enqueue_many

        return enqueue_many(self, list(items))

    # hand-over --------------------------------------------------------------------------
    def hand_over(self, items: list[Item]) -> None:
        """Give committed items to the backend now; a failure leaves them to the sweep.

        With RQ, the follow-ups of a job (the emails and webhooks its routing decided) run in
        the job's own work horse right after its commit, within JOBS_FOLLOW_UP_SECONDS: each
        extra job would cost a fork, a database connection and cold caches, several times the
        work itself. What is left when the budget runs out is enqueued; if the horse dies, the
        committed outbox rows and leases bring the work back (sweep, retry_due)."""
        if self.kind == "rq":
            deadline = getattr(_follow, "deadline", None)
            if deadline is not None and time.monotonic() < deadline:
                run_here(self.app, items, deadline, self._enqueue)
            else:
                self._enqueue(items)
            return
        runner = self.runner
        if runner is not None and runner.alive():
            runner.put(items)
        else:
            run_here(self.app, items)


_draining = threading.local()
_follow = threading.local()  # .deadline: a job's follow-ups may run in its process until then


def run_here(app: Flask, items: list[Item], deadline: float | None = None,
             overflow: Callable[[list[Item]], Any] | None = None) -> None:
    """Run items in this thread, each in a fresh app context (so a fresh session). Items that
    their own commits hand over join the same loop instead of nesting. Past `deadline`, the
    items left go to `overflow`."""
    pending: list[Item] | None = getattr(_draining, "items", None)
    if pending is not None:
        pending.extend(items)
        return
    _draining.items = pending = list(items)
    try:
        while pending:
            if deadline is not None and overflow is not None and time.monotonic() > deadline:
                overflow(list(pending))
                pending.clear()
                break
            topic, ref_id = pending.pop(0)
            with app.app_context():
                from ..extensions import db

                try:
                    perform(topic, ref_id)
                except Exception:  # noqa: BLE001 - logged by job_log; the sweep retries it
                    db.session.rollback()
    finally:
        _draining.items = None


def init_app(app: Flask) -> None:
    """Attach the job backend; register the jobs package's own scheduled task (the sweep)."""
    app.extensions["closeloop.jobs"] = Backend(app)
    from . import outbox  # noqa: F401 - registers the sweep task
    from .cli import register

    register(app)


def backend() -> Backend:
    """The current app's job backend."""
    return current_app.extensions["closeloop.jobs"]


def start_background(app: Flask) -> None:
    """For a served process (app.wsgi): without Redis, run jobs on a runner thread and the
    scheduled tasks on its timer, whether or not requests arrive. With Redis: nothing (the
    `flask worker` and `flask cron` processes do it)."""
    b: Backend = app.extensions["closeloop.jobs"]
    if b.kind == "inline":
        from .inline import Runner

        b.runner = Runner(app)
        b.runner.start()
