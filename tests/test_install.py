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
