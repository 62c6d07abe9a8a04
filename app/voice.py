"""Voice notes (issue 9): an upload judged by its bytes, stored under a random key and recorded
unclaimed; claimed by its answer in the answer's transaction (app/responses.py), else deleted
at once (a repeat of an answer, a failed answer) or by the sweep (a request that died between
the two). The retention purge deletes the audio of the answers it deletes (app/loop/cron.py).

The row is written before the bytes and deleted after them, so no object is ever left without
a row that says where it is.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from limits import parse as parse_limit
from sqlalchemy import Select, delete, select

from . import audio, jobs, storage
from .extensions import db, limiter
from .models import VoiceNote, utcnow

log = logging.getLogger(__name__)
SWEEP_BATCH = 500


class StorageUnavailable(RuntimeError):
    """The storage backend did not take the audio (nothing is left behind)."""


def quota_wait(address: str, token: str) -> int:
    """0 when one more voice upload from this address and for this prompt is within
    LIMIT_VOICE_UPLOAD (per address) and LIMIT_VOICE_UPLOAD_PER_TOKEN (per prompt), else the
    seconds until the fuller window resets. Every upload counts, refused ones included."""
    cfg = current_app.config
    checks = ((parse_limit(cfg["LIMIT_VOICE_UPLOAD"]), "voice-ip", address),
              (parse_limit(cfg["LIMIT_VOICE_UPLOAD_PER_TOKEN"]), "voice-token",
               hashlib.sha256(token.encode()).hexdigest()[:24]))
    wait = 0
    for item, scope, key in checks:
        try:
            if not limiter.limiter.hit(item, scope, key):
                reset, _left = limiter.limiter.get_window_stats(item, scope, key)
                wait = max(wait, int(reset - time.time()) + 1, 1)
        except Exception:  # noqa: BLE001 - limit storage down: the body cap still bounds it
            log.warning("voice quota unavailable", exc_info=True)
    return wait


def stage(site_id: int, data: bytes) -> VoiceNote:
    """Judge `data` (audio.inspect_audio: AudioRejected with the customer's reason), record it
    unclaimed in its own short transaction, then store the bytes under a new random key.
    StorageUnavailable when the backend refuses them (the row is gone again)."""
    cfg = current_app.config
    info = audio.inspect_audio(data, max_bytes=cfg["VOICE_MAX_BYTES"],
                               max_seconds=cfg["VOICE_MAX_SECONDS"])
    note = VoiceNote(site_id=site_id, storage_key=storage.new_key("voice", info.ext),
                     content_type=info.content_type, size_bytes=info.size_bytes,
                     duration_ms=info.duration_ms, transcript_status="pending",
                     created_at=utcnow())
    db.session.add(note)
    db.session.commit()
    try:
        storage.storage().put(note.storage_key, data, info.content_type)
    except Exception as exc:
        log.error("voice note %s not stored", note.public_id, exc_info=True)
        discard(note)
        raise StorageUnavailable(str(exc)) from exc
    return note


def claim(note: VoiceNote, response_id: int) -> None:
    """Inside the answer's transaction (whose row was written with has_voice true): the note
    becomes the answer's and is queued for its transcript (app/transcribe.py), committed
    together with the answer."""
    from . import transcribe

    db.session.add(note)  # the staging transaction's object, attached to this one
    note.response_id = response_id
    note.claimed_at = utcnow()
    transcribe.enqueue_for(note)


def discard(note: VoiceNote) -> None:
    """Delete an unclaimed note now (object, then row): the answer it came with was a repeat
    or was not stored. Commits; a claimed note is left alone."""
    db.session.rollback()  # whatever the failed answer left in the session
    try:
        storage.storage().delete(note.storage_key)
    except Exception:  # noqa: BLE001 - the row stays unclaimed: the sweep tries again
        log.warning("voice note %s left to the sweep", note.public_id, exc_info=True)
        return
    db.session.execute(delete(VoiceNote).where(VoiceNote.id == note.id,
                                               VoiceNote.response_id.is_(None))
                       .execution_options(synchronize_session=False))
    db.session.commit()


def _now(now: str | datetime | None) -> datetime:
    if isinstance(now, str):
        return datetime.fromisoformat(now)
    return now or utcnow()


@jobs.task("voice_sweep", every=600)
def sweep(now: str | datetime | None = None) -> int:
    """Delete voice notes no answer claimed within VOICE_UNCLAIMED_SECONDS (the request that
    uploaded them died before its answer committed): the object, then the row. Returns how
    many went."""
    cutoff = _now(now) - timedelta(seconds=current_app.config["VOICE_UNCLAIMED_SECONDS"])
    store = storage.storage()
    gone = 0
    while True:
        rows = db.session.execute(
            select(VoiceNote.id, VoiceNote.storage_key)
            .where(VoiceNote.claimed_at.is_(None), VoiceNote.created_at < cutoff)
            .order_by(VoiceNote.created_at).limit(SWEEP_BATCH)).all()
        for note_id, key in rows:
            try:
                store.delete(key)
            except Exception:  # noqa: BLE001 - storage down: this row waits for the next run
                log.warning("voice sweep: could not delete %s", key, exc_info=True)
                return gone
            done = db.session.execute(
                delete(VoiceNote).where(VoiceNote.id == note_id, VoiceNote.claimed_at.is_(None))
                .execution_options(synchronize_session=False))
            gone += done.rowcount  # type: ignore[attr-defined]  # a DELETE's CursorResult
        db.session.commit()
        if len(rows) < SWEEP_BATCH:
            return gone


def delete_audio_of(answers: Select[Any]) -> int:
    """Delete from storage the audio of the answers `answers` selects (their ids), before the
    caller deletes the rows; returns how many objects. A storage failure raises, so the rows
    (and with them the keys) stay for the next run."""
    store = storage.storage()
    keys = db.session.scalars(select(VoiceNote.storage_key)
                              .where(VoiceNote.response_id.in_(answers)))
    count = 0
    for key in keys:
        store.delete(key)
        count += 1
    return count
