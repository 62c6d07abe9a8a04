"""The inbox (the admin home page): scoping, every filter, saved-view counts, keyset pages with
a constant query count, bulk acknowledge and tag, the streamed CSV export with formula cells
neutralised, and an XSS corpus that stays inert."""

from __future__ import annotations

import csv
import html
import io
import re
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import event, select

from app import staff
from app.admin import permissions
from app.extensions import db
from app.models import AuditEvent, Case, CaseEvent, Response, Site, StaffUser

from .conftest import login, make_site, public_prompt, verified_token

PASSWORD = "a long enough password"
XSS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>',
       "javascript:alert(1)", "<svg onload=alert(1)>", "a\r\nSet-Cookie: x=1"]


def answer(client, site: Site, rating: int = 2, comment: str | None = None,
           moment: str = "checkout", channel: str = "web", skus: tuple[str, ...] = (),
           order: str | None = None, verified: bool = True) -> int:
    """One customer answer through the real prompt; returns its case id."""
    if verified:
        token = verified_token(site, moment=moment, channel=channel, skus=list(skus),
                               order=order or "1001", customer="c-1", n=uuid.uuid4().hex)
        path = f"/p/{token}"
    else:
        path = public_prompt(client, site, moment, channel=channel, skus=list(skus))
    data = {"rating": str(rating)}
    if comment is not None:
        data["comment"] = comment
    resp = client.post(path, data=data, base_url=client.application.config["PUBLIC_BASE_URL"])
    assert resp.status_code == 303, resp.get_data(as_text=True)
    with client.application.app_context():
        return db.session.scalar(select(Case.id).order_by(Case.id.desc()).limit(1))


def member(app, email: str, site: Site, role: str) -> int:
    """A staff account with `role` on `site`; returns its id."""
    with app.app_context():
        user = staff.create(email, PASSWORD, "agent")
        permissions.grant(user, db.session.get(Site, site.id), role)
        return user.id


def signed_in(app, email: str = "lead@shop.example"):
    client = app.test_client()
    assert login(client, email, PASSWORD).status_code == 302
    return client


def ids_on(page: str) -> list[int]:
    """Case ids of the inbox rows, in order."""
    return [int(i) for i in re.findall(r'<tr id="case-(\d+)"', page)]


def csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def set_case(app, case_id: int, **values) -> None:
    with app.app_context():
        c = db.session.get(Case, case_id)
        for k, v in values.items():
            setattr(c, k, v)
        db.session.commit()


@pytest.fixture
def shop(make_app, db_kind, clock):
    """Two sites with answers; a lead of `own` signed in. Small pages (3 rows)."""
    app = make_app(db_kind, INBOX_PAGE_SIZE=3)
    own, other = make_site(app, name="Own shop"), make_site(app, name="Other shop")
    member(app, "lead@shop.example", own, "lead")
    member(app, "boss@other.example", other, "owner")
    return app, own, other


def test_inbox_is_home_and_scoped(shop):
    """/admin/ (endpoint admin.responses) lists only the person's sites' cases, one row per case
    with its number linking to /admin/cases/<id>, rating/segment, comment, moment, channel,
    SKUs, team, priority, status and the next stage's SLA state; another site's cases are
    neither listed nor exported, and its id in the site filter is refused."""
    app, own, other = shop
    client = app.test_client()
    mine = answer(client, own, 1, "own-visible broken", skus=("TV-55",), channel="email")
    theirs = answer(client, other, 1, "other-secret broken")
    lead = signed_in(app)
    page = lead.get("/admin/").get_data(as_text=True)
    assert ids_on(page) == [mine]
    assert f'href="/admin/cases/{mine}">#{mine}</a>' in page
    for text in ("own-visible broken", "1 · negative", "checkout", "email", "TV-55",
                 "critical", "new", "ack due in 2 h", "Own shop"):
        assert text in page, text
    assert "other-secret" not in page and "Other shop" not in page
    with app.test_request_context():
        from flask import url_for
        assert url_for("admin.responses") == "/admin/"
    assert lead.get(f"/admin/?site={other.id}").status_code == 400
    body = lead.get("/admin/export.csv").get_data(as_text=True)
    assert "own-visible" in body and "other-secret" not in body
    assert [r[0] for r in csv.reader(io.StringIO(body))][1:] == [str(mine)]
    assert theirs not in ids_on(lead.get("/admin/?status=open").get_data(as_text=True))


