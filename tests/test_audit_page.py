"""The owners' audit-log page (/admin/sites/<id>/settings/audit): owners only, one site's events
only, newest first in keyset pages with a constant query count, filters in the URL with
friendly 400s, details escaped, read-only, and a streamed CSV of the filter."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, func, select

from app import audit
from app.extensions import db
from app.models import AuditEvent

from .conftest import make_site
from .test_inbox import PASSWORD, XSS, member, signed_in


def url(site_id: int, rest: str = "") -> str:
    return f"/admin/sites/{site_id}/settings/audit{rest}"


def record(app, site_id: int | None, action: str, actor: str = "system", at: datetime | None = None,
           **kw) -> int:
    """One audit row as app/audit.py writes it; returns its id."""
    with app.app_context():
        row = audit.record(action, actor=actor, site_id=site_id, **kw)
        if at is not None:
            row.at = at
        db.session.commit()
        return row.id


def event_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr id="event-(\d+)"', page)]


@pytest.fixture
def shop(make_app, db_kind):
    """Two sites; the four roles on `own`, an owner of `other`. Pages of 3 events."""
    app = make_app(db_kind, AUDIT_PAGE_SIZE=3)
    own, other = make_site(app, name="Own shop"), make_site(app, name="Other shop")
    for role in ("owner", "lead", "agent", "viewer"):
        member(app, f"{role}@shop.example", own, role)
    member(app, "boss@other.example", other, "owner")
    return app, own, other


def test_owners_only_and_one_site(shop):
    """Owners read their site's log (and its CSV); leads, agents and viewers get 403 on their
    own site; another site's, a missing or an absurd site id is 404 for everyone; another
    site's events never show; the page has no form that changes anything and no POST."""
    app, own, other = shop
    mine = record(app, own.id, "case.note", details={"text": "own marker"})
    record(app, other.id, "case.note", details={"text": "OTHER-SITE-SECRET"})
    record(app, None, "staff.create", details={"text": "GLOBAL-ROW"})
    owner = signed_in(app, "owner@shop.example")
    resp = owner.get(url(own.id))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert mine in event_ids(page) and "own marker" in page
    assert "OTHER-SITE-SECRET" not in page and "GLOBAL-ROW" not in page
    # The membership grants of the fixture are this site's events too.
    with app.app_context():
        expected = db.session.scalar(select(func.count(AuditEvent.id)).where(
            AuditEvent.site_id == own.id))
    assert expected == 5 and len(event_ids(page)) == 3  # one page of 3
    assert 'aria-current="page">Audit log<' in page
    forms = re.findall(r'<form[^>]*method="post"[^>]*>', page)
    assert forms == ['<form method="post" action="/admin/logout">'], forms
    assert owner.post(url(own.id)).status_code in (400, 405)  # CSRF or no such method
    body = owner.get(url(own.id, ".csv")).get_data(as_text=True)
    assert "own marker" in body and "OTHER-SITE-SECRET" not in body
    for target in (url(other.id), url(other.id, ".csv"), url(10**6), url(2**31),
                   url(10**20)):
        assert owner.get(target).status_code == 404, target
    for role in ("lead", "agent", "viewer"):
        client = signed_in(app, f"{role}@shop.example")
        assert client.get(url(own.id)).status_code == 403, role
        assert client.get(url(own.id, ".csv")).status_code == 403, role
        assert client.get(url(other.id)).status_code == 404, role
        nav = client.get("/admin/settings", follow_redirects=True).get_data(as_text=True)
        assert "Audit log" not in nav, role
    boss = signed_in(app, "boss@other.example")
    other_page = boss.get(url(other.id)).get_data(as_text=True)
    assert "OTHER-SITE-SECRET" in other_page and "own marker" not in other_page
    assert app.test_client().get(url(own.id)).status_code == 302  # anonymous: sign in first


