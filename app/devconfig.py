"""Write the development instance folder's config.py for `make run`, once, with a random secret.

`make run` exports CLOSELOOP_INSTANCE_PATH=instance/dev, so these settings (console mail, the
demo shop, development cookies) and the development database live in instance/dev/ and only
commands given that variable load them: a production command run in the same checkout reads
instance/config.py (or the environment) and never sees them.

Run as `python -m app.devconfig`; it never overwrites an existing file.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

TEMPLATE = '''# Local development settings written by `make run` (not committed).
ENV_NAME = "development"
SECRET_KEY = "{secret}"
DEMO_ENABLED = True
# Emails are printed to the log instead of sent; set MAIL_SERVER etc. and remove this to send.
MAIL_BACKEND = "console"
'''
MARKER = TEMPLATE.splitlines()[0]

INSTANCE = Path(__file__).resolve().parent.parent / "instance"


def dev_instance() -> Path:
    """CLOSELOOP_INSTANCE_PATH (what `make run` exports), else instance/dev in the checkout."""
    chosen = os.environ.get("CLOSELOOP_INSTANCE_PATH")
    return Path(chosen).resolve() if chosen else INSTANCE / "dev"


def _move_old_layout(old: Path, dev: Path) -> None:
    """Before instance/dev existed, `make run` wrote instance/config.py, which every command
    then loaded: move that file (recognised by its first line) and its database to `dev`."""
    config = old / "config.py"
    if old == dev or not config.is_file() or (dev / "config.py").exists():
        return
    if config.read_text().splitlines()[:1] != [MARKER]:
        return
    dev.mkdir(parents=True, exist_ok=True)
    for name in ("config.py", "closeloop.sqlite3", "closeloop.sqlite3-wal",
                 "closeloop.sqlite3-shm"):
        if (old / name).exists():
            (old / name).rename(dev / name)
    print(f"moved the development settings and database from {old} to {dev}")


def main(instance: Path | None = None, old: Path = INSTANCE) -> int:
    """Create `instance`/config.py if missing; print what happened."""
    instance = instance or dev_instance()
    _move_old_layout(old, instance)
    path = instance / "config.py"
    if path.exists():
        return 0
    instance.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.format(secret=secrets.token_urlsafe(32)))
    path.chmod(0o600)
    print(f"wrote {path} (development settings, random SECRET_KEY)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
