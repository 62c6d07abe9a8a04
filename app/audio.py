"""Judging an uploaded voice note by its bytes: which container it is, whether it is complete,
real audio of an accepted codec, and how long it lasts; and decoding it for recognisers.

The Content-Type a browser sends is never trusted. The container is sniffed from its magic
bytes, its structure is walked (every element, page, box or chunk must end inside the file:
FFmpeg decodes the prefix of a cut WebM, Ogg or WAV without a word), and then PyAV decodes
every packet, restricted to the sniffed demuxer, so a fake or damaged file is refused and the
duration comes from the decoded samples rather than from a header the client wrote.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import av
import av.logging
from flask_babel import LazyString, lazy_ngettext
from flask_babel import lazy_gettext as _l

log = logging.getLogger(__name__)

# FFmpeg's own log lines would land on stderr for every odd upload; the outcome is what counts.
av.logging.set_level(None)

# A recorder stopped by a 60 s timer ends a few frames later (Opus frames are 20 ms, AAC's
# 21 ms, plus the encoder's priming samples), so "at most 60 s" allows this much more.
DURATION_TOLERANCE_SECONDS = 0.5
# A container that declares a duration (FFmpeg's WebM, every MP4, Ogg's last granule) must
# decode to within this of it; less means packets are missing.
DECLARED_SLACK_SECONDS = 0.5
MAX_CHANNELS = 2
# A minute of MediaRecorder's WebM/Opus has ~3,000 blocks and ~60 clusters; a file of tiny
# elements made to keep the structure walk busy is refused at this many.
MAX_EBML_ELEMENTS = 100_000


class AudioRejected(ValueError):
    """An upload that is not an acceptable voice note; `message` is for the customer."""

    def __init__(self, code: str, message: LazyString | str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code  # not_audio | empty | too_large | too_long | damaged | unsupported
        self.message = message


@dataclass(frozen=True)
class AudioInfo:
    """What the server learned about an accepted voice note."""

    content_type: str
    ext: str
    duration_ms: int
    size_bytes: int


@dataclass(frozen=True)
class _Kind:
    """A container we accept: FFmpeg's demuxer for it and the codecs allowed inside."""

    demuxer: str
    content_type: str
    ext: str
    codecs: frozenset[str]


_WEBM = _Kind("matroska", "audio/webm", "webm", frozenset({"opus", "vorbis"}))
_MKA = _Kind("matroska", "audio/x-matroska", "mka", frozenset({"opus", "vorbis"}))
_OGG = _Kind("ogg", "audio/ogg", "ogg", frozenset({"opus", "vorbis"}))
# Safari records AAC in MP4; newer Chrome can record Opus in MP4.
_MP4 = _Kind("mp4", "audio/mp4", "m4a", frozenset({"aac", "opus"}))
_WAV = _Kind("wav", "audio/wav", "wav", frozenset(
    {"pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_u8"}))


def _not_audio() -> AudioRejected:
    return AudioRejected("not_audio", _l(
        "This file is not a voice recording. Please record your note again."))


def _damaged() -> AudioRejected:
    return AudioRejected("damaged", _l(
        "The recording is incomplete or damaged. Please record it again."))


def _unsupported() -> AudioRejected:
    return AudioRejected("unsupported", _l(
        "This kind of recording is not supported. Please record your note in the browser."))


def _empty() -> AudioRejected:
    return AudioRejected("empty", _l("The recording is empty. Please record your note again."))


def _too_long(max_seconds: float) -> AudioRejected:
    return AudioRejected("too_long", lazy_ngettext(
        "The recording is too long: at most %(num)s second.",
        "The recording is too long: at most %(num)s seconds.", int(max_seconds)))


def _too_large(max_bytes: int) -> AudioRejected:
    megabytes = max(1, round(max_bytes / (1024 * 1024)))
    return AudioRejected("too_large", _l(
        "The recording is too large: at most %(megabytes)s MB.", megabytes=megabytes))


def inspect_audio(data: bytes, *, max_bytes: int, max_seconds: float) -> AudioInfo:
    """Accept a complete WebM/Ogg/MP4/WAV voice note and measure it, or raise AudioRejected."""
    if not data:
        raise _empty()
    if len(data) > max_bytes:  # before any parsing: the size alone decides
        raise _too_large(max_bytes)
    kind = _sniff(data)
    seconds = _decode(data, kind, max_seconds=max_seconds)
    return AudioInfo(content_type=kind.content_type, ext=kind.ext,
                     duration_ms=round(seconds * 1000), size_bytes=len(data))


