"""No answer lost, none doubled: concurrent duplicates, Redis outages, lost enqueues."""

from __future__ import annotations

import threading

from redis import Redis
from sqlalchemy import func, select

from app import jobs as app_jobs
from app.extensions import db
from app.jobs import rqwork
from app.jobs.outbox import sweep
from app.loop import jobs as loop_jobs
from app.models import Case, CaseEvent, Outbox, Response

from .conftest import make_site, run_worker, verified_token
from .proxy import TcpProxy

ROUTE = "route_response"


def counts(app) -> dict[str, int]:
    with app.app_context():
        q = db.session.scalar
        return {
            "responses": q(select(func.count()).select_from(Response)),
            "cases": q(select(func.count()).select_from(Case)),
            "pending": q(select(func.count()).where(Outbox.done_at.is_(None))),
            "routed": q(select(func.count()).where(CaseEvent.kind == "routed")),
        }


def sweep_now(app) -> int:
    with app.app_context():
        from datetime import timedelta

        return sweep(grace=timedelta(0))


def test_twenty_concurrent_submits_one_row(make_app, db_kind):
    """20 simultaneous POSTs of one prompt (double clicks, retries): one response; each request
    gets the same thank-you page, or 429 once the replay cap (10/min) is spent."""
    app = make_app(db_kind)
    site = make_site(app)
    token = verified_token(site, n="same-submission-01")
    barrier = threading.Barrier(20)
    results: list[tuple[int, str]] = []

    def submit() -> None:
        client = app.test_client()
        barrier.wait(timeout=10)
        r = client.post(f"/p/{token}", data={"rating": "6", "comment": "twice?"})
        results.append((r.status_code, r.headers.get("Location", "")))

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 20
    codes = [code for code, _ in results]
    assert set(codes) <= {303, 429} and codes.count(303) >= 11
    assert len({loc for code, loc in results if code == 303}) == 1
    c = counts(app)
    assert (c["responses"], c["cases"], c["routed"]) == (1, 1, 1)


def test_redis_down_loses_nothing(make_app, redis_url):
    """Redis unreachable during 100 answers: all 2xx, 100 rows, limiter still limits without
    a 500; once Redis is back one sweep dispatches all 100 and a second sweep none."""
    proxy = TcpProxy("127.0.0.1", 6379)
    url = f"redis://127.0.0.1:{proxy.port}/{redis_url.rsplit('/', 1)[1]}"
    app = make_app(REDIS_URL=url, RATELIMIT_STORAGE_URI=url, LIMIT_SUBMIT="130 per minute")
    site = make_site(app)
    client = app.test_client()
    proxy.cut()
    try:
        statuses = [client.post(f"/p/{verified_token(site, n=f'outage-{i:05d}')}",
                                data={"rating": str(i % 11)}).status_code for i in range(100)]
        assert statuses == [303] * 100
        c = counts(app)
        assert (c["responses"], c["pending"], c["routed"]) == (100, 100, 0)
        # Past the limit the in-memory fallback answers 429, never 500.
        more = [client.post(f"/p/{verified_token(site, n=f'extra-{i:05d}')}",
                            data={"rating": "5"}) for i in range(40)]
        codes = [r.status_code for r in more]
        assert set(codes) <= {303, 429} and codes.count(429) >= 10
        assert all(r.headers.get("Retry-After") for r in more if r.status_code == 429)
    finally:
        proxy.restore()
    accepted = codes.count(303)
    assert sweep_now(app) == 100 + accepted
    assert sweep_now(app) == 0  # queued jobs are not dispatched twice
    assert run_worker(app, ROUTE) == 100 + accepted
    c = counts(app)
    assert (c["pending"], c["routed"]) == (0, 100 + accepted)
    assert sweep_now(app) == 0 and run_worker(app) == 0
    proxy.cut()


