"""Voice notes with the answer (issue 9, point 1): one multipart submission stores one answer
and one voice note, once per prompt; refused uploads (not audio, too big, too long, damaged)
say why and store nothing; quotas; unclaimed uploads are swept; the retention purge deletes the
audio; staff of the site (and no one else) play it back with ranges."""

from __future__ import annotations

import io
from datetime import timedelta
from functools import cache
from html import unescape as html_unescape
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from app.extensions import db
from app.models import Case, Moment, Response, VoiceNote, utcnow

from .conftest import make_site, public_prompt
from .test_inbox import PASSWORD, member
from .test_storage import aws_env, moto_endpoint  # noqa: F401 - fixtures

HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="9"/></svg>'


@cache
def speech_webm() -> bytes:
    """espeak-ng's sentence as a browser's MediaRecorder WebM/Opus."""
    from .audio_samples import mediarecorder_webm, speak

    return mediarecorder_webm(speak())


@cache
def long_webm(seconds: float = 61.0) -> bytes:
    """A tone of `seconds` as WebM/Opus."""
    from .audio_samples import encode, tone_wav

    return encode(tone_wav(seconds, rate=8000), "webm")


def voice_app(make_app, tmp_path: Path, db_kind: str = "sqlite", **config):
    """An app storing audio under tmp_path/media, and a site whose checkout takes voice."""
    media = tmp_path / "media"
    app = make_app(db_kind, STORAGE_URL=f"file://{media}", **config)
    site = make_site(app, name="Voice shop")
    with app.app_context():
        db.session.execute(update(Moment).where(Moment.site_id == site.id,
                                                Moment.key == "checkout")
                           .values(voice_enabled=True))
        db.session.commit()
    return app, site, media


def files(media: Path) -> list[Path]:
    """Every stored object (no temporary files left either)."""
    return sorted(p for p in media.rglob("*") if p.is_file()) if media.exists() else []


def counts(app) -> tuple[int, int]:
    """(answers, voice notes)."""
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(Response)),
                db.session.scalar(select(func.count()).select_from(VoiceNote)))


def post(client, path: str, audio: bytes | None, *, rating: str = "2", name: str = "voice.webm",
         content_type: str = "audio/webm", as_json: bool = False, **extra: str):
    """The answer as voice.js sends it: multipart, the recording as the `voice` part."""
    from werkzeug.datastructures import FileStorage, MultiDict
    from werkzeug.test import encode_multipart

    data: MultiDict = MultiDict({"rating": rating, **extra})
    if audio is not None:
        data["voice"] = FileStorage(io.BytesIO(audio), name, content_type=content_type)
    # Encoded here: the test client would spool a big body to a file it never closes.
    boundary, body = encode_multipart(data)
    headers = {"Accept": "application/json"} if as_json else {"Accept": "text/html"}
    return client.post(path, data=body, headers=headers,
                       content_type=f"multipart/form-data; boundary={boundary}")


def test_answer_and_voice_note_stored_once(make_app, tmp_path, db_kind):
    """One multipart POST: the answer (has_voice), one claimed note with the measured
    duration, one object under a random key. The retry and a double click (JSON) store
    nothing more: still one answer, one note, one object."""
    app, site, media = voice_app(make_app, tmp_path, db_kind)
    client = app.test_client()
    path = public_prompt(client, site, "checkout")
    audio = speech_webm()
    r = post(client, path, audio, comment="It arrived broken")
    assert r.status_code == 303, r.get_data(as_text=True)
    assert counts(app) == (1, 1)
    with app.app_context():
        answer = db.session.scalars(select(Response)).one()
        note = db.session.scalars(select(VoiceNote)).one()
        assert answer.has_voice and note.response_id == answer.id
        assert note.claimed_at is not None and note.size_bytes == len(audio)
        assert note.content_type.startswith("audio/webm")
        assert 2000 < note.duration_ms < 10000
        key = note.storage_key
    assert key.startswith("voice/") and key.endswith(".webm")
    stored = files(media)
    assert len(stored) == 1 and stored[0].read_bytes() == audio
    assert stored[0].relative_to(media).as_posix() == key
    again = post(client, path, audio, comment="It arrived broken")
    assert again.status_code == 303 and again.headers["Location"] == r.headers["Location"]
    twice = post(client, path, audio, as_json=True)
    assert twice.status_code == 200 and twice.json["created"] is False
    assert twice.json["next"] == r.headers["Location"]
    assert counts(app) == (1, 1) and files(media) == stored


