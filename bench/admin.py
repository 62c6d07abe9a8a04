"""The staff admin at scale (run by hand: `.venv/bin/python -m bench.admin --answers 1000000`).

Creates the PostgreSQL database `bench_admin` (dropped and recreated; never `test`), migrates
it with `flask db upgrade`, generates answers with their cases in SQL (INSERT … SELECT over
generate_series, secondary indexes dropped during the load and rebuilt afterwards, exactly as
the migrations defined them), ANALYZEs, then measures requests through the Flask app's test
client signed in as a lead: server time (the time inside `client.get`), median and p95 of many
repetitions, and the number of SQL statements each request runs. A baseline measured in the
same run gives the ratios (these shared machines move ±30 % between runs).
"""

from __future__ import annotations

import argparse
import html
import re
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DB_NAME = "bench_admin"
DB_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB_NAME}"
PASSWORD = "a long enough bench password"
LEAD = "lead@bench.example"
SITES = 5
LOADED = ("responses", "response_skus", "cases", "case_events", "emails", "webhook_deliveries")
# Comments: 4–10 words from this vocabulary; RARE words go into about 0.3 % of comments.
WORDS = ("delivery late broken refund courier package damaged size colour price expensive cheap "
         "quality support friendly rude slow fast app crash checkout payment card coupon "
         "discount website login password return exchange wrong missing item box screen "
         "battery charger manager store staff queue parking great love thanks never again "
         "order tracking email answer waited days").split()
RARE = ("chargeback", "counterfeit", "mould", "overcharged")


def fresh_database() -> None:
    """Drop and create `bench_admin` (connected through the `postgres` database)."""
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{DB_NAME}"'))
    admin.dispose()


def make_app() -> Flask:
    from app import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": DB_URL, "SECRET_KEY": "bench-secret",
                       "PUBLIC_BASE_URL": "http://localhost", "SESSION_COOKIE_SECURE": False,
                       "RATELIMIT_STORAGE_URI": "memory://", "RATELIMIT_ENABLED": False})


def setup(app: Flask) -> dict[str, Any]:
    """Migrate, then the sites (default moments, teams and rules), the lead and a few agents,
    and one webhook endpoint on the first site."""
    from flask_migrate import upgrade

    from app import sites as site_ops
    from app import staff
    from app.admin import permissions
    from app.extensions import db
    from app.models import Site, WebhookEndpoint

    with app.app_context():
        upgrade()
        site_ids = []
        for n in range(1, SITES + 1):
            site_ids.append(site_ops.create(f"Bench shop {n}", [f"https://shop{n}.example"]).id)
        lead = staff.create(LEAD, PASSWORD, "lead")
        agents = [staff.create(f"agent{n}@bench.example", PASSWORD, "agent") for n in range(6)]
        for site_id in site_ids:
            site = db.session.get(Site, site_id)
            permissions.grant(lead, site, "lead")
            for agent in agents:
                permissions.grant(agent, site, "agent")
        db.session.add(WebhookEndpoint(site_id=site_ids[0], url="https://hooks.example/in",
                                       events=["case.created"]))
        db.session.commit()
        return {"sites": site_ids, "staff": [lead.id] + [a.id for a in agents]}