def test_each_filter(shop, clock):
    """Every filter of the query string selects exactly the matching cases."""
    app, own, _other = shop
    client = app.test_client()
    start = clock.now
    a = answer(client, own, 1, "The TV arrived broken", moment="delivery", channel="email",
               skus=("TV-55", "MS-3"))
    b = answer(client, own, 5, "Lovely checkout", moment="checkout", skus=("TVX-1",))
    c = answer(client, own, 2, None, moment="checkout", channel="app", skus=("TV-42",),
               verified=False)
    clock.advance(timedelta(days=2))
    d = answer(client, own, 9, "fine 100% sure_thing", moment="delivery", channel="sms")
    set_case(app, a, team="tv", status="acknowledged", acknowledged_at=clock.now)
    with app.app_context():
        db.session.get(Response, db.session.get(Case, b).response_id).has_voice = True
        db.session.commit()
    lead = signed_in(app)

    def shown(qs: str) -> set[int]:
        resp = lead.get("/admin/?" + qs + "&sort=newest")
        assert resp.status_code == 200, (qs, resp.status_code)
        ids, page = [], resp.get_data(as_text=True)
        ids += ids_on(page)
        while (m := re.search(r'href="([^"]+)" rel="next"', page)):
            page = lead.get(html.unescape(m.group(1))).get_data(as_text=True)
            ids += ids_on(page)
        assert len(ids) == len(set(ids))
        return set(ids)

    everything = {a, b, c, d}
    assert shown("") == everything
    assert shown("status=acknowledged") == {a}
    assert shown("status=new") == {b, c, d}
    assert shown("status=open") == everything
    assert shown("status=resolved") == set()
    assert shown("segment=negative") == {a, c}
    assert shown("segment=detractor") == {a}
    assert shown("segment=promoter") == {d}
    assert shown("segment=positive") == {b, d}
    assert shown("moment=delivery") == {a, d}
    assert shown("moment=delivery&moment=checkout") == everything
    assert shown("channel=app") == {c}
    assert shown("sku=TV-55") == {a}
    assert shown("sku=TV-*") == {a, c}
    assert shown("sku=TV*") == {a, b, c}
    assert shown("sku=TV-5") == set()
    assert shown("team=tv") == {a}
    assert shown(f"site={own.id}") == everything
    assert shown("priority=critical") == {a}
    assert shown("comment=yes") == {a, b, d}
    assert shown("comment=no") == {c}
    assert shown("voice=yes") == {b}
    assert shown("verified=no") == {c}
    assert shown("verified=yes") == {a, b, d}
    day0, day2 = start.date().isoformat(), clock.now.date().isoformat()
    assert shown(f"from={day2}") == {d}
    assert shown(f"to={day0}") == {a, b, c}
    assert shown(f"from={day0}&to={day2}") == everything
    assert shown("q=BROKEN") == {a}
    assert shown("q=100%25") == {d}  # % and _ are literal, not wildcards
    assert shown("q=s_re") == set()  # "_" is no wildcard: "sure" does not match
    assert shown("q=sure_thing") == {d}
    # Two days later every acknowledge of the new cases is overdue; a is acknowledged and its
    # follow-up (24 h for a detractor) is overdue too.
    assert shown("due=overdue") == {a, b, c}
    assert shown("due=soon") == set()  # d's ack is due in 2 h
    clock.advance(timedelta(hours=1, minutes=30))
    assert shown("due=soon") == {d}
    assert shown("assignee=none") == everything
    with app.app_context():
        lead_id = db.session.scalar(select(StaffUser.id).where(
            StaffUser.email == "lead@shop.example"))
    set_case(app, b, assignee_id=lead_id)
    assert shown("assignee=mine") == {b}
    assert shown(f"assignee={lead_id}") == {b}
    assert shown("assignee=none") == {a, c, d}
    assert shown("assignee=mine&status=open&priority=high") == set()


