"""Transcripts (issue 9): pocketsphinx hears espeak-ng's "…broken, I want a refund", the HTTP
engine speaks its small protocol to a real server, and with real Redis and RQ workers a spoken
"refund" routes exactly like a typed one, while routing waits for a transcript only as long as
TRANSCRIPT_WAIT_SECONDS, and not at all when no engine serves the answer's language."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import subprocess
import sys
import threading
import uuid
import wave
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from sqlalchemy import func, select, update

from app import transcribe
from app.audio import pcm16k
from app.extensions import db
from app.jobs.outbox import sweep
from app.models import Case, CaseEvent, Moment, Outbox, Response, Site, Team, VoiceNote
from app.responses import ROUTE_TOPIC
from app.storage import storage
from app.transcribe import HttpEngine, PocketsphinxEngine, TranscriptionError

from .audio_samples import SENTENCE, encode, speak
from .conftest import make_site, run_worker, verified_token

ROOT = Path(__file__).resolve().parent.parent

SUPPORT = "support-team@shop.example"


def words(text: str | None) -> list[str]:
    return re.findall(r"[a-zäöõüçğışéèñ']+", (text or "").lower())


@pytest.fixture(scope="module")
def spoken() -> bytes:
    """The sentence as Chrome would upload it: Opus in WebM."""
    return encode(speak(), "webm")


# -- the engines --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["wav", "webm", "ogg", "mp4"])
def test_pocketsphinx_hears_refund(kind: str) -> None:
    """Offline English recognition of espeak-ng's sentence, through every accepted container
    (Opus and AAC included), finds the word the critical rule looks for."""
    wav = speak()
    data = wav if kind == "wav" else encode(wav, kind)
    text = PocketsphinxEngine().transcribe(pcm16k(data), "en")
    assert text is not None
    assert {"refund", "broken"} & set(words(text)), text


def test_pocketsphinx_declines_other_languages(spoken: bytes) -> None:
    """The bundled model is English: other languages are not its to transcribe."""
    assert PocketsphinxEngine().transcribe(pcm16k(spoken), "tr") is None


class SpeechServer:
    """A real speech-to-text service on 127.0.0.1: answers each POST with the next scripted
    reply ("hang" holds the request until the test ends) and records what it received."""

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.received.append((self.path, dict(self.headers), body))
                reply = server.replies.pop(0) if server.replies else {"text": ""}
                if reply == "hang":
                    server.release.wait()
                    return
                if isinstance(reply, int):
                    status, payload = reply, b"oops"
                elif isinstance(reply, bytes):
                    status, payload = 200, reply
                else:
                    status, payload = 200, json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/stt"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stt() -> Iterator[SpeechServer]:
    server = SpeechServer()
    try:
        yield server
    finally:
        server.close()


def test_http_engine_posts_a_wav_and_reads_the_text(stt: SpeechServer, spoken: bytes) -> None:
    """The recording goes out as a 16 kHz mono WAV with its language and the bearer token;
    the JSON reply's text comes back, and `null` means the service does not do the language."""
    pcm = pcm16k(spoken)
    stt.replies = [{"text": " iade istiyorum "}, {"text": None}]
    engine = HttpEngine(stt.url + "?model=small", timeout=5, token="s3cret")
    assert engine.transcribe(pcm, "tr") == "iade istiyorum"
    assert engine.transcribe(pcm, "tr") is None
    path, headers, body = stt.received[0]
    query = parse_qs(urlsplit(path).query)
    assert query == {"model": ["small"], "lang": ["tr"]}
    assert headers["Content-Type"] == "audio/wav"
    assert headers["Content-Language"] == "tr"
    assert headers["Authorization"] == "Bearer s3cret"
    with wave.open(io.BytesIO(body)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() == len(pcm) // 2


@pytest.mark.parametrize("reply", [500, 302, b"<html>not json</html>", {"txt": "x"},
                                   {"text": 42}, "hang"],
                         ids=["500", "redirect", "not-json", "no-text", "not-a-string", "hang"])
def test_http_engine_failures_raise_for_a_retry(stt: SpeechServer, reply: Any) -> None:
    """Every way the service can fail (status, redirect, bad JSON, a hanging server past the
    timeout) is a TranscriptionError, which the job turns into a retry."""
    stt.replies = [reply]
    with pytest.raises(TranscriptionError):
        HttpEngine(stt.url, timeout=0.5).transcribe(b"\0\0" * 1600, "tr")


def test_http_engine_refuses_odd_urls() -> None:
    """Only http(s) URLs are accepted for the service."""
    with pytest.raises(ValueError):
        HttpEngine("file:///etc/passwd", timeout=1)


# -- the job, with real Redis and RQ workers --------------------------------------------------


def _team_address(app, site) -> None:
    with app.app_context():
        team = db.session.scalar(select(Team).where(Team.site_id == site.id,
                                                    Team.key == "support"))
        team.emails = [SUPPORT]
        db.session.commit()


def answer(client, site, rating: int, comment: str | None = None, locale: str = "en") -> int:
    """A verified answer through the prompt form; returns its response id."""
    token = verified_token(site, moment="checkout", channel="email", customer="c-1",
                           order=uuid.uuid4().hex[:12], locale=locale)  # its own submission
    data = {"rating": str(rating), **({"comment": comment} if comment else {})}
    resp = client.post(f"/p/{token}", data=data)
    assert resp.status_code == 303, resp.get_data(as_text=True)
    with client.application.app_context():
        return db.session.scalar(select(func.max(Response.id)))


def voice_site(app, **kw: Any) -> Site:
    """A site whose checkout moment takes voice notes (set before any request caches it)."""
    site = make_site(app, **kw)
    with app.app_context():
        db.session.execute(update(Moment).where(Moment.site_id == site.id,
                                                Moment.key == "checkout")
                           .values(voice_enabled=True))
        db.session.commit()
    return site


def answer_with_voice(app, client, site, rating: int, audio: bytes, locale: str = "en") -> int:
    """An answer with a voice note through the real prompt form (one multipart POST, as
    voice.js sends it): the answer path stores the note and calls enqueue_for in the answer's
    transaction; no worker has run anything yet."""
    from .test_voice import post

    token = verified_token(site, moment="checkout", channel="email", customer="c-1",
                           order=uuid.uuid4().hex[:12], locale=locale)
    resp = post(client, f"/p/{token}", audio, rating=str(rating))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    with app.app_context():
        rid = db.session.scalar(select(func.max(Response.id)))
        assert db.session.get(Response, rid).has_voice
        return rid


def state(app, rid: int) -> dict[str, Any]:
    """What the loop made of an answer: its note, case and routing events."""
    with app.app_context():
        db.session.expire_all()
        note = db.session.scalar(select(VoiceNote).where(VoiceNote.response_id == rid))
        case = db.session.scalar(select(Case).where(Case.response_id == rid))
        events = db.session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                            CaseEvent.kind.in_(
                                                                ("routed", "rerouted")))
                                    .order_by(CaseEvent.id)).all()
        return {"status": note.transcript_status if note else None,
                "transcript": note.transcript if note else None,
                "engine": note.transcript_engine if note else None,
                "lang": note.transcript_lang if note else None,
                "routed": case.routed_at is not None, "priority": case.priority,
                "tags": list(case.tags), "events": [(e.kind, e.data["rules"]) for e in events]}


