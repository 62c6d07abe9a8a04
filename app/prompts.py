"""Prompt tokens (issue and verify), and whether to show a prompt: sampling and cooldown."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select

from . import signing
from .extensions import db
from .models import Impression, Moment, Site, utcnow

CHANNELS = ("web", "app", "email", "sms", "chat", "kiosk")
MAX_SKUS = 20
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}")  # used with fullmatch
_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SITE_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,40}")
# Ids, SKUs and URLs end up in email bodies, headers and webhook payloads: no control
# characters (C0, DEL, C1), no Unicode line or paragraph separators, no lone surrogates.
_NOT_IN_IDS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class PromptError(Exception):
    """A prompt that cannot be issued or answered; `message` is safe to show."""

    def __init__(self, message: str, status: int = 400, expired: bool = False):
        super().__init__(message)
        self.message = message
        self.status = status
        self.expired = expired


@dataclass(frozen=True)
class Prompt:
    """A verified prompt: everything the token vouches for, with its site and moment rows."""

    site: Site
    moment: Moment
    verified: bool
    submission_id: str
    channel: str
    skus: tuple[str, ...] = ()
    detail: str | None = None  # which store, till, agent or campaign of the channel
    order: str | None = None
    customer: str | None = None
    email: str | None = None
    locale: str = "en"
    page_url: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _opt_str(value: Any, name: str, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise PromptError(f"{name} must be a string")
    value = str(value).strip()
    if len(value) > limit:
        raise PromptError(f"{name} is longer than {limit} characters")
    bad = _NOT_IN_IDS.search(value)
    if bad:
        char = bad.group()
        what = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
        raise PromptError(f"{name} contains {what} (U+{ord(char):04X}); "
                          "line breaks and control characters are not allowed")
    return value or None


def _email(value: Any) -> str | None:
    from .loop.mail import valid_address

    value = _opt_str(value, "email", 254)
    if value is not None and not valid_address(value):
        raise PromptError("email is not a plain email address")
    return value


def normalize_context(data: dict[str, Any], default_locale: str) -> dict[str, Any]:
    """Validate the context fields a token may carry; raise PromptError on any bad one."""
    moment = data.get("moment")
    if not isinstance(moment, str) or not _KEY.fullmatch(moment):
        raise PromptError("moment is missing or malformed")
    channel = data.get("channel") or "web"
    if channel not in CHANNELS:
        raise PromptError(f"channel must be one of {', '.join(CHANNELS)}")
    skus_in = data.get("skus", data.get("sku")) or []
    if isinstance(skus_in, str):
        skus_in = skus_in.split(",")
    if not isinstance(skus_in, list) or len(skus_in) > MAX_SKUS:
        raise PromptError(f"skus must be a list of at most {MAX_SKUS} strings")
    skus: list[str] = []
    for sku in skus_in:
        sku = _opt_str(sku, "sku", 100)
        if sku and sku not in skus:
            skus.append(sku)
    locale = data.get("locale") or data.get("lang") or default_locale
    if not isinstance(locale, str) or not _LOCALE.fullmatch(locale):
        locale = default_locale
    url = _opt_str(data.get("url"), "url", 2000)
    if url and not url.startswith(("http://", "https://")):
        url = None
    return {
        "moment": moment,
        "channel": channel,
        "skus": skus,
        "order": _opt_str(data.get("order"), "order", 100),
        "detail": _opt_str(data.get("detail"), "detail", 100),
        "customer": _opt_str(data.get("customer"), "customer", 100),
        "email": _email(data.get("email")),
        "locale": locale.replace("_", "-"),
        "url": url,
    }


def load_site_moment(site_key: Any, moment_key: Any) -> tuple[Site, Moment]:
    """An active moment and its site, or PromptError.

    Every prompt request needs both, so they are kept per process for SITE_CACHE_SECONDS
    (detached, read-only). A cached site is checked against its `settings_version` (bumped by
    every change to the site or its moments, from any process) at most once per
    SITE_CACHE_CHECK_SECONDS: one indexed query per site, so a rotated secret, a dropped one,
    new origins or a changed moment take effect in every process within about that long.
    """
    if (not isinstance(site_key, str) or not isinstance(moment_key, str)
            or not _SITE_KEY.fullmatch(site_key) or not _KEY.fullmatch(moment_key)):
        raise PromptError("this prompt names no site or moment")
    cache: dict[tuple[str, str], tuple[float, Site, Moment]] = current_app.extensions.setdefault(
        "closeloop.site_cache", {})
    hit = cache.get((site_key, moment_key))
    now = time.monotonic()
    if hit is not None and hit[0] > now and _is_current(hit[1], now):
        return hit[1], hit[2]
    row = db.session.execute(
        select(Site, Moment)
        .join(Moment, Moment.site_id == Site.id)
        .where(Site.public_key == site_key, Moment.key == moment_key, Moment.active.is_(True))
    ).first()
    if row is None:
        raise PromptError("unknown site or moment")
    site, moment = row
    ttl = current_app.config["SITE_CACHE_SECONDS"]
    if ttl > 0:
        db.session.expunge(site)
        db.session.expunge(moment)
        cache[(site_key, moment_key)] = (now + ttl, site, moment)
        _versions()[site_key] = (now + current_app.config["SITE_CACHE_CHECK_SECONDS"],
                                 site.settings_version)
    return site, moment


def _versions() -> dict[str, tuple[float, int | None]]:
    # public key -> (next check, settings_version the database had at the last check)
    return current_app.extensions.setdefault(  # type: ignore[no-any-return]
        "closeloop.site_versions", {})


def _is_current(site: Site, now: float) -> bool:
    """Whether a cached site is still the database's version (asks at most once per
    SITE_CACHE_CHECK_SECONDS per site and process, for all of its moments at once)."""
    versions = _versions()
    seen = versions.get(site.public_key)
    if seen is None or seen[0] <= now:
        version = db.session.scalar(
            select(Site.settings_version).where(Site.public_key == site.public_key))
        seen = (now + current_app.config["SITE_CACHE_CHECK_SECONDS"], version)
        versions[site.public_key] = seen
    return seen[1] == site.settings_version


def forget_site(public_key: str) -> None:
    """Drop a site's cached rows in this process at once (other processes notice the site's
    new settings_version within SITE_CACHE_CHECK_SECONDS)."""
    cache = current_app.extensions.get("closeloop.site_cache", {})
    for key in [k for k in cache if k[0] == public_key]:
        cache.pop(key, None)
    _versions().pop(public_key, None)


PUBLIC_MARK = "pub"  # reserved payload key: marks tokens we minted for the script tag


def issue_public(site: Site, moment: Moment, context: dict[str, Any]) -> str:
    """Sign a short-lived public prompt for the script tag (customer identity not trusted)."""
    payload = {
        "site": site.public_key,
        "moment": moment.key,
        "channel": context["channel"],
        "skus": context["skus"],
        "order": context["order"],
        "detail": context["detail"],
        "locale": context["locale"],
        "url": context["url"],
        "n": secrets.token_urlsafe(16),
        PUBLIC_MARK: 1,
    }
    return signing.dumps(signing.app_keys(), signing.PUBLIC_PROMPT,
                         {k: v for k, v in payload.items() if v})


def verify(token: str) -> Prompt:
    """Verify a public or merchant-signed token and load its site and moment.

    Our own public tokens are checked first (the app's keys need nothing from the payload),
    so they are verified before anything in them is decoded. A merchant's token names its
    site, whose secrets verify it: that payload is peeked at unverified, with a capped
    inflate and a strict parser (signing.peek), only to find the site."""
    cfg = current_app.config
    verified = False
    try:
        payload: dict[str, Any] | None = signing.loads(
            signing.app_keys(), signing.PUBLIC_PROMPT, token, cfg["PUBLIC_PROMPT_MAX_AGE"])
    except signing.TokenExpired:
        raise PromptError("this feedback link has expired", expired=True) from None
    except signing.TokenMalformed as exc:
        raise PromptError(f"this feedback link is not valid: {exc}") from None
    except signing.TokenInvalid:
        payload = None
    if payload is not None:
        site, moment = load_site_moment(payload.get("site"), payload.get("moment"))
    else:
        unverified = signing.peek(token)
        if unverified is None:
            raise PromptError("this feedback link is not valid")
        site, moment = load_site_moment(unverified.get("site"), unverified.get("moment"))
        try:
            payload = signing.loads(site.signing_secrets, signing.VERIFIED_PROMPT, token,
                                    cfg["VERIFIED_PROMPT_MAX_AGE"])
        except signing.TokenExpired:
            raise PromptError("this feedback link has expired", expired=True) from None
        except signing.TokenMalformed as exc:
            raise PromptError(f"this feedback link is not valid: {exc}") from None
        except signing.TokenInvalid:
            raise PromptError("this feedback link is not valid") from None
        verified = True
    ctx = normalize_context(payload, site.default_locale)
    nonce = payload.get("n")
    if isinstance(nonce, str) and 8 <= len(nonce) <= 64:
        _opt_str(nonce, "n", 64)  # refuses control characters; the nonce is used as sent
        submission_id = nonce
    else:  # a merchant token without a nonce: the token itself is the submission
        submission_id = hashlib.sha256(token.encode()).hexdigest()[:32]
    return Prompt(
        site=site,
        moment=moment,
        verified=verified,
        submission_id=submission_id,
        channel=ctx["channel"],
        skus=tuple(ctx["skus"]),
        detail=ctx["detail"],
        order=ctx["order"],
        customer=ctx["customer"] if verified else None,
        email=ctx["email"] if verified else None,
        locale=ctx["locale"],
        page_url=ctx["url"],
        raw=payload,
    )


def visitor_hash(site: Site, visitor: str | None) -> str | None:
    """Keyed hash of a visitor id so the cooldown works without storing the id itself."""
    if not visitor or not isinstance(visitor, str) or len(visitor) > 100:
        return None
    key = current_app.config["SECRET_KEY"].encode()
    # surrogatepass: a lone surrogate (valid JSON, invalid text) must not raise here.
    data = f"{site.id}:{visitor}".encode("utf-8", "surrogatepass")
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Decision:
    """Whether to show a prompt now, and for how long the browser should not ask again."""

    show: bool
    reason: str
    cooldown_seconds: int


def decide(site: Site, moment: Moment, vhash: str | None, *, sample: bool) -> Decision:
    """Apply the moment's sampling rate (public prompts only) and the per-visitor cooldown."""
    cooldown = int(moment.cooldown_hours) * 3600
    if sample and random.random() >= moment.sampling_rate:
        return Decision(False, "sampled_out", 0)
    if vhash and cooldown:
        last = db.session.scalar(
            select(Impression.created_at)
            .where(
                Impression.site_id == site.id,
                Impression.visitor_hash == vhash,
                Impression.created_at > utcnow() - timedelta(seconds=cooldown),
            )
            .order_by(Impression.created_at.desc())
            .limit(1)
        )
        if last is not None:
            remaining = cooldown - int((utcnow() - last).total_seconds())
            return Decision(False, "cooldown", max(remaining, 1))
    return Decision(True, "ok", cooldown)


def record_impression(site: Site, moment: Moment, channel: str, vhash: str | None) -> None:
    """Count a shown prompt (prompt engagement's denominator) and start the cooldown."""
    db.session.add(
        Impression(site_id=site.id, moment_id=moment.id, channel=channel, visitor_hash=vhash)
    )
    db.session.commit()