BAD = ["status=lost", "segment=angry", "channel=pigeon", "priority=urgent", "site=abc",
       "site=999999", "from=yesterday", "to=2026-13-01", "from=2026-02-02&to=2026-01-01",
       "due=later", "comment=maybe", "sort=random", "after=garbage", "after=2026-01-01,x",
       "sku=" + "x" * 101, "moment=%3Cscript%3E", "q=" + "x" * 201, "verified=1",
       "assignee=everyone", "assignee=mine&assignee=none", "assignee=" + "9" * 12,
       "status=new&sort=due&sort=newest", "site=%C2%B2", "assignee=%C2%B2",
       "after=2026-01-01T00:00:00%2B00:00,99999999999999999999", "after=2026-01-01,5",
       "site=-1", "from=2026-02-30", "q=a%00b", "moment=a%00", "team=%0d%0a"]


@pytest.mark.parametrize("qs", BAD)
def test_invalid_filter_is_a_friendly_400(make_app, qs):
    """An unknown filter value is a 400 page in the admin layout that says what was wrong and
    links back to the inbox; never a 500. The CSV export answers the same."""
    app = make_app()
    own = make_site(app, name="Own shop")
    member(app, "lead@shop.example", own, "lead")
    lead = signed_in(app)
    for path in ("/admin/", "/admin/export.csv"):
        resp = lead.get(f"{path}?{qs}")
        assert resp.status_code == 400, (path, qs)
        page = resp.get_data(as_text=True)
        assert "That filter was not understood" in page and 'href="/admin/"' in page
        assert "<script>" not in page


def nav_counts(page: str) -> dict[str, tuple[str, int]]:
    out = {}
    for href, label, n in re.findall(
            r'<li><a href="([^"]+)"[^>]*>([A-Za-z ]+) <span class="count">(\d+)</span>', page):
        out[label] = (html.unescape(href), int(n))
    return out


def test_saved_views_with_counts(shop, clock):
    """The navigation shows "My open", "Overdue", "Critical", "Unassigned" with counts that
    equal the rows of the view they link to, from one query."""
    app, own, other = shop
    client = app.test_client()
    a = answer(client, own, 1, "broken")        # critical
    b = answer(client, own, 4, "ok")
    c = answer(client, own, 3, "meh")
    answer(client, other, 1, "broken elsewhere")  # never counted
    with app.app_context():
        lead_id = db.session.scalar(select(StaffUser.id).where(
            StaffUser.email == "lead@shop.example"))
    set_case(app, b, assignee_id=lead_id)
    set_case(app, c, assignee_id=lead_id)
    clock.advance(timedelta(hours=3))  # every ack (2 h) overdue
    set_case(app, c, status="resolved", acknowledged_at=clock.now, followed_up_at=clock.now,
             closed_at=clock.now)
    lead = signed_in(app)
    page = lead.get("/admin/").get_data(as_text=True)
    counts = nav_counts(page)
    assert list(counts) == ["My open", "Overdue", "Critical", "Unassigned"]
    expected = {"My open": {b}, "Overdue": {a, b}, "Critical": {a}, "Unassigned": {a}}
    with app.test_request_context():  # the four counts are one statement
        from flask_login import login_user

        from app.admin.inbox import saved_view_counts
        from app.models import utcnow
        login_user(db.session.get(StaffUser, lead_id))
        statements: list[str] = []

        def count(conn, cursor, statement, *args):
            statements.append(statement)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert [n for _l, _u, n in saved_view_counts(utcnow())] == [1, 2, 1, 1]
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert len(statements) == 1, statements
    for label, (href, n) in counts.items():
        assert n == len(expected[label]), label
        listed = set(ids_on(lead.get(href + "&sort=newest").get_data(as_text=True)))
        assert listed == expected[label], label