def test_spoken_refund_routes_like_a_typed_one(make_app, db_kind, redis_url, smtp_server,
                                               spoken) -> None:
    """A satisfied rating with "…broken, I want a refund" said in a voice note is transcribed
    by pocketsphinx, then routed once, critical by the critical-words rule, with the team's
    alert quoting the transcript — as the same words typed in the comment are."""
    port, box = smtp_server
    app = make_app(db_kind, REDIS_URL=redis_url, MAIL_SERVER="127.0.0.1", MAIL_PORT=port)
    site = voice_site(app)
    _team_address(app, site)
    client = app.test_client()
    typed = answer(client, site, 4, SENTENCE)
    voiced = answer_with_voice(app, client, site, 4, spoken)
    assert not state(app, voiced)["routed"]

    run_worker(app)

    said, wrote = state(app, voiced), state(app, typed)
    assert said["status"] == "done" and (said["engine"], said["lang"]) == ("pocketsphinx", "en")
    assert {"refund", "broken"} & set(words(said["transcript"]))
    assert said["priority"] == wrote["priority"] == "critical"
    assert "critical-words" in said["tags"] and "critical-words" in wrote["tags"]
    assert said["events"] == wrote["events"]  # routed once, by the same rules
    alerts = box.to(SUPPORT)
    assert len(alerts) == 2
    spoken_alert = next(m for m in alerts
                        if "Voice note (transcript)" in m.get_body(("plain",)).get_content())
    assert said["transcript"] in spoken_alert.get_body(("plain",)).get_content()
    with app.app_context():  # the job again: nothing changes, nothing is sent twice
        note_id = db.session.scalar(select(VoiceNote.id).where(VoiceNote.response_id == voiced))
        assert transcribe.transcribe_note(note_id) == "already done"
    run_worker(app)
    assert state(app, voiced) == said and len(box.to(SUPPORT)) == 2


