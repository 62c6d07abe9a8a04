"""app/audio.py: voice notes judged by their bytes — real speech in each browser format is
accepted with its true duration; fakes, oversized, overlong, cut and damaged files are refused
with a message for the customer, and no input makes it raise anything but AudioRejected."""

from __future__ import annotations

import io
import random
import struct

import av
import pytest
from flask_babel import force_locale

from app.audio import (
    AudioInfo,
    AudioRejected,
    _check_ebml,
    _ebml_vint,
    inspect_audio,
    pcm16k,
)

from .audio_samples import encode, mediarecorder_webm, speak, tone_wav, video_mp4, wav_seconds

MAX_BYTES = 2 * 1024 * 1024
MAX_SECONDS = 60.0


@pytest.fixture(scope="module")
def speech() -> bytes:
    """espeak-ng's WAV of the test sentence."""
    return speak()


@pytest.fixture(scope="module")
def samples(speech: bytes) -> dict[str, bytes]:
    """The sentence in every accepted shape."""
    return {"wav": speech, "webm": encode(speech, "webm"), "ogg": encode(speech, "ogg"),
            "mp4": encode(speech, "mp4"), "mediarecorder": mediarecorder_webm(speech)}


def inspect(data: bytes) -> AudioInfo:
    return inspect_audio(data, max_bytes=MAX_BYTES, max_seconds=MAX_SECONDS)


def refused(data: bytes) -> AudioRejected:
    with pytest.raises(AudioRejected) as caught:
        inspect(data)
    assert str(caught.value.message)  # every refusal says why
    return caught.value


EXPECTED = {"wav": ("audio/wav", "wav"), "webm": ("audio/webm", "webm"),
            "ogg": ("audio/ogg", "ogg"), "mp4": ("audio/mp4", "m4a"),
            "mediarecorder": ("audio/webm", "webm")}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_real_speech_is_accepted_with_its_duration(samples, speech, kind, app) -> None:
    """Each accepted format is recognised from its bytes and measured from its decoded samples
    to within a codec's priming/padding of the WAV's own frame count."""
    info = inspect(samples[kind])
    assert (info.content_type, info.ext) == EXPECTED[kind]
    assert info.size_bytes == len(samples[kind])
    assert abs(info.duration_ms / 1000 - wav_seconds(speech)) < 0.1


def test_mediarecorder_shape_has_unknown_sizes_and_no_duration(samples) -> None:
    """The MediaRecorder-shaped WebM really has no declared duration, so only the structure
    walk and the decoded samples can judge it."""
    data = samples["mediarecorder"]
    with av.open(io.BytesIO(data), format="matroska") as container:
        assert container.duration is None
    unknown, pos = [], 0
    while pos < len(data):
        element_id, pos, _ = _ebml_vint(data, pos, is_id=True)
        size, pos, unknown_size = _ebml_vint(data, pos, is_id=False)
        if element_id in (0x18538067, 0x1F43B675):  # Segment, Cluster
            unknown.append(unknown_size)
        else:
            pos += size
    assert len(unknown) > 2 and all(unknown)


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_pcm16k_is_mono_16_khz_of_the_same_length(samples, speech, kind) -> None:
    """pcm16k gives 2 bytes per sample at 16 kHz for the recording's whole length."""
    pcm = pcm16k(samples[kind])
    assert len(pcm) % 2 == 0
    assert abs(len(pcm) / 32000 - wav_seconds(speech)) < 0.1


@pytest.mark.parametrize("body", [
    b"<!doctype html><html><body><script>alert(1)</script></body></html>",
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
    b"just some text, posted as audio/webm",
    b"\x89PNG\r\n\x1a\n" + bytes(100),
])
def test_markup_and_other_files_are_not_audio(body: bytes, app) -> None:
    """HTML, SVG, text and images are refused by their bytes, whatever they were labelled."""
    assert refused(body).code == "not_audio"


def test_mp3_is_refused(speech: bytes) -> None:
    """MP3 is not a format a browser records voice notes in, so it is not accepted."""
    out = io.BytesIO()
    with av.open(io.BytesIO(speech)) as src, av.open(out, "w", format="mp3") as dst:
        stream = dst.add_stream("libmp3lame", rate=22050, layout="mono")
        for frame in src.decode(audio=0):
            frame.pts = None
            dst.mux(stream.encode(frame))
        dst.mux(stream.encode(None))
    assert refused(out.getvalue()).code == "not_audio"


def test_empty_upload_is_refused() -> None:
    """No bytes at all is an empty recording."""
    assert refused(b"").code == "empty"


def test_zero_length_audio_is_refused() -> None:
    """A well-formed WAV with no samples is empty too."""
    assert refused(tone_wav(0)).code == "empty"


