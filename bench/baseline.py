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