def test_the_forking_worker_transcribes_and_routes(make_app, pg_url, redis_url, tmp_path,
                                                   spoken) -> None:
    """Production's path: the shipped forking `flask worker` (configured only by its
    environment; the recogniser loaded before the fork, used in the work horse) transcribes a
    voice note and routes the answer critical on the spoken word."""
    media = tmp_path / "media"
    app = make_app("postgres", REDIS_URL=redis_url, STORAGE_URL=f"file://{media}")
    site = voice_site(app)
    voiced = answer_with_voice(app, app.test_client(), site, 4, spoken)
    env = {**os.environ, "SECRET_KEY": "test-secret-key", "DATABASE_URL": pg_url,
           "REDIS_URL": redis_url, "CLOSELOOP_STORAGE_URL": f"file://{media}",
           "CLOSELOOP_PUBLIC_BASE_URL": "http://localhost",
           "CLOSELOOP_INSTANCE_PATH": str(tmp_path / "instance")}
    out = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "worker", "--burst"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    said = state(app, voiced)
    assert said["status"] == "done" and said["engine"] == "pocketsphinx", out.stderr[-3000:]
    assert {"refund", "broken"} & set(words(said["transcript"]))
    assert said["routed"] and said["priority"] == "critical"
    assert "critical-words" in said["tags"]


def test_no_engine_for_the_language_routes_at_once(make_app, redis_url, spoken) -> None:
    """Turkish with no HTTP engine configured: "not_transcribed" at once, no transcription
    job, and routing does not wait (no clock moved)."""
    app = make_app("sqlite", REDIS_URL=redis_url, TRANSCRIBE_HTTP_URL="")
    site = voice_site(app)
    rid = answer_with_voice(app, app.test_client(), site, 2, spoken, locale="tr")
    assert state(app, rid)["status"] == "not_transcribed"
    assert run_worker(app, ROUTE_TOPIC) == 1
    got = state(app, rid)
    assert got["routed"] and got["lang"] == "tr" and got["transcript"] is None
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Outbox).where(
            Outbox.topic == transcribe.TOPIC)) == 0