GENERATE = r"""
SELECT setseed(0.42);
CREATE UNLOGGED TABLE bench_gen AS
WITH base AS (
  SELECT i, 1 + (i % CAST(:sites AS int)) AS site_no, random() AS r_moment, random() AS r_rating,
         random() AS r_comment, random() AS r_status, random() AS r_misc, random() AS r_time,
         CAST(:now AS timestamptz) - make_interval(
           secs => (CAST(:n AS int) - i) * (365.0 * 86400 / CAST(:n AS int)) + random() * 3600
         ) AS at
  FROM generate_series(1, CAST(:n AS int)) AS i
), m AS (
  SELECT id, site_id, scale, row_number() OVER (PARTITION BY site_id ORDER BY id) - 1 AS k,
         count(*) OVER (PARTITION BY site_id) AS per_site
  FROM moments
), s AS (SELECT id, row_number() OVER (ORDER BY id) AS site_no FROM sites)
SELECT b.i, s.id AS site_id, m.id AS moment_id, m.scale, b.at, b.r_status, b.r_misc, b.r_time,
       CASE m.scale
         WHEN 'nps' THEN least(10, floor(pow(b.r_rating, 0.6) * 11))::int
         WHEN 'thumbs' THEN (b.r_rating > 0.25)::int
         ELSE least(5, 1 + floor(pow(b.r_rating, 0.6) * 5))::int
       END AS rating,
       CASE WHEN b.r_comment < 0.30 THEN (
         SELECT string_agg(w.word, ' ')
         FROM (SELECT (CAST(:words AS text[]))[
                        1 + floor(random() * array_length(CAST(:words AS text[]), 1))::int
                      ] AS word, b.i AS dep
               FROM generate_series(1, 4 + (b.i % 7))) w
       ) || CASE WHEN b.r_comment < 0.001 THEN ' ' || (CAST(:rare AS text[]))[1 + b.i % 4]
            ELSE '' END
       END AS comment,
       CASE WHEN b.r_misc < 0.5 THEN 'web' WHEN b.r_misc < 0.7 THEN 'email'
            WHEN b.r_misc < 0.85 THEN 'app' WHEN b.r_misc < 0.95 THEN 'chat' ELSE 'kiosk'
       END AS channel
FROM base b
JOIN s ON s.site_no = b.site_no
JOIN m ON m.site_id = s.id AND m.k = floor(b.r_moment * m.per_site);
ALTER TABLE bench_gen ADD COLUMN segment text, ADD COLUMN family text;
UPDATE bench_gen SET
  segment = CASE scale
    WHEN 'nps' THEN CASE WHEN rating >= 9 THEN 'promoter' WHEN rating >= 7 THEN 'passive'
                         ELSE 'detractor' END
    WHEN 'thumbs' THEN CASE WHEN rating = 1 THEN 'positive' ELSE 'negative' END
    ELSE CASE WHEN rating >= 4 THEN 'positive' WHEN rating = 3 THEN 'neutral'
              ELSE 'negative' END END;
UPDATE bench_gen SET family = CASE segment WHEN 'promoter' THEN 'positive'
  WHEN 'passive' THEN 'neutral' WHEN 'detractor' THEN 'negative' ELSE segment END;

INSERT INTO responses (id, public_id, site_id, moment_id, submission_id, scale, rating, segment,
  comment, channel, skus, order_ref, customer_ref, customer_email, has_voice, verified, locale,
  page_url, created_at, updated_at)
SELECT i, md5('p' || i), site_id, moment_id, md5('s' || i), scale, rating, segment, comment,
  channel, json_build_array('SKU-' || (i::bigint * 7919 % 5000)),
  'o-' || (i::bigint * 31 % 700000), 'c-' || (i::bigint * 17 % 200000),
  CASE WHEN r_misc < 0.6 THEN 'c' || (i::bigint * 17 % 200000) || '@example.com' END,
  r_misc > 0.98, r_misc < 0.6, 'en', 'https://shop.example/checkout', at, at
FROM bench_gen;
INSERT INTO response_skus (response_id, sku, site_id)
SELECT i, 'SKU-' || (i::bigint * 7919 % 5000), site_id FROM bench_gen;

-- Open backlog: about 9 % of older answers were never acknowledged (mostly positive ones),
-- recent ones are still being worked; the rest were resolved and most verified.
INSERT INTO cases (id, response_id, site_id, status, priority, team, assignee_id, tags,
  cycle, routed_at, ack_due_at, ack_late_due_at, acknowledged_at, followup_due_at,
  followed_up_at, close_due_at, closed_at, loop_due_at, verified_at, created_at, updated_at)
SELECT i, i, site_id, status,
  CASE WHEN family = 'negative' THEN CASE WHEN r_time < 0.15 THEN 'critical'
       WHEN r_time < 0.5 THEN 'high' ELSE 'routine' END
       ELSE CASE WHEN r_time < 0.2 THEN 'low' ELSE 'routine' END END,
  (ARRAY['support', 'logistics', 'sales'])[1 + i % 3],
  CASE WHEN status <> 'new' AND r_time < 0.5
       THEN (CAST(:staff AS int[]))[1 + i % array_length(CAST(:staff AS int[]), 1)] END,
  '[]', 0, at + interval '2 s', at + interval '2 h', at + interval '6 h',
  CASE WHEN status <> 'new' THEN at + r_time * interval '4 h' END,
  at + make_interval(hours => CASE family WHEN 'negative' THEN 24 WHEN 'neutral' THEN 48
                                          ELSE 168 END),
  CASE WHEN status IN ('resolved', 'verified', 'reopened') THEN at + r_time * interval '20 h' END,
  at + interval '48 h',
  CASE WHEN status IN ('resolved', 'verified')
       THEN at + interval '1 h' + r_time * interval '60 h' END,
  at + interval '72 h',
  CASE WHEN status = 'verified' THEN at + interval '70 h' END,
  at, at
FROM (SELECT *, CASE
    WHEN at > CAST(:now AS timestamptz) - interval '2 days' THEN CASE WHEN r_status < 0.5 THEN 'new'
      WHEN r_status < 0.75 THEN 'acknowledged' WHEN r_status < 0.9 THEN 'in_progress'
      ELSE 'resolved' END
    WHEN r_status < CASE family WHEN 'positive' THEN 0.14 ELSE 0.03 END THEN 'new'
    WHEN r_status < 0.16 THEN 'acknowledged' WHEN r_status < 0.17 THEN 'in_progress'
    WHEN r_status < 0.175 THEN 'reopened' WHEN r_status < 0.5 THEN 'resolved'
    ELSE 'verified' END AS status FROM bench_gen) g;

INSERT INTO case_events (case_id, kind, actor, created_at)
SELECT i, 'routed', 'system', at + interval '2 s' FROM bench_gen;
INSERT INTO emails (site_id, case_id, kind, ref_key, recipients, locale, subject, body_text,
  body_html, message_id, status, attempts, created_at, sent_at)
SELECT site_id, i, 'alert', 'case:' || i, '["support@shop.example"]', 'en',
  'New answer needs attention', 'A customer answered.', '<p>A customer answered.</p>',
  '<' || md5('m' || i) || '@bench.example>', 'sent', 1, at, at + interval '3 s'
FROM bench_gen WHERE family = 'negative';
INSERT INTO webhook_deliveries (endpoint_id, site_id, event, msg_id, dedupe_key, payload, status,
  attempts, created_at, delivered_at, last_status_code, case_id)
SELECT (SELECT min(id) FROM webhook_endpoints), site_id, 'case.created', 'msg_' || md5('w' || i),
  'case:' || i || '\:created', '{}', 'delivered', 1, at, at + interval '1 s', 200, i
FROM bench_gen WHERE site_id = (SELECT min(id) FROM sites);
"""


