"""The installed package (a built wheel, not the checkout) migrates a database from any
directory: the migrations ship inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str | Path, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300,
                          **kw)


def test_installed_wheel_upgrades_from_any_directory(tmp_path):
    """`flask --app app db upgrade` from an empty directory, with only the wheel installed,
    creates the schema (the checkout is nowhere on the path)."""
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ into the source
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "app", src / "app",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "-w", wheels, src, cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = wheels.glob("closeloop-*.whl")

    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                     "--no-index", wheel)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # The dependencies come from the test venv's site-packages as a plain path entry: no .pth
    # in there runs, so the checkout's editable install stays out.
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    Path(site.stdout.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "CLOSELOOP_"))}
    env.pop("PYTHONPATH", None)
    env.update(SECRET_KEY="install-test", CLOSELOOP_INSTANCE_PATH=str(tmp_path / "instance"),
               CLOSELOOP_PUBLIC_BASE_URL="https://feedback.example",
               DATABASE_URL=f"sqlite:///{tmp_path}/installed.sqlite3")
    where = _run(python, "-c", "import app; print(app.__file__)", cwd=work, env=env)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr

    up = _run(python, "-m", "flask", "--app", "app", "db", "upgrade", cwd=work, env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    tables = _run(python, "-c", "import sqlite3,sys; print(sorted(r[0] for r in sqlite3.connect("
                  "sys.argv[1]).execute(\"select name from sqlite_master where type='table'\")))",
                  tmp_path / "installed.sqlite3", cwd=work, env=env)
    assert "'staff_users'" in tables.stdout and "'alembic_version'" in tables.stdout, tables
    assert list(work.iterdir()) == []


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Closeloop/Flask setting, plus `extra`."""
    drop = ("FLASK_", "CLOSELOOP_", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "PYTHONPATH")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, **extra}


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*")) if (
        folder.exists()) else []


def test_dev_settings_stay_in_the_dev_instance(tmp_path, monkeypatch):
    """`make run`'s settings go to instance/dev/ (an old instance/config.py it wrote moves
    there with its database); an app on the production instance folder never loads them."""
    from app import create_app, devconfig

    prod, dev = tmp_path / "instance", tmp_path / "instance" / "dev"
    prod.mkdir()
    (prod / "config.py").write_text(devconfig.TEMPLATE.format(secret="old-dev-secret"))
    (prod / "closeloop.sqlite3").write_bytes(b"")
    assert devconfig.main(dev, old=prod) == 0
    assert sorted(p.name for p in prod.iterdir()) == ["dev"]
    assert sorted(p.name for p in dev.iterdir()) == ["closeloop.sqlite3", "config.py"]
    assert 'SECRET_KEY = "old-dev-secret"' in (dev / "config.py").read_text()

    (prod / "config.py").write_text('SECRET_KEY = "production-secret"\n'
                                    'PUBLIC_BASE_URL = "https://feedback.example"\n')
    for key in _clean_env().keys() ^ os.environ.keys():
        monkeypatch.delenv(key)
    monkeypatch.setenv("CLOSELOOP_INSTANCE_PATH", str(prod))
    app = create_app()
    assert (app.config["SECRET_KEY"], app.config["ENV_NAME"]) == ("production-secret",
                                                                  "production")
    assert app.config["MAIL_BACKEND"] == "smtp" and not app.config.get("DEMO_ENABLED")
    monkeypatch.setenv("CLOSELOOP_INSTANCE_PATH", str(dev))
    app = create_app()
    assert (app.config["SECRET_KEY"], app.config["ENV_NAME"]) == ("old-dev-secret",
                                                                  "development")
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{dev}/closeloop.sqlite3"


def test_make_run_links_use_its_own_port(tmp_path):
    """`PORT=<p> make run` serves the demo on that port, and the links in the emails a
    verified answer triggers point at 127.0.0.1:<p> (jobs run in-process, even with a
    REDIS_URL in the shell)."""
    import json
    import signal
    import sqlite3
    import time
    import urllib.request

    from itsdangerous import URLSafeTimedSerializer

    from .conftest import free_port

    developers = _listing(ROOT / "instance")
    port = free_port()
    log = tmp_path / "make-run.log"
    # A REDIS_URL left in the developer's shell is not used: the dev server runs the jobs.
    env = _clean_env(CLOSELOOP_INSTANCE_PATH=str(tmp_path), PORT=str(port),
                     REDIS_URL="redis://127.0.0.1:1/0")
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/.installed", "run"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                with urllib.request.urlopen(f"{base}/demo/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        assert f"demo shop:   {base}/demo/" in log.read_text()
        with sqlite3.connect(tmp_path / "closeloop.sqlite3") as conn:
            secrets = conn.execute(
                "SELECT signing_secrets FROM sites WHERE public_key = 'pk_demo'").fetchone()[0]
        token = URLSafeTimedSerializer(json.loads(secrets)[-1], salt="closeloop.prompt.v1").dumps(
            {"site": "pk_demo", "moment": "delivery", "channel": "email", "order": "1001",
             "customer": "c-1", "email": "customer@example.com", "locale": "en"})
        body = b"rating=0&comment=The+TV+arrived+broken"
        req = urllib.request.Request(f"{base}/p/{token}", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        marker = "--- email (console backend, not sent) ---"

        def emails() -> str:  # what the console mail backend printed, nothing before it
            return "".join(log.read_text().split(marker)[1:])

        # The critical alert links to the case: "Open the case: <base>/admin/...".
        while f"{base}/admin/" not in emails():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert "127.0.0.1:5000" not in emails()
        assert _listing(ROOT / "instance") == developers  # the checkout's instance/ untouched
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_subprocesses_never_read_the_developers_instance():
    """A `flask` subprocess started the way the tests start them (env copied from os.environ)
    uses the session's empty instance folder, not the checkout's instance/."""
    env = {**os.environ, "SECRET_KEY": "instance-test",
           "CLOSELOOP_PUBLIC_BASE_URL": "https://feedback.example"}
    code = "from app import create_app; print(create_app().instance_path)"
    out = _run(sys.executable, "-c", code, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    used = Path(out.stdout.strip())
    assert used != ROOT / "instance" and ROOT not in used.parents
