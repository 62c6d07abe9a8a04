"""The closed loop end to end with real peers: RQ on Redis, an SMTP server and a webhook
receiver on 127.0.0.1 — alerts, thank-you, resolution and verification emails, signed
webhooks, retries with backoff, redelivery, timeouts, SSRF refusals, effects exactly once."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.extensions import db
from app.loop import cases, jobs, notify, webhooks
from app.models import (
    Case,
    CaseEvent,
    DeliveryAttempt,
    EmailMessage,
    Site,
    Team,
    WebhookDelivery,
    WebhookEndpoint,
)

from .conftest import make_site, run_worker, verified_token

SUPPORT = "support-team@shop.example"
CUSTOMER = "customer@mail.example"


def _setup(app, receiver=None, path="/ok", events=None, **site_kw):
    """A site whose support team has an address and (optionally) a webhook endpoint."""
    site = make_site(app, **site_kw)
    secret = None
    with app.app_context():
        s = db.session.get(Site, site.id)
        team = db.session.scalar(select(Team).where(Team.site_id == s.id,
                                                    Team.key == "support"))
        team.emails = [SUPPORT]
        db.session.commit()
        if receiver is not None:
            # Test-only escape (honoured under TESTING): the receiver is on 127.0.0.1.
            app.config["WEBHOOK_LOOPBACK_PORTS_FOR_TESTS"] = [receiver.port]
            ep = webhooks.create_endpoint(s, receiver.url(path), events or [])
            secret = ep.secret
    return site, secret


def _answer(client, site, rating, comment=None, email=CUSTOMER, moment="checkout"):
    token = verified_token(site, moment=moment, channel="email", customer="c-1", email=email,
                           skus=["SKU-7"], order="1001")
    data = {"rating": str(rating)}
    if comment:
        data["comment"] = comment
    resp = client.post(f"/p/{token}", data=data)
    assert resp.status_code == 303, resp.get_data(as_text=True)


def fresh(model, ident):
    """Re-read a row (jobs ran in their own app context and session)."""
    db.session.expire_all()
    return db.session.get(model, ident)


def _mail_config(port, **kw):
    return {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": port, "MAIL_FROM": "loop@closeloop.example",
            "PUBLIC_BASE_URL": "http://localhost", **kw}


@pytest.mark.parametrize("follow_up", [2.0, 0.0], ids=["follow-ups-in-job", "each-its-own-job"])
def test_detractor_refund_alerts_team_and_signs_webhook(make_app, db_kind, redis_url,
                                                        smtp_server, receiver, follow_up):
    """Detractor + "refund" at checkout → critical case for support; one worker pass sends the
    alert, the customer's apology-and-next-steps email and webhooks the reference library
    verifies; a promoter gets a thank-you and raises no alert."""
    port, box = smtp_server
    app = make_app(db_kind, REDIS_URL=redis_url, JOBS_FOLLOW_UP_SECONDS=follow_up,
                   **_mail_config(port))
    site, secret = _setup(app, receiver)
    client = app.test_client()
    _answer(client, site, 1, "Item broken, I want a refund now")
    _answer(client, site, 5, "Lovely", email="happy@mail.example")
    if follow_up:  # each routing job sends what it decided in the same work horse
        assert run_worker(app) == 2
    else:  # 2 routings, then 3 emails and at least 4 webhooks, each a job of its own
        assert run_worker(app) >= 2 + 3 + 4

    with app.app_context():
        crit = db.session.scalar(select(Case).where(Case.priority == "critical"))
        assert (crit.team, crit.status) == ("support", "new")
        assert "critical-words" in crit.tags
        assert db.session.scalar(select(func.count()).select_from(Case)) == 2
        assert db.session.scalar(select(func.count()).where(EmailMessage.status != "sent")) == 0

    alerts = box.to(SUPPORT)
    assert len(alerts) == 1
    assert "Critical feedback" in alerts[0]["Subject"]
    assert "refund" in alerts[0].get_body(("plain",)).get_content()
    sorry = box.to(CUSTOMER)
    assert len(sorry) == 1 and "sorry" in sorry[0]["Subject"].lower()
    assert "within 24 hours" in sorry[0].get_body(("plain",)).get_content()
    thanks = box.to("happy@mail.example")
    assert len(thanks) == 1 and thanks[0]["Subject"].startswith("Thank you for your feedback")
    assert len(box.messages) == 3  # the promoter raised no alert

    hooks = receiver.hits("/ok")
    events = sorted(json.loads(body)["type"] for _p, _h, body in hooks)
    assert events == ["case.updated", "case.updated", "response.created", "response.created"]
    verifier = Webhook(secret)
    for _path, headers, body in hooks:
        lowered = {k.lower(): v for k, v in headers.items()}
        verifier.verify(body, lowered)  # raises on a bad signature
        assert lowered["webhook-id"].startswith("msg_")
    tampered = {k.lower(): v for k, v in hooks[0][1].items()}
    with pytest.raises(WebhookVerificationError):
        verifier.verify(hooks[0][2] + b" ", tampered)


def test_jobs_run_twice_send_once(make_app, redis_url, smtp_server, receiver):
    """Routing, sending and delivering again (RQ's at-least-once) adds no email or webhook."""
    port, box = smtp_server
    app = make_app("sqlite", REDIS_URL=redis_url, **_mail_config(port))
    site, _secret = _setup(app, receiver)
    _answer(app.test_client(), site, 1, "refund please")
    run_worker(app)
    sent, hooks = len(box.messages), len(receiver.requests)
    assert sent == 2 and hooks == 2
    with app.app_context():
        ids = db.session.scalars(select(EmailMessage.id)).all()
        dids = db.session.scalars(select(WebhookDelivery.id)).all()
        rid = db.session.scalar(select(Case.response_id))
        from app.models import Outbox

        assert jobs.route_response(rid) == "already done"
        # As if every send's outbox mark were lost: the sweeper dispatches them all again.
        db.session.execute(Outbox.__table__.update()
                           .where(Outbox.topic != "route_response").values(done_at=None))
        db.session.commit()
        from app.jobs.outbox import sweep

        assert sweep(grace=timedelta(0)) == 4
        for i in ids:
            assert notify.send_email(i) == "sent"
        for i in dids:
            assert notify.deliver_webhook(i) == "succeeded"
    run_worker(app)
    assert (len(box.messages), len(receiver.requests)) == (sent, hooks)


def test_resolution_message_and_verification_links(make_app, smtp_server, receiver):
    """Resolving with a customer message emails "what we did" with signed one-click links:
    "no" reopens, the next resolution sends new links, "yes" verifies, old links are stale,
    forged links are refused; every change is on the timeline and fires case.updated."""
    port, box = smtp_server
    app = make_app("sqlite", **_mail_config(port))
    site, _secret = _setup(app, receiver)
    client = app.test_client()
    _answer(client, site, 2, "The zipper broke")
    with app.app_context():
        case_id = db.session.scalar(select(Case.id))
        with pytest.raises(cases.TransitionError):
            cases.transition(case_id, "verified", "agent@shop.example")
        with pytest.raises(cases.TransitionError, match="resolution"):
            cases.transition(case_id, "resolved", "agent@shop.example")
        cases.transition(case_id, "acknowledged", "agent@shop.example", "on it")
        cases.transition(case_id, "resolved", "agent@shop.example", resolution="Replaced",
                         root_cause="Supplier batch", customer_message="We sent a new jacket.")

    first = [m for m in box.to(CUSTOMER) if "what we did" in m["Subject"]]
    assert len(first) == 1
    text = first[0].get_body(("plain",)).get_content()
    assert "We sent a new jacket." in text
    no_link = text.split("No, it is not resolved: ")[1].split()[0].replace(
        "http://localhost", "")
    old_yes = text.split("Yes, it is resolved: ")[1].split()[0].replace(
        "http://localhost", "")

    page = client.get(no_link)  # opening the link (or a mail scanner) only asks to confirm
    assert page.status_code == 200 and "No, it is not resolved" in page.get_data(as_text=True)
    with app.app_context():
        assert fresh(Case, case_id).status == "resolved"
    page = client.post(no_link)
    assert page.status_code == 200 and "reopened" in page.get_data(as_text=True)
    again_page = client.post(no_link)  # a second click changes nothing
    assert "already have your answer" in again_page.get_data(as_text=True)
    with app.app_context():
        assert fresh(Case, case_id).status == "reopened"
        cases.transition(case_id, "resolved", "agent@shop.example", resolution="Refunded")
    again = [m for m in box.to(CUSTOMER) if m["Subject"].startswith("Is it resolved?")]
    assert len(again) == 1  # no customer message this time: the verification email alone
    text2 = again[0].get_body(("plain",)).get_content()
    yes_link = text2.split("Yes, it is resolved: ")[1].split()[0].replace(
        "http://localhost", "")
    assert "out of date" in client.get(old_yes).get_data(as_text=True)
    assert client.post(yes_link).status_code == 200
    assert client.post(yes_link[:-3] + "abc").status_code == 400  # forged signature
    with app.app_context():
        c = fresh(Case, case_id)
        assert c.status == "verified" and c.verified_at is not None and c.cycle == 2
        kinds = db.session.scalars(select(CaseEvent.kind).where(CaseEvent.case_id == case_id)
                                   .order_by(CaseEvent.id)).all()
        assert kinds == ["routed", "acknowledged", "resolved", "reopened", "alerted",
                         "resolved", "verified"]  # "not resolved" told the team
        actors = db.session.scalars(select(CaseEvent.actor).where(CaseEvent.case_id == case_id)
                                    .order_by(CaseEvent.id)).all()
        assert actors[3] == actors[6] == "customer"
    updates = [json.loads(b)["data"]["status"] for p, _h, b in receiver.requests
               if json.loads(b)["type"] == "case.updated"]
    assert updates == ["new", "acknowledged", "resolved", "reopened", "resolved", "verified"]
    resolved = [b for _p, _h, b in receiver.requests if json.loads(b)["type"] == "case.resolved"]
    assert len(resolved) == 2


def test_no_header_injection(make_app, smtp_server):
    """A site name with CR/LF cannot add a header; comments are escaped in HTML emails."""
    port, box = smtp_server
    app = make_app("sqlite", **_mail_config(port))
    site, _ = _setup(app, name="Evil\r\nBcc: victim@evil.example")
    _answer(app.test_client(), site, 1, "<script>alert(1)</script> refund")
    assert len(box.messages) == 2
    for _from, rcpts, msg in box.messages:
        assert "victim@evil.example" not in rcpts
        assert msg["Bcc"] is None
    alert = box.to(SUPPORT)[0]
    html = alert.get_body(("html",)).get_content()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html


def test_webhook_failures_back_off_then_fail_and_redeliver(make_app, clock, receiver):
    """A target answering 500 gets WEBHOOK_MAX_ATTEMPTS attempts spaced by the backoff
    schedule, then the delivery is failed with its log; redelivery keeps the webhook-id."""
    app = make_app("sqlite", WEBHOOK_MAX_ATTEMPTS=3, WEBHOOK_RETRY_SECONDS=[60, 600])
    site, _ = _setup(app, receiver, "/fail", events=["response.created"])
    t0 = clock.now
    _answer(app.test_client(), site, 4, None, email=None)
    with app.app_context():
        d = db.session.scalar(select(WebhookDelivery))
        assert (d.status, d.attempts, d.last_status_code) == ("pending", 1, 500)
        assert d.next_attempt_at == t0 + timedelta(seconds=60)
        assert notify.retry_due(t0 + timedelta(seconds=59)) == 0
        clock.set(t0 + timedelta(seconds=60))
        assert notify.retry_due(clock.now) == 1
        d = fresh(WebhookDelivery, d.id)
        assert (d.status, d.attempts) == ("pending", 2)
        assert d.next_attempt_at == clock.now + timedelta(seconds=600)
        assert notify.retry_due(clock.now + timedelta(seconds=599)) == 0
        clock.advance(timedelta(seconds=600))
        assert notify.retry_due(clock.now) == 1
        d = fresh(WebhookDelivery, d.id)
        assert (d.status, d.attempts, d.next_attempt_at) == ("failed", 3, None)
        log = db.session.scalars(select(DeliveryAttempt).where(
            DeliveryAttempt.delivery_id == d.id).order_by(DeliveryAttempt.id)).all()
        assert [a.status_code for a in log] == [500, 500, 500]
        assert [a.attempted_at for a in log] == [t0, t0 + timedelta(seconds=60),
                                                 t0 + timedelta(seconds=660)]
        assert notify.retry_due(clock.now + timedelta(days=1)) == 0  # failed stays failed
        # Fix the receiver, then redeliver by hand.
        db.session.get(WebhookEndpoint, d.endpoint_id).url = receiver.url("/ok")
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["webhooks", "redeliver", str(d.id)])
    assert result.exit_code == 0, result.output
    with app.app_context():
        d = fresh(WebhookDelivery, d.id)
        assert (d.status, d.last_status_code) == ("succeeded", 204)
    ids = {{k.lower(): v for k, v in h.items()}["webhook-id"] for _p, h, _b in receiver.requests}
    bodies = {b for _p, _h, b in receiver.requests}
    assert len(receiver.requests) == 4 and len(ids) == 1 and len(bodies) == 1
    out = app.test_cli_runner().invoke(args=["webhooks", "deliveries", site.public_key]).output
    assert "succeeded" in out and "500,500,500,204" in out