def test_keyset_pages_and_constant_queries(shop, clock):
    """Pages of 3 by next due time and by newest: following "next page" visits every case
    exactly once in order (no OFFSET: the link carries the last row's key and id), with
    the same number of SQL statements for page 1 and page 3."""
    app, own, _other = shop
    client = app.test_client()
    made = []
    for i in range(10):
        made.append(answer(client, own, (i % 5) + 1, f"answer {i}"))
        clock.advance(timedelta(minutes=7))
    # Ties in due time: two cases share one, and one has no open stage (sorts last).
    set_case(app, made[3], ack_due_at=clock.now + timedelta(hours=1))
    set_case(app, made[4], ack_due_at=clock.now + timedelta(hours=1))
    set_case(app, made[0], status="resolved", acknowledged_at=clock.now,
             followed_up_at=clock.now, closed_at=clock.now)
    lead = signed_in(app)
    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)
        if "OFFSET" in statement.upper():  # SQLite renders LIMIT ? OFFSET ? with 0
            assert parameters[-1] == 0, (statement, parameters)

    for sort in ("due", "newest"):
        seen, per_page = [], []
        url = f"/admin/?sort={sort}"
        while url:
            statements.clear()
            event.listen(engine, "before_cursor_execute", count)
            try:
                page = lead.get(url).get_data(as_text=True)
            finally:
                event.remove(engine, "before_cursor_execute", count)
            per_page.append(len(statements))
            seen += ids_on(page)
            m = re.search(r'href="([^"]+)" rel="next"', page)
            url = html.unescape(m.group(1)) if m else None
            if url:
                assert "after=" in url and f"sort={sort}" in url
        assert len(per_page) == 4 and sorted(seen) == sorted(made) and len(set(seen)) == 10
        assert per_page[0] == per_page[2], per_page
        with app.app_context():
            cases = {c.id: c for c in db.session.scalars(select(Case))}
        if sort == "newest":
            assert seen == sorted(made, key=lambda x: (cases[x].created_at, x), reverse=True)
        else:
            assert seen[-1] == made[0]
            assert seen.index(made[3]) + 1 == seen.index(made[4])


