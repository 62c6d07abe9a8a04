"""Baselines for bench/run.py: a bare Flask route, and a route that inserts one row and
commits on the same PostgreSQL, served by the same gunicorn settings as the app."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import Flask, redirect

engine = sa.create_engine(os.environ["DATABASE_URL"], pool_pre_ping=True)
meta = sa.MetaData()
rows = sa.Table(
    "bench_baseline", meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("submission_id", sa.String(64), unique=True, nullable=False),
    sa.Column("rating", sa.Integer, nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
app = Flask(__name__)


@app.get("/bare")
def bare() -> str:
    """The cheapest route Flask can serve."""
    return "ok"


@app.post("/insert")
def insert():
    """One row, one commit, then the same 303 the real answer endpoint gives."""
    with engine.begin() as conn:
        conn.execute(rows.insert().values(
            submission_id=secrets.token_urlsafe(16), rating=4, comment="fine",
            created_at=datetime.now(UTC)))
    return redirect("/done", 303)


_ANSWER = sa.text("""
WITH r AS (
  INSERT INTO responses (public_id, site_id, moment_id, submission_id, scale, rating, segment,
                         comment, channel, skus, order_ref, customer_ref, customer_email,
                         has_voice, verified, locale, page_url, created_at, updated_at)
  VALUES (:pid, :site, :moment, :sid, 'csat', 4, 'positive', 'fine', 'web', '["SKU-1"]',
          '1001', 'c-1', NULL, false, true, 'en', NULL, :now, :now)
  RETURNING id),
c AS (INSERT INTO cases (response_id, site_id, status, priority, created_at, updated_at, tags,
                         cycle)
      SELECT id, :site, 'new', 'routine', :now, :now, '[]', 0 FROM r),
o AS (INSERT INTO outbox (topic, ref_id, created_at, attempts)
      SELECT 'bench_baseline', id, :now, 0 FROM r),
s AS (INSERT INTO response_skus (response_id, sku, site_id) SELECT id, 'SKU-1', :site FROM r)
SELECT id FROM r
""")
_ids: dict[str, int] = {}


@app.post("/insert-answer")
def insert_answer():
    """The app's own durable write, nothing else: the same four rows (response, SKU, case,
    outbox) in one statement and one commit, as app/responses.py does on PostgreSQL."""
    if not _ids:
        with engine.connect() as conn:
            _ids["site"], _ids["moment"] = conn.execute(sa.text(
                "SELECT site_id, id FROM moments WHERE key = 'checkout' ORDER BY id LIMIT 1"
            )).one()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(_ANSWER, {"pid": secrets.token_urlsafe(16), "sid": secrets.token_urlsafe(16),
                               "site": _ids["site"], "moment": _ids["moment"], "now": now})
    return redirect("/done", 303)
