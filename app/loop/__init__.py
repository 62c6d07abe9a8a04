"""The closed loop: routing, SLA clocks and the background jobs that drive them."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the loop's job handlers and scheduled tasks with app.jobs (importing the
    modules that declare them is the registration)."""
    from . import cron, jobs, notify  # noqa: F401