def test_keyset_pages_and_constant_queries(shop):
    """Pages of 3 newest first: following "Older events" visits each of the site's events
    exactly once in order (the link carries the last id; no OFFSET), with the same number of
    SQL statements on the first and the third page, and the filter kept in every link."""
    app, own, other = shop
    made = []
    for i in range(10):
        made.append(record(app, own.id, f"case.step{i}", actor="owner@shop.example"))
        record(app, other.id, f"case.step{i}", actor="owner@shop.example")
    owner = signed_in(app, "owner@shop.example")
    with app.app_context():
        engine = db.engine
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)
        if "OFFSET" in statement.upper():  # SQLite renders LIMIT ? OFFSET ? with 0
            assert parameters[-1] == 0, (statement, parameters)

    seen, per_page = [], []
    target: str | None = url(own.id, "?action=case.&actor=owner@shop.example")
    while target:
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            resp = owner.get(target)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert resp.status_code == 200
        page = resp.get_data(as_text=True)
        per_page.append(len(statements))
        seen += event_ids(page)
        m = re.search(r'href="([^"]+)" rel="next"', page)
        target = html.unescape(m.group(1)) if m else None
        if target:
            assert "after=" in target and "action=case." in target and "actor=" in target
    assert seen == sorted(made, reverse=True)
    assert len(per_page) == 4 and per_page[0] == per_page[2], per_page


def test_filters_in_the_url(shop):
    """Who (exact, case-insensitive), action prefix (its _ and % are literal) and a UTC date
    range narrow the log; the CSV has the same rows."""
    app, own, _other = shop
    day = datetime(2026, 11, 20, 12, tzinfo=UTC)
    a = record(app, own.id, "case.note", actor="agent@shop.example", at=day)
    b = record(app, own.id, "root_causes.update", actor="owner@shop.example",
               at=day.replace(day=22))
    c = record(app, own.id, "rootxcauses.update", actor="cli", at=day.replace(day=24))
    d = record(app, own.id, "case.resolve", actor="owner@shop.example", at=day.replace(day=25))
    owner = signed_in(app, "owner@shop.example")
    mine = {a, b, c, d}  # (the fixture's membership grants are events of the site too)

    def shown(qs: str) -> set[int]:
        resp = owner.get(url(own.id, "?" + qs))
        assert resp.status_code == 200, (qs, resp.get_data(as_text=True))
        return set(event_ids(resp.get_data(as_text=True))) & mine

    app.config["AUDIT_PAGE_SIZE"] = 50
    assert shown("actor=OWNER@shop.example") == {b, d}
    assert shown("actor=cli") == {c}
    assert shown("action=case.") == {a, d}
    assert shown("action=root_") == {b}
    assert shown("action=case.resolve") == {d}
    assert shown("from=2026-11-22&to=2026-11-24") == {b, c}
    assert shown("from=2026-11-25") == {d}
    assert shown("to=2026-11-20") == {a}
    assert shown("actor=owner@shop.example&action=case&from=2026-11-21") == {d}
    rows = list(csv.DictReader(io.StringIO(owner.get(
        url(own.id, ".csv?action=case.&after=999")).get_data(as_text=True))))
    assert [int(r["id"]) for r in rows] == [d, a]  # every row of the filter, not one page


@pytest.mark.parametrize("qs, says", [
    ("actor=nobody", "staff email"), ("actor=a%20b@x.example", "staff email"),
    ("action=%3Cscript%3E", "start of an action"), ("action=" + "a" * 65, "start of an action"),
    ("from=2026-13-01", "not a date"), ("to=yesterday", "not a date"),
    ("from=2026-11-02&to=2026-11-01", "ends before it starts"), ("after=abc", "damaged"),
    ("after=%C2%B2", "damaged"), ("after=" + "9" * 20, "damaged"),
    ("actor=a@x.example&actor=b@x.example", "once"),
])
def test_bad_filter_values_are_a_friendly_400(make_app, qs, says):
    """A filter value the page does not understand is a 400 that says which and why, with the
    form kept as typed (the field marked invalid), never a 500; the CSV link too."""
    app = make_app()
    own = make_site(app)
    member(app, "owner@shop.example", own, "owner")
    owner = signed_in(app, "owner@shop.example")
    resp = owner.get(url(own.id, "?" + qs))
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400 and says in html.unescape(page), page
    assert 'role="alert"' in page and "<table" not in page
    assert owner.get(url(own.id, ".csv?" + qs)).status_code == 400


