"""Minify widget/src/closeloop.js into app/embed/static/widget.min.js (served as /widget.js).

`make widget` runs this; tests fail when the committed build is stale.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import rjsmin

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "widget" / "src" / "closeloop.js"
OUTPUT = ROOT / "app" / "embed" / "static" / "widget.min.js"


def build() -> bytes:
    """The minified widget."""
    return rjsmin.jsmin(SOURCE.read_text(encoding="utf-8"), keep_bang_comments=False).encode()


def main() -> int:
    """Write the build and report its sizes."""
    body = build()
    OUTPUT.write_bytes(body)
    print(f"{OUTPUT.relative_to(ROOT)}: {len(body)} bytes, "
          f"{len(gzip.compress(body, 9, mtime=0))} bytes gzipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
