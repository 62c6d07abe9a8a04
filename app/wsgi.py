"""The WSGI entry point servers load: `gunicorn app.wsgi:app`.

Without Redis it also starts this process's job runner and schedule (app/jobs/inline.py)."""

from app import create_app
from app.jobs import start_background

app = create_app()
start_background(app)
