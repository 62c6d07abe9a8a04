"""Logging for every process: gunicorn workers, `flask worker`, `flask cron` and the CLI.

One handler on the root logger writes to stderr, as text or as JSON lines (LOG_FORMAT=json),
at LOG_LEVEL (INFO by default). Every record made while a request or a job runs carries its
`request_id` / `job_id` (a log record factory adds them, so any handler sees them, pytest's too).

- `RequestLog` (WSGI, outermost, so the widget fast path and /healthz are counted too): one line
  per request with method, path (long segments such as tokens shortened), status, duration and
  request id; it accepts a sane `X-Request-ID` from the proxy, else makes one, and returns it.
- `job_log(topic, ref_id, job_id)`: one line per job with its id, duration and outcome; on
  failure an ERROR line naming the outbox row (`topic:ref_id`) with the traceback.
- `gunicorn_logconfig()`: the same handler for gunicorn's own logger (gunicorn.conf.py).
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from flask import Flask

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$")
_LONG_SEGMENT = 20  # path segments this long are tokens or public ids: logged shortened
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "closeloop_log_context", default=None)
request_log = logging.getLogger("app.request")
job_logger = logging.getLogger("app.job")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


# -- context on every record -------------------------------------------------------------------

def current(key: str) -> Any:
    """The current request's or job's `request_id` / `job_id` (None outside one)."""
    ctx = _context.get()
    return ctx.get(key) if ctx else None


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Attach `values` (request_id, job_id...) to every record logged inside the block."""
    token = _context.set({**(_context.get() or {}), **values})
    try:
        yield
    finally:
        _context.reset(token)


_base_factory = logging.getLogRecordFactory()


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    ctx = _context.get()
    if ctx:
        for key, value in ctx.items():
            if not hasattr(record, key):
                setattr(record, key, value)
    return record


if logging.getLogRecordFactory() is not _record_factory:
    logging.setLogRecordFactory(_record_factory)


# -- formatters and the handler ----------------------------------------------------------------