def test_hanging_engine_routing_goes_on_after_the_wait(make_app, redis_url, clock, stt,
                                                       spoken) -> None:
    """The speech service hangs: routing waits TRANSCRIPT_WAIT_SECONDS, then the sweep routes
    the answer on its rating alone; the transcription is retried, and when it finally comes
    the transcript is stored and the still-new case is routed again with it (critical)."""
    app = make_app("sqlite", REDIS_URL=redis_url, TRANSCRIBE_HTTP_URL=stt.url,
                   TRANSCRIBE_HTTP_TIMEOUT=0.5, TRANSCRIPT_WAIT_SECONDS=120,
                   TRANSCRIBE_MAX_ATTEMPTS=5)
    site = voice_site(app)
    rid = answer_with_voice(app, app.test_client(), site, 4, spoken, locale="tr")
    stt.replies = ["hang"]
    run_worker(app)  # routing defers itself, the transcription times out
    got = state(app, rid)
    assert (got["status"], got["routed"]) == ("pending", False)

    clock.advance(timedelta(seconds=60))
    stt.replies = [503]
    with app.app_context():
        sweep()  # the transcription is retried; routing is not due yet
    run_worker(app)
    assert state(app, rid)["routed"] is False

    clock.advance(timedelta(seconds=61))  # past the answer's wait
    stt.replies = ["hang"]
    with app.app_context():
        sweep()
    run_worker(app)
    got = state(app, rid)
    assert got["routed"] and got["status"] == "pending" and got["priority"] == "routine"
    assert got["events"] == [("routed", got["events"][0][1])]

    clock.advance(timedelta(minutes=10))
    stt.replies = [{"text": "televizyonum kırık geldi, iade istiyorum"}]
    with app.app_context():
        sweep()
    run_worker(app)
    got = state(app, rid)
    assert (got["status"], got["engine"], got["lang"]) == ("done", "http", "tr")
    assert got["priority"] == "critical" and [k for k, _ in got["events"]] == [
        "routed", "rerouted"]


def test_failing_engine_gives_up_and_releases_routing(make_app, redis_url, clock, stt,
                                                      spoken) -> None:
    """HTTP 500 on every attempt: after TRANSCRIBE_MAX_ATTEMPTS the note is "failed" and the
    answer is routed then, without waiting for the deadline."""
    app = make_app("sqlite", REDIS_URL=redis_url, TRANSCRIBE_HTTP_URL=stt.url,
                   TRANSCRIBE_MAX_ATTEMPTS=2, TRANSCRIPT_WAIT_SECONDS=3600)
    site = voice_site(app)
    rid = answer_with_voice(app, app.test_client(), site, 4, spoken, locale="ru")
    stt.replies = [500, 500]
    run_worker(app)
    assert state(app, rid)["status"] == "pending"
    clock.advance(timedelta(seconds=31))
    with app.app_context():
        assert sweep() == 1  # the transcription only: routing waits
    run_worker(app)
    got = state(app, rid)
    assert (got["status"], got["engine"], got["routed"]) == ("failed", "http", True)
    assert len(stt.received) == 2
    with app.app_context():
        assert db.session.scalar(select(Outbox.done_at).where(
            Outbox.topic == transcribe.TOPIC)) is not None


def test_runs_that_died_count_as_failed_attempts(make_app, redis_url, spoken) -> None:
    """Runs killed before they stored an outcome (JOBS_TIMEOUT, a lost work horse) still count:
    the next run after TRANSCRIBE_MAX_ATTEMPTS dispatches gives up instead of leaving the note
    pending for ever, and routing goes on."""
    app = make_app("sqlite", REDIS_URL=redis_url, TRANSCRIBE_MAX_ATTEMPTS=2)
    site = voice_site(app)
    rid = answer_with_voice(app, app.test_client(), site, 4, spoken)
    with app.app_context():  # as the sweep leaves it after two dispatches that never returned
        db.session.execute(update(Outbox).where(Outbox.topic == transcribe.TOPIC)
                           .values(attempts=2))
        db.session.commit()
    run_worker(app)
    got = state(app, rid)
    assert (got["status"], got["engine"], got["routed"]) == ("failed", "pocketsphinx", True)