def test_hanging_target_times_out_without_blocking_others(make_app, redis_url, receiver):
    """A receiver that never answers costs one WEBHOOK_TIMEOUT; the other endpoint's
    delivery in the same worker pass still succeeds."""
    app = make_app("sqlite", REDIS_URL=redis_url, WEBHOOK_TIMEOUT=1)
    site, _ = _setup(app, receiver, "/hang", events=["response.created"])
    with app.app_context():
        webhooks.create_endpoint(db.session.get(Site, site.id), receiver.url("/ok"),
                                 ["response.created"])
    _answer(app.test_client(), site, 5, None)
    started = time.monotonic()
    run_worker(app)
    elapsed = time.monotonic() - started
    with app.app_context():
        by_url = {d.endpoint.url: d for d in db.session.scalars(select(WebhookDelivery))}
        assert by_url[receiver.url("/ok")].status == "succeeded"
        hung = by_url[receiver.url("/hang")]
        assert hung.status == "pending" and hung.attempts == 1
        assert "timed out" in hung.last_error or "timeout" in hung.last_error
    assert elapsed < 1 + 8  # one timeout, not a stuck worker (generous bound for CI noise)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:127.0.0.1]/hook",
    "http://localhost/hook",
    "http://10.1.2.3/hook",
    "ftp://example.com/hook",
])
def test_ssrf_targets_refused_when_saved(app, url):
    """Loopback, metadata, mapped-IPv6, private and non-HTTP targets cannot be saved."""
    site = make_site(app)
    with app.app_context(), pytest.raises(webhooks.EndpointError):
        webhooks.create_endpoint(db.session.get(Site, site.id), url, [])
    result = app.test_cli_runner().invoke(args=["webhooks", "add", site.public_key, url])
    assert result.exit_code != 0 and "refused" in result.output


