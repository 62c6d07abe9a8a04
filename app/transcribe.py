"""Transcripts of voice notes, so routing rules, search and digests read a spoken "refund" like
a typed one.

Flow: the answer that claims a voice note calls `enqueue_for(note)` in its transaction, which
writes a `transcribe_voice` outbox row (or, when no engine serves the answer's language, marks
the note "not_transcribed" at once). The job reads the audio from storage, decodes it to 16 kHz
mono PCM (app/audio.py), runs the engine chosen by the answer's locale (TRANSCRIBE_ENGINES) and
stores transcript, status, engine, language and time — first writer wins, so running twice is
harmless. A failing engine (HTTP error, timeout, bad reply) fails the job; the outbox sweep
runs it again with backoff, and after TRANSCRIBE_MAX_ATTEMPTS the note is "failed".

Routing waits, bounded: `route_response` finds the answer's note still "pending" and, until
TRANSCRIPT_WAIT_SECONDS after the answer, defers its own outbox row to that deadline
(app/jobs/outbox.defer) instead of routing. Whatever settles the note hands routing over at
once; if nothing does (engine down, worker killed), the sweep hands it over at the deadline and
the answer is routed on its rating and comment alone. A transcript that arrives after routing
is still stored (search, digests, the case view) and, while the case is still new, the answer is
routed again with it, as for a comment added later.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import wave
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import urllib3
from flask import Flask, current_app
from sqlalchemy import select, update

from . import audio, jobs
from .extensions import db
from .jobs import on_commit, outbox
from .models import Case, Outbox, Response, VoiceNote, utcnow
from .responses import ROUTE_TOPIC

log = logging.getLogger(__name__)

TOPIC = "transcribe_voice"
PENDING, DONE, NOT_TRANSCRIBED, FAILED = "pending", "done", "not_transcribed", "failed"
MAX_TRANSCRIPT_CHARS = 4000  # 60 s of fast speech is ~1,000 characters
HTTP_MAX_REPLY = 64 * 1024


class TranscriptionError(RuntimeError):
    """The engine could not answer this time (network, HTTP status, bad reply): retried."""


class Engine(Protocol):
    """A speech-to-text engine: `transcribe` gets 16 kHz mono s16le PCM and a bare language
    code; it returns the text ("" when nothing was recognised), None when it does not do that
    language, and raises TranscriptionError for a failure worth retrying."""

    name: str

    def transcribe(self, pcm16k: bytes, lang: str) -> str | None: ...


class PocketsphinxEngine:
    """Offline English recognition with pocketsphinx's bundled en-us acoustic and language
    models. The model (~0.3 s to load, ~40 MB) is loaded once per process and shared: the
    worker loads it before forking (see _warm), so each work horse inherits it."""

    name = "pocketsphinx"
    languages = frozenset({"en"})
    _decoder: Any = None
    _lock = threading.Lock()  # a Decoder holds one utterance at a time

    @classmethod
    def decoder(cls) -> Any:
        """The process's decoder, loaded on first use."""
        with cls._lock:
            if cls._decoder is None:
                from pocketsphinx import Decoder

                cls._decoder = Decoder(loglevel="FATAL")  # its INFO lines would flood stderr
            return cls._decoder

    def transcribe(self, pcm16k: bytes, lang: str) -> str | None:
        """Decode the whole recording as one utterance."""
        if lang not in self.languages:
            return None
        decoder = self.decoder()
        with self._lock:
            decoder.start_utt()
            decoder.process_raw(pcm16k, full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
        return hypothesis.hypstr.strip() if hypothesis is not None else ""


class HttpEngine:
    """A speech-to-text service of the operator's (TRANSCRIBE_HTTP_URL): the recording is
    POSTed as a 16 kHz mono WAV (`Content-Type: audio/wav`), the language as the `lang` query
    parameter and in `Content-Language`; the reply is JSON `{"text": "..."}` (`"text": null`:
    the service does not do that language).

    The URL is the operator's own configuration, not a merchant's, and such services usually
    live on a private network or on this host, so app/loop/safehttp's address policy (made for
    merchants' webhook URLs) does not apply; what is kept from it: no redirects, an overall
    deadline, a bounded reply."""

    name = "http"

    def __init__(self, url: str, *, timeout: float, token: str | None = None) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("TRANSCRIBE_HTTP_URL must be an http:// or https:// URL")
        self.url = url
        self.timeout = timeout
        self.token = token

    def transcribe(self, pcm16k: bytes, lang: str) -> str | None:
        """One POST; TranscriptionError for anything but a 2xx with the expected JSON."""
        headers = {"Content-Type": "audio/wav", "Content-Language": lang,
                   "Accept": "application/json", "User-Agent": "Closeloop-Transcribe/1"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        separator = "&" if urlsplit(self.url).query else "?"
        deadline = time.monotonic() + self.timeout
        try:
            with urllib3.PoolManager(retries=False,
                                     timeout=urllib3.Timeout(total=self.timeout)) as pool:
                reply = pool.request("POST", self.url + separator + urlencode({"lang": lang}),
                                     body=_wav(pcm16k), headers=headers, redirect=False,
                                     preload_content=False)
                try:
                    body = bytearray()
                    # read in pieces against one deadline: a trickling server cannot hold us
                    while len(body) <= HTTP_MAX_REPLY and time.monotonic() < deadline:
                        chunk = reply.read(16 * 1024)
                        if not chunk:
                            break
                        body += chunk
                    else:
                        raise TranscriptionError("reply too large or too slow")
                finally:
                    reply.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            raise TranscriptionError(f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= reply.status < 300:
            raise TranscriptionError(f"HTTP {reply.status}")
        try:
            data = json.loads(bytes(body))
        except ValueError as exc:
            raise TranscriptionError("reply is not JSON") from exc
        if not isinstance(data, dict) or "text" not in data:
            raise TranscriptionError('reply has no "text"')
        text = data["text"]
        if text is not None and not isinstance(text, str):
            raise TranscriptionError('"text" is not a string')
        return text.strip() if text is not None else None


def _wav(pcm16k: bytes) -> bytes:
    """16 kHz mono s16le PCM in a WAV container."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm16k)
    return out.getvalue()


def _pocketsphinx(app: Flask) -> Engine | None:
    return PocketsphinxEngine()


def _http(app: Flask) -> Engine | None:
    url = app.config.get("TRANSCRIBE_HTTP_URL")
    if not url:
        return None
    return HttpEngine(url, timeout=float(app.config["TRANSCRIBE_HTTP_TIMEOUT"]),
                      token=app.config.get("TRANSCRIBE_HTTP_TOKEN"))


# Engine names TRANSCRIBE_ENGINES may use; "none" (or any unknown name) means no engine.
ENGINES: dict[str, Callable[[Flask], Engine | None]] = {
    "pocketsphinx": _pocketsphinx, "http": _http}


def language_of(locale: str | None) -> str:
    """The bare language code of a locale ("pt-BR" → "pt")."""
    return (locale or "en").replace("_", "-").split("-")[0].lower() or "en"


def engine_for(lang: str, app: Flask | None = None) -> Engine | None:
    """The engine TRANSCRIBE_ENGINES names for `lang` (else for "*"), if it is available."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    mapping: dict[str, str] = app.config["TRANSCRIBE_ENGINES"]
    name = mapping.get(lang, mapping.get("*", "none"))
    factory = ENGINES.get(name)
    return factory(app) if factory is not None else None


# -- the answer's side ---------------------------------------------------------------------------


def enqueue_for(note: VoiceNote) -> None:
    """In the answer's transaction, right after it claimed `note`: owe its transcription, or
    mark it "not_transcribed" at once when no engine serves the answer's language (routing then
    does not wait for it)."""
    assert note.response_id is not None, "claim the note before asking for its transcript"
    session = db.session
    session.flush()  # the note's id, and the response row the locale comes from
    locale = session.scalar(select(Response.locale).where(Response.id == note.response_id))
    lang = language_of(locale)
    if engine_for(lang) is None:
        session.execute(update(VoiceNote).where(VoiceNote.id == note.id).values(
            transcript_status=NOT_TRANSCRIBED, transcript_lang=lang, transcribed_at=utcnow()))
        return
    outbox.add(TOPIC, note.id)


def note_of(response_id: int) -> VoiceNote | None:
    """The voice note an answer claimed, if any."""
    return db.session.scalar(select(VoiceNote).where(VoiceNote.response_id == response_id))


def wait_deadline(note: VoiceNote | None, answered_at: datetime) -> datetime | None:
    """Until when routing waits for this note's transcript; None when it need not wait."""
    if note is None or note.transcript_status != PENDING:
        return None
    wait = timedelta(seconds=float(current_app.config["TRANSCRIPT_WAIT_SECONDS"]))
    return (note.claimed_at or answered_at) + wait


# -- the job -------------------------------------------------------------------------------------


@jobs.handler(TOPIC)
def transcribe_note(note_id: int) -> str:
    """Transcribe one voice note and release its answer's routing; safe to run twice."""
    session = db.session
    # A write first: it serialises two runs (row lock / SQLite's write lock) while we decide.
    claimed = session.execute(
        update(Outbox).where(Outbox.topic == TOPIC, Outbox.ref_id == note_id)
        .values(attempts=Outbox.attempts)
        .returning(Outbox.done_at, Outbox.attempts)
    ).first()
    if claimed is None or claimed.done_at is not None:
        session.rollback()
        return "unknown" if claimed is None else "already done"
    row = session.execute(
        select(VoiceNote, Response.locale)
        .join(Response, Response.id == VoiceNote.response_id)
        .where(VoiceNote.id == note_id)
    ).first()
    if row is None:  # purged with its answer meanwhile
        outbox.finish(TOPIC, note_id)
        session.commit()
        return "gone"
    note, locale = row
    lang = language_of(locale)
    if note.transcript_status != PENDING:  # settled by an earlier run
        return _settle(note, lang, None, None, note.transcript_status)
    engine = engine_for(lang)
    if engine is None:
        return _settle(note, lang, None, None, NOT_TRANSCRIBED)
    key, attempts = note.storage_key, claimed.attempts
    max_attempts = int(current_app.config["TRANSCRIBE_MAX_ATTEMPTS"])
    if attempts >= max_attempts:
        # as many runs before this one died without an outcome (killed at JOBS_TIMEOUT, a
        # lost horse): the note would stay "pending" for ever
        log.warning("voice note %s: %d attempts ended without an outcome, giving up", note_id,
                    attempts)
        return _settle(note, lang, engine.name, None, FAILED)
    session.commit()  # hold no lock while the engine works (seconds)
    started = time.monotonic()
    try:
        pcm = audio.pcm16k(storage_read(key))
        text = engine.transcribe(pcm, lang)
    except (audio.AudioRejected, FileNotFoundError) as exc:
        # the stored audio itself is gone or undecodable: no retry will change that
        log.warning("voice note %s cannot be transcribed: %r", note_id, exc)
        return _settle(session.get(VoiceNote, note_id), lang, engine.name, None, FAILED)
    except Exception as exc:  # noqa: BLE001 - engine and storage errors: retried by the sweep
        if attempts + 1 >= max_attempts:
            log.warning("voice note %s: %s failed %d times, giving up: %r", note_id,
                        engine.name, attempts + 1, exc)
            return _settle(session.get(VoiceNote, note_id), lang, engine.name, None, FAILED)
        session.execute(update(Outbox).where(Outbox.topic == TOPIC, Outbox.ref_id == note_id)
                        .values(last_error=f"{engine.name}: {exc}"[:500]))
        session.commit()
        raise
    seconds = time.monotonic() - started
    log.info("voice note %s transcribed by %s (%s) in %.2f s: %d characters", note_id,
             engine.name, lang, seconds, len(text or ""))
    status = NOT_TRANSCRIBED if text is None else DONE
    return _settle(session.get(VoiceNote, note_id), lang, engine.name,
                   (text or "")[:MAX_TRANSCRIPT_CHARS] if status == DONE else None, status)


def storage_read(key: str) -> bytes:
    """The stored audio of a note (app/storage.py)."""
    from .storage import storage

    return storage().read(key)


def _settle(note: VoiceNote | None, lang: str, engine: str | None, text: str | None,
            status: str) -> str:
    """Store the outcome (first writer wins), finish the outbox row and release routing."""
    session = db.session
    if note is None:  # purged while the engine worked
        session.rollback()
        return "gone"
    note_id, response_id = note.id, note.response_id
    stored = session.execute(
        update(VoiceNote)
        .where(VoiceNote.id == note_id, VoiceNote.transcript_status == PENDING)
        .values(transcript_status=status, transcript=text or None, transcript_lang=lang,
                transcript_engine=engine, transcribed_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]  # an UPDATE's CursorResult
    if response_id is not None and stored and text:
        # the copy the inbox search reads; updated_at stays: the customer changed nothing
        session.execute(update(Response).where(Response.id == response_id)
                        .values(transcript=text, updated_at=Response.updated_at)
                        .execution_options(synchronize_session=False))
    outbox.finish(TOPIC, note_id)
    if response_id is not None:
        _release_routing(response_id, late_text=bool(stored and text))
    session.commit()  # hands routing over
    return status


def _release_routing(response_id: int, late_text: bool) -> None:
    """Routing that waits for this transcript goes now; routing that did not wait (timed out)
    runs again with the transcript while nobody has touched the case."""
    route = db.session.execute(select(Outbox.done_at).where(
        Outbox.topic == ROUTE_TOPIC, Outbox.ref_id == response_id)).first()
    if route is None:
        return
    if route.done_at is None:
        on_commit(ROUTE_TOPIC, response_id)
        return
    status = db.session.scalar(select(Case.status).where(Case.response_id == response_id))
    if late_text and status == "new":
        outbox.rearm(ROUTE_TOPIC, response_id)


@jobs.warmup
def _warm(app: Flask) -> None:
    """Load pocketsphinx's model in the worker before it forks, when a language uses it."""
    if "pocketsphinx" in app.config["TRANSCRIBE_ENGINES"].values():
        PocketsphinxEngine.decoder()