def _statements(script: str) -> list[str]:
    """The script's statements (no semicolons inside them; comment lines dropped)."""
    lines = [ln for ln in script.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _secondary_indexes(conn: sa.Connection) -> list[tuple[str, str]]:
    """(name, definition) of the loaded tables' indexes that back no constraint."""
    return [(r[0], r[1]) for r in conn.execute(sa.text(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid::regclass::text = ANY(:tables) AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"),
        {"tables": list(LOADED)})]


def generate(n: int, staff_ids: list[int], now: datetime) -> dict[str, float]:
    """Load n answers with their cases (and events, emails, webhook deliveries); seconds per
    step. Foreign-key triggers are off during the load (the rows are consistent by
    construction) and secondary indexes are rebuilt afterwards, as the migrations made them."""
    engine = sa.create_engine(DB_URL)
    timings: dict[str, float] = {}
    with engine.begin() as conn:
        indexes = _secondary_indexes(conn)
        for name, _ in indexes:
            conn.execute(sa.text(f"DROP INDEX {name}"))
        conn.execute(sa.text("SET session_replication_role = replica"))
        params = {"n": n, "sites": SITES, "now": now, "words": WORDS, "rare": list(RARE),
                  "staff": staff_ids}
        for stmt in _statements(GENERATE):
            started = time.perf_counter()
            used = {k: v for k, v in params.items() if f":{k}" in stmt}
            conn.execute(sa.text(stmt), used)
            label = " ".join(stmt.split()[:3])
            timings[label] = timings.get(label, 0) + time.perf_counter() - started
        conn.execute(sa.text("SET session_replication_role = DEFAULT"))
        conn.execute(sa.text("DROP TABLE bench_gen"))
        for table in ("responses", "cases", "case_events", "emails", "webhook_deliveries"):
            conn.execute(sa.text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {table}))"))
    with engine.begin() as conn:
        conn.execute(sa.text("SET maintenance_work_mem = '512MB'"))
        started = time.perf_counter()
        for _name, definition in indexes:
            conn.execute(sa.text(definition))
        timings["rebuild indexes"] = time.perf_counter() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        started = time.perf_counter()
        conn.execute(sa.text("VACUUM ANALYZE"))
        timings["vacuum analyze"] = time.perf_counter() - started
    engine.dispose()
    return timings


def add_busy_case(app: Flask, events: int) -> int:
    """A case with `events` timeline events (notes), and its id."""
    engine = sa.create_engine(DB_URL)
    with engine.begin() as conn:
        case_id = conn.execute(sa.text(
            "SELECT id FROM cases WHERE site_id = (SELECT min(id) FROM sites) "
            "AND status = 'in_progress' ORDER BY id DESC LIMIT 1")).scalar_one()
        conn.execute(sa.text(
            "INSERT INTO case_events (case_id, kind, actor, note, created_at) "
            "SELECT :c, 'note', 'agent0@bench.example', 'Called the customer, attempt ' || k, "
            "now() - make_interval(mins => :e - k) FROM generate_series(1, :e) k"),
            {"c": case_id, "e": events})
        conn.execute(sa.text("ANALYZE case_events"))
    engine.dispose()
    return case_id


# -- measuring ----------------------------------------------------------------------------------


class Counter:
    """Counts the SQL statements run on an engine while active."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine, self.n = engine, 0

    def _count(self, *_args: Any) -> None:
        self.n += 1

    def __enter__(self) -> Counter:
        self.n = 0
        sa.event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *_exc: Any) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._count)


def sign_in(client: FlaskClient) -> None:
    page = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token, "no CSRF token on the sign-in page"
    resp = client.post("/admin/login", data={"email": LEAD, "password": PASSWORD,
                                             "csrf_token": token.group(1)})
    assert resp.status_code == 302, resp.status_code


def timed(client: FlaskClient, url: str, reps: int, counter: Counter,
          read: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Median and p95 of the time inside `client.get(url)` (the whole body read), and the
    statements the request ran (the same on every repetition, else a list)."""
    times, counts = [], set()
    for _ in range(reps):
        with counter:
            started = time.perf_counter()
            resp = client.get(url)
            body = read(resp) if read else resp.get_data()
            times.append((time.perf_counter() - started) * 1000)
        assert resp.status_code == 200, (url, resp.status_code)
        counts.add(counter.n)
        del body
    times.sort()
    return {"url": url, "median_ms": statistics.median(times),
            "p95_ms": times[min(len(times) - 1, int(len(times) * 0.95))],
            "queries": counts.pop() if len(counts) == 1 else sorted(counts), "reps": reps}


def next_link(page: str) -> str | None:
    m = re.search(r'href="([^"]+)" rel="next"', page)
    return html.unescape(m.group(1)) if m else None


def nth_page(client: FlaskClient, url: str, n: int) -> str:
    """The URL of page n of a view, by following its "next" links."""
    for _ in range(n - 1):
        nxt = next_link(client.get(url).get_data(as_text=True))
        assert nxt, f"the view has fewer than {n} pages"
        url = nxt
    return url


def explain(url: str, app: Flask, client: FlaskClient) -> list[str]:
    """The plan of the inbox's page query for `url`: EXPLAIN ANALYZE of exactly the statement
    the request ran (captured from the engine), first lines and the timing summary."""
    from app.extensions import db

    with app.app_context():
        engine = db.engine
    seen: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cur: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if "FROM cases JOIN responses" in statement and "LIMIT" in statement:
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", grab)
    try:
        client.get(url)
    finally:
        sa.event.remove(engine, "before_cursor_execute", grab)
    statement, parameters = seen[-1]
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        rows = raw.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).fetchall()
    return [r[0] for r in rows]