def pcm16k(data: bytes, *, max_seconds: float = 600.0) -> bytes:
    """Mono signed 16-bit little-endian PCM at 16 kHz of a stored voice note, for recognisers."""
    kind = _sniff(data)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    out = bytearray()
    limit = int(max_seconds * 16000 * 2)
    try:
        with av.open(io.BytesIO(data), mode="r", format=kind.demuxer) as container:
            stream = _audio_stream(container, kind)
            for frame in _frames(container, stream):
                for chunk in resampler.resample(frame):
                    out += _s16_bytes(chunk)
                if len(out) > limit:
                    raise _too_long(max_seconds)
            for chunk in resampler.resample(None):
                out += _s16_bytes(chunk)
    except AudioRejected:
        raise
    except Exception as exc:  # FFmpeg, PyAV or our own parsing: all mean "not decodable"
        log.info("audio: decoding for transcription failed: %r", exc)
        raise _damaged() from exc
    return bytes(out)


def _s16_bytes(frame: av.AudioFrame) -> bytes:
    """The samples of a packed s16 mono frame (planes may carry alignment padding)."""
    return bytes(frame.planes[0])[: frame.samples * 2]


# --- container sniffing and structure -------------------------------------------------------


def _sniff(data: bytes) -> _Kind:
    """The container named by the magic bytes, checked to be complete, or AudioRejected."""
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return _check_ebml(data)
    if data[:4] == b"OggS":
        _check_ogg(data)
        return _OGG
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        _check_riff(data)
        return _WAV
    if data[4:8] == b"ftyp":
        _check_isobmff(data)
        return _MP4
    raise _not_audio()


_EBML_HEADER = 0x1A45DFA3
_EBML_DOCTYPE = 0x4282
_MKV_SEGMENT = 0x18538067
_MKV_CLUSTER = 0x1F43B675


def _ebml_vint(data: bytes, pos: int, *, is_id: bool) -> tuple[int, int, bool]:
    """(value, position after it, unknown-size flag) of an EBML variable-length integer."""
    if pos >= len(data):
        raise _damaged()
    first = data[pos]
    length = 9 - first.bit_length() if first else 9
    if length > (4 if is_id else 8) or pos + length > len(data):
        raise _damaged()
    raw = int.from_bytes(data[pos:pos + length], "big")
    if is_id:
        return raw, pos + length, False
    value = raw & ((1 << (7 * length)) - 1)
    return value, pos + length, value == (1 << (7 * length)) - 1


def _ebml_elements(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, bool]]:
    """(id, data start, data end, unknown size) of consecutive EBML elements in [start, end)."""
    pos = start
    while pos < end:
        element_id, pos, _ = _ebml_vint(data, pos, is_id=True)
        size, pos, unknown = _ebml_vint(data, pos, is_id=False)
        yield element_id, pos, end if unknown else pos + size, unknown
        pos = end if unknown else pos + size


def _check_ebml(data: bytes) -> _Kind:
    """WebM/Matroska: every element must end inside the file.

    MediaRecorder writes the Segment and its Clusters with "unknown size" (it cannot seek back
    to fill them in), so those two are entered and their children walked; every other element
    has a size, and one that runs past the end of the file means the file was cut.
    """
    elements = _ebml_elements(data, 0, len(data))
    header_id, head_start, head_end, unknown = next(elements)
    if header_id != _EBML_HEADER or unknown or head_end > len(data):
        raise _damaged()
    doctype = b""
    for child_id, child_start, child_end, _unknown in _ebml_elements(data, head_start, head_end):
        if child_end > head_end:
            raise _damaged()
        if child_id == _EBML_DOCTYPE:
            doctype = data[child_start:child_end].rstrip(b"\0")
    if doctype not in (b"webm", b"matroska"):
        raise _not_audio()
    pos, segments, count = head_end, 0, 0
    while pos < len(data):
        count += 1
        if count > MAX_EBML_ELEMENTS:  # a walk of millions of 2-byte elements costs seconds
            raise _damaged()
        element_id, pos, _ = _ebml_vint(data, pos, is_id=True)
        size, pos, unknown_size = _ebml_vint(data, pos, is_id=False)
        if element_id in (_MKV_SEGMENT, _MKV_CLUSTER):
            segments += element_id == _MKV_SEGMENT
            if not unknown_size and pos + size > len(data):
                raise _damaged()
            continue  # walk its children as the next elements
        if unknown_size or pos + size > len(data):
            raise _damaged()
        pos += size
    if segments != 1:
        raise _damaged()
    return _WEBM if doctype == b"webm" else _MKA


# Ogg's CRC-32 is the unreflected one (polynomial 0x04C11DB7, initial value 0, no final XOR);
# zlib's is the reflected one, so feed zlib bit-reversed bytes and reverse its result: C speed.
_REVERSED_BITS = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))


