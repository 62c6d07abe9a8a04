"""Sites and their moments: creation with the playbook's default moments, secret rotation."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from .extensions import db
from .loop import rules
from .models import Moment, Site, Team, new_secret
from .prompts import forget_site
from .responses import N_, SCALES

# Moment key -> (scale, question). Merchants add their own moments next to these.
# The questions are in the catalogs: a moment that keeps one is asked in the customer's
# language (Moment.question_in).
DEFAULT_MOMENTS: dict[str, tuple[str, str]] = {
    "checkout": ("ces", N_("How easy was it to place your order?")),
    "post_chat": ("csat", N_("How satisfied are you with this chat?")),
    "delivery": ("nps", N_("How likely are you to recommend us to a friend?")),
    "product_page": ("thumbs", N_("Did you find what you were looking for?")),
    "browse": ("emoji", N_("How is your visit going?")),
    "support_email": ("csat", N_("How satisfied are you with our answer?")),
    "kiosk": ("emoji", N_("How was your visit today?")),
}
MAX_SECRETS = 3
# The playbook's owners; the default rules route to these keys.
DEFAULT_TEAMS = {"support": "Customer support", "logistics": "Logistics", "sales": "Sales"}


def _check_url(url: str | None, name: str) -> str | None:
    if url and not url.startswith(("https://", "http://")):
        raise ValueError(f"{name} must be an http(s) URL")
    return url or None


def _check_origin(origin: str) -> str:
    origin = origin.strip().rstrip("/")
    scheme, _, rest = origin.partition("://")
    if scheme not in ("http", "https") or not rest or "/" in rest or any(
        c in rest for c in " ;,'\"*"
    ):
        raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
    return origin.lower()


def create(name: str, origins: list[str], review_url: str | None = None,
           support_contact: str | None = None, locale: str = "en",
           public_key: str | None = None, referral_url: str | None = None) -> Site:
    """Create a site with the default moments; returns it with its first signing secret."""
    site = Site(
        name=name,
        allowed_origins=[_check_origin(o) for o in origins],
        review_url=_check_url(review_url, "review URL"),
        referral_url=_check_url(referral_url, "referral URL"),
        support_contact=support_contact,
        default_locale=locale,
    )
    if public_key:
        site.public_key = public_key
    db.session.add(site)
    db.session.flush()
    for key, (scale, question) in DEFAULT_MOMENTS.items():
        assert scale in SCALES
        db.session.add(Moment(site_id=site.id, key=key, scale=scale, question=question))
    for key, team_name in DEFAULT_TEAMS.items():
        db.session.add(Team(site_id=site.id, key=key, name=team_name, locale=locale))
    db.session.flush()
    rules.replace(site.id, rules.DEFAULT_RULES)  # commits
    return site


@event.listens_for(Session, "before_flush")
def _bump_settings_version(session: Session, _context: Any, _instances: Any) -> None:
    """Every change to a site or its moments, from any code path, bumps the site's
    settings_version in the same transaction: the signal other processes' caches check."""
    bump: set[int] = set()
    bumped: set[int] = set()
    for obj in session.dirty:
        if isinstance(obj, Site) and session.is_modified(obj, include_collections=False):
            # An SQL expression: the UPDATE increments what the row holds, no lost bump.
            obj.settings_version = Site.settings_version + 1
            bumped.add(obj.id)
        elif isinstance(obj, Moment) and session.is_modified(obj, include_collections=False):
            bump.add(obj.site_id)
    for obj in (*session.new, *session.deleted):
        if isinstance(obj, Moment) and obj.site_id is not None:
            bump.add(obj.site_id)
    if bump - bumped:
        session.connection().execute(
            update(Site).where(Site.id.in_(bump - bumped))
            .values(settings_version=Site.settings_version + 1))


def by_key(public_key: str) -> Site | None:
    """The site with this public key."""
    return db.session.scalar(select(Site).where(Site.public_key == public_key))


def rotate_secret(site: Site, drop_old: bool = False) -> str:
    """Add a new signing secret (used for signing from now on); older ones keep verifying
    until dropped, so links already sent stay valid. At most MAX_SECRETS are kept."""
    secret = new_secret()
    kept = [] if drop_old else list(site.signing_secrets)[-(MAX_SECRETS - 1):]
    site.signing_secrets = [*kept, secret]
    db.session.commit()
    forget_site(site.public_key)
    return secret


# -- settings shared by `flask site-settings` and the admin settings pages ----------------------

# Editable site fields -> kind. "origins" is a list; hours/minutes are whole numbers >= 1;
# targets are shares between 0 and 1.
SITE_FIELDS: dict[str, str] = {
    "name": "text", "allowed_origins": "origins", "default_locale": "locale",
    "review_url": "url", "referral_url": "url", "support_contact": "text_opt",
    "sla_ack_hours": "hours", "sla_ack_target": "share", "sla_ack_late_hours": "hours",
    "sla_ack_late_target": "share", "sla_close_hours": "hours", "sla_close_target": "share",
    "sla_loop_hours": "hours", "followup_negative_hours": "hours",
    "followup_neutral_hours": "hours", "followup_positive_hours": "hours",
    "sla_reminder_minutes": "hours", "webhooks_allow_private": "bool",
}
MOMENT_FIELDS = ("key", "question", "questions", "scale", "comment_enabled", "voice_enabled",
                 "sampling_rate", "cooldown_hours", "active")
_LENGTHS = {"name": 200, "support_contact": 200, "review_url": 500, "referral_url": 500,
            "question": 300}
_MOMENT_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_LOCALE = re.compile(r"[a-z]{2,3}([_-][A-Za-z0-9]{2,8})?")