def test_lost_enqueue_is_swept_exactly_once(make_app, redis_url, monkeypatch):
    """One of 50 enqueues fails after commit: the sweeper dispatches just that one, and every
    answer is routed exactly once."""
    app = make_app(REDIS_URL=redis_url)
    site = make_site(app)
    client = app.test_client()
    real = rqwork.enqueue_many

    failed: list[list] = []

    def flaky(backend, items):
        if items == [("route_response", 17)] and not failed:
            failed.append(items)
            raise ConnectionError("simulated crash between commit and enqueue")
        return real(backend, items)

    monkeypatch.setattr(rqwork, "enqueue_many", flaky)
    for i in range(50):
        r = client.post(f"/p/{verified_token(site, n=f'lost-{i:05d}')}", data={"rating": "8"})
        assert r.status_code == 303
    assert sweep_now(app) == 1
    assert run_worker(app, ROUTE) == 50
    assert counts(app)["routed"] == 50 and counts(app)["pending"] == 0


def test_redis_data_loss_recovered(make_app, redis_url):
    """FLUSHALL after enqueue: the sweeper re-dispatches every unfinished item."""
    app = make_app(REDIS_URL=redis_url)
    site = make_site(app)
    client = app.test_client()
    for i in range(10):
        client.post(f"/p/{verified_token(site, n=f'flush-{i:05d}')}", data={"rating": "3"})
    Redis.from_url(redis_url).flushdb()
    assert sweep_now(app) == 10
    assert run_worker(app, ROUTE) == 10
    assert counts(app)["routed"] == 10


def test_job_is_idempotent(app, site, client):
    """Running the routing job again changes nothing and adds no event."""
    r = client.post(f"/p/{verified_token(site, n='idem-000001')}", data={"rating": "2"})
    assert r.status_code == 303
    with app.app_context():
        rid = db.session.scalar(select(Response.id))
        assert loop_jobs.route_response(rid) == "already done"
        assert loop_jobs.route_response(999999) == "unknown"
    assert counts(app)["routed"] == 1


def test_commit_enqueues_before_returning(make_app, redis_url):
    """With Redis, the commit itself enqueues: when the request returns, the job is on RQ
    (no thread in between that could die)."""
    app = make_app(REDIS_URL=redis_url)
    site = make_site(app)
    client = app.test_client()
    for i in range(5):
        client.post(f"/p/{verified_token(site, n=f'async-{i:05d}')}", data={"rating": "9"})
        with app.app_context():
            assert app_jobs.backend().rq_queue.count == i + 1
    assert run_worker(app, ROUTE) == 5
    assert counts(app)["routed"] == 5


def test_inline_runner_routes_and_sweeps_on_its_own(make_app, monkeypatch):
    """The embedded default as served (app.wsgi): the runner thread routes each answer, and its
    timer sweeps what a lost hand-over left behind without any request arriving."""
    import time

    app = make_app(JOBS_SWEEP_SECONDS=1, OUTBOX_SWEEP_GRACE=0)
    site = make_site(app)
    app_jobs.start_background(app)
    runner = app.extensions["closeloop.jobs"].runner
    try:
        client = app.test_client()
        for i in range(5):
            client.post(f"/p/{verify_token_n(site, i)}", data={"rating": "9"})
        # A committed answer whose hand-over was lost (as if the process died after commit).
        backend = app.extensions["closeloop.jobs"]
        with monkeypatch.context() as m:
            m.setattr(backend, "hand_over", lambda items: None)
            assert client.post(f"/p/{verify_token_n(site, 99)}",
                               data={"rating": "9"}).status_code == 303
        deadline = time.monotonic() + 30
        while counts(app)["routed"] < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counts(app)["routed"] == 6 and counts(app)["pending"] == 0
    finally:
        runner.stop()


def verify_token_n(site, i: int) -> str:
    return verified_token(site, n=f"inline-{i:05d}")


def test_concurrent_writers_no_lock_errors(make_app, db_kind):
    """20 different answers at once (SQLite: WAL + busy timeout): all stored, no 5xx."""
    app = make_app(db_kind)
    site = make_site(app)
    barrier = threading.Barrier(20)
    codes: list[int] = []

    def submit(i: int) -> None:
        client = app.test_client()
        token = verified_token(site, n=f"writer-{i:06d}")
        barrier.wait(timeout=10)
        codes.append(client.post(f"/p/{token}", data={"rating": "4"}).status_code)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert codes == [303] * 20
    c = counts(app)
    assert (c["responses"], c["cases"], c["routed"]) == (20, 20, 20)