def test_details_and_csv_are_inert(shop):
    """Details can hold customer and staff text: the XSS corpus comes out escaped on the page
    (as strings and inside nested values), and a CSV cell a spreadsheet would read as a
    formula starts with an apostrophe."""
    app, own, _other = shop
    for i, text in enumerate(XSS):
        record(app, own.id, "case.resolve", object_type="case", object_id=f"=cmd|{i}",
               details={"root_cause": text, "nested": {"t": [text]}, text: "key"})
    record(app, own.id, "case.note", actor="=HYPERLINK(\"http://evil.example\")")
    app.config["AUDIT_PAGE_SIZE"] = 50
    owner = signed_in(app, "owner@shop.example")
    page = owner.get(url(own.id)).get_data(as_text=True)
    for raw in ("<script>alert(1)", "<img src=x", "<svg onload"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "javascript:alert(1)" in page and 'href="javascript:' not in page
    assert 'onerror=alert(1)&gt;' in page or "onerror=alert(1)&gt;" in html.unescape(page)
    lines = list(csv.reader(io.StringIO(owner.get(url(own.id, ".csv")).get_data(as_text=True))))
    header, rows = lines[0], lines[1:]
    assert header == ["id", "at", "actor", "action", "object_type", "object_id", "remote_addr",
                      "details"]
    assert any(r[2].startswith("'=HYPERLINK") for r in rows)
    assert sum(r[5].startswith("'=cmd|") for r in rows) == len(XSS)
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r)


@pytest.mark.browser
def test_owner_reads_the_log_in_chromium(make_app):
    """In Chromium an owner opens Settings → Audit log, filters by action, pages to older
    events; XSS in details opens no dialog; axe-core finds no violations; screenshots at
    1280 and 390 px."""

    from .conftest import free_port
    from .test_browser import check_page, chromium_serving, sign_in

    port = free_port()
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", AUDIT_PAGE_SIZE=6)
    own = make_site(app, name="Own shop")
    member(app, "owner@shop.example", own, "owner")
    member(app, "agent@shop.example", own, "agent")
    record(app, own.id, "site.settings", actor="owner@shop.example", object_type="site",
           object_id=own.id, remote_addr="203.0.113.7",
           details={"changed": {"name": {"from": "Shop", "to": "Own shop"},
                                "review_url": {"from": None,
                                               "to": "https://reviews.example/a-rather-long-"
                                                     "path/that/must/wrap/on/phones"}}})
    for i in range(7):
        record(app, own.id, "case.resolve", actor="agent@shop.example", object_type="case",
               object_id=100 + i, remote_addr="2001:db8::42",
               details={"root_cause": f"Courier lost parcel {i} <img src=x onerror=alert(1)>",
                        "customer_message": True, "whys": 2})
    record(app, own.id, "webhook.remove", actor="owner@shop.example", object_type="webhook",
           object_id=7, remote_addr="198.51.100.4", details={"url": "https://hooks.example/x"})
    wait = 10_000
    dialogs: list[str] = []
    with chromium_serving(app, port) as (browser, base):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        sign_in(page, base, "owner@shop.example", PASSWORD)
        page.get_by_role("heading", name="Inbox").wait_for(timeout=wait)
        page.get_by_role("navigation", name="Admin").get_by_role(
            "link", name="Settings").click()
        page.get_by_role("navigation", name="Settings sections").get_by_role(
            "link", name="Audit log").click()
        page.get_by_role("heading", name="Audit log").wait_for(timeout=wait)
        assert page.locator("table.audit-log tbody tr").count() == 6
        check_page(page, "audit-log")
        page.get_by_label("Action starts with").fill("case.")
        page.get_by_role("button", name="Apply filters").click()
        page.wait_for_url(lambda u: "action=case." in u, timeout=wait)
        assert page.locator("table.audit-log tbody tr").count() == 6
        page.get_by_role("link", name="Older events").click()
        page.wait_for_url(lambda u: "after=" in u, timeout=wait)
        assert page.locator("table.audit-log tbody tr").count() == 1
        page.goto(f"{base}{url(own.id, '?from=2026-02-30')}")
        page.get_by_role("alert").wait_for(timeout=wait)
        check_page(page, "audit-log-error")
        assert dialogs == []
        page.close()
