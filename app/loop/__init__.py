"""The closed loop: routing, SLA clocks and the background jobs that drive them."""

from __future__ import annotations

from flask import Flask

from .. import jobs as app_jobs


def init_app(app: Flask) -> None:
    """Register the loop's job handlers and scheduled tasks with app.jobs (importing the
    modules that declare them is the registration), and what a worker loads before forking."""
    from .. import transcribe  # noqa: F401 - the transcription job routing waits for
    from . import cron, jobs, notify  # noqa: F401


@app_jobs.warmup
def _warm(app: Flask) -> None:
    """Load once what every job would load lazily: compiled templates, langdetect's profiles
    (~0.6 s), Babel's locale data and catalogs (~20 ms per locale). A cold routing job in a
    work horse took about ten times a warm one."""
    from datetime import UTC, datetime

    from flask_babel import force_locale, format_datetime, gettext

    from .mail import babel_locale
    from .rules import detect_language

    for name in app.jinja_env.list_templates(extensions=("html", "txt")):
        app.jinja_env.get_template(name)
    detect_language("The parcel arrived late and the box was damaged", "en")
    now = datetime.now(UTC)
    catalogs = app.extensions["babel"].instance.list_translations()
    for locale in ("en", *(t.language for t in catalogs)):
        with force_locale(babel_locale(locale)):
            format_datetime(now)
            gettext("Thank you")
    from ..extensions import db

    if db.engine.dialect.name == "postgresql":
        _rehearse_routing()


def _rehearse_routing() -> None:
    """Record and route a critical answer with a customer email in a rehearsal (rolled back,
    nothing handed over): every statement of that path is compiled once, in the worker, before
    it forks (each work horse would compile them again: ~60 ms of a ~100 ms routing job)."""
    from sqlalchemy import select

    from .. import jobs as app_jobs
    from .. import sites
    from ..extensions import db
    from ..models import Moment
    from ..prompts import Prompt
    from ..responses import record
    from . import jobs as loop_jobs

    with app_jobs.rehearsal():
        site = sites.create("warm-up", ["https://warm-up.invalid"],
                            support_contact="warm-up@closeloop.invalid")
        moment = db.session.scalars(select(Moment).where(Moment.site_id == site.id,
                                                         Moment.key == "delivery")).one()
        prompt = Prompt(site=site, moment=moment, verified=True, submission_id="warm-up",
                        channel="email", skus=("SKU-1",), order="1", customer="c-1",
                        email="customer@closeloop.invalid", locale="en")
        answer = record(prompt, 1, "The parcel arrived broken, I want a refund")
        loop_jobs.route_response(answer.response.id)
