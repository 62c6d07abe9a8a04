"""Flooding: per-IP limits with Retry-After, not bypassed by a forged X-Forwarded-For,
IPv6 grouped by /64; a replayed prompt stays within its own cap."""

from __future__ import annotations

from sqlalchemy import func, select

from app.extensions import db
from app.models import Response

from .conftest import verified_token


def post(client, site, i, ip="198.51.100.7", **headers):
    return client.post(f"/p/{verified_token(site, n=f'flood-{ip}-{i:06d}')}",
                       data={"rating": "5"}, environ_base={"REMOTE_ADDR": ip}, headers=headers)


def test_flood_from_one_ip(app, client, site):
    """150 answers a minute from one IP: 100 stored, 50 refused with 429 + Retry-After;
    another IP is unaffected; a random X-Forwarded-For does not reset the bucket."""
    codes = [post(client, site, i, **{"X-Forwarded-For": f"10.0.{i % 250}.1"}).status_code
             for i in range(150)]
    assert codes.count(303) == 100 and codes.count(429) == 50
    r = post(client, site, 999)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "Too many requests" in r.get_data(as_text=True)
    assert post(client, site, 0, ip="203.0.113.9").status_code == 303
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Response)) == 101


def test_ipv6_shares_a_bucket_per_64(app, client, site):
    """Two addresses in one /64 count together; another /64 does not."""
    app.config["LIMIT_SUBMIT"] = "3 per minute"
    a = [post(client, site, i, ip=f"2001:db8:1:2::{i + 1:x}").status_code for i in range(4)]
    assert a == [303, 303, 303, 429]
    assert post(client, site, 50, ip="2001:db8:1:3::1").status_code == 303


def test_replayed_prompt_is_capped(app, client, site):
    """One prompt sent 50 times: one row; the answer plus 10 replays a minute get the
    thank-you page, later replays 429 with Retry-After."""
    token = verified_token(site, n="replayed-000001")
    replies = [client.post(f"/p/{token}", data={"rating": "4"},
                           environ_base={"REMOTE_ADDR": f"192.0.2.{i}"}) for i in range(50)]
    codes = [r.status_code for r in replies]
    assert codes[:11] == [303] * 11 and set(codes[11:]) == {429}
    assert replies[-1].headers["Retry-After"] == "60"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Response)) == 1
