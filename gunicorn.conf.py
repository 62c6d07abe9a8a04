"""gunicorn settings for Closeloop (gunicorn reads ./gunicorn.conf.py; elsewhere pass
`-c /path/to/gunicorn.conf.py`). Command-line flags and GUNICORN_CMD_ARGS override these.

Logging: the app writes one line per request itself (app/logs.py: request id, method, path with
tokens shortened, status, duration), so gunicorn's access log stays off; gunicorn's own lines
(start, worker boots, timeouts) go through the same handler and format (LOG_FORMAT=json for
JSON lines, LOG_LEVEL).
"""

import os

from app.logs import gunicorn_logconfig

wsgi_app = "app.wsgi:app"
bind = [os.environ.get("BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 30
keepalive = 5

accesslog = None
logconfig_dict = gunicorn_logconfig()