def test_ssrf_checked_again_when_sent(app, monkeypatch):
    """A name that resolved to a public address when saved but to 10.x when sent (DNS
    rebinding) is refused at send time, and nothing is sent."""
    from app.loop import safehttp

    answers = {"hooks.partner.example": "93.184.216.34"}

    def fake_getaddrinfo(host, port, *args, **kwargs):
        import socket

        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port or 80))]

    monkeypatch.setattr(safehttp.socket, "getaddrinfo", fake_getaddrinfo)
    site = make_site(app)
    with app.app_context():
        webhooks.create_endpoint(db.session.get(Site, site.id),
                                 "http://hooks.partner.example/in", ["response.created"])
    answers["hooks.partner.example"] = "10.0.0.7"
    _answer(app.test_client(), site, 3, None)
    with app.app_context():
        d = db.session.scalar(select(WebhookDelivery))
        assert d.status == "pending" and d.last_status_code is None
        assert d.last_error.startswith("refused")


def test_redirect_to_loopback_not_followed(make_app, receiver):
    """A 302 (here to loopback) is a failed attempt: the redirect target is never called."""
    app = make_app("sqlite")
    site, _ = _setup(app, receiver, "/redirect", events=["response.created"])
    _answer(app.test_client(), site, 5, None)
    with app.app_context():
        d = db.session.scalar(select(WebhookDelivery))
        assert d.status == "pending" and d.last_status_code == 302
        assert "redirect" in d.last_error
    assert receiver.hits("/ok") == []