def test_postgres_plans_use_the_inbox_indexes(make_app, clock):
    """On PostgreSQL the inbox's own statements (captured from real requests) can be served by
    its indexes: the comment search by the trigram index, the due-time sort and its keyset by
    the (next due time, id) expression index, which Alembic cannot compare (bench/RESULTS.md
    has the plans at a million answers). Seq scans and sorts (or plain index scans) are priced
    out (and nested loops for the search), so a few rows show whether the index can serve
    the statement at all."""
    app = make_app("postgres", INBOX_PAGE_SIZE=3)
    own = make_site(app, name="Own shop")
    member(app, "lead@shop.example", own, "lead")
    client = app.test_client()
    for i in range(5):
        answer(client, own, (i % 5) + 1, f"the refund took {i} weeks")
        clock.advance(timedelta(minutes=7))
    lead = signed_in(app)
    with app.app_context():
        engine = db.engine
    pages: list[tuple[str, Any]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("SELECT cases.id") and "LIMIT" in statement:
            pages.append((statement, parameters))

    def plan(url: str, *off: str) -> str:
        pages.clear()
        event.listen(engine, "before_cursor_execute", grab)
        try:
            assert lead.get(url).status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", grab)
        statement, parameters = pages[-1]
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            for setting in ("seqscan", *off):
                raw.execute(f"SET enable_{setting} = off")
            return "\n".join(r[0] for r in raw.execute("EXPLAIN " + statement, parameters))

    assert "ix_responses_comment_trgm" in plan("/admin/?q=refund", "indexscan", "nestloop")
    first = lead.get("/admin/?sort=due").get_data(as_text=True)
    for url in ("/admin/?sort=due", html.unescape(
            re.search(r'href="([^"]+)" rel="next"', first).group(1))):
        text = plan(url, "sort")
        assert "ix_cases_sort_due" in text and "Sort Key" not in text, text
    assert "ix_cases_created_id" in plan("/admin/?sort=newest", "sort")


def test_bulk_acknowledge_and_tag(shop):
    """Bulk acknowledge goes through the lifecycle per case (events, audit rows), skips a case
    that cannot be acknowledged with a summary, and never touches another site's case whose id
    was slipped into the POST; a viewer's bulk action changes nothing; tags are added once."""
    app, own, other = shop
    client = app.test_client()
    a, b, done = (answer(client, own, 1, "x"), answer(client, own, 2, "y"),
                  answer(client, own, 3, "z"))
    theirs = answer(client, other, 1, "theirs")
    set_case(app, done, status="resolved")
    lead = signed_in(app)
    page = lead.get("/admin/").get_data(as_text=True)
    resp = lead.post("/admin/inbox/bulk", data={
        "csrf_token": csrf(page), "action": "acknowledge", "next": "/admin/?status=open",
        "ids": [str(a), str(b), str(done), str(theirs), "²", "9" * 20, "-1", "x"]})
    assert resp.status_code == 302 and resp.headers["Location"] == "/admin/?status=open"
    page = lead.get("/admin/?status=open").get_data(as_text=True)
    assert (f"Acknowledged 2 cases. Skipped #{done}: a resolved case cannot become "
            "acknowledged.") in html.unescape(page)
    with app.app_context():
        status = {c.id: c.status for c in db.session.scalars(select(Case))}
        assert (status[a], status[b], status[done], status[theirs]) == (
            "acknowledged", "acknowledged", "resolved", "new")
        kinds = db.session.scalars(select(CaseEvent.case_id).where(
            CaseEvent.kind == "acknowledged", CaseEvent.actor == "lead@shop.example")).all()
        assert sorted(kinds) == [a, b]
        audited = db.session.scalars(select(AuditEvent.object_id).where(
            AuditEvent.action == "case.acknowledge")).all()
        assert sorted(map(str, audited)) == sorted([str(a), str(b)])
    # No CSRF token: refused, nothing changes.
    assert lead.post("/admin/inbox/bulk", data={"action": "tag", "tag": "x",
                                                "ids": [str(a)]}).status_code == 400
    token = csrf(page)
    for _ in range(2):
        lead.post("/admin/inbox/bulk", data={"csrf_token": token, "action": "tag",
                                             "tag": " vip  customer ", "ids": [str(a),
                                                                                str(theirs)]})
    assert f"Skipped #{a}: no tag changed" in html.unescape(
        lead.get("/admin/").get_data(as_text=True))
    with app.app_context():
        assert db.session.get(Case, a).tags.count("vip customer") == 1
        assert "vip customer" not in db.session.get(Case, theirs).tags
        assert len(db.session.scalars(select(CaseEvent).where(CaseEvent.kind == "tags")
                                      ).all()) == 1
    # Assign: to the lead; a person of another site is refused per case; other ids ignored.
    with app.app_context():
        lead_id, boss_id = (db.session.scalar(select(StaffUser.id).where(
            StaffUser.email == e)) for e in ("lead@shop.example", "boss@other.example"))
    lead.post("/admin/inbox/bulk", data={"csrf_token": token, "action": "assign",
                                         "assignee": str(lead_id),
                                         "ids": [str(a), str(b), str(theirs)]})
    assert "Assigned 2 cases." in lead.get("/admin/").get_data(as_text=True)
    lead.post("/admin/inbox/bulk", data={"csrf_token": token, "action": "assign",
                                         "assignee": str(boss_id), "ids": [str(a)]})
    assert "assign the case to a member of its site who works cases" in html.unescape(
        lead.get("/admin/").get_data(as_text=True))
    with app.app_context():
        owners = {c.id: c.assignee_id for c in db.session.scalars(select(Case))}
        assert (owners[a], owners[b], owners[theirs]) == (lead_id, lead_id, None)
        assert len(db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "case.assign")).all()) == 2
    mine = ids_on(lead.get("/admin/?assignee=mine").get_data(as_text=True))
    assert sorted(mine) == sorted([a, b])
    # A viewer may look but not act.
    member(app, "viewer@shop.example", own, "viewer")
    viewer = signed_in(app, "viewer@shop.example")
    vpage = viewer.get("/admin/").get_data(as_text=True)
    viewer.post("/admin/inbox/bulk", data={"csrf_token": csrf(vpage), "action": "tag",
                                           "tag": "nope", "ids": [str(b)]})
    assert "1 not yours to change" in viewer.get("/admin/").get_data(as_text=True)
    with app.app_context():
        assert "nope" not in db.session.get(Case, b).tags


def join_teams(app, user_id: int, site: Site) -> None:
    """Make the person a member of every team of the site."""
    from app.models import Team, team_members

    with app.app_context():
        for team_id in db.session.scalars(select(Team.id).where(Team.site_id == site.id)):
            db.session.execute(team_members.insert().values(team_id=team_id,
                                                            staff_user_id=user_id))
        db.session.commit()


