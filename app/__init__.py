"""Closeloop: embeddable micro-survey feedback with a closed loop behind every answer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from . import i18n, jobs, loop, storage
from .config import Defaults, env_overrides
from .extensions import babel, csrf, db, limiter, login_manager, migrate


class DatabaseIdConverter(IntegerConverter):
    """`<int:...>` in routes: 0 to 2**31 - 1 (what an INTEGER id column holds)."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:  # noqa: A002 - werkzeug's
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(map, *args, **kwargs)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults → instance/config.py → env → `test_config`, then init_app."""
    # CLOSELOOP_INSTANCE_PATH picks another instance folder (`make run` uses instance/dev,
    # tests a tmp dir), so one checkout's development settings never reach other commands.
    instance = os.environ.get("CLOSELOOP_INSTANCE_PATH")
    app = Flask(__name__, instance_relative_config=True,
                instance_path=os.path.abspath(instance) if instance else None)
    app.config.from_object(Defaults)
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("CLOSELOOP")
        app.config.update(env_overrides())
    else:
        app.config.update(test_config)
    _finish_config(app)

    if app.config["PROXY_FIX_X_FOR"]:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=app.config["PROXY_FIX_X_FOR"], x_proto=1, x_host=1
        )

    db.init_app(app)
    # Inside the package, so an installed app finds its migrations from any directory.
    migrate.init_app(app, db, directory=str(Path(app.root_path) / "migrations"))
    limiter.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    babel.init_app(app, locale_selector=i18n.select_locale)
    import flask_babel

    app.jinja_env.globals.update(format_datetime=flask_babel.format_datetime,
                                 format_date=flask_babel.format_date,
                                 get_locale=flask_babel.get_locale)
    jobs.init_app(app)
    loop.init_app(app)
    storage.init_app(app)

    from . import assets, branding, errors, security
    from .admin import bp as admin_bp
    from .cli import register as register_cli
    from .demo import bp as demo_bp
    from .embed import bp as embed_bp

    assets.init_app(app)
    branding.init_app(app)
    security.init_app(app)
    errors.init_app(app)
    # Every <int:...> in a URL is a database id: one beyond an INTEGER column does not match
    # the route (404) instead of reaching the database (SQLite: OverflowError, a 500).
    app.url_map.converters["int"] = DatabaseIdConverter
    app.register_blueprint(embed_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(demo_bp)
    register_cli(app)

    from .embed.fastpath import WidgetFastPath
    from .embed.widget import bundle

    fast = WidgetFastPath(app.wsgi_app, bundle(), security.STATIC_HEADERS)
    app.extensions["closeloop.widget"] = fast
    app.wsgi_app = fast  # type: ignore[method-assign]
    from . import health, logs

    health.init_app(app)  # /healthz before Flask: no host check, session or rate limit
    logs.init_app(app)  # last: the outermost layer logs every request, fast paths too
    return app


def _finish_config(app: Flask) -> None:
    cfg = app.config
    if not cfg.get("SECRET_KEY"):
        # No default secret outside development: refuse to start rather than sign with a guess.
        raise RuntimeError(
            "SECRET_KEY is not set. Put it in instance/config.py or the SECRET_KEY environment "
            "variable (`make run` writes a development one for you)."
        )
    from .security import check_public_base_url, trusted_hosts

    base = cfg.get("PUBLIC_BASE_URL") or ""
    if base:
        try:
            cfg["PUBLIC_BASE_URL"] = base = check_public_base_url(base)
        except ValueError as exc:
            raise RuntimeError(str(exc)) from None
    elif cfg.get("ENV_NAME") != "development" and not cfg.get("TESTING"):
        # Links in emails and the prompt URLs handed to the widget are absolute: built from the
        # request's Host they could point anywhere a forged header says, and from a default
        # they point at nobody's server.
        raise RuntimeError(
            "PUBLIC_BASE_URL is not set. Set it to this service's public address, e.g. "
            "CLOSELOOP_PUBLIC_BASE_URL=https://feedback.example.com (or PUBLIC_BASE_URL in "
            "instance/config.py): every link in emails and prompts is built from it, and "
            "requests for other hosts are refused (TRUSTED_HOSTS)."
        )
    cfg["TRUSTED_HOSTS"] = trusted_hosts(cfg.get("TRUSTED_HOSTS"), base)
    uri: str = cfg["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////") and ":memory:" not in uri:
        os.makedirs(app.instance_path, exist_ok=True)
        cfg["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(
            app.instance_path, uri.removeprefix("sqlite:///")
        )
    if uri.startswith("sqlite"):
        opts = dict(cfg.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        opts["connect_args"] = {"timeout": 15, **(opts.get("connect_args") or {})}
        cfg["SQLALCHEMY_ENGINE_OPTIONS"] = opts
    if uri.startswith("postgresql"):
        # A connection whose peer vanished (a failover, a cut network, a restarted pooler)
        # must fail within seconds, not hang a request or a work horse until a job timeout:
        # libpq's connect timeout, TCP keepalives on idle connections, and a bound on
        # unacknowledged writes (tcp_user_timeout, ms). Explicit settings win.
        opts = dict(cfg.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        args = opts["connect_args"] = dict(opts.get("connect_args") or {})
        for name, value in (("connect_timeout", 10), ("keepalives", 1),
                            ("keepalives_idle", 30), ("keepalives_interval", 10),
                            ("keepalives_count", 3), ("tcp_user_timeout", 30_000)):
            args.setdefault(name, value)
        cfg["SQLALCHEMY_ENGINE_OPTIONS"] = opts
    if not cfg.get("RATELIMIT_STORAGE_URI"):
        cfg["RATELIMIT_STORAGE_URI"] = cfg.get("REDIS_URL") or "memory://"
    if cfg.get("ENV_NAME") == "development":
        cfg["SESSION_COOKIE_SECURE"] = False
        cfg["REMEMBER_COOKIE_SECURE"] = False
    if (cfg.get("SESSION_COOKIE_SECURE") and cfg.get("SESSION_COOKIE_NAME") == "session"
            and not cfg.get("SESSION_COOKIE_DOMAIN")
            and cfg.get("APPLICATION_ROOT", "/") == "/"):
        # The __Host- prefix makes the browser refuse this cookie unless it is Secure, for
        # this exact host and path "/": a sibling subdomain or an http:// page on the same
        # name cannot plant a session cookie for a fixation attack.
        cfg["SESSION_COOKIE_NAME"] = "__Host-session"


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """SQLite: WAL so readers never block the writer, a busy timeout, enforced foreign keys."""
    if type(dbapi_connection).__module__ == "sqlite3":
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=15000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()