class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request_id=… job_id=…]: message`, traceback on the next lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        ids = [f"{k}={getattr(record, k)}" for k in ("request_id", "job_id")
               if getattr(record, k, None)]
        return TEXT_FORMAT % {**record.__dict__, "context": f" [{' '.join(ids)}]" if ids else ""}


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, pid, message and every `extra` field
    (request_id, job_id, method, path, status, duration_ms...); a traceback in `exc_info`."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level",
                                                     "name": "logger", "process": "pid"})


def formatter(fmt: str) -> logging.Formatter:
    """The formatter for LOG_FORMAT `fmt` ("json" or "text")."""
    return json_formatter() if fmt.strip().lower() == "json" else TextFormatter()


class Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Closeloop's stderr handler (a class of its own, so it is found and never doubled)."""

    def __init__(self, stream: IO[str] | None = None, fmt: str = "text") -> None:
        super().__init__(stream or sys.stderr)
        self.setFormatter(formatter(fmt))


def configure(level: str | int = "INFO", fmt: str = "text",
              stream: IO[str] | None = None) -> Handler:
    """Install (or replace) our handler on the root logger at `level`."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, Handler)]:
        root.removeHandler(old)
    handler = Handler(stream, fmt)
    root.addHandler(handler)
    root.setLevel(_level(level))
    return handler


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.strip().upper())
    return value if isinstance(value, int) else logging.INFO


def settings(environ: dict[str, str] | os._Environ[str] = os.environ) -> tuple[str, str]:
    """(level, format) from CLOSELOOP_LOG_LEVEL/LOG_LEVEL and CLOSELOOP_LOG_FORMAT/LOG_FORMAT."""
    level = environ.get("CLOSELOOP_LOG_LEVEL") or environ.get("LOG_LEVEL") or "INFO"
    fmt = environ.get("CLOSELOOP_LOG_FORMAT") or environ.get("LOG_FORMAT") or "text"
    return level, fmt


def gunicorn_logconfig() -> dict[str, Any]:
    """dictConfig for gunicorn.conf.py: gunicorn's own lines through our handler and format;
    loggers made before (the app's) stay enabled."""
    level, fmt = settings()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"closeloop": {"()": Handler, "fmt": fmt},
                     "null": {"class": "logging.NullHandler"}},
        "root": {"level": _level(level), "handlers": ["closeloop"]},
        "loggers": {
            "gunicorn.error": {"level": _level(level), "handlers": [], "propagate": True},
            # The app logs each request itself (with its id, tokens shortened): no second line.
            "gunicorn.access": {"handlers": ["null"], "propagate": False},
        },
    }


def init_app(app: Flask) -> None:
    """Configure logging from LOG_LEVEL/LOG_FORMAT and count requests (call it last: it wraps
    the outermost WSGI layer). Logging that someone else configured (pytest, a host
    application) is left alone; gunicorn's, made by gunicorn_logconfig, is ours."""
    from flask.logging import default_handler

    root = logging.getLogger()
    level, fmt = app.config["LOG_LEVEL"], app.config["LOG_FORMAT"]
    ours = [h for h in root.handlers if isinstance(h, Handler)]
    if ours or not root.handlers:
        stream = ours[0].stream if ours else None
        configure(level, fmt, stream)
    # Flask adds its own stderr handler to app.logger when nothing handled it yet: one line each.
    app.logger.removeHandler(default_handler)
    app.wsgi_app = RequestLog(app.wsgi_app)  # type: ignore[method-assign]


# -- one line per request ----------------------------------------------------------------------

def request_id_from(environ: dict[str, Any]) -> str:
    """The proxy's X-Request-ID when it is a sane token, else a new one."""
    given = environ.get("HTTP_X_REQUEST_ID", "")
    return given if _SANE_ID.match(given) else uuid.uuid4().hex


def safe_path(path: str) -> str:
    """The path with long segments (prompt tokens, public ids) cut to a 6-character prefix:
    enough to find the request again, useless to replay it. The query string is never logged."""
    if len(path) < _LONG_SEGMENT:
        return path
    return "/".join(s if len(s) < _LONG_SEGMENT else s[:6] + "…" for s in path.split("/"))


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RequestLog:
    """WSGI middleware: a request id for every request and one log line when it ends."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        start = time.perf_counter()
        rid = request_id_from(environ)
        environ["closeloop.request_id"] = rid
        status: list[str] = []

        def start_with_id(code: str, headers: list[tuple[str, str]], exc_info: Any = None
                          ) -> Any:
            status[:] = [code]
            headers = [(k, v) for k, v in headers if k.lower() != "x-request-id"]
            headers.append((REQUEST_ID_HEADER, rid))
            return start_response(code, headers, exc_info)

        token = _context.set({"request_id": rid})
        try:
            body = self.app(environ, start_with_id)
        except BaseException:
            self._log(environ, rid, "500", start)
            raise
        finally:
            _context.reset(token)
        # Logged when the app has answered (our responses are built whole, never streamed).
        self._log(environ, rid, status[0] if status else "500", start)
        return body

    @staticmethod
    def _log(environ: dict[str, Any], rid: str, status: str, start: float) -> None:
        ms = round((time.perf_counter() - start) * 1000, 1)
        code = int(status.split(" ", 1)[0]) if status[:3].isdigit() else 500
        method = environ.get("REQUEST_METHOD", "-")
        path = safe_path(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        # Load-balancer probes that pass are routine: below INFO, so they do not drown the rest.
        level = logging.DEBUG if path == "/healthz" and code == 200 else logging.INFO
        with bound(request_id=rid):
            request_log.log(level, "%s %s %s %.1f ms", method, path, code, ms,
                            extra={"method": method, "path": path, "status": code,
                                   "duration_ms": ms, "remote_addr": environ.get("REMOTE_ADDR")})


# -- one line per job --------------------------------------------------------------------------

@dataclass
class JobRecord:
    """What `job_log` reports; the job may set `outcome` (e.g. "skipped", "retry")."""

    topic: str
    ref_id: Any
    job_id: str
    outcome: str = "ok"


@contextmanager
def job_log(topic: str, ref_id: Any = None, job_id: str | None = None,
            logger: logging.Logger | None = None) -> Iterator[JobRecord]:
    """Log one line for the job run inside the block: id, the outbox row (`topic:ref_id`),
    duration and outcome; when it raises, an ERROR line naming the row, with the traceback
    (the exception propagates). Records logged inside the block carry `job_id`."""
    logger = logger or job_logger
    job = JobRecord(topic, ref_id, job_id or uuid.uuid4().hex[:12])
    row = f"{topic}:{ref_id}" if ref_id is not None else topic
    start = time.perf_counter()
    with bound(job_id=job.job_id):
        try:
            yield job
        except BaseException as exc:
            ms = round((time.perf_counter() - start) * 1000, 1)
            job.outcome = "failed"
            logger.error("job %s failed after %.1f ms: outbox row %s: %s: %s", job.job_id, ms,
                         row, type(exc).__name__, exc, exc_info=True,
                         extra=_job_extra(job, row, ms))
            raise
        ms = round((time.perf_counter() - start) * 1000, 1)
        logger.info("job %s %s %s in %.1f ms", job.job_id, row, job.outcome, ms,
                    extra=_job_extra(job, row, ms))


def _job_extra(job: JobRecord, row: str, ms: float) -> dict[str, Any]:
    # job_id comes from the bound context (an `extra` may not overwrite it).
    return {"topic": job.topic, "ref_id": job.ref_id, "outbox_row": row,
            "outcome": job.outcome, "duration_ms": ms}
