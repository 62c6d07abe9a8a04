"""Webhook endpoints from the CLI (list, disable, enable, remove) and what "private" opens:
real deliveries to a receiver on 127.0.0.1, run by the embedded job backend."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from app.extensions import db
from app.loop import notify, webhooks
from app.models import DeliveryAttempt, Site, WebhookDelivery, WebhookEndpoint

from .conftest import make_site, verified_token


def _answer(client, site, order: str) -> None:
    token = verified_token(site, moment="checkout", channel="email", customer="c-1",
                           skus=["SKU-7"], order=order)
    resp = client.post(f"/p/{token}", data={"rating": "4"})
    assert resp.status_code == 303, resp.get_data(as_text=True)


def _endpoint(app, site, receiver, path: str) -> int:
    """A response.created endpoint on the local receiver (through the test-only escape)."""
    app.config["WEBHOOK_LOOPBACK_PORTS_FOR_TESTS"] = [receiver.port]
    with app.app_context():
        ep = webhooks.create_endpoint(db.session.get(Site, site.id), receiver.url(path),
                                      ["response.created"])
        return ep.id


def _cli(app, *args: str, **kw):
    return app.test_cli_runner().invoke(args=list(args), **kw)


def _count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def test_disabled_endpoint_holds_deliveries_until_enabled(make_app, db_kind, clock, receiver):
    """`webhooks disable`: a due retry is not attempted and new events skip the endpoint;
    `webhooks enable` sends the delivery that waited, once, with its webhook-id."""
    app = make_app(db_kind, WEBHOOK_RETRY_SECONDS=[60])
    site = make_site(app)
    ep_id = _endpoint(app, site, receiver, "/fail")
    _answer(app.test_client(), site, "1001")  # attempt 1: HTTP 500, retry in 60 s
    assert [p for p, _h, _b in receiver.requests] == ["/fail"]

    result = _cli(app, "webhooks", "disable", str(ep_id))
    assert result.exit_code == 0, result.output
    assert f"endpoint {ep_id} disabled (1 pending deliveries wait)" in result.output
    listing = _cli(app, "webhooks", "list", site.public_key).output
    assert listing == (f"{ep_id}\tdisabled\t{receiver.url('/fail')}\tresponse.created\t"
                       "team=-\tpending=1\n")

    clock.advance(timedelta(seconds=61))
    with app.app_context():
        assert notify.retry_due(clock.now) == 1  # handed over, and held back by the job
        d = db.session.scalar(select(WebhookDelivery))
        assert (d.status, d.attempts) == ("pending", 1)
        db.session.get(WebhookEndpoint, ep_id).url = receiver.url("/ok")  # receiver fixed
        db.session.commit()
    _answer(app.test_client(), site, "1002")  # a new event while disabled: no delivery
    assert len(receiver.requests) == 1
    with app.app_context():
        assert _count(WebhookDelivery) == 1

    result = _cli(app, "webhooks", "enable", str(ep_id))
    assert result.exit_code == 0, result.output
    assert f"endpoint {ep_id} enabled (1 pending deliveries handed over)" in result.output
    assert [p for p, _h, _b in receiver.requests] == ["/fail", "/ok"]
    ids = {{k.lower(): v for k, v in h.items()}["webhook-id"] for _p, h, _b in receiver.requests}
    assert len(ids) == 1
    with app.app_context():
        d = db.session.scalar(select(WebhookDelivery))
        assert (d.status, d.attempts, d.last_status_code) == ("succeeded", 2, 204)
        assert notify.retry_due(clock.now + timedelta(days=1)) == 0
    assert len(receiver.requests) == 2
    listing = _cli(app, "webhooks", "list", site.public_key).output
    assert listing.startswith(f"{ep_id}\tactive\t") and listing.endswith("pending=0\n")


def test_remove_deletes_endpoint_with_its_delivery_log(make_app, db_kind, receiver):
    """`webhooks remove` asks first, then deletes the endpoint, its deliveries and attempts;
    another endpoint's log stays; an unknown id is one error line."""
    app = make_app(db_kind)
    site = make_site(app)
    gone = _endpoint(app, site, receiver, "/fail")
    kept = _endpoint(app, site, receiver, "/ok")
    _answer(app.test_client(), site, "1001")
    with app.app_context():
        assert (_count(WebhookDelivery), _count(DeliveryAttempt)) == (2, 2)

    declined = _cli(app, "webhooks", "remove", str(gone), input="n\n")
    assert declined.exit_code != 0 and "Aborted" in declined.output
    with app.app_context():
        assert _count(WebhookEndpoint) == 2

    result = _cli(app, "webhooks", "remove", str(gone), "--yes")
    assert result.exit_code == 0, result.output
    assert f"endpoint {gone} ({receiver.url('/fail')}) removed with 1 deliveries" in result.output
    with app.app_context():
        assert db.session.scalars(select(WebhookEndpoint.id)).all() == [kept]
        [d] = db.session.scalars(select(WebhookDelivery)).all()
        assert d.endpoint_id == kept and d.status == "succeeded"
        assert db.session.scalars(select(DeliveryAttempt.delivery_id)).all() == [d.id]
    assert _cli(app, "webhooks", "list", site.public_key).output.startswith(f"{kept}\tactive")

    missing = _cli(app, "webhooks", "remove", str(gone), "--yes")
    assert missing.exit_code == 1
    assert missing.output == f"Error: no webhook endpoint {gone}\n"
    for command in ("disable", "enable"):
        assert _cli(app, "webhooks", command, "999999").output == (
            "Error: no webhook endpoint 999999\n")


def test_allow_private_saves_private_networks_only(app):
    """With --webhooks-allow-private, RFC 1918 and ULA targets can be saved; loopback,
    link-local, cloud metadata and shared addresses are still refused."""
    site = make_site(app)
    result = _cli(app, "site-settings", site.public_key, "--webhooks-allow-private")
    assert result.exit_code == 0 and "webhooks_allow_private=True" in result.output
    for url in ("http://10.1.2.3/hook", "https://172.20.0.5:8443/hook",
                "http://192.168.0.10/hook", "http://[fd12::5]/hook"):
        added = _cli(app, "webhooks", "add", site.public_key, url)  # saving sends nothing
        assert added.exit_code == 0, (url, added.output)
    for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook",
                "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/hook",
                "http://[::ffff:127.0.0.1]/hook", "http://100.64.0.1/hook"):
        refused = _cli(app, "webhooks", "add", site.public_key, url)
        assert refused.exit_code != 0 and "refused" in refused.output, url
    with app.app_context():
        assert _count(WebhookEndpoint) == 4


def test_allow_private_endpoint_on_loopback_is_refused_when_sent(make_app, receiver):
    """An endpoint on 127.0.0.1 saved under the old meaning of allow-private is refused at
    send time: the receiver is never contacted."""
    app = make_app("sqlite")
    site = make_site(app)
    with app.app_context():
        s = db.session.get(Site, site.id)
        s.webhooks_allow_private = True
        db.session.add(WebhookEndpoint(site_id=s.id, url=receiver.url("/ok"),
                                       events=["response.created"]))
        db.session.commit()
    _answer(app.test_client(), site, "1001")
    with app.app_context():
        d = db.session.scalar(select(WebhookDelivery))
        assert (d.status, d.attempts, d.last_status_code) == ("pending", 1, None)
        assert d.last_error == "refused: 127.0.0.1: loopback address not allowed"
    assert receiver.requests == []
