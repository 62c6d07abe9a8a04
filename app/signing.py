"""The one place itsdangerous is used: a salt per token kind, always a max age, key lists
for rotation (itsdangerous signs with the last key and verifies with any of them)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode

from .safejson import BadJSON, loads_object

# Salts are part of the public token format (README): changing one invalidates every token.
VERIFIED_PROMPT = "closeloop.prompt.v1"  # minted by a merchant's backend with the site secret
PUBLIC_PROMPT = "closeloop.public-prompt.v1"  # minted by us for the script tag, app secret
VERIFY_LINK = "closeloop.verify-link.v1"  # "is it resolved?" links in emails, app secret
PASSWORD_RESET = "closeloop.password-reset.v1"  # staff password-reset links, app secret
STAFF_INVITE = "closeloop.staff-invite.v1"  # staff invitation links, app secret
KIOSK = "closeloop.kiosk.v1"  # in-store tablet links (revocable via their row), app secret

MAX_TOKEN_CHARS = 4096
# A token of at most 4 kB may carry a zlib-compressed payload ('.'-prefixed); deflate can
# expand ~1000:1, so a 4 kB token could hold megabytes. Every payload we accept (20 SKUs of
# 100 characters, a 2,000-character URL, ids) stays far below this once inflated; anything
# larger is refused after inflating no more than this many bytes.
MAX_PAYLOAD_BYTES = 32 * 1024


class TokenInvalid(Exception):
    """Forged, malformed, wrong-purpose or wrong-key token."""


class TokenExpired(TokenInvalid):
    """Genuine token past its max age."""


class TokenMalformed(TokenInvalid):
    """Genuinely signed, but its payload is not an object of valid text (the message says
    what is wrong and is safe to show)."""


def decode_payload(payload: bytes, text_only: bool = True) -> dict[str, Any]:
    """The object in a token's payload part (base64 JSON, zlib-compressed if '.'-prefixed);
    BadJSON if it is anything else or inflates past MAX_PAYLOAD_BYTES (and, with
    `text_only`, if a string in it holds a lone surrogate)."""
    compressed = payload.startswith(b".")
    try:
        data = base64_decode(payload[1:] if compressed else payload)
    except Exception:  # noqa: BLE001 - itsdangerous raises several kinds for bad base64
        raise BadJSON("The link is not valid base64.") from None
    if compressed:
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(data, MAX_PAYLOAD_BYTES + 1)
        except zlib.error:
            raise BadJSON("The link's payload is not valid compressed data.") from None
        if len(data) > MAX_PAYLOAD_BYTES or inflater.unconsumed_tail:
            raise BadJSON(f"The link's payload is larger than {MAX_PAYLOAD_BYTES} bytes.")
        if not inflater.eof or inflater.unused_data:
            raise BadJSON("The link's payload is not valid compressed data.")
    return loads_object(data, "The link's payload", text_only)


class _Serializer(URLSafeTimedSerializer):
    """itsdangerous' URL-safe timed format, read with a capped inflate and strict JSON.

    Its own load_payload inflates without a limit and hands lone surrogates and deep nesting
    on; this one raises BadJSON, which is no BadSignature, so it is only ever reached for a
    payload whose signature was already verified, and it is not mistaken for a wrong key."""

    def load_payload(self, payload: bytes, *args: Any, **kwargs: Any) -> Any:
        return decode_payload(payload)


def app_keys() -> list[str]:
    """The app's own signing keys, newest (SECRET_KEY) last, as itsdangerous wants them."""
    from flask import current_app

    cfg = current_app.config
    return [*cfg.get("SECRET_KEY_FALLBACKS", [])[::-1], cfg["SECRET_KEY"]]


@lru_cache(maxsize=256)
def _serializer(keys: tuple[str, ...], salt: str) -> _Serializer:
    # Building one costs more than checking a signature; they are immutable once built.
    return _Serializer(list(keys), salt=salt)


def dumps(keys: Sequence[str], salt: str, payload: dict[str, Any]) -> str:
    """Sign `payload` with the newest of `keys` for the purpose `salt`."""
    return _serializer(tuple(keys), salt).dumps(payload)


def loads(keys: Sequence[str], salt: str, token: str, max_age: int) -> dict[str, Any]:
    """Verify, then decode; raise TokenExpired, TokenMalformed or TokenInvalid, never
    anything else. Nothing is inflated or parsed before the signature checks out."""
    if not keys or len(token) > MAX_TOKEN_CHARS:
        raise TokenInvalid("token too long or no key")
    try:
        payload = _serializer(tuple(keys), salt).loads(token, max_age=max_age)
    except SignatureExpired as exc:
        raise TokenExpired(str(exc)) from None
    except BadJSON as exc:
        raise TokenMalformed(str(exc)) from None
    except (BadSignature, UnicodeError, ValueError) as exc:
        raise TokenInvalid(str(exc)) from None
    return payload


def peek(token: str) -> dict[str, Any] | None:
    """Read a payload WITHOUT verifying it, only to pick which keys verify it (no HMAC is
    computed here). The data is untrusted: at most MAX_PAYLOAD_BYTES are ever inflated, and
    anything but a JSON object gives None. Lone surrogates are let through (the caller only
    uses the site and moment keys, which it checks), so that `loads` can name the field
    once the token proves genuine."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") < 2:
        return None
    try:
        return decode_payload(token.rsplit(".", 2)[0].encode("ascii"), text_only=False)
    except (BadJSON, UnicodeError):
        return None
