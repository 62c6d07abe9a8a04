"""The worker and cron commands: a worker sweeps the outbox when it starts; RQ's cron
scheduler enqueues the sweep on its interval; the README's token snippet works verbatim."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from redis import Redis
from rq import Queue
from sqlalchemy import func, select

from app.extensions import db
from app.models import CaseEvent, Outbox

from .conftest import make_site, verified_token
from .proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent


def test_worker_sweeps_at_start(make_app, redis_url):
    """Answers stored while Redis was down are routed by the next worker that starts."""
    proxy = TcpProxy("127.0.0.1", 6379)
    url = f"redis://127.0.0.1:{proxy.port}/{redis_url.rsplit('/', 1)[1]}"
    app = make_app(REDIS_URL=url)
    site = make_site(app)
    proxy.cut()
    client = app.test_client()
    for i in range(3):
        client.post(f"/p/{verified_token(site, n=f'start-{i:05d}')}", data={"rating": "2"})
    proxy.restore()
    app.config["OUTBOX_SWEEP_GRACE"] = 0
    result = app.test_cli_runner().invoke(args=["worker", "--burst", "--simple"])
    assert result.exit_code == 0, result.output
    assert "outbox sweep at start: 3 item(s) dispatched" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(CaseEvent.kind == "routed")) == 3
        assert db.session.scalar(select(func.count()).where(Outbox.done_at.is_(None))) == 0
    proxy.cut()


def test_worker_refuses_without_redis(app):
    """Without REDIS_URL there is no worker to run: a clear usage error."""
    result = app.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code != 0 and "REDIS_URL is not set" in result.output


def test_cron_enqueues_the_sweep(tmp_path, redis_url):
    """`flask cron --interval 1` puts the outbox sweep on the queue within a few seconds."""
    env = {**os.environ, "SECRET_KEY": "cron-test", "REDIS_URL": redis_url,
           "DATABASE_URL": f"sqlite:///{tmp_path}/cron.sqlite3",
           "CLOSELOOP_PUBLIC_BASE_URL": "http://localhost",
           "CLOSELOOP_INSTANCE_PATH": str(tmp_path / "instance")}
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "cron",
                             "--interval", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        q = Queue("closeloop", connection=Redis.from_url(redis_url))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not q.job_ids:
            time.sleep(0.2)
        jobs = [q.fetch_job(j) for j in q.job_ids]
        assert ("app.jobs.rqwork.perform_task", ("sweep_outbox",)) in [
            (j.func_name, tuple(j.args)) for j in jobs]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_readme_token_snippet(app, client, site):
    """The README's merchant snippet, run as written, yields a link that records a rating."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(from itsdangerous.*?)```", readme, re.S).group(1)
    code = code.replace('"pk_..."', repr(site.public_key))
    scope = {"SITE_SIGNING_SECRET": site.signing_secrets[-1]}
    exec(code, scope)  # noqa: S102 - our own documentation
    path = scope["link"].split("feedback.example.com", 1)[1]
    assert client.get(path).status_code == 200
    star = scope["ratings"][1].split("feedback.example.com", 1)[1]
    assert client.get(star).status_code == 200
