"""The one job path: leases on effect rows (both databases), webhooks of one case in event
order, and effects of a CLI command enqueued before the command returns."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from app import jobs as app_jobs
from app.extensions import db
from app.loop import notify, webhooks
from app.models import Case, EmailMessage, Site, WebhookDelivery

from .conftest import make_site, run_worker, verified_token


class FlakyReceiver:
    """A webhook receiver on 127.0.0.1 that answers 500 until `heal()`, then 204; it records
    the event and webhook-id of every request it accepted, in arrival order."""

    def __init__(self) -> None:
        self.healthy = threading.Event()
        self.accepted: list[tuple[str, str]] = []
        self.refused = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # noqa: ANN002 - quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                if outer.healthy.is_set():
                    event = json.loads(body)["type"]
                    outer.accepted.append((event, self.headers["webhook-id"]))
                    self.send_response(204)
                else:
                    outer.refused += 1
                    self.send_response(500)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky():
    r = FlakyReceiver()
    yield r
    r.close()


def test_webhooks_of_one_case_leave_in_event_order(make_app, redis_url, flaky, clock):
    """The first delivery of a case fails and waits for its retry: the case's later events
    wait behind it, and once it succeeds they follow in the order they happened."""
    app = make_app(REDIS_URL=redis_url, WEBHOOK_LOOPBACK_PORTS_FOR_TESTS=[flaky.port])
    site = make_site(app)
    with app.app_context():
        webhooks.create_endpoint(db.session.get(Site, site.id),
                                 f"http://127.0.0.1:{flaky.port}/hook", [])
    token = verified_token(site, n="order-000001", email="c@customers.example")
    assert app.test_client().post(f"/p/{token}", data={"rating": "3"}).status_code == 303
    run_worker(app)  # routes; response.created fails, case.updated waits behind it
    assert flaky.refused == 1 and flaky.accepted == []
    from app.loop import cases

    with app.app_context():
        case_id = db.session.scalar(select(Case.id))
        cases.transition(case_id, "acknowledged", "agent@shop.example")
    run_worker(app)  # the acknowledgement's case.updated waits too
    assert flaky.refused == 1 and flaky.accepted == []
    with app.app_context():
        rows = db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        assert [(d.event, d.status, d.attempts) for d in rows] == [
            ("response.created", "pending", 1), ("case.updated", "pending", 0),
            ("case.updated", "pending", 0)]
        expected = [(d.event, d.msg_id) for d in rows]

    flaky.healthy.set()
    clock.advance(timedelta(seconds=app.config["WEBHOOK_RETRY_SECONDS"][0] + 1))
    with app.app_context():
        assert notify.retry_due() >= 1
    run_worker(app)  # the retry succeeds and releases the next, which releases the last
    assert flaky.accepted == expected
    with app.app_context():
        assert set(db.session.scalars(select(WebhookDelivery.status))) == {"succeeded"}


def _email_row(app, site) -> int:
    with app.app_context():
        s = db.session.get(Site, site.id)
        msg = EmailMessage(site_id=s.id, kind="lease", ref_key="lease-test",
                           recipients=["team@shop.example"], locale="en", subject="s",
                           body_text="t", body_html="<p>t</p>", message_id="<lease@x>")
        db.session.add(msg)
        db.session.commit()
        return msg.id


def test_lease_claims_once_expires_and_fences(make_app, db_kind, clock):
    """A claimed row is not claimed again while its lease lasts; after it runs out the next
    claim takes it (attempt 2), and the first attempt can no longer record its outcome."""
    app = make_app(db_kind, EFFECT_LEASE_SECONDS=60)
    site = make_site(app)
    row_id = _email_row(app, site)
    with app.app_context():
        now = clock.now
        first = notify._claim(EmailMessage, row_id, now)
        db.session.commit()
        assert first is not None
        assert notify._claim(EmailMessage, row_id, now + timedelta(seconds=59)) is None
        db.session.commit()
        assert notify.retry_due(now + timedelta(seconds=59)) == 0
        second = notify._claim(EmailMessage, row_id, now + timedelta(seconds=61))
        db.session.commit()
        assert second is not None and second != first
        assert notify._settle(EmailMessage, row_id, first, {"status": "sent"}) is False
        assert notify._settle(EmailMessage, row_id, second, {"status": "sent"}) is True
        db.session.commit()
        row = db.session.get(EmailMessage, row_id)
        db.session.refresh(row)
        assert (row.status, row.attempts, row.lease_until) == ("sent", 2, None)


def test_cli_transition_enqueues_its_effects_before_returning(make_app, redis_url, flaky):
    """`flask cases transition` hands its webhook to RQ in its own commit: the job is queued
    when the command returns, not at the next outbox sweep."""
    app = make_app(REDIS_URL=redis_url, WEBHOOK_LOOPBACK_PORTS_FOR_TESTS=[flaky.port])
    site = make_site(app)
    with app.app_context():
        webhooks.create_endpoint(db.session.get(Site, site.id),
                                 f"http://127.0.0.1:{flaky.port}/hook", ["case.updated"])
    token = verified_token(site, n="cli-0000001")
    assert app.test_client().post(f"/p/{token}", data={"rating": "9"}).status_code == 303
    flaky.healthy.set()
    run_worker(app)
    with app.app_context():
        case_id = db.session.scalar(select(Case.id))
        queue = app_jobs.backend().rq_queue
        assert queue.count == 0
    result = app.test_cli_runner().invoke(
        args=["cases", "transition", str(case_id), "acknowledged", "--actor", "lead@shop.example"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        newest = db.session.scalar(select(WebhookDelivery.id).order_by(
            WebhookDelivery.id.desc()))
        assert queue.job_ids == [app_jobs.job_id("deliver_webhook", newest)]
    run_worker(app)
    assert [e for e, _id in flaky.accepted] == ["case.updated", "case.updated"]


def test_worker_warm_up_leaves_no_trace(make_app, db_kind, caplog):
    """The warm-up a worker runs before forking (a rehearsal of the routing path on
    PostgreSQL) writes nothing that outlives it, and hands nothing over."""
    from sqlalchemy import func

    from app.models import Outbox, Response

    app = make_app(db_kind)
    app_jobs.warm_up(app)
    assert not [r for r in caplog.records if "warm-up" in r.getMessage()]  # all steps ran
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Site)) == 0
        assert db.session.scalar(select(func.count()).select_from(Response)) == 0
        assert db.session.scalar(select(func.count()).select_from(Outbox)) == 0
        assert db.session.scalar(select(func.count()).select_from(EmailMessage)) == 0