def test_undecodable_stored_audio_fails_without_retry(make_app, redis_url, spoken) -> None:
    """Audio that cannot be decoded any more (damaged in storage) fails at once: no retry
    would change it, and routing goes on."""
    app = make_app("sqlite", REDIS_URL=redis_url)
    site = voice_site(app)
    rid = answer_with_voice(app, app.test_client(), site, 4, spoken)
    with app.app_context():
        key = db.session.scalar(select(VoiceNote.storage_key))
        storage().put(key, spoken[: len(spoken) // 2], "audio/webm")
    run_worker(app)
    got = state(app, rid)
    assert (got["status"], got["routed"]) == ("failed", True)


# -- search and digests ---------------------------------------------------------------------


def test_inbox_search_and_digest_read_transcripts(make_app, db_kind, spoken) -> None:
    """Staff searching "refund" find the answer that only said it, the CSV export has its
    transcript, the rules preview matches it, the weekly digest quotes it (inline jobs)."""
    from datetime import UTC, datetime

    from app import metrics

    from .test_inbox import ids_on, member, signed_in
    from .test_settings_loop import form_post, preview_rows

    app = make_app(db_kind)
    site = voice_site(app, name="Own shop")
    rid = answer_with_voice(app, app.test_client(), site, 1, spoken)
    answer(app.test_client(), site, 2, "the courier was late")
    assert state(app, rid)["status"] == "done"
    member(app, "lead@shop.example", site, "lead")
    lead = signed_in(app)
    with app.app_context():
        case_id = db.session.scalar(select(Case.id).where(Case.response_id == rid))
    found = lead.get("/admin/?q=REFUND").get_data(as_text=True)
    assert ids_on(found) == [case_id]
    assert "(voice)</span> " + html.escape(state(app, rid)["transcript"]) in found
    assert len(ids_on(lead.get("/admin/?q=courier").get_data(as_text=True))) == 1
    rows = list(csv.DictReader(io.StringIO(lead.get("/admin/export.csv").get_data(
        as_text=True))))
    assert [r["transcript"] for r in rows if r["case"] == str(case_id)] == [
        state(app, rid)["transcript"]]
    # the rules page's preview decides as the routing job does: on the transcript too
    proposed = [{"name": "Spoken refunds", "conditions": {"keywords": ["refund"]},
                 "actions": {"priority": "critical", "team": "support"}}]
    preview = form_post(lead, f"/admin/sites/{site.id}/settings/rules",
                        rules=yaml.safe_dump({"rules": proposed}), action="preview")
    assert preview.status_code == 200
    assert [r["Matched"] for r in preview_rows(preview.get_data(as_text=True))] == [
        "none: defaults", "Spoken refunds"]
    with app.app_context():
        from app.loop.notify import response_data

        hooked = response_data(db.session.get(Response, rid), "checkout")
        assert hooked["has_voice"] and hooked["transcript"] == state(app, rid)["transcript"]
        samples = metrics.sample_comments(site.id, datetime(2000, 1, 1, tzinfo=UTC),
                                          datetime(2100, 1, 1, tzinfo=UTC))
    spoken_samples = [s for s in samples if s.spoken]
    assert len(spoken_samples) == 1 and "refund" in words(spoken_samples[0].text)


def test_postgres_search_serves_transcripts_from_their_trigram_index(make_app, clock) -> None:
    """On PostgreSQL the inbox's own search statement (captured from a real request) can be
    served by both trigram indexes at once, comment's and transcript's (a BitmapOr on one
    table): seq scans, plain index scans and nested loops are priced out, so a few rows show
    whether the indexes can serve it at all (the bench has the plans at scale)."""
    from sqlalchemy import event

    from .test_inbox import member, signed_in

    app = make_app("postgres")
    site = voice_site(app, name="Own shop")
    member(app, "lead@shop.example", site, "lead")
    answer(app.test_client(), site, 2, "the refund took weeks")
    lead = signed_in(app)
    with app.app_context():
        engine = db.engine
    pages: list[tuple[str, Any]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("SELECT cases.id") and "LIMIT" in statement:
            pages.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        assert lead.get("/admin/?q=refund").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    statement, parameters = pages[-1]
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        for setting in ("seqscan", "indexscan", "nestloop"):
            raw.execute(f"SET enable_{setting} = off")
        plan = "\n".join(r[0] for r in raw.execute("EXPLAIN " + statement, parameters))
    assert "ix_responses_comment_trgm" in plan and "ix_responses_transcript_trgm" in plan, plan