def test_bulk_follows_the_team_rule_of_the_case_view(shop):
    """An agent's bulk action applies to cases of their teams, of no team or assigned to them
    (the case view's rule); another team's case is counted as not theirs and left alone."""
    app, own, _other = shop
    client = app.test_client()
    theirs_team, no_team, assigned = (answer(client, own, 1, "x"), answer(client, own, 2, "y"),
                                      answer(client, own, 2, "z"))
    agent_id = member(app, "agent@shop.example", own, "agent")
    set_case(app, theirs_team, team="logistics")
    set_case(app, no_team, team=None)
    set_case(app, assigned, team="logistics", assignee_id=agent_id)
    agent = signed_in(app, "agent@shop.example")
    page = agent.get("/admin/").get_data(as_text=True)
    agent.post("/admin/inbox/bulk", data={"csrf_token": csrf(page), "action": "acknowledge",
                                          "ids": [str(theirs_team), str(no_team),
                                                  str(assigned)]})
    text = html.unescape(agent.get("/admin/").get_data(as_text=True))
    assert "Acknowledged 2 cases. 1 not yours to change" in text
    with app.app_context():
        status = {c.id: c.status for c in db.session.scalars(select(Case))}
    assert (status[theirs_team], status[no_team], status[assigned]) == (
        "new", "acknowledged", "acknowledged")


def test_csv_export_streams_and_neutralises_formulas(shop):
    """The export follows the filter, is streamed from a generator, and cells a spreadsheet
    would run as a formula (= + - @ tab CR) start with an apostrophe; an agent (no export
    right) gets 403."""
    app, own, _other = shop
    client = app.test_client()
    payloads = ["=HYPERLINK(\"http://evil.example\")", "+1+1", "-2+3", "@SUM(A1)",
                "\ttabbed", "\rreturn"]
    made = [answer(client, own, 1, p, skus=("=cmd|' /C calc'!A0",), order="@order")
            for p in payloads]
    answer(client, own, 5, "happy", moment="delivery")
    lead = signed_in(app)
    resp = lead.get("/admin/export.csv?moment=checkout&sort=newest")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert resp.is_streamed
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert [int(r["case"]) for r in rows] == sorted(made, reverse=True)
    with app.app_context():  # stored as the answer keeps them (leading whitespace trimmed)
        stored = db.session.scalars(select(Response.comment).where(Response.rating == 1)).all()
    assert sorted(r["comment"] for r in rows) == sorted(
        "'" + c if c[0] in "=+-@\t\r" else c for c in stored)
    assert sum(r["comment"].startswith("'") for r in rows) >= 4
    from app.admin.inbox import neutralise
    for cell in payloads:
        assert neutralise(cell) == "'" + cell
    assert neutralise("plain") == "plain" and neutralise(-5) == -5
    assert {r["skus"] for r in rows} == {"'=cmd|' /C calc'!A0"}
    assert {r["order"] for r in rows} == {"'@order"}
    member(app, "agent@shop.example", own, "agent")
    assert signed_in(app, "agent@shop.example").get("/admin/export.csv").status_code == 403


def test_csv_export_is_a_generator(make_app):
    """The export view returns a generator-backed response: rows are produced while they are
    sent (yield_per batches), never built as one string."""
    import inspect

    app = make_app()
    own = make_site(app, name="Own shop")
    member(app, "lead@shop.example", own, "lead")
    for i in range(5):
        answer(app.test_client(), own, 2, f"row {i}")
    lead = signed_in(app)
    resp = lead.get("/admin/export.csv", buffered=False)
    try:
        assert resp.is_streamed
        first = next(iter(resp.response))
        assert first.decode().startswith("case,created_at,site")
        from app.admin import inbox
        assert inspect.isgeneratorfunction(inbox.export_rows)
        rest = b"".join(resp.response).decode()
        assert rest.count("row ") == 5
    finally:
        resp.close()


