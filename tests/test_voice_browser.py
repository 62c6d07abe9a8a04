"""Voice notes in a real Chromium with a fake microphone that speaks espeak-ng's sentence
(issue 9, "what it must show"): recorded in the shop's slide-in, sent with the answer,
transcribed by the job, the critical rule fires on the spoken "refund", and a signed-in staff
member plays the note back. The recorder's three states pass axe-core and are screenshotted at
1280 and 375 px in every locale."""

from __future__ import annotations

import array
import contextlib
import io
import logging
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask_babel import force_locale
from sqlalchemy import select, update

from app.embed.views import _VOICE_OFF
from app.extensions import db
from app.models import Case, Moment, Response, VoiceNote

from .conftest import free_port, make_site, need, public_prompt, run_worker
from .test_browser import CHROMIUM, SHOTS, TIMEOUT, host, shop_page, sign_in  # noqa: F401
from .test_inbox import PASSWORD, member

pytestmark = pytest.mark.browser
LOCALES = ("en", "tr", "ru", "et")


def mic_wav(path: Path) -> Path:
    """espeak-ng's sentence as the WAV Chromium's fake capture device reads: 48 kHz, 16-bit,
    mono, said twice with half a second of silence around, at a microphone's level (a quarter
    of full scale, as a real microphone gives)."""
    import av

    from .audio_samples import speak

    pcm = bytearray()
    with av.open(io.BytesIO(speak())) as src:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        for frame in src.decode(audio=0):
            for chunk in resampler.resample(frame):
                pcm += bytes(chunk.planes[0])[: chunk.samples * 2]
        for chunk in resampler.resample(None):
            pcm += bytes(chunk.planes[0])[: chunk.samples * 2]
    samples = array.array("h", bytes(pcm))
    samples = array.array("h", (x // 4 for x in samples))
    pcm = bytearray(samples.tobytes())
    pad = bytes(48000)  # 0.5 s of 16-bit silence
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        # Said twice, as people repeat what matters: one hearing is enough for the test.
        w.writeframes(pad + bytes(pcm) + pad + bytes(pcm) + pad)
    return path


@contextlib.contextmanager
def fake_mic_chromium(app, port: int, wav: Path) -> Iterator[tuple[Any, str]]:
    """`app` served on 127.0.0.1:`port` and a headless Chromium whose microphone plays `wav`
    (permission granted without a prompt; media may play without a gesture)."""
    from .test_browser import chromium_serving

    with chromium_serving(app, port, (
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            # %noloop: the sentence is said once, from the start of the capture, then silence.
            f"--use-file-for-fake-audio-capture={wav}%noloop",
            "--autoplay-policy=no-user-gesture-required")) as served:
        yield served


def voice_on(app, site, on: bool = True) -> None:
    """Voice notes on (or off) for the site's checkout moment."""
    with app.app_context():
        db.session.execute(update(Moment).where(Moment.site_id == site.id,
                                                Moment.key == "checkout")
                           .values(voice_enabled=on))
        db.session.commit()


def axe_clean(page) -> None:
    """No axe-core violations on the page as it is now."""
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:
        need("axe-playwright-python", False, "the package is not installed")
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


def shots(page, name: str) -> None:
    """Screenshots at 1280 and 375 px wide; the page's own viewport is restored after."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    for width, height in ((1280, 800), (375, 740)):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=SHOTS / f"{name}-{width}.png", full_page=True)
    if size:
        page.set_viewport_size(size)


def test_recorder_states_in_every_locale(make_app, tmp_path):
    """The prompt opened from a link, in en/tr/ru/et: idle, recording (the timer runs),
    recorded (player, record again, delete) and refused (voice notes were switched off
    meanwhile: the server's reason in the page's language, the recording kept, Send usable
    again): axe finds nothing in any state, the phone layout fits one screen, and delete
    brings the Record button back with focus on it. Nothing was stored."""
    port = free_port()
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                   TRUSTED_HOSTS=["127.0.0.1", "localhost"],  # + the test client, for setup
                   STORAGE_URL=f"file://{tmp_path / 'media'}",
                   SITE_CACHE_SECONDS=0)  # the moment switched off is seen at once
    site = make_site(app, name="Tea Shop")
    voice_on(app, site)
    client = app.test_client()
    wav = mic_wav(tmp_path / "mic.wav")
    with fake_mic_chromium(app, port, wav) as (browser, base):
        for lang in LOCALES:
            path = public_prompt(client, site, "checkout", lang=lang)
            page = browser.new_page(viewport={"width": 375, "height": 740})
            errors: list[str] = []
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            page.goto(base + path)
            box = page.locator("[data-voice]")
            box.wait_for(state="visible", timeout=TIMEOUT)
            assert page.evaluate("document.documentElement.lang") == lang
            axe_clean(page)
            shots(page, f"voice-idle-{lang}")
            record = box.locator("[data-act=record]")
            record.click()
            stop = box.locator("[data-act=stop]")
            stop.wait_for(state="visible", timeout=TIMEOUT)
            assert page.evaluate("document.activeElement.dataset.act") == "stop"
            box.locator("[data-elapsed]", has_text="0:01").wait_for(timeout=TIMEOUT)
            axe_clean(page)
            shots(page, f"voice-recording-{lang}")
            stop.click()
            player = box.locator("[data-player]")
            player.wait_for(state="visible", timeout=TIMEOUT)
            assert box.get_attribute("data-state") == "recorded"
            assert page.evaluate("document.activeElement.tagName") == "AUDIO"
            assert box.locator("[data-status]").text_content().strip()
            # The card (question, scale, comment, recorder, Send) fits one phone screen.
            height = page.evaluate("document.body.getBoundingClientRect().height")
            assert height <= 740, height
            axe_clean(page)
            shots(page, f"voice-recorded-{lang}")
            voice_on(app, site, False)
            page.locator("label[for=rating-1]").click()
            send = page.locator("button[type=submit]")
            send.click()
            error = box.locator("[data-error]")
            error.wait_for(state="visible", timeout=TIMEOUT)
            with app.test_request_context(), force_locale(lang):
                assert error.inner_text() == str(_VOICE_OFF)
            assert player.is_visible() and send.is_enabled()
            axe_clean(page)
            shots(page, f"voice-refused-{lang}")
            voice_on(app, site, True)
            box.locator("[data-act=delete]").click()
            record.wait_for(state="visible", timeout=TIMEOUT)
            assert page.evaluate("document.activeElement.dataset.act") == "record"
            assert player.is_hidden()
            assert error.is_hidden()
            assert errors == []
            page.close()
    with app.app_context():
        assert db.session.scalars(select(Response)).all() == []


def test_no_recorder_without_mediarecorder(make_app, tmp_path):
    """A browser without MediaRecorder (or without JavaScript) sees no voice controls and
    answers as before."""
    from .test_browser import chromium_serving

    port = free_port()
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                   TRUSTED_HOSTS=["127.0.0.1", "localhost"],  # + the test client, for setup
                   STORAGE_URL=f"file://{tmp_path / 'media'}")
    site = make_site(app, name="Tea Shop")
    voice_on(app, site)
    client = app.test_client()
    with chromium_serving(app, port) as (browser, base):
        for js in (True, False):
            context = browser.new_context(java_script_enabled=js)
            context.add_init_script("delete window.MediaRecorder;")
            page = context.new_page()
            page.goto(base + public_prompt(client, site, "checkout"))
            page.locator("label[for=rating-3]").click()
            assert page.locator("[data-voice]").is_hidden()
            page.get_by_role("button", name="Send").click()
            page.get_by_role("heading").first.wait_for(timeout=TIMEOUT)
            context.close()
    with app.app_context():
        rows = db.session.scalars(select(Response.has_voice)).all()
    assert rows == [False, False]


def test_spoken_refund_end_to_end(make_app, tmp_path, redis_url, host, caplog):  # noqa: F811
    """A shop page on another origin, the slide-in, the fake microphone saying "my television
    arrived broken, I want a refund": record (waiting on the timer), stop, the replay control,
    a good rating and Send. The worker transcribes the note, the critical rule fires on the
    spoken words as on typed ones, and a signed-in staff member opens the case and plays the
    note (the audio element plays; the server answered 200/206 for it)."""
    pages, origin = host
    port = free_port()
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", REDIS_URL=redis_url,
                   STORAGE_URL=f"file://{tmp_path / 'media'}")
    site = make_site(app, [origin], name="Tea Shop")
    voice_on(app, site)
    member(app, "lead@tea.example", site, "lead")
    pages["/checkout"] = shop_page(
        f"http://127.0.0.1:{port}", f'data-site="{site.public_key}" data-moment="checkout"'
        ' data-sku="TV-55" data-channel="web" data-order="1001"')
    wav = mic_wav(tmp_path / "mic.wav")
    caplog.set_level(logging.INFO, logger="werkzeug")
    with fake_mic_chromium(app, port, wav) as (browser, base):
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(origin + "/checkout")
        frame = page.frame_locator("iframe[title=Feedback]")
        record = frame.get_by_role("button", name="Record", exact=True)
        record.wait_for(timeout=TIMEOUT)
        record.click()
        frame.locator("[data-elapsed]", has_text="0:09").wait_for(timeout=TIMEOUT)
        frame.get_by_role("button", name="Stop recording").click()
        frame.locator("audio[data-player]").wait_for(state="visible", timeout=TIMEOUT)
        frame.get_by_role("button", name="Record again").wait_for(timeout=TIMEOUT)
        frame.get_by_role("button", name="Delete").wait_for(timeout=TIMEOUT)
        # The slide-in (380 px, at most 560 px high) holds the recorded state unscrolled.
        inner = frame.locator("body").evaluate("b => b.getBoundingClientRect().height")
        assert inner <= 560, inner
        frame.locator("label[for=rating-3]").click()  # 4 of 5: not a negative rating
        with page.expect_response(lambda r: "/p/" in r.url and r.request.method == "POST",
                                  timeout=TIMEOUT) as sent:
            frame.get_by_role("button", name="Send").click()
        assert sent.value.status == 201
        assert "multipart/form-data" in sent.value.request.headers["content-type"]
        frame.locator("h1[tabindex]").wait_for(timeout=TIMEOUT)  # the thank-you page
        assert errors == []
        with app.app_context():
            answer = db.session.scalars(select(Response)).one()
            note = db.session.scalars(select(VoiceNote)).one()
            assert answer.has_voice and answer.rating == 4 and note.response_id == answer.id
            assert 9000 <= note.duration_ms <= 11000, note.duration_ms
            assert note.size_bytes < 60_000  # 24 kbit/s Opus: ~3 kB a second
        run_worker(app)
        with app.app_context():
            note = db.session.scalars(select(VoiceNote)).one()
            case = db.session.scalars(select(Case)).one()
            assert note.transcript_status == "done", note.transcript_status
            words = (note.transcript or "").lower()
            assert "broken" in words or "refund" in words, words
            assert case.priority == "critical", (case.priority, words)
            case_id = case.id
        # Staff: the case page plays the note.
        staff = browser.new_page()
        sign_in(staff, base, "lead@tea.example", PASSWORD)
        audio_url = f"/admin/cases/{case_id}/voice"
        served: list[int] = []
        staff.on("response", lambda r: served.append(r.status) if audio_url in r.url else None)
        staff.goto(f"{base}/admin/cases/{case_id}")
        player = staff.locator(f"audio[src='{audio_url}']")
        player.wait_for(timeout=TIMEOUT)
        axe_clean(staff)
        shots(staff, "voice-case-view")
        state = staff.evaluate("""() => new Promise((resolve, reject) => {
            const a = document.querySelector('audio');
            a.addEventListener('timeupdate', () => {
                if (a.currentTime > 0) resolve({ready: a.readyState, time: a.currentTime});
            });
            a.addEventListener('error', () => reject(new Error('media error ' + a.error.code)));
            a.play().catch(reject);
        })""")
        assert state["ready"] >= 2 and state["time"] > 0
        assert served and set(served) <= {200, 206}, served
        staff.close()
        page.close()
    logged = [r.getMessage() for r in caplog.records if audio_url in r.getMessage()]
    assert any(" 200 " in m or " 206 " in m for m in logged), logged


def test_rating_waits_for_the_voice_note_without_comment_box(make_app, tmp_path):
    """A moment without a comment box sends a rating as soon as it is tapped; with voice on
    and a recorder shown it waits for Send, so the recording can go with it."""
    from .test_browser import barrier

    port = free_port()
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                   TRUSTED_HOSTS=["127.0.0.1", "localhost"],  # + the test client, for setup
                   STORAGE_URL=f"file://{tmp_path / 'media'}")
    site = make_site(app, name="Tea Shop")
    voice_on(app, site)
    with app.app_context():
        db.session.execute(update(Moment).where(Moment.site_id == site.id,
                                                Moment.key == "checkout")
                           .values(comment_enabled=False))
        db.session.commit()
    client = app.test_client()
    wav = mic_wav(tmp_path / "mic.wav")
    with fake_mic_chromium(app, port, wav) as (browser, base):
        page = browser.new_page()
        page.goto(base + public_prompt(client, site, "checkout"))
        page.locator("[data-voice]").wait_for(state="visible", timeout=TIMEOUT)
        assert page.locator("textarea").count() == 0
        page.locator("label[for=rating-4]").click()
        barrier(page)  # a submission the tap caused would have been sent by now
        with app.app_context():
            assert db.session.scalars(select(Response)).all() == []
        page.get_by_role("button", name="Record", exact=True).click()
        page.locator("[data-elapsed]", has_text="0:02").wait_for(timeout=TIMEOUT)
        page.get_by_role("button", name="Stop recording").click()
        page.locator("audio[data-player]").wait_for(state="visible", timeout=TIMEOUT)
        page.get_by_role("button", name="Send").click()
        page.locator("h1[tabindex]").wait_for(timeout=TIMEOUT)
        page.close()
    with app.app_context():
        answer = db.session.scalars(select(Response)).one()
        assert answer.rating == 5 and answer.has_voice


def test_recording_stops_at_the_limit(make_app, tmp_path):
    """The recorder stops by itself at VOICE_MAX_SECONDS (here 2 s, shown as "/ 0:02"), says
    why, and the server takes what it recorded."""
    port = free_port()
    app = make_app(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                   TRUSTED_HOSTS=["127.0.0.1", "localhost"],  # + the test client, for setup
                   STORAGE_URL=f"file://{tmp_path / 'media'}", VOICE_MAX_SECONDS=2)
    site = make_site(app, name="Tea Shop")
    voice_on(app, site)
    client = app.test_client()
    wav = mic_wav(tmp_path / "mic.wav")
    with fake_mic_chromium(app, port, wav) as (browser, base):
        page = browser.new_page()
        page.goto(base + public_prompt(client, site, "checkout"))
        box = page.locator("[data-voice]")
        box.wait_for(state="visible", timeout=TIMEOUT)
        assert "at most 0:02" in box.inner_text()
        page.get_by_role("button", name="Record", exact=True).click()
        assert box.locator("[data-of]").inner_text().strip() == "/ 0:02"
        # No press on Stop: the player appears when the limit stopped the recording.
        box.locator("[data-player]").wait_for(state="visible", timeout=TIMEOUT)
        assert box.locator("[data-elapsed]").inner_text() == "0:02"
        assert "stopped at the limit of 0:02" in box.locator("[data-status]").text_content()
        page.locator("label[for=rating-1]").click()
        page.get_by_role("button", name="Send").click()
        page.locator("h1[tabindex]").wait_for(timeout=TIMEOUT)
        page.close()
    with app.app_context():
        note = db.session.scalars(select(VoiceNote)).one()
        assert 1500 <= note.duration_ms <= 2500 and note.response_id is not None