def summary(plan: list[str]) -> list[str]:
    """The lines of a plan worth keeping: nodes (no Filter/Buffers detail) and the timing."""
    keep = []
    for line in plan:
        text = line.strip()
        if text.startswith("->") or line == plan[0] or text.startswith(
                ("Index Cond", "Execution Time", "Planning Time", "Sort Key", "Recheck Cond")):
            keep.append(line.rstrip())
    return keep


def run(n: int, reps: int, deep: int, reuse: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"answers": n}
    from app.extensions import db

    if reuse:  # measure the database a previous run left (no generation), at today's schema
        from flask_migrate import upgrade

        app = make_app()
        with app.app_context():
            upgrade()
            ids = {"sites": list(db.session.scalars(sa.text("SELECT id FROM sites ORDER BY id")))}
            busy = db.session.execute(sa.text(
                "SELECT case_id FROM case_events GROUP BY case_id ORDER BY count(*) DESC "
                "LIMIT 1")).scalar_one()
            db.session.remove()
    else:
        fresh_database()
        app = make_app()
        ids = setup(app)
        started = time.perf_counter()
        out["generation_steps_s"] = generate(n, ids["staff"], datetime.now(UTC))
        out["generation_s"] = time.perf_counter() - started
        busy = add_busy_case(app, 500)

    with app.app_context():
        engine = db.engine
        quiet = db.session.execute(sa.text(
            "SELECT c.id FROM cases c WHERE c.site_id = :s AND c.status = 'in_progress' "
            "AND (SELECT count(*) FROM case_events e WHERE e.case_id = c.id) = 1 "
            "ORDER BY c.id DESC LIMIT 1"), {"s": ids["sites"][0]}).scalar_one()
        db.session.remove()
    counter = Counter(engine)
    client = app.test_client()
    sign_in(client)

    view = "/admin/?status=new&sort=due"
    overdue = "/admin/?status=open&due=overdue"
    print(f"following {view} to page {deep:,} …", flush=True)
    started = time.perf_counter()
    page_1000 = nth_page(client, view, deep)
    out["walk_s"] = time.perf_counter() - started
    overdue_100 = nth_page(client, overdue, max(2, deep // 10))
    newest_1000 = nth_page(client, "/admin/?sort=newest", deep)

    def stream_head(resp: Any) -> bytes:
        """The header and the first 50 rows of the streamed CSV, then the stream is closed."""
        chunks = []
        for chunk in resp.response:
            chunks.append(chunk)
            if len(chunks) > 50:
                break
        resp.close()
        return b"".join(chunks)

    figures = {
        "baseline /healthz": ("/healthz", None),
        "baseline /admin/login (signed in)": ("/admin/login", None),
        "inbox status=new, due: page 1": (view, None),
        "inbox status=new, due: page 1,000": (page_1000, None),
        "inbox newest, all: page 1": ("/admin/?sort=newest", None),
        "inbox newest, all: page 1,000": (newest_1000, None),
        "saved view Overdue: page 1": (overdue, None),
        "saved view Overdue: page 100": (overdue_100, None),
        "search common word (refund)": ("/admin/?q=refund", None),
        "search rare word (chargeback)": ("/admin/?q=chargeback", None),
        "search refund + status=new": ("/admin/?q=refund&status=new", None),
        f"case view, 1 event (#{quiet})": (f"/admin/cases/{quiet}", None),
        f"case view, 501 events (#{busy})": (f"/admin/cases/{busy}", None),
        "CSV export status=new, first 50 rows": ("/admin/export.csv?status=new", stream_head),
    }
    for label, (url, read) in figures.items():
        timed(client, url, 3, counter, read)  # warm
        out.setdefault("figures", {})[label] = fig = timed(client, url, reps, counter, read)
        print(f"{label:42} median {fig['median_ms']:7.1f} ms  p95 {fig['p95_ms']:7.1f} ms  "
              f"queries {fig['queries']}", flush=True)
    out["plans"] = {}
    for label, url in (("status=new, due, page 1", view), ("status=new, due, page 1,000",
                       page_1000), ("newest, page 1,000", newest_1000),
                       ("Overdue, page 1", overdue), ("Overdue, page 100", overdue_100),
                       ("search refund", "/admin/?q=refund"),
                       ("search chargeback", "/admin/?q=chargeback")):
        plan = explain(url, app, client)
        out["plans"][label] = plan
        print(f"\n== {label}\n" + "\n".join(summary(plan)), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--page", type=int, default=1000, help="the deep page measured")
    parser.add_argument("--reuse", action="store_true",
                        help="measure the database of a previous run again (no generation)")
    args = parser.parse_args()
    out = run(args.answers, args.reps, args.page, args.reuse)
    if "generation_s" in out:
        print(f"\ngenerated {args.answers:,} answers in {out['generation_s']:.0f} s "
              f"({', '.join(f'{k}: {v:.0f}s' for k, v in out['generation_steps_s'].items())})")
    base = out["figures"]["baseline /admin/login (signed in)"]["median_ms"]
    for label, fig in out["figures"].items():
        print(f"{label:42} {fig['median_ms'] / base:6.2f} × baseline")
    print(f"walked {args.page - 1} pages in {out['walk_s']:.1f} s")


if __name__ == "__main__":
    main()