@pytest.mark.parametrize(("locale", "rating", "subject", "body"), [
    ("ru", 5, "Спасибо за ваш отзыв", "мы рады, что всё прошло хорошо"),
    ("tr-TR", 1, "Üzgünüz — bundan sonra olacaklar", "24 saat içinde size dönecek"),
    ("et", 3, "Aitäh — mis teeks sellest 10?", "Vastake lihtsalt sellele kirjale"),
    ("de", 5, "Thank you for your feedback", "we are glad it went well"),  # no catalog: English
])
def test_customer_emails_in_the_customers_language(make_app, smtp_server, locale, rating,
                                                    subject, body):
    """The thank-you email is written in the locale the prompt carried (English fallback)."""
    port, box = smtp_server
    app = make_app("sqlite", **_mail_config(port))
    site = make_site(app)
    token = verified_token(site, moment="checkout", channel="email", email=CUSTOMER,
                           locale=locale)
    assert app.test_client().post(f"/p/{token}", data={"rating": str(rating)}).status_code == 303
    (msg,) = box.to(CUSTOMER)
    assert msg["Subject"].startswith(subject)
    assert body in msg.get_body(("plain",)).get_content()
    assert body in msg.get_body(("html",)).get_content()


def test_verification_page_in_the_customers_language(make_app, smtp_server):
    """The pages a verification link opens (the question, then the answer) speak the
    customer's language."""
    port, box = smtp_server
    app = make_app("sqlite", **_mail_config(port))
    site = make_site(app)
    token = verified_token(site, moment="checkout", channel="email", email=CUSTOMER, locale="et")
    client = app.test_client()
    client.post(f"/p/{token}", data={"rating": "2"})
    with app.app_context():
        cases.transition(db.session.scalar(select(Case.id)), "resolved", "agent@shop.example",
                         resolution="Refunded")
    (mail,) = [m for m in box.to(CUSTOMER) if m["Subject"].startswith("Kas mure")]
    link = mail.get_body(("plain",)).get_content().split("Jah, lahendatud: ")[1].split()[0]
    path = link.replace("http://localhost", "")
    page = client.get(path).get_data(as_text=True)
    assert 'lang="et"' in page and "Kas mure on lahendatud?" in page
    assert "Jah, lahendatud</button>" in page
    page = client.post(path).get_data(as_text=True)
    assert 'lang="et"' in page and "Aitäh kinnituse eest" in page


def test_compiled_catalogs_match_their_sources():
    """Each committed .mo is the compilation of its .po (run `make translations`)."""
    import io
    from pathlib import Path

    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    root = Path(__file__).resolve().parent.parent / "app" / "translations"
    langs = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert langs == ["et", "ru", "tr"]
    for lang in langs:
        folder = root / lang / "LC_MESSAGES"
        with open(folder / "messages.po", "rb") as f:
            catalog = read_po(f, locale=lang)
        out = io.BytesIO()
        write_mo(out, catalog)
        assert out.getvalue() == (folder / "messages.mo").read_bytes(), lang
