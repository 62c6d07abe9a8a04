"""Untrusted input: every bad answer gets a clear 4xx, stores nothing, and never a 500."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Case, Outbox, Response

from .conftest import ORIGIN, login, public_prompt


def rows(app) -> tuple[int, int, int]:
    with app.app_context():
        return tuple(db.session.scalar(select(func.count()).select_from(m))
                     for m in (Response, Case, Outbox))


@pytest.mark.parametrize("rating", ["11", "-1", "5.5", "x", "", "NaN", "1e1", "0x1",
                                    "3; DROP TABLE"])
def test_bad_ratings_form(app, client, site, rating):
    """Ratings outside the scale or not integers: 400 with the form and a message."""
    path = public_prompt(client, site, "checkout")
    r = client.post(path, data={"rating": rating})
    assert r.status_code == 400
    page = r.get_data(as_text=True)
    assert 'role="alert"' in page and "<form" in page
    assert rows(app) == (0, 0, 0)


@pytest.mark.parametrize("rating", [11, -1, 5.5, "x", True, None, [5], {"v": 5}, 1e308])
def test_bad_ratings_json(app, client, site, rating):
    """The JSON form of the same answers: 400 JSON naming the field."""
    path = public_prompt(client, site, "checkout")
    r = client.post(path, json={"rating": rating})
    assert r.status_code == 400 and r.is_json
    assert r.json["error"] in ("invalid", "bad_request")
    assert rows(app) == (0, 0, 0)


@pytest.mark.parametrize("comment,message", [
    ("x" * 1001, "longer than 1000"),
    ("hello\x00world", "NUL"),
])
def test_bad_comments(app, client, site, comment, message):
    """A 1,001-character comment or a NUL byte: 400 saying why, nothing stored."""
    path = public_prompt(client, site, "checkout")
    r = client.post(path, data={"rating": "4", "comment": comment})
    assert r.status_code == 400 and message in r.get_data(as_text=True)
    r = client.post(path, json={"rating": 4, "comment": comment})
    assert r.status_code == 400 and message in json.dumps(r.json)
    assert rows(app) == (0, 0, 0)


def test_lone_surrogate_json(app, client, site):
    """A lone surrogate (valid JSON, invalid text) is refused, not passed to the database."""
    path = public_prompt(client, site, "checkout")
    r = client.post(path, data='{"rating": 4, "comment": "\\ud800"}',
                    content_type="application/json")
    assert r.status_code == 400
    assert rows(app) == (0, 0, 0)


def test_exactly_1000_chars_is_fine(app, client, site):
    """The limit is inclusive, after normalising CRLF."""
    path = public_prompt(client, site, "checkout")
    r = client.post(path, data={"rating": "4", "comment": "y" * 998 + "\r\n"})
    assert r.status_code == 303
    assert rows(app) == (1, 1, 1)


def test_one_megabyte_body(app, client, site):
    """1 MB bodies (form or JSON, to the form or the issuer): 413, nothing stored."""
    path = public_prompt(client, site, "checkout")
    big = "a" * (1024 * 1024)
    r = client.post(path, data={"rating": "4", "comment": big})
    assert r.status_code == 413
    r = client.post(path, data=json.dumps({"rating": 4, "comment": big}),
                    content_type="application/json")
    assert r.status_code == 413 and r.is_json
    r = client.post("/e/prompt", data=json.dumps({"site": site.public_key, "x": big}),
                    headers={"Origin": ORIGIN})
    assert r.status_code == 413 and r.is_json
    assert rows(app) == (0, 0, 0)


@pytest.mark.parametrize("body", ["", "null", "[1,2]", "\"s\"", "{bad json", "\xff\xfe"])
def test_issuer_rejects_non_objects(client, site, body):
    """/e/prompt needs a JSON object: anything else is a 400 JSON error."""
    r = client.post("/e/prompt", data=body, headers={"Origin": ORIGIN})
    assert r.status_code == 400 and r.is_json


@pytest.mark.parametrize("field,value", [
    ("site", 5), ("site", None), ("moment", ["a"]), ("moment", "../../x"), ("channel", "fax"),
    ("skus", "x" * 101), ("skus", [str(i) for i in range(21)]), ("skus", {"a": 1}),
    ("order", {"a": 1}), ("order", "o" * 101), ("order", "a\x00b"),
])
def test_issuer_rejects_bad_context(app, client, site, field, value):
    """Bad prompt context from the page: 400 JSON, no impression."""
    body = {"site": site.public_key, "moment": "checkout", "vid": "v", field: value}
    r = client.post("/e/prompt", data=json.dumps(body), headers={"Origin": ORIGIN})
    assert r.status_code == 400 and r.is_json, r.get_data(as_text=True)


def test_script_in_comment_is_escaped(app, client, site):
    """A script in a comment is stored as text and shown escaped in the staff list."""
    payload = '<script>alert(1)</script><img src=x onerror=alert(2)>'
    path = public_prompt(client, site, "checkout")
    assert client.post(path, data={"rating": "1", "comment": payload}).status_code == 303
    with app.app_context():
        from app import staff
        from app.admin import permissions
        from app.models import Site

        user = staff.create("agent@shop.example", "correct horse battery")
        permissions.grant(user, db.session.get(Site, site.id), "agent")  # only members see it
    assert login(client, "agent@shop.example", "correct horse battery").status_code == 302
    page = client.get("/admin/").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page and "<img src=x" not in page


def test_honeypot_looks_fine_but_stores_nothing(app, client, site):
    """A bot filling the hidden field gets a thank-you and no row."""
    path = public_prompt(client, site, "checkout")
    r = client.post(path, data={"rating": "5", "website": "http://spam.example"})
    assert r.status_code == 200 and "Thank you" in r.get_data(as_text=True)
    assert rows(app) == (0, 0, 0)


@pytest.mark.parametrize("method,url", [
    ("GET", "/t/does-not-exist"), ("GET", "/t/" + "x" * 500), ("PUT", "/p/abc"),
    ("GET", "/nope"), ("DELETE", "/e/prompt"), ("GET", "/widget.zzz.js"),
])
def test_unknown_paths_and_methods(client, method, url):
    """Unknown ids, paths and methods: 4xx/3xx, never a 500."""
    r = client.open(url, method=method)
    assert 300 <= r.status_code < 500
