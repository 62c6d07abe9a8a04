"""Message channels: the verified links a merchant puts in an email or an SMS about one order.

`links(...)` mints a verified prompt for the order exactly as a merchant's backend would (the
site's signing secret, the README's payload) and returns:
- an email snippet: the moment's question and one link per rating (`/p/<token>?rating=N`,
  a one-click rating that asks for one confirming press, DESIGN rule 13), as accessible HTML
  and as plain text, in the customer's language;
- an SMS link: `/s/<code>`, a short redirect to the same prompt, kept until the token
  expires (VERIFIED_PROMPT_MAX_AGE).
The channel ("email" / "sms") and its detail (a store, till, agent or campaign) travel in the
token and are recorded on the answer. `flask links` prints them.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import current_app, render_template
from flask_babel import force_locale, gettext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from . import i18n, signing
from .extensions import db
from .models import Moment, ShortLink, Site, utcnow
from .prompts import PromptError, normalize_context
from .responses import SCALES
from .security import public_url

CODE_ALPHABET = string.ascii_letters + string.digits
CODE_LENGTH = 8  # 62**8 ≈ 2.2e14 codes: unguessable at the rate limit; "https://x.example/s/" + 8


@dataclass(frozen=True)
class Links:
    """What a merchant sends for one order."""

    token: str
    prompt_url: str
    rating_urls: list[tuple[int, str, str]]  # (rating, what it says, URL)
    email_html: str
    email_text: str
    sms_url: str | None


def links(site: Site, moment_key: str, *, channel: str = "email", order: str | None = None,
          customer: str | None = None, email: str | None = None, locale: str | None = None,
          skus: list[str] | None = None, detail: str | None = None,
          sms: bool | None = None) -> Links:
    """Mint the verified prompt for one order and its email snippet (and an SMS link when
    `sms`, by default for channel "sms"). PromptError for an unknown or inactive moment or
    a bad field. Commits when it stores an SMS link."""
    moment = db.session.scalar(select(Moment).where(
        Moment.site_id == site.id, Moment.key == moment_key, Moment.active.is_(True)))
    if moment is None:
        raise PromptError(f"site {site.public_key} has no active moment {moment_key!r}")
    payload: dict[str, Any] = {"site": site.public_key, "moment": moment.key,
                               "channel": channel, "n": secrets.token_urlsafe(16)}
    for key, value in (("order", order), ("customer", customer), ("email", email),
                       ("locale", locale), ("skus", skus), ("detail", detail)):
        if value:
            payload[key] = value
    ctx = normalize_context(payload, site.default_locale)  # the checks a prompt gets
    lang = i18n.supported(ctx["locale"]) or i18n.supported(site.default_locale) or "en"
    token = signing.dumps(site.signing_secrets, signing.VERIFIED_PROMPT, payload)
    prompt_url = public_url("embed.prompt_page", token=token)
    scale = SCALES[moment.scale]
    with force_locale(lang):
        question = moment.question_in(lang)
        ratings = [(v, gettext(scale.spoken[v]), f"{prompt_url}?rating={v}")
                   for v in scale.values]
        context = {"site": site, "question": question, "ratings": ratings, "scale": scale,
                   "prompt_url": prompt_url, "lang": lang,
                   "low": gettext(scale.low_label) if scale.low_label else "",
                   "high": gettext(scale.high_label) if scale.high_label else ""}
        html = render_template("channels/email_snippet.html", **context)
        text = render_template("channels/email_snippet.txt", **context)
    if sms is None:
        sms = channel == "sms"
    return Links(token, prompt_url, ratings, html, text, _short_link(site, token) if sms else None)


def _short_link(site: Site, token: str) -> str:
    """Store a short code for `token` (until it expires) and return its absolute URL."""
    expires = utcnow() + timedelta(seconds=current_app.config["VERIFIED_PROMPT_MAX_AGE"])
    for _attempt in range(5):
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        db.session.add(ShortLink(code=code, site_id=site.id, token=token, expires_at=expires))
        try:
            db.session.commit()
        except IntegrityError:  # a code taken already: draw another
            db.session.rollback()
            continue
        return public_url("embed.short_link", code=code)
    raise RuntimeError("no free short code after 5 draws")


def resolve(code: str) -> tuple[str | None, bool]:
    """(the prompt token a short code stands for, False), or (None, expired?) when the code
    is unknown or its prompt has expired."""
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None, False
    row = db.session.execute(select(ShortLink.token, ShortLink.expires_at).where(
        ShortLink.code == code)).first()
    if row is None:
        return None, False
    if row.expires_at <= utcnow():
        return None, True
    return str(row.token), False
