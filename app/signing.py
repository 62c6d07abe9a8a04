"""The one place itsdangerous is used: a salt per token kind, always a max age, key lists
for rotation (itsdangerous signs with the last key and verifies with any of them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

# Salts are part of the public token format (README): changing one invalidates every token.
VERIFIED_PROMPT = "closeloop.prompt.v1"  # minted by a merchant's backend with the site secret
PUBLIC_PROMPT = "closeloop.public-prompt.v1"  # minted by us for the script tag, app secret
VERIFY_LINK = "closeloop.verify-link.v1"  # "is it resolved?" links in emails, app secret

MAX_TOKEN_CHARS = 4096


class TokenInvalid(Exception):
    """Forged, malformed, wrong-purpose or wrong-key token."""


class TokenExpired(TokenInvalid):
    """Genuine token past its max age."""


def app_keys() -> list[str]:
    """The app's own signing keys, newest (SECRET_KEY) last, as itsdangerous wants them."""
    from flask import current_app

    cfg = current_app.config
    return [*cfg.get("SECRET_KEY_FALLBACKS", [])[::-1], cfg["SECRET_KEY"]]


def dumps(keys: Sequence[str], salt: str, payload: dict[str, Any]) -> str:
    """Sign `payload` with the newest of `keys` for the purpose `salt`."""
    return URLSafeTimedSerializer(list(keys), salt=salt).dumps(payload)


def loads(keys: Sequence[str], salt: str, token: str, max_age: int) -> dict[str, Any]:
    """Verify and decode; raise TokenExpired or TokenInvalid, never anything else."""
    if not keys or len(token) > MAX_TOKEN_CHARS:
        raise TokenInvalid("token too long or no key")
    try:
        payload = URLSafeTimedSerializer(list(keys), salt=salt).loads(token, max_age=max_age)
    except SignatureExpired as exc:
        raise TokenExpired(str(exc)) from None
    except (BadSignature, UnicodeError, ValueError) as exc:
        raise TokenInvalid(str(exc)) from None
    if not isinstance(payload, dict):
        raise TokenInvalid("payload is not an object")
    return payload


_PEEK = URLSafeTimedSerializer("-", salt="-")


def peek(token: str) -> dict[str, Any] | None:
    """Read a payload WITHOUT verifying it, only to pick which keys verify it (no HMAC is
    computed here: the token's payload part is just decoded)."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") < 2:
        return None
    try:
        payload = _PEEK.load_payload(token.rsplit(".", 2)[0].encode("ascii"))
    except Exception:  # noqa: BLE001 - any garbage simply has no payload
        return None
    return payload if isinstance(payload, dict) else None
