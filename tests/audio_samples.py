"""Real audio for tests: speech spoken by espeak-ng, encoded by PyAV into the containers a
browser's MediaRecorder produces, tones and silence of a chosen length, and a WebM rewritten
into MediaRecorder's shape (Segment and Clusters of unknown size, no duration)."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import av

from .conftest import need

SENTENCE = "my television arrived broken, I want a refund"
# (container for PyAV's muxer, encoder, sample rate) for each browser format we accept
FORMATS = {
    "webm": ("webm", "libopus", 48000),
    "ogg": ("ogg", "libopus", 48000),
    "mp4": ("mp4", "aac", 48000),
}


def speak(text: str = SENTENCE, *, voice: str = "en-us+f3", speed: int = 130) -> bytes:
    """A WAV of espeak-ng saying `text` (22.05 kHz mono s16). The default voice is the one
    pocketsphinx's bundled model hears best: with en-us+f3 it gets "…i want a refund" at 120
    to 140 words per minute and after Opus or AAC, where the plain en-us voice often loses it."""
    need("espeak-ng", shutil.which("espeak-ng") is not None, "the voice-note tests speak with it")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "say.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
                       check=True, capture_output=True, timeout=60)
        return path.read_bytes()


def wav_seconds(wav_bytes: bytes) -> float:
    """The reference duration of a WAV: its frame count over its rate (Python's wave module)."""
    with wave.open(io.BytesIO(wav_bytes)) as w:
        return w.getnframes() / w.getframerate()


def tone_wav(seconds: float, *, rate: int = 16000, freq: float = 440.0) -> bytes:
    """A WAV holding a sine tone (freq > 0) or silence (freq == 0) of `seconds`."""
    frames = int(seconds * rate)
    if freq:
        samples = b"".join(int(8000 * math.sin(2 * math.pi * freq * i / rate)).to_bytes(
            2, "little", signed=True) for i in range(frames))
    else:
        samples = bytes(2 * frames)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples)
    return out.getvalue()


def _transcode(src, dst, stream, resampler) -> None:
    """Every audio frame of `src` resampled, encoded on `stream` and muxed into `dst`,
    then the resampler's and the encoder's last frames."""
    for frame in [*src.decode(audio=0), None]:
        for chunk in resampler.resample(frame):
            chunk.pts = None
            dst.mux(stream.encode(chunk))
    dst.mux(stream.encode(None))


def encode(wav_bytes: bytes, kind: str) -> bytes:
    """Re-encode a WAV into one of FORMATS (PyAV's bundled FFmpeg encoders)."""
    muxer, codec, rate = FORMATS[kind]
    out = io.BytesIO()
    with av.open(io.BytesIO(wav_bytes)) as src, av.open(out, "w", format=muxer) as dst:
        stream = dst.add_stream(codec, rate=rate, layout="mono")
        # One bit rate whatever PyAV's default: PyAV 14 (the lowest allowed) encodes AAC at
        # 128 kb/s, 18 at FFmpeg's ~64, and the recogniser tests hear the words through the
        # codec's artefacts (at 128 kb/s pocketsphinx heard "to meet and" for "a refund").
        stream.codec_context.bit_rate = 64_000
        resampler = av.AudioResampler(format=stream.codec_context.format.name,
                                      layout="mono", rate=rate)
        _transcode(src, dst, stream, resampler)
    return out.getvalue()


def video_mp4(seconds: float = 1.0) -> bytes:
    """An MP4 with a small video track next to an AAC track."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as dst:
        video = dst.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for i in range(int(seconds * 10)):
            frame = av.VideoFrame(64, 48, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([i * 20 % 256]) * plane.buffer_size)
            frame.pts = i
            dst.mux(video.encode(frame))
        dst.mux(video.encode(None))
    return out.getvalue()


def mediarecorder_webm(wav_bytes: bytes) -> bytes:
    """A WebM shaped like Chrome's MediaRecorder output: written as a live stream (unknown-size
    Segment, no Duration, no Cues), then each Cluster's size rewritten to "unknown" as well."""

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[override]
            self.data += b
            return len(b)

    pipe = Pipe()  # not seekable: the muxer cannot go back to fill in sizes
    with av.open(io.BytesIO(wav_bytes)) as src, \
            av.open(pipe, "w", format="webm", options={"live": "1"}) as dst:
        stream = dst.add_stream("libopus", rate=48000, layout="mono")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        _transcode(src, dst, stream, resampler)
    data = pipe.data
    pos = 0
    while pos < len(data):
        id_len = 9 - data[pos].bit_length()
        element_id = bytes(data[pos:pos + id_len])
        size_at = pos + id_len
        size_len = 9 - data[size_at].bit_length()
        size = int.from_bytes(data[size_at:size_at + size_len], "big") & (
            (1 << (7 * size_len)) - 1)
        pos = size_at + size_len
        if element_id == b"\x1f\x43\xb6\x75":  # Cluster: same length, every value bit set
            data[size_at:pos] = ((1 << (7 * size_len + 1)) - 1).to_bytes(size_len, "big")
        if element_id not in (b"\x18\x53\x80\x67", b"\x1f\x43\xb6\x75"):
            pos += size  # Segment and Cluster are entered, the rest skipped
    return bytes(data)
