"""Configuration defaults. Secrets never live here: they come from instance/config.py or env."""

from __future__ import annotations

import os
from datetime import timedelta


class Defaults:
    """Settings every deployment starts from; each one can be overridden."""

    ENV_NAME = "production"  # "development" only where `make run`/`flask demo` wrote it
    SECRET_KEY: str | None = None
    SECRET_KEY_FALLBACKS: list[str] = []

    SQLALCHEMY_DATABASE_URI = "sqlite:///closeloop.sqlite3"  # made absolute under instance/
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    REDIS_URL: str | None = None
    # "rq" when REDIS_URL is set, else "inline" (a served process runs jobs and the schedule on
    # its own runner thread; the CLI runs them right after its commit). app/jobs/__init__.py.
    JOBS_BACKEND: str | None = None
    JOBS_QUEUE = "closeloop"
    JOBS_TIMEOUT = 120  # seconds an RQ job may run (EFFECT_LEASE_SECONDS must stay above it)
    # What a job's commit hands over (its emails and webhooks) runs in the same work horse for
    # up to this long, the rest goes to the queue (0 = always enqueue). app/jobs/__init__.py.
    JOBS_FOLLOW_UP_SECONDS = 2.0
    # Outbox sweep and due retries run this often (`flask cron`, or the inline runner).
    JOBS_SWEEP_SECONDS = 60
    # How often each `flask worker` runs RQ's maintenance (abandoned jobs of dead workers).
    JOBS_MAINTENANCE_SECONDS = 60
    OUTBOX_SWEEP_GRACE = 30  # seconds a new outbox row is left to its own hand-over
    OUTBOX_MAX_ATTEMPTS = 10
    # A claimed email or webhook is reserved this long for one attempt; if the worker dies the
    # lease runs out and the row is tried again. Keep it above the longest attempt.
    EFFECT_LEASE_SECONDS = 300
    # A webhook waiting for an earlier delivery of the same case is checked again this often
    # (it is released at once when that delivery settles).
    WEBHOOK_ORDER_RECHECK_SECONDS = 60

    # Per-process cache of site and moment rows on the prompt path (0 = off). A cached row is
    # re-checked against its site's settings_version at most every SITE_CACHE_CHECK_SECONDS
    # (one indexed query per site), so secret rotation and setting changes made by any process
    # take effect everywhere within about that long.
    SITE_CACHE_SECONDS = 30
    SITE_CACHE_CHECK_SECONDS = 1.0
    PUBLIC_PROMPT_MAX_AGE = int(timedelta(days=1).total_seconds())
    VERIFIED_PROMPT_MAX_AGE = int(timedelta(days=30).total_seconds())
    # Public URL of this service as seen by browsers and email readers (scheme://host[:port]
    # [/prefix]): every absolute link (prompt URLs, thank-you URLs, email links) is built from
    # it, never from the request's Host header. Required outside development.
    PUBLIC_BASE_URL = ""
    # Host names (no port) this service answers to; others get 400. None = PUBLIC_BASE_URL's.
    TRUSTED_HOSTS: list[str] | None = None
    # Strict-Transport-Security max-age on responses served over HTTPS (0 = no header).
    HSTS_SECONDS = 365 * 24 * 3600
    # Logging (app/logs.py): "text" or "json" lines on stderr; also LOG_LEVEL/LOG_FORMAT env.
    LOG_LEVEL = "INFO"
    LOG_FORMAT = "text"

    # Bodies: prompt answers are small; anything bigger is refused with 413 before parsing.
    MAX_CONTENT_LENGTH = 3 * 1024 * 1024
    EMBED_MAX_BODY = 16 * 1024
    # An answer with a voice note may be VOICE_MAX_BYTES + EMBED_MAX_BODY long (moments with
    # voice on only). Voice notes no answer claimed (the request died) go after this long.
    VOICE_UNCLAIMED_SECONDS = 3600
    COMMENT_MAX_CHARS = 1000
    # Voice notes (app/audio.py): judged by their bytes and decoded in full on upload; longer
    # than VOICE_MAX_SECONDS (+0.5 s for the recorder's last frames) or bigger is refused.
    VOICE_MAX_BYTES = 2 * 1024 * 1024
    VOICE_MAX_SECONDS = 60
    # Transcripts (app/transcribe.py): the engine per answer language ("*" = any other);
    # "pocketsphinx" (offline, English), "http" (TRANSCRIBE_HTTP_URL, when set) or "none".
    TRANSCRIBE_ENGINES = {"en": "pocketsphinx", "*": "http"}
    TRANSCRIBE_HTTP_URL = ""
    TRANSCRIBE_HTTP_TOKEN: str | None = None  # sent as a Bearer token when set (a secret)
    TRANSCRIBE_HTTP_TIMEOUT = 30.0  # seconds per attempt (keep it below JOBS_TIMEOUT)
    TRANSCRIBE_MAX_ATTEMPTS = 3  # failing attempts (retried by the outbox sweep) before "failed"
    # Routing waits this long after the answer for its voice note's transcript, then routes
    # on the rating and comment alone (a later transcript still routes a still-new case again).
    TRANSCRIPT_WAIT_SECONDS = 120

    RATELIMIT_STORAGE_URI: str | None = None  # REDIS_URL, or memory:// without one
    RATELIMIT_STORAGE_OPTIONS = {"socket_connect_timeout": 0.25, "socket_timeout": 0.25}
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_SWALLOW_ERRORS = True
    # X-RateLimit-* on every response would cost a second Redis round trip per limit and
    # request; a 429 still carries Retry-After (app/errors.py).
    RATELIMIT_HEADERS_ENABLED = False
    RATELIMIT_STRATEGY = "fixed-window"
    RATELIMIT_KEY_PREFIX = "closeloop-rl"
    LIMIT_PROMPT_ISSUE = "120 per minute"
    LIMIT_SUBMIT = "100 per minute"
    # A kiosk's tablet sends its queue after an outage in one burst, from one address.
    LIMIT_KIOSK = "600 per minute"
    LIMIT_SUBMIT_PER_TOKEN = "10 per minute"
    # Voice notes (app/voice.py): uploads per client address and per prompt, counted only for
    # answers that carry audio (each up to VOICE_MAX_BYTES, decoded in full to be judged).
    LIMIT_VOICE_UPLOAD = "30 per hour"
    LIMIT_VOICE_UPLOAD_PER_TOKEN = "5 per hour"
    LIMIT_LOGIN = "10 per 15 minutes"
    # Number of trusted proxies in front of the app (ProxyFix x_for); 0 = use the socket peer.
    PROXY_FIX_X_FOR = 0

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True
    # Staff sign-in (app/staff.py): argon2id at OWASP's parameters (m=19 MiB, t=2, p=1);
    # after LOGIN_LOCK_AFTER failed sign-ins in a row an account is locked for
    # LOGIN_LOCK_SECONDS, doubling with each further failure up to LOGIN_LOCK_MAX_SECONDS.
    LOGIN_LOCK_AFTER = 5
    LOGIN_LOCK_SECONDS = 60
    LOGIN_LOCK_MAX_SECONDS = 900
    PASSWORD_RESET_MAX_AGE = 3600  # seconds a password-reset link works (once)
    LIMIT_PASSWORD_RESET = "5 per 15 minutes"
    # Staff invitations (app/invitations.py): how long a link works (once), and how many an
    # owner's address may send (new, again) in a window: every one is an email to a stranger.
    STAFF_INVITE_MAX_AGE = 7 * 24 * 3600
    KIOSK_MAX_AGE = 5 * 365 * 24 * 3600  # a kiosk link works until revoked (or 5 years)
    LIMIT_STAFF_INVITE = "30 per hour"

    DEMO_SITE_KEY = "pk_demo"

    # Email over SMTP (alerts, thank-yous, loop messages, digests); "console" logs instead.
    MAIL_BACKEND = "smtp"
    MAIL_SERVER = "127.0.0.1"
    MAIL_PORT = 25
    MAIL_USE_TLS = False  # STARTTLS
    MAIL_USE_SSL = False  # implicit TLS (port 465)
    MAIL_USERNAME: str | None = None
    MAIL_PASSWORD: str | None = None
    MAIL_FROM = "closeloop@localhost"
    MAIL_TIMEOUT = 30
    MAIL_MAX_ATTEMPTS = 6
    MAIL_RETRY_SECONDS = [60, 300, 1800, 7200, 21600]
    # Alert floods: per site and team, at most ALERT_BURST alerts for public (unverified)
    # answers are emailed one by one in each ALERT_BURST_WINDOW (seconds); the rest go into
    # one summary email per window (0 = no bound). Verified answers always alert one by one.
    ALERT_BURST = 5
    ALERT_BURST_WINDOW = 600
    # Webhooks: per-attempt deadline, attempts, and the backoff between them (seconds).
    WEBHOOK_TIMEOUT = 10
    WEBHOOK_MAX_ATTEMPTS = 6
    WEBHOOK_RETRY_SECONDS = [30, 120, 600, 3600, 14400]
    VERIFY_LINK_MAX_AGE = int(timedelta(days=30).total_seconds())
    # Answers, impressions and deliveries older than this are purged daily (0 = keep all).
    RETENTION_DAYS = 730
    BABEL_DEFAULT_LOCALE = "en"

    # Uploaded bytes (voice notes, logos), app/storage.py: "" = the folder <instance>/media,
    # "file:///abs/dir", or "s3://bucket/prefix" (credentials from the AWS_* variables).
    STORAGE_URL = ""
    S3_ENDPOINT_URL: str | None = None  # MinIO, Ceph, …; None = AWS
    S3_REGION: str | None = None
    # A dead S3 endpoint fails a request within about connect timeout × attempts, not never.
    S3_CONNECT_TIMEOUT = 5.0
    S3_READ_TIMEOUT = 30.0
    S3_MAX_ATTEMPTS = 3


def env_overrides(environ: os._Environ[str] | dict[str, str] = os.environ) -> dict[str, object]:
    """The unprefixed names every PaaS sets (DATABASE_URL, REDIS_URL, SECRET_KEY)."""
    out: dict[str, object] = {}
    if environ.get("DATABASE_URL"):
        url = environ["DATABASE_URL"]
        # Heroku-style postgres:// URLs name no driver; psycopg 3 is ours.
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                url = "postgresql+psycopg://" + url[len(prefix):]
        out["SQLALCHEMY_DATABASE_URI"] = url
    if environ.get("REDIS_URL"):
        out["REDIS_URL"] = environ["REDIS_URL"]
    if environ.get("SECRET_KEY"):
        out["SECRET_KEY"] = environ["SECRET_KEY"]
    for name in ("LOG_LEVEL", "LOG_FORMAT"):  # the CLOSELOOP_ spelling wins when both are set
        if environ.get(name) and not environ.get("CLOSELOOP_" + name):
            out[name] = environ[name]
    return out