def test_three_megabytes_are_refused_before_decoding() -> None:
    """The byte limit is applied to the upload before any parsing."""
    big = tone_wav(94.0)  # 16 kHz s16: 3 MB
    assert len(big) > 3_000_000
    assert refused(big).code == "too_large"


def test_61_seconds_are_refused_and_60_accepted() -> None:
    """The duration limit (60 s + 0.5 s for a recorder's last frames) holds on decoded audio."""
    assert refused(encode(tone_wav(61.0, freq=0), "webm")).code == "too_long"
    assert refused(tone_wav(61.0, freq=0)).code == "too_long"
    assert abs(inspect(encode(tone_wav(60.0, freq=0), "ogg")).duration_ms - 60000) < 100


def test_small_file_claiming_hours_is_stopped() -> None:
    """Ten minutes of silence in a few hundred kB is refused as too long (decoding stops at
    the limit instead of running through the whole file)."""
    quiet = encode(tone_wav(600.0, freq=0), "ogg")
    assert len(quiet) < MAX_BYTES
    assert refused(quiet).code == "too_long"


@pytest.mark.parametrize("kind", list(EXPECTED))
@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
def test_truncated_files_are_refused(samples, kind, fraction) -> None:
    """A file cut short is refused even where FFmpeg would decode its prefix without a word
    (WebM, Ogg and WAV do): every element, page, box or chunk must end inside the file."""
    data = samples[kind]
    assert refused(data[: int(len(data) * fraction)]).code == "damaged"


def test_ogg_cut_between_pages_is_refused(samples) -> None:
    """An Ogg cut exactly at a page boundary has no end-of-stream page, so it is refused."""
    data = samples["ogg"]
    last_page = data.rfind(b"OggS")
    assert last_page > 0
    assert refused(data[:last_page]).code == "damaged"


def test_ogg_with_a_corrupted_page_is_refused(samples) -> None:
    """A flipped byte inside an Ogg page fails its CRC."""
    data = bytearray(samples["ogg"])
    data[len(data) // 2] ^= 0x55
    assert refused(bytes(data)).code == "damaged"


def test_wav_header_with_garbage_is_refused() -> None:
    """RIFF/WAVE magic followed by garbage, or a data chunk longer than the file, is refused."""
    rng = random.Random(9)
    garbage = bytes(rng.randrange(256) for _ in range(4000))
    assert refused(b"RIFF" + struct.pack("<I", 4004) + b"WAVE" + garbage).code == "damaged"
    wav = tone_wav(1.0)
    lying = wav[:40] + struct.pack("<I", 10 * len(wav)) + wav[44:]  # the data chunk's size
    assert refused(lying).code == "damaged"


def test_a_flood_of_tiny_elements_is_refused(samples) -> None:
    """A WebM of a million empty Void elements is refused before the walk costs seconds."""
    data = samples["mediarecorder"]
    header_end = 4 + 1 + (data[4] & 0x7F)  # the EBML header, its size in one byte
    flood = data[:header_end] + b"\x18\x53\x80\x67\x01" + b"\xff" * 7 + b"\xec\x80" * 10**6
    with pytest.raises(AudioRejected):  # by the structure walk itself, not only by FFmpeg
        _check_ebml(flood)
    assert refused(flood).code == "damaged"
    _check_ebml(data)  # a real recording is far below the bound


def test_video_is_refused() -> None:
    """An MP4 with a video track is not a voice note."""
    assert refused(video_mp4()).code == "unsupported"


def test_random_damage_never_escapes_as_another_exception(samples) -> None:
    """Bytes flipped anywhere in each format end in AudioRejected or an accepted file, never in
    FFmpeg's or PyAV's own exceptions (a 500 for the customer)."""
    rng = random.Random(20261130)
    for data in samples.values():
        for _ in range(25):
            damaged = bytearray(data)
            for _ in range(rng.randrange(1, 8)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            try:
                inspect(bytes(damaged))
            except AudioRejected as rejected:
                assert rejected.code in {"not_audio", "damaged", "unsupported", "too_long",
                                         "empty"}
            try:
                pcm16k(bytes(damaged))
            except AudioRejected:
                pass


def test_refusals_are_translated(app, samples) -> None:
    """The customer reads the reason in their own language."""
    with app.test_request_context():
        cut = refused(samples["webm"][:1000])
        html = refused(b"<html></html>")
        long = refused(tone_wav(61.0, freq=0))
        english = [str(r.message) for r in (cut, html, long)]
        with force_locale("tr"):
            turkish = [str(r.message) for r in (cut, html, long)]
    assert all(t and t != e for t, e in zip(turkish, english, strict=True))
    assert "60" in english[2] and "60" in turkish[2]