def test_json_answer_with_voice_note(make_app, tmp_path):
    """voice.js asks for JSON: 201 with the next page (the thank-you page in the frame)."""
    app, site, media = voice_app(make_app, tmp_path)
    client = app.test_client()
    path = public_prompt(client, site, "checkout")
    r = post(client, path + "?o=https://shop.example", speech_webm(), as_json=True)
    assert r.status_code == 201, r.get_data(as_text=True)
    assert r.json["created"] is True and r.json["next"].startswith("/t/")
    assert "o=https" in r.json["next"]
    assert counts(app) == (1, 1) and len(files(media)) == 1


def _refusals() -> list:
    def truncated() -> bytes:
        data = speech_webm()
        return data[: len(data) // 2]

    return [
        pytest.param(lambda: HTML, 400, "not_audio", id="html-as-webm"),
        pytest.param(lambda: SVG, 400, "not_audio", id="svg-as-webm"),
        pytest.param(lambda: b"\x1a\x45\xdf\xa3" + b"\0" * (3 * 1024 * 1024), 413, "too_large",
                     id="3mb"),
        pytest.param(long_webm, 400, "too_long", id="61s"),
        pytest.param(truncated, 400, "damaged", id="truncated"),
    ]


@pytest.mark.parametrize("make_audio,status,reason", _refusals())
def test_refused_uploads_store_nothing(make_app, tmp_path, make_audio, status, reason):
    """HTML or SVG sent as audio/webm, 3 MB, 61 s, a truncated file: the form again with the
    reason (JSON with the reason for voice.js); no answer, no note, no object."""
    app, site, media = voice_app(make_app, tmp_path)
    client = app.test_client()
    path = public_prompt(client, site, "checkout")
    audio = make_audio()
    r = post(client, path, audio, comment="Broken")
    page = r.get_data(as_text=True)
    assert r.status_code == status, page
    assert 'id="voice-err" role="alert"' in page
    message = page.split('id="voice-err" role="alert">', 1)[1].split("</p>", 1)[0]
    assert "Broken" in page or status == 413  # the comment is given back when it was read
    j = post(client, path, audio, as_json=True)
    assert j.status_code == status and j.json["error"] == reason
    assert j.json["message"] == j.json["fields"]["voice"][0] == html_unescape(message)
    assert counts(app) == (0, 0) and files(media) == []
    # And the same answer without the recording (or with an empty file part) goes through.
    assert post(client, path, b"").status_code == 303
    assert counts(app) == (1, 0)


def test_client_file_name_is_never_used(make_app, tmp_path):
    """A file name that is a path (`../../x`, `a/b`, `..\\x`) is refused with the reason,
    audio or not, and stores nothing; with the name a browser sends, the recording is stored
    under a random key, never under the given name or outside the media folder."""
    app, site, media = voice_app(make_app, tmp_path)
    client = app.test_client()
    path = public_prompt(client, site, "checkout")
    for name, body in (("../../x", HTML), ("../../x", speech_webm()), ("a/b.webm", speech_webm()),
                       ("..\\x.webm", speech_webm())):
        r = post(client, path, body, name=name, content_type="audio/webm")
        assert r.status_code == 400 and 'id="voice-err"' in r.get_data(as_text=True), name
        j = post(client, path, body, name=name, as_json=True)
        assert j.status_code == 400 and j.json["error"] in ("bad_name", "not_audio"), name
        assert counts(app) == (0, 0) and files(media) == []
    r = post(client, path, speech_webm(), name="voice.webm", content_type="text/html")
    assert r.status_code == 303
    stored = files(media)
    assert len(stored) == 1 and stored[0].name != "voice.webm"
    assert stored[0].parent.parent == media
    assert not any(p.name == "x" for p in tmp_path.parent.rglob("x"))
    with app.app_context():
        note = db.session.scalars(select(VoiceNote)).one()
        assert note.content_type.startswith("audio/webm")  # judged, not the header's


def test_voice_off_and_body_bounds(make_app, tmp_path):
    """A moment without voice notes refuses one (nothing stored) and keeps the small body
    bound; with voice on the bound is VOICE_MAX_BYTES + EMBED_MAX_BODY, not more."""
    app, site, media = voice_app(make_app, tmp_path)
    client = app.test_client()
    off = public_prompt(client, site, "delivery")
    short = long_webm(0.5)
    assert len(short) < app.config["EMBED_MAX_BODY"] - 1024
    r = post(client, off, short)
    assert r.status_code == 400 and "does not take voice notes" in r.get_data(as_text=True)
    big = post(client, off, b"\0" * (64 * 1024))
    assert big.status_code == 413
    on = public_prompt(client, site, "checkout")
    cfg = app.config
    over = b"\0" * (cfg["VOICE_MAX_BYTES"] + cfg["EMBED_MAX_BODY"])
    assert post(client, on, over).status_code == 413
    assert counts(app) == (0, 0) and files(media) == []


def test_storage_failure_leaves_nothing(make_app, tmp_path, clock):
    """The storage backend refuses the bytes: 503 with a friendly reason and no answer; the
    unclaimed row (the object could not be deleted either) goes with the sweep once the
    storage is back."""
    from app import voice

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the media folder should be")
    app = make_app(STORAGE_URL=f"file://{blocker}/media")
    site = make_site(app, name="Voice shop")
    with app.app_context():
        db.session.execute(update(Moment).where(Moment.site_id == site.id).values(
            voice_enabled=True))
        db.session.commit()
    client = app.test_client()
    path = public_prompt(client, site, "checkout")
    r = post(client, path, speech_webm())
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert "could not save your voice note" in r.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalars(select(VoiceNote.response_id)).all() in ([], [None])
        assert counts(app)[0] == 0
        clock.advance(timedelta(hours=2))
        blocker.unlink()
        voice.sweep()
    assert counts(app) == (0, 0)


def test_failed_answer_deletes_its_upload(make_app, tmp_path, monkeypatch):
    """The answer's transaction fails after the upload was stored: the object and the
    unclaimed row are deleted at once."""
    from app import responses

    app, site, media = voice_app(make_app, tmp_path)
    client = app.test_client()
    path = public_prompt(client, site, "checkout")

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away mid-answer")

    monkeypatch.setattr(responses, "_insert_answer", broken)
    with pytest.raises(RuntimeError):
        post(client, path, speech_webm())
    assert counts(app) == (0, 0) and files(media) == []


def test_quotas_apply_to_uploads_only(make_app, tmp_path):
    """Per prompt and per address: past the limit an answer with audio gets 429, a friendly
    page with Retry-After (JSON for voice.js), and nothing is stored; answers without audio
    are not counted."""
    app, site, media = voice_app(make_app, tmp_path, LIMIT_VOICE_UPLOAD_PER_TOKEN="2 per hour",
                                 LIMIT_VOICE_UPLOAD="4 per hour")
    client = app.test_client()
    path = public_prompt(client, site, "checkout")
    for _ in range(2):  # refused uploads count too
        assert post(client, path, HTML).status_code == 400
    r = post(client, path, speech_webm())
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "Too many voice notes" in r.get_data(as_text=True)
    assert counts(app) == (0, 0)
    other = public_prompt(client, site, "checkout")
    # The fourth upload from the address (the refused ones count too).
    assert post(client, other, speech_webm()).status_code == 303
    third = public_prompt(client, site, "checkout")
    j = post(client, third, speech_webm(), as_json=True)
    assert j.status_code == 429 and j.json["error"] == "too_many"
    assert counts(app) == (1, 1) and len(files(media)) == 1
    for _ in range(3):  # without audio: no voice quota
        assert post(client, public_prompt(client, site, "checkout"), None).status_code == 303


def test_sweep_deletes_abandoned_uploads(make_app, tmp_path, clock):
    """An upload no answer claimed (its request died) is deleted by the sweep once older
    than VOICE_UNCLAIMED_SECONDS: object, then row; younger and claimed ones stay."""
    from app import voice
    from app.jobs import tasks

    app, site, media = voice_app(make_app, tmp_path)
    client = app.test_client()
    assert post(client, public_prompt(client, site, "checkout"), speech_webm()).status_code \
        == 303
    with app.app_context():
        old = voice.stage(site.id, speech_webm())
        clock.advance(timedelta(minutes=50))
        young = voice.stage(site.id, speech_webm())
        assert len(files(media)) == 3
        clock.advance(timedelta(minutes=20))
        assert "voice_sweep" in tasks()
        assert voice.sweep() == 1
        keys = set(db.session.scalars(select(VoiceNote.storage_key)))
        assert old.storage_key not in keys and young.storage_key in keys
        assert len(keys) == 2 and len(files(media)) == 2
        clock.advance(timedelta(hours=1))
        assert voice.sweep() == 1 and voice.sweep() == 0
    assert counts(app) == (1, 1) and len(files(media)) == 1
    result = app.test_cli_runner().invoke(args=["run-job", "voice_sweep"])
    assert result.exit_code == 0 and "voice_sweep: 0" in result.output


def test_purge_deletes_the_audio(make_app, tmp_path, clock):
    """The retention purge deletes each purged answer's audio, then the rows; newer answers
    keep theirs."""
    from app.loop import cron

    app, site, media = voice_app(make_app, tmp_path, RETENTION_DAYS=30)
    client = app.test_client()
    assert post(client, public_prompt(client, site, "checkout"), speech_webm()).status_code \
        == 303
    clock.advance(timedelta(days=20))
    assert post(client, public_prompt(client, site, "checkout"), speech_webm()).status_code \
        == 303
    assert counts(app) == (2, 2) and len(files(media)) == 2
    clock.advance(timedelta(days=15))
    with app.app_context():
        out = cron.purge()
    assert out["voice_notes"] == 1 and out["responses"] == 1
    assert counts(app) == (1, 1) and len(files(media)) == 1
    with app.app_context():
        key = db.session.scalar(select(VoiceNote.storage_key))
    assert files(media)[0].relative_to(media).as_posix() == key


def _signed_in(app, email: str):
    from .conftest import login

    client = app.test_client()
    assert login(client, email, PASSWORD).status_code == 302
    return client


def test_staff_playback(make_app, tmp_path, db_kind):
    """Staff of the site play the note: 200 with the bytes, 206 for a Range, nosniff and an
    inline ASCII file name, on the case page a player with the duration; every role may
    (voice.play), another site's staff and a member of no site get 404, anonymous is sent to
    sign in, a case without a note is 404."""
    from app.admin.permissions import ACTIONS

    app, site, media = voice_app(make_app, tmp_path, db_kind)
    other = make_site(app, name="Other shop")
    client = app.test_client()
    audio = speech_webm()
    assert post(client, public_prompt(client, site, "checkout"), audio).status_code == 303
    assert post(client, public_prompt(client, site, "checkout"), None).status_code == 303
    with app.app_context():
        case_id, plain_id = db.session.scalars(select(Case.id).order_by(Case.id)).all()
    url = f"/admin/cases/{case_id}/voice"
    for role in ("owner", "lead", "agent", "viewer"):
        member(app, f"{role}@voice.example", site, role)
        assert role in ACTIONS["voice.play"]
        staff = _signed_in(app, f"{role}@voice.example")
        r = staff.get(url)
        assert r.status_code == 200 and r.data == audio, role
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Content-Type"].startswith("audio/webm")
        assert r.headers["Content-Disposition"] == \
            f'inline; filename="voice-note-case-{case_id}.webm"'
        assert r.headers["Accept-Ranges"] == "bytes"
    part = staff.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == audio[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(audio)}"
    page = staff.get(f"/admin/cases/{case_id}").get_data(as_text=True)
    assert f'<audio controls preload="none" src="{url}"' in page
    with app.app_context():
        secs = (db.session.scalar(select(VoiceNote.duration_ms)) + 500) // 1000
    assert f"0:{secs:02d}" in page
    with app.app_context():  # the transcript the job made (pocketsphinx), with its engine
        note = db.session.scalars(select(VoiceNote)).one()
    assert note.transcript_status == "done" and note.transcript
    assert f"Transcript ({note.transcript_lang}, {note.transcript_engine})" in page
    assert note.transcript in page
    assert staff.get(f"/admin/cases/{plain_id}/voice").status_code == 404
    assert "<audio" not in staff.get(f"/admin/cases/{plain_id}").get_data(as_text=True)
    member(app, "owner@other.example", other, "owner")
    assert _signed_in(app, "owner@other.example").get(url).status_code == 404
    from app import staff as staff_ops

    with app.app_context():
        staff_ops.create("nobody@voice.example", PASSWORD, "agent")
    assert _signed_in(app, "nobody@voice.example").get(url).status_code == 404
    anon = app.test_client().get(url)
    assert anon.status_code == 302 and "/admin/login" in anon.headers["Location"]


def test_prompt_page_voice_controls(make_app, tmp_path):
    """The recorder is on the page only for a moment with voice on (hidden until voice.js
    finds MediaRecorder), not on a one-click confirmation; the page may play a blob: and
    fetch its own origin (CSP)."""
    app, site, _media = voice_app(make_app, tmp_path)
    client = app.test_client()
    on = client.get(public_prompt(client, site, "checkout"))
    html = on.get_data(as_text=True)
    assert "data-voice hidden" in html and "voice.js" in html
    assert 'data-act="record"' in html and 'role="timer"' in html
    csp = on.headers["Content-Security-Policy"]
    assert "media-src blob:" in csp and "connect-src 'self'" in csp
    off = client.get(public_prompt(client, site, "delivery")).get_data(as_text=True)
    assert "data-voice" not in off and "voice.js" not in off
    confirm = client.get(public_prompt(client, site, "checkout") + "?rating=4")
    assert "data-voice" not in confirm.get_data(as_text=True)


def test_racing_duplicate_deletes_its_upload(make_app, tmp_path, db_kind):
    """The second of two simultaneous submissions (both past the "already answered?" check,
    both uploads stored) loses on the submission id: its object and row are deleted at once,
    the first answer keeps its one note."""
    from app import prompts, responses, voice

    app, site, media = voice_app(make_app, tmp_path, db_kind)
    client = app.test_client()
    path = public_prompt(client, site, "checkout")
    assert post(client, path, speech_webm()).status_code == 303
    with app.test_request_context():
        p = prompts.verify(path.removeprefix("/p/"))
        note = voice.stage(site.id, speech_webm())
        assert len(files(media)) == 2
        recorded = responses.record(p, 4, None, voice=note)
        assert recorded.created is False
        answer_id, lost_id = recorded.response.id, note.id
    assert counts(app) == (1, 1) and len(files(media)) == 1
    with app.app_context():
        kept = db.session.scalars(select(VoiceNote)).one()
        assert kept.response_id == answer_id and kept.id != lost_id


def test_voice_notes_on_s3(make_app, aws_env, moto_endpoint):  # noqa: F811 - fixtures
    """The same path on a real S3-compatible server (moto's server mode): stored with the
    answer, played back with a range, a repeat stores nothing, the purge deletes it."""
    import boto3

    from app.loop import cron

    from .test_storage import _bucket

    bucket = _bucket(moto_endpoint)
    app = make_app(STORAGE_URL=f"s3://{bucket}/voice-test", S3_ENDPOINT_URL=moto_endpoint,
                   S3_REGION="us-east-1", RETENTION_DAYS=1)
    site = make_site(app, name="Voice shop")
    with app.app_context():
        db.session.execute(update(Moment).where(Moment.site_id == site.id).values(
            voice_enabled=True))
        db.session.commit()
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")

    def objects() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]

    client = app.test_client()
    path = public_prompt(client, site, "checkout")
    audio = speech_webm()
    assert post(client, path, audio).status_code == 303
    assert post(client, path, audio).status_code == 303
    keys = objects()
    with app.app_context():
        note = db.session.scalars(select(VoiceNote)).one()
        case_id = db.session.scalar(select(Case.id))
    assert keys == [f"voice-test/{note.storage_key}"]
    member(app, "lead@voice.example", site, "lead")
    staff = _signed_in(app, "lead@voice.example")
    part = staff.get(f"/admin/cases/{case_id}/voice", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.data == audio[:10]
    with app.app_context():
        assert cron.purge(utcnow() + timedelta(days=2))["voice_notes"] == 1
    assert objects() == [] and counts(app) == (0, 0)