def _ogg_crc(page: bytes) -> int:
    """The CRC an Ogg page carries, computed over the page with its CRC field zeroed."""
    crc = zlib.crc32(page.translate(_REVERSED_BITS), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{crc:032b}"[::-1], 2)


def _check_ogg(data: bytes) -> None:
    """Ogg: contiguous pages, each with a correct CRC, and each stream's last page marked EOS.

    A recorder writes the end-of-stream flag on its final page when it stops; a file cut short,
    even exactly between pages, has no such page.
    """
    pos = 0
    last_flags: dict[int, int] = {}
    while pos < len(data):
        if data[pos:pos + 4] != b"OggS" or pos + 27 > len(data) or data[pos + 4] != 0:
            raise _damaged()
        flags = data[pos + 5]
        serial, _sequence, crc = struct.unpack_from("<III", data, pos + 14)
        segments = data[pos + 26]
        body_start = pos + 27 + segments
        if body_start > len(data):
            raise _damaged()
        end = body_start + sum(data[pos + 27:body_start])
        if end > len(data):
            raise _damaged()
        page = data[pos:pos + 22] + b"\0\0\0\0" + data[pos + 26:end]
        if _ogg_crc(page) != crc or serial in last_flags and last_flags[serial] & 0x04:
            raise _damaged()
        last_flags[serial] = flags
        pos = end
    if not last_flags or not all(flags & 0x04 for flags in last_flags.values()):
        raise _damaged()


def _check_riff(data: bytes) -> None:
    """WAV: the RIFF size and every chunk (one 'fmt ', one 'data') must fit in the file.

    A streaming writer's placeholder sizes (0 or 0xFFFFFFFF) are refused with the rest: a voice
    note is a finished file.
    """
    riff_end = 8 + struct.unpack_from("<I", data, 4)[0]
    if riff_end > len(data) or riff_end < 12:
        raise _damaged()
    pos, seen = 12, []
    while pos + 8 <= riff_end:
        chunk_id = data[pos:pos + 4]
        size = struct.unpack_from("<I", data, pos + 4)[0]
        end = pos + 8 + size
        # a chunk of odd size is followed by a pad byte, which some writers leave off at the end
        if end > riff_end:
            raise _damaged()
        seen.append(chunk_id)
        pos = end + (size & 1)
    if pos < riff_end - 1 or seen.count(b"fmt ") != 1 or seen.count(b"data") != 1:
        raise _damaged()


def _check_isobmff(data: bytes) -> None:
    """MP4/M4A: every top-level box must end inside the file, and the movie box must exist."""
    pos, boxes = 0, []
    while pos < len(data):
        if pos + 8 > len(data):
            raise _damaged()
        size, box_type = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:  # 64-bit size follows
            if pos + 16 > len(data):
                raise _damaged()
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:  # "to the end of the file", allowed for the last box
            size = len(data) - pos
        if size < header or pos + size > len(data):
            raise _damaged()
        boxes.append(box_type)
        pos += size
    if boxes[0] != b"ftyp" or b"moov" not in boxes:
        raise _damaged()


# --- decoding -----------------------------------------------------------------------------


def _audio_stream(container: av.container.InputContainer, kind: _Kind) -> av.AudioStream:
    """The container's single audio stream of an allowed codec, or AudioRejected."""
    streams = list(container.streams)
    if not streams:
        raise _damaged()
    if len(streams) != 1 or streams[0].type != "audio":
        # video, subtitles or attachments: a voice note is one audio track and nothing else
        raise _unsupported()
    stream = streams[0]
    assert isinstance(stream, av.AudioStream)
    if stream.codec_context.name not in kind.codecs:
        raise _unsupported()
    if not 0 < stream.codec_context.channels <= MAX_CHANNELS:
        raise _unsupported()
    return stream


def _frames(container: av.container.InputContainer,
            stream: av.AudioStream) -> Iterator[av.AudioFrame]:
    """Every decoded frame of the stream; FFmpeg's errors propagate."""
    for packet in container.demux(stream):
        yield from packet.decode()


def _decode(data: bytes, kind: _Kind, *, max_seconds: float) -> float:
    """Decode every packet and return the duration in seconds, or raise AudioRejected."""
    limit = max_seconds + DURATION_TOLERANCE_SECONDS
    seconds = 0.0
    try:
        with av.open(io.BytesIO(data), mode="r", format=kind.demuxer) as container:
            stream = _audio_stream(container, kind)
            declared = container.duration / 1_000_000 if container.duration else None
            if declared is not None and declared > limit:
                raise _too_long(max_seconds)
            for frame in _frames(container, stream):
                if not frame.sample_rate:
                    raise _damaged()
                seconds += frame.samples / frame.sample_rate
                # stop early: a small file of tiny packets can claim hours of audio
                if seconds > limit:
                    raise _too_long(max_seconds)
    except AudioRejected:
        raise
    except Exception as exc:  # av.FFmpegError and friends, or PyAV's own ValueErrors
        log.info("audio: refused an undecodable %s upload: %r", kind.ext, exc)
        raise _damaged() from exc
    if seconds <= 0:
        raise _empty()
    if declared is not None and seconds < declared - DECLARED_SLACK_SECONDS:
        raise _damaged()
    return seconds