class SettingsError(ValueError):
    """Invalid settings: `errors` maps each field to a message meant for a person."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _clean(field: str, kind: str, raw: Any) -> Any:
    """One value checked and converted; ValueError with a friendly message."""
    if kind == "bool":
        return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "y", "yes", "on",
                                                                     "true")
    if kind == "origins":
        items = raw if isinstance(raw, list) else str(raw or "").replace(",", "\n").splitlines()
        items = [o for o in (i.strip() for i in items) if o]
        if not items:
            raise ValueError("At least one origin, e.g. https://shop.example.")
        return list(dict.fromkeys(_check_origin(o) for o in items))
    if kind in ("hours", "int"):
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ValueError("A whole number.") from None
        if not 1 <= value <= 24 * 365:
            raise ValueError("Between 1 and 8760.")
        return value
    if kind == "share":
        try:
            share = float(str(raw).strip())
        except ValueError:
            raise ValueError("A share between 0 and 1, e.g. 0.85.") from None
        if not 0 <= share <= 1:  # also refuses nan
            raise ValueError("A share between 0 and 1, e.g. 0.85.")
        return share
    text = str(raw or "").strip()
    if "\r" in text or "\n" in text:
        raise ValueError("One line, please.")
    if len(text) > _LENGTHS.get(field, 200):
        raise ValueError(f"At most {_LENGTHS.get(field, 200)} characters.")
    if kind == "url":
        if text and not text.lower().startswith(("https://", "http://")):
            raise ValueError("An http(s) URL, e.g. https://shop.example/review.")
        return text or None
    if kind == "locale":
        if not _LOCALE.fullmatch(text):
            raise ValueError("A language code such as en, tr or pt-BR.")
        return text
    if kind in ("text", "question") and not text:
        raise ValueError("Required.")
    return text or None


def update_settings(site: Site, values: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Check and apply site settings (only the keys given; see SITE_FIELDS) and commit.
    Returns {field: (old, new)} of what changed. SettingsError (nothing changed) when any
    value is invalid. The settings_version bump (above) tells other processes' caches."""
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    for field, raw in values.items():
        kind = SITE_FIELDS.get(field)
        if kind is None:
            raise KeyError(f"not a site setting: {field}")
        try:
            clean[field] = _clean(field, kind, raw)
        except ValueError as exc:
            errors[field] = str(exc)
    if errors:
        raise SettingsError(errors)
    changed = {f: (getattr(site, f), v) for f, v in clean.items() if getattr(site, f) != v}
    for field, (_old, new) in changed.items():
        setattr(site, field, new)
    db.session.commit()
    forget_site(site.public_key)
    return changed


def _questions(raw: Any, errors: dict[str, str]) -> dict[str, str] | None:
    """The question per language: {language code: one line of at most 300 characters};
    empty ones are dropped (that language gets the question as written). Errors go to
    `errors` as question_<lang>."""
    if not isinstance(raw, dict):
        raise ValueError("A question per language code.")
    out: dict[str, str] = {}
    for lang, text in raw.items():
        if not isinstance(lang, str) or not re.fullmatch(r"[a-z]{2,3}", lang):
            raise ValueError(f"Not a language code: {lang!r}.")
        try:
            value = _clean("question", "text-optional", text)
        except ValueError as exc:
            errors[f"question_{lang}"] = str(exc)
            continue
        if value:
            out[lang] = value
    return dict(sorted(out.items())) or None


def _moment_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    for field, raw in values.items():
        try:
            if field == "key":
                key = str(raw or "").strip()
                if not _MOMENT_KEY.fullmatch(key):
                    raise ValueError("Lower-case letters, digits, _ and -, at most 64, "
                                     "e.g. post_purchase.")
                clean[field] = key
            elif field == "scale":
                if raw not in SCALES:
                    raise ValueError(f"One of {', '.join(SCALES)}.")
                clean[field] = raw
            elif field == "question":
                clean[field] = _clean(field, "question", raw)
            elif field == "questions":
                clean[field] = _questions(raw, errors)
            elif field in ("comment_enabled", "voice_enabled", "active"):
                clean[field] = _clean(field, "bool", raw)
            elif field == "sampling_rate":
                clean[field] = _clean(field, "share", raw)
            elif field == "cooldown_hours":
                try:
                    hours = int(str(raw).strip())
                except ValueError:
                    raise ValueError("A whole number of hours.") from None
                if not 0 <= hours <= 24 * 365:
                    raise ValueError("Between 0 and 8760 hours.")
                clean[field] = hours
            else:
                raise KeyError(f"not a moment field: {field}")
        except ValueError as exc:
            errors[field] = str(exc)
    return clean, errors


def save_moment(site: Site, moment: Moment | None, values: dict[str, Any]
                ) -> tuple[Moment, dict[str, tuple[Any, Any]]]:
    """Create (moment None) or change a moment of `site` and commit; returns it and
    {field: (old, new)}. SettingsError when a value is invalid or the key is taken."""
    clean, errors = _moment_values(values)
    key = clean.get("key")
    if key is not None and (moment is None or key != moment.key) and db.session.scalar(
            select(Moment.id).where(Moment.site_id == site.id, Moment.key == key)):
        errors["key"] = f"This site already has a moment {key!r}."
    if moment is None:
        for field in ("key", "question"):
            if field not in clean and field not in errors:
                errors[field] = "Required."
    if errors:
        raise SettingsError(errors)
    if moment is None:
        moment = Moment(site_id=site.id, **clean)
        db.session.add(moment)
        changed = {f: (None, v) for f, v in clean.items()}
    else:
        changed = {f: (getattr(moment, f), v) for f, v in clean.items()
                   if getattr(moment, f) != v}
        for field, (_old, new) in changed.items():
            setattr(moment, field, new)
    db.session.commit()
    forget_site(site.public_key)
    return moment, changed
