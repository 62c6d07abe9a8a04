"""Write instance/config.py for local development (`make run`), once, with a random secret.

Run as `python -m app.devconfig`; it never overwrites an existing file.
"""

from __future__ import annotations

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


INSTANCE = Path(__file__).resolve().parent.parent / "instance"


def main(instance: Path = INSTANCE) -> int:
    """Create the file if missing; print what happened."""
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
