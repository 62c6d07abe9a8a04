"""The README's production steps, run as written: `pip install .`, the exports (only their
values changed, to real PostgreSQL, Redis and SMTP servers on this machine), `flask db upgrade`,
gunicorn, `flask worker`, `flask cron`, then `sites create` from the README; an answer sent to
gunicorn reaches the customer and the support contact by email."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from .conftest import PG_ADMIN_URL, free_port

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("gunicorn ", "flask --app app worker", "flask --app app cron")


def _blocks(section: str) -> list[str]:
    """The ```sh blocks of a README section, comments and line continuations resolved."""
    readme = (ROOT / "README.md").read_text()
    part = readme.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", part, re.S)


def _commands(block: str) -> list[str]:
    joined = block.replace("\\\n", " ")
    lines = [line.split(" # ")[0].split("  #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line]


@pytest.fixture
def pg_database():
    """A database of its own (the session's shared one would keep an alembic_version)."""
    import sqlalchemy as sa

    from .conftest import _port_open, need

    need("PostgreSQL at 127.0.0.1:5432", _port_open("127.0.0.1", 5432))
    name = f"closeloop_readme_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(PG_ADMIN_URL).set(drivername="postgresql", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = :n"), {"n": name})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _venv_with_our_dependencies(where: Path) -> Path:
    """A fresh venv (with pip) that sees this test run's installed dependencies, so
    `pip install .` only builds and installs Closeloop; `flask` and `gunicorn` as scripts."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    # A plain path entry: the venv's own packages (its pip, setuptools) come first, and no
    # .pth file over there runs, so the checkout's editable install stays out of it.
    Path(site, "zz-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for name, entry in (("flask", "from flask.cli import main"),
                        ("gunicorn", "from gunicorn.app.wsgiapp import run as main")):
        script = where / "bin" / name
        script.write_text(f"#!{python}\nimport sys\n{entry}\nsys.exit(main())\n")
        script.chmod(0o755)
    return where / "bin"


def test_readme_production_steps_as_written(tmp_path, pg_database, redis_url, smtp_server):
    """Every line of the README's production block runs unchanged but for the values of its
    exports; /healthz is 200 with the database and Redis ok, and a verified detractor answer
    sent to gunicorn becomes, through `flask worker`, one thank-you to the customer and one
    alert (linking to PUBLIC_BASE_URL) to the site's support contact."""
    smtp_port, mailbox = smtp_server
    src = tmp_path / "checkout"  # pip builds in the source tree: a copy, not ours
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "gunicorn.conf.py"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "app", src / "app",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    bin_dir = _venv_with_our_dependencies(tmp_path / "venv")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    values = {
        "SECRET_KEY": "readme-production-secret",
        "CLOSELOOP_PUBLIC_BASE_URL": base,
        "DATABASE_URL": pg_database,
        "REDIS_URL": redis_url,
        "CLOSELOOP_MAIL_SERVER": "127.0.0.1",
        "CLOSELOOP_MAIL_PORT": str(smtp_port),
        "CLOSELOOP_MAIL_USE_TLS": "false",
        "CLOSELOOP_MAIL_USERNAME": "",  # the test SMTP server takes mail without AUTH
        "CLOSELOOP_MAIL_PASSWORD": "",
        "CLOSELOOP_MAIL_FROM": "feedback@example.com",
        "CLOSELOOP_PROXY_FIX_X_FOR": "1",
        "BIND": f"127.0.0.1:{port}",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(name, None)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"

    blocks = _blocks("Running in production")
    production, sites = blocks[0], next(b for b in blocks if " sites create " in b)
    services: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for command in _commands(production):
            if command.startswith("export "):
                for assignment in shlex.split(command)[1:]:
                    name = assignment.split("=", 1)[0]
                    assert name in values, f"README exports {name}: give this test a value"
                    env[name] = values[name]
                continue
            if command.startswith(SERVICES):
                logs.append(tmp_path / f"service-{len(logs)}.log")
                with open(logs[-1], "wb") as out:
                    services.append(subprocess.Popen(
                        ["bash", "-c", command], cwd=src, env=env, stdout=out,
                        stderr=subprocess.STDOUT, start_new_session=True))
                continue
            done = subprocess.run(["bash", "-c", command], cwd=src, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert len(services) == 3, "gunicorn, worker and cron"
        assert set(values) <= set(env), set(values) - set(env)

        def log_text() -> str:
            return "\n".join(p.read_text(errors="replace") for p in logs)

        deadline = time.monotonic() + 60
        while True:
            assert all(s.poll() is None for s in services), log_text()
            assert time.monotonic() < deadline, log_text()
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                    health = r.read().decode()
                    break
            except OSError:
                time.sleep(0.2)
        assert '"database": "ok"' in health and '"redis": "ok"' in health, health

        create = next(c for c in _commands(sites) if " sites create " in c)
        made = subprocess.run(["bash", "-c", create], cwd=src, env=env, capture_output=True,
                              text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        key = re.search(r"public key:\s+(\S+)", made.stdout).group(1)
        secret = re.search(r"signing secret:\s+(\S+)", made.stdout).group(1)

        from itsdangerous import URLSafeTimedSerializer

        token = URLSafeTimedSerializer(secret, salt="closeloop.prompt.v1").dumps(
            {"site": key, "moment": "delivery", "channel": "email", "order": "1001",
             "customer": "c-42", "email": "customer@example.com", "locale": "en"})
        body = b"rating=1&comment=The+TV+arrived+broken%2C+I+want+a+refund"
        with urllib.request.urlopen(urllib.request.Request(
                f"{base}/p/{token}", data=body, method="POST"), timeout=10) as r:
            assert r.status == 200
        deadline = time.monotonic() + 60
        # The thank-you to the customer, and the critical alert: no team has an address yet,
        # so it goes to the support contact given to `sites create`.
        while not (mailbox.to("customer@example.com") and mailbox.to("help@shop.example")):
            assert all(s.poll() is None for s in services), log_text()
            assert time.monotonic() < deadline, (mailbox.messages, log_text())
            time.sleep(0.2)
        [thanks] = mailbox.to("customer@example.com")
        [alert] = mailbox.to("help@shop.example")
        assert "feedback@example.com" in thanks["From"] and "feedback@example.com" in alert["From"]
        assert f"{base}/admin/" in alert.get_body(("plain",)).get_content()
    finally:
        for service in services:
            if service.poll() is None:
                os.killpg(service.pid, signal.SIGTERM)
        for service in services:
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(service.pid, signal.SIGKILL)
                service.wait(timeout=10)

