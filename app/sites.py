"""Sites and their moments: creation with the playbook's default moments, secret rotation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from .extensions import db
from .loop import rules
from .models import Moment, Site, Team, new_secret
from .prompts import forget_site
from .responses import SCALES

# Moment key -> (scale, question). Merchants add their own moments next to these.
DEFAULT_MOMENTS: dict[str, tuple[str, str]] = {
    "checkout": ("csat", "How easy was it to place your order?"),
    "post_chat": ("csat", "How satisfied are you with this chat?"),
    "delivery": ("nps", "How likely are you to recommend us to a friend?"),
    "product_page": ("thumbs", "Did you find what you were looking for?"),
    "browse": ("emoji", "How is your visit going?"),
    "support_email": ("csat", "How satisfied are you with our answer?"),
    "kiosk": ("emoji", "How was your visit today?"),
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