def test_xss_corpus_is_inert(shop):
    """Script tags, event handlers, javascript: URLs, SVG and CRLF stored as comments, SKUs and
    order refs come out escaped in the inbox and as plain cells in the CSV."""
    app, own, _other = shop
    client = app.test_client()
    for p in XSS:
        one_line = p.replace("\r\n", " ")
        answer(client, own, 1, p, skus=(one_line,), order=one_line)
    lead = signed_in(app)
    url = "/admin/?sort=newest"
    pages = []
    while url:
        page = lead.get(url).get_data(as_text=True)
        pages.append(page)
        m = re.search(r'href="([^"]+)" rel="next"', page)
        url = html.unescape(m.group(1)) if m else None
    text = "".join(pages)
    for bad in ("<script>alert", "<img src=x", "<svg onload", "onerror=alert(1)>"):
        assert bad not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert 'href="javascript:' not in text
    resp = lead.get("/admin/export.csv")
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert resp.headers.get("X-Content-Type-Options") == "nosniff"
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    with app.app_context():
        stored = db.session.scalars(select(Response.comment)).all()
    assert len(stored) == len(XSS)
    assert sorted(r["comment"] for r in rows) == sorted(stored)


def test_next_link_keeps_filters(shop):
    """The next-page link carries every filter of the current page, so a view can be shared."""
    app, own, _other = shop
    client = app.test_client()
    for _ in range(4):
        answer(client, own, 1, "broken again", moment="delivery")
    lead = signed_in(app)
    page = lead.get("/admin/?moment=delivery&q=broken&sort=newest").get_data(as_text=True)
    href = html.unescape(re.search(r'href="([^"]+)" rel="next"', page).group(1))
    qs = parse_qs(urlsplit(href).query)
    assert qs["moment"] == ["delivery"] and qs["q"] == ["broken"] and qs["sort"] == ["newest"]


# -- in Chromium -------------------------------------------------------------------------------

def test_agent_works_the_overdue_view_in_chromium(make_app, clock):
    """In Chromium: sign in → "Overdue" in the navigation → filter by moment → select two rows
    → bulk acknowledge; the two cases are acknowledged and no longer overdue, the others are
    untouched. axe-core finds no violations on the inbox; screenshots at 1280 and 390 px."""

    from .conftest import free_port
    from .test_browser import check_page, chromium_serving, sign_in

    port = free_port()
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    own = make_site(app, name="Own shop")
    join_teams(app, member(app, "agent@shop.example", own, "agent"), own)
    client = app.test_client()
    checkout = [answer(client, own, r, c, skus=("TV-55",)) for r, c in (
        (1, "The page froze at payment <script>alert(1)</script>"),
        (2, "Coupon field refused my code"), (2, "Slow, very slow"))]
    delivery = answer(client, own, 3, "Parcel came a day late", moment="delivery")
    clock.advance(timedelta(hours=3))  # every acknowledge (2 h) is overdue
    wait = 10_000
    dialogs: list[str] = []
    with chromium_serving(app, port) as (browser, base):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        sign_in(page, base, "agent@shop.example", PASSWORD)
        page.get_by_role("heading", name="Inbox").wait_for(timeout=wait)
        nav = page.get_by_role("navigation", name="Admin")
        assert nav.get_by_role("link", name="Overdue 4").count() == 1
        nav.get_by_role("link", name="Overdue 4").click()
        page.wait_for_url(lambda url: "due=overdue" in url, timeout=wait)
        page.get_by_text("More filters").click()
        page.get_by_label("Moment").fill("checkout")
        page.get_by_role("button", name="Apply filters").click()
        page.wait_for_url(lambda url: "moment=checkout" in url, timeout=wait)
        rows = page.locator("table.inbox tbody tr")
        assert rows.count() == 3
        check_page(page, "inbox")
        first, second = (int(rows.nth(i).get_attribute("id").split("-")[1])
                         for i in range(2))
        page.get_by_label(f"Select case {first}").check()
        page.get_by_label(f"Select case {second}").check()
        page.get_by_label("Action").select_option("acknowledge")
        page.get_by_role("button", name="Apply to selected").click()
        page.get_by_text("Acknowledged 2 cases.").wait_for(timeout=wait)
        assert "moment=checkout" in page.url and "due=overdue" in page.url
        assert page.locator("table.inbox tbody tr").count() == 1
        assert page.get_by_role("link", name="Overdue 2").count() == 1
        assert dialogs == []
        check_page(page, "inbox-after-bulk")
        page.close()
    with app.app_context():
        status = {c.id: c.status for c in db.session.scalars(select(Case))}
    assert sorted(c for c in checkout if status[c] == "acknowledged") == sorted(
        [first, second])
    assert status[delivery] == "new"
