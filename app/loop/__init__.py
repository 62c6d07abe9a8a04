"""The closed loop: routing, SLA clocks and the background jobs that drive them."""

from __future__ import annotations

from flask import Flask

from .. import jobs as app_jobs


def init_app(app: Flask) -> None:
    """Register the loop's job handlers and scheduled tasks with app.jobs (importing the
    modules that declare them is the registration), and what a worker loads before forking."""
    from . import cron, jobs, notify  # noqa: F401


@app_jobs.warmup
def _warm(app: Flask) -> None:
    """Compile every template and load the language profiles once (a cold routing job takes
    ~10x longer than a warm one: ~0.6 s of it is langdetect's profiles)."""
    from .rules import detect_language

    for name in app.jinja_env.list_templates(extensions=("html", "txt")):
        app.jinja_env.get_template(name)
    detect_language("The parcel arrived late and the box was damaged", "en")
