"""The built widget (widget/ → app/embed/static/widget.min.js), served gzipped with an ETag."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

BUILT = Path(__file__).parent / "static" / "widget.min.js"


@dataclass(frozen=True)
class Bundle:
    """The minified widget, its gzip and the version (content hash) naming its URL."""

    body: bytes
    gz: bytes
    version: str

    @property
    def etag(self) -> str:
        return self.version


@cache
def bundle() -> Bundle:
    """Read and compress once per process."""
    body = BUILT.read_bytes()
    return Bundle(body=body, gz=gzip.compress(body, 9, mtime=0),
                  version=hashlib.sha256(body).hexdigest()[:12])
