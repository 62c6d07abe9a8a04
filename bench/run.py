"""Throughput, latency and size benchmarks (run by hand: `.venv/bin/python bench/run.py`).

Every throughput figure is a ratio against a baseline measured in the same run under the same
gunicorn settings (bench/baseline.py), because these machines are noisy. Needs PostgreSQL on
127.0.0.1:5432 (user postgres), Redis on 127.0.0.1:6379 and wrk; targets only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import sqlalchemy as sa
from itsdangerous import URLSafeTimedSerializer

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DB_NAME = "closeloop_bench"
DB_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/14"
APP_PORT, BASE_PORT = 8101, 8102
GUNICORN = ["-w", "2", "-k", "gthread", "--threads", "4", "--backlog", "2048",
            "--log-level", "warning"]
WRK_THREADS = 2


def env() -> dict[str, str]:
    return {**os.environ, "SECRET_KEY": "bench-secret", "DATABASE_URL": DB_URL,
            "REDIS_URL": REDIS_URL, "PYTHONPATH": str(ROOT),
            "CLOSELOOP_PUBLIC_BASE_URL": f"http://127.0.0.1:{APP_PORT}",
            "CLOSELOOP_INSTANCE_PATH": str(ROOT / "bench" / "out" / "instance"),
            "CLOSELOOP_LIMIT_SUBMIT": "100000000 per minute",
            "CLOSELOOP_LIMIT_PROMPT_ISSUE": "100000000 per minute"}


def fresh_database() -> None:
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{DB_NAME}"'))
    admin.dispose()
    subprocess.run([str(VENV_BIN / "flask"), "--app", "app", "db", "upgrade"], cwd=ROOT,
                   env=env(), check=True, capture_output=True)


def seed(n_tokens: int) -> tuple[str, list[str]]:
    """A site, and n distinct verified prompt paths (each POST must be a new answer)."""
    sys.path.insert(0, str(ROOT))
    os.environ.update(env())
    from app import create_app
    from app import sites as site_ops

    app = create_app()
    with app.app_context():
        site = site_ops.create("Bench shop", [f"http://127.0.0.1:{APP_PORT}"])
        key, secret = site.public_key, site.signing_secrets[-1]
    signer = URLSafeTimedSerializer(secret, salt="closeloop.prompt.v1")
    paths = ["/p/" + signer.dumps({
        "site": key, "moment": "checkout", "channel": "web", "skus": ["SKU-1"], "order": "1001",
        "customer": "c-1", "locale": "en", "n": secrets.token_urlsafe(16)})
        for _ in range(n_tokens)]
    from app.extensions import db as _db
    with app.app_context():
        _db.engine.dispose()
    return key, paths


def start(target: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([str(VENV_BIN / "gunicorn"), *GUNICORN, "-b", f"127.0.0.1:{port}",
                             target], cwd=ROOT, env=env(), start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/widget.js"
                                   if port == APP_PORT else f"http://127.0.0.1:{port}/bare",
                                   timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{target} did not start")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def wrk(url: str, conns: int, seconds: int, script: str | None = None,
        extra_env: dict[str, str] | None = None) -> dict[str, float]:
    cmd = ["wrk", "-t", str(WRK_THREADS), "-c", str(conns), "-d", f"{seconds}s", "--latency",
           "-H", "Accept-Encoding: gzip"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 30,
                         env={**os.environ, "WRK_THREADS": str(WRK_THREADS),
                              **(extra_env or {})}).stdout
    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", out)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
           "p50": ms("50"), "p99": ms("99"),
           "non2xx3xx": float((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or
                               [0, 0])[1]),
           "errors": float(sum(int(x) for x in re.findall(
               r"(?:connect|read|write|timeout) (\d+)", out)))}
    m = re.search(r"STATUS303 (\d+) OTHER (\d+) MAXIDX (\d+)", out)
    if m:
        res.update(s303=float(m.group(1)), other=float(m.group(2)), used=float(m.group(3)))
    return res


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "img", "iframe") and a.get("src"):
            self.urls.append(a["src"] or "")
        if tag == "link" and a.get("href"):
            self.urls.append(a["href"] or "")


def sizes(prompt_path: str) -> dict[str, object]:
    base = f"http://127.0.0.1:{APP_PORT}"

    def fetch(url: str) -> bytes:
        req = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
        return urllib.request.urlopen(req, timeout=5).read()

    widget = fetch(base + "/widget.js")
    page = fetch(base + prompt_path)
    parser = _Assets()
    parser.feed(page.decode())
    urls = [urljoin(base + prompt_path, u) for u in parser.urls]
    third_party = [u for u in urls if urlsplit(u).netloc != urlsplit(base).netloc]
    loaded = {u: len(gzip.compress(fetch(u), 9)) for u in urls}
    page_gz = len(gzip.compress(page, 9))
    return {"widget_gz": len(gzip.compress(widget, 9)), "widget_raw": len(widget),
            "page_gz": page_gz, "assets_gz": loaded, "prompt_total_gz": page_gz + sum(
                loaded.values()), "third_party": third_party}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--conns", default="8,64")
    ap.add_argument("--json", default=str(ROOT / "bench" / "out" / "results.json"))
    ap.add_argument("--only", default="", help="comma list of: get,post (default both)")
    args = ap.parse_args()
    conns = [int(c) for c in args.conns.split(",")]

    fresh_database()
    _key, paths = seed(n_tokens=40000)
    tmp = Path(tempfile.mkdtemp())
    tokens_file, empty = tmp / "tokens.txt", tmp / "empty.txt"
    tokens_file.write_text("\n".join(paths) + "\n")
    empty.write_text("")
    script = str(ROOT / "bench" / "post.lua")
    engine = sa.create_engine(DB_URL)
    results: dict[str, object] = {"gunicorn": " ".join(GUNICORN), "seconds": args.seconds,
                                  }
    app = start(os.environ.get("BENCH_APP_TARGET", "app.wsgi:app"), APP_PORT)
    base = start("bench.baseline:app", BASE_PORT)
    try:
        with engine.begin() as conn:
            from bench.baseline import meta
            meta.create_all(conn)
        results["sizes"] = sizes(paths[-1])
        a, b = f"http://127.0.0.1:{APP_PORT}", f"http://127.0.0.1:{BASE_PORT}"
        # Warm every worker and thread up (imports, pools, prepared statements, caches).
        warm = tmp / "warm.txt"
        warm.write_text("\n".join(paths[-3000:-1]) + "\n")
        for url in (a + "/widget.js", a + paths[-1], b + "/bare"):
            wrk(url, 16, 2)
        wrk(b + "/insert", 16, 2, script, {"TOKENS_FILE": str(empty), "POST_PATH": "/insert"})
        wrk(a + "/", 16, 2, script, {"TOKENS_FILE": str(warm)})
        offset = 0
        for c in conns:
            row: dict[str, object] = {}
            only = set(filter(None, args.only.split(","))) or {"get", "post"}
            ratios: dict[str, float] = {}
            if "get" in only:
                bare1 = wrk(b + "/bare", c, args.seconds)
                row["widget"] = wrk(a + "/widget.js", c, args.seconds)
                row["prompt_get"] = wrk(a + paths[offset], c, args.seconds)
                bare2 = wrk(b + "/bare", c, args.seconds)
                row["bare"] = [bare1, bare2]
                bare_rps = (bare1["rps"] + bare2["rps"]) / 2
                ratios["widget_vs_bare"] = row["widget"]["rps"] / bare_rps
                ratios["prompt_get_vs_bare"] = row["prompt_get"]["rps"] / bare_rps
            if "post" not in only:
                row["ratios"] = ratios
                results[f"c{c}"] = row
                print(json.dumps({f"c{c}": ratios}, indent=1), flush=True)
                continue
            ins1 = wrk(b + "/insert", c, args.seconds, script,
                       {"TOKENS_FILE": str(empty), "POST_PATH": "/insert"})
            chunk = tmp / f"tokens-{c}.txt"
            chunk.write_text("\n".join(paths[offset:offset + 19000]) + "\n")
            with engine.connect() as conn:
                before = conn.execute(sa.text("SELECT count(*) FROM responses")).scalar_one()
            post = wrk(a + "/", c, args.seconds, script, {"TOKENS_FILE": str(chunk)})
            with engine.connect() as conn:
                after = conn.execute(sa.text("SELECT count(*) FROM responses")).scalar_one()
            post["rows_added"] = float(after - before)
            offset += 19000
            ins2 = wrk(b + "/insert", c, args.seconds, script,
                       {"TOKENS_FILE": str(empty), "POST_PATH": "/insert"})
            row["insert_answer"] = wrk(b + "/insert-answer", c, args.seconds, script,
                                       {"TOKENS_FILE": str(empty),
                                        "POST_PATH": "/insert-answer"})
            row["post"] = post
            row["insert"] = [ins1, ins2]
            ratios["post_vs_insert"] = post["rps"] / ((ins1["rps"] + ins2["rps"]) / 2)
            ratios["post_vs_insert_answer"] = post["rps"] / row["insert_answer"]["rps"]
            row["ratios"] = ratios
            results[f"c{c}"] = row
            print(json.dumps({f"c{c}": ratios}, indent=1), flush=True)
    finally:
        stop(app)
        stop(base)
        engine.dispose()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
