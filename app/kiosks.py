"""Kiosks: a full-screen rating page for an in-store tablet, per site and moment.

A lead adds a kiosk (Settings → Kiosks) with its store id; its link is `/k/<token>`, a token
signed with the app's keys (salt KIOSK, max age KIOSK_MAX_AGE) that names the kiosk's row, so
it works until the lead revokes the row. Each tap is one answer with a submission id the
tablet makes (it keeps unsent answers in localStorage while the network is away and sends
them later with the same ids), so each answer is stored exactly once. Answers are recorded
on the `kiosk` channel with the store as their channel detail.
"""

from __future__ import annotations

import re
from typing import Any

from flask import current_app
from sqlalchemy import select

from . import audit, responses, signing
from .extensions import db
from .models import Kiosk, Moment, Site, StaffUser, utcnow
from .prompts import Prompt

_SUBMISSION = re.compile(r"[A-Za-z0-9-]{8,48}")  # + "k<id>-" fits submission_id (64)
_TEXT = re.compile(r"[^\x00-\x1f\x7f]{1,100}")


class KioskError(ValueError):
    """A kiosk that cannot be made as asked (the message is safe to show)."""


def token(kiosk: Kiosk) -> str:
    return signing.dumps(signing.app_keys(), signing.KIOSK, {"k": kiosk.id})


def create(site: Site, moment_key: str, store: str, label: str,
           actor: StaffUser | str) -> Kiosk:
    """Add a kiosk asking `moment_key` in `store`; audited; commits."""
    store, label = (store or "").strip(), (label or "").strip()
    moment = db.session.scalar(select(Moment).where(Moment.site_id == site.id,
                                                    Moment.key == moment_key))
    errors = []
    if moment is None:
        errors.append("Choose one of the site's moments.")
    if not _TEXT.fullmatch(store):
        errors.append("A store id of 1 to 100 characters, e.g. tallinn-1.")
    if not _TEXT.fullmatch(label):
        errors.append("A name of 1 to 100 characters, e.g. Till 2.")
    if errors:
        raise KioskError(" ".join(errors))
    kiosk = Kiosk(site_id=site.id, moment_key=moment_key, store=store, label=label,
                  created_by=actor.email if isinstance(actor, StaffUser) else actor)
    db.session.add(kiosk)
    db.session.flush()
    audit.record("kiosk.create", actor=actor, object_type="kiosk", object_id=kiosk.id,
                 site_id=site.id, details={"moment": moment_key, "store": store, "label": label})
    db.session.commit()
    return kiosk


def revoke(kiosk: Kiosk, actor: StaffUser | str) -> None:
    """Its link stops working at once (a tablet's unsent answers are refused). Commits."""
    if kiosk.revoked_at is None:
        kiosk.revoked_at = utcnow()
        audit.record("kiosk.revoke", actor=actor, object_type="kiosk", object_id=kiosk.id,
                     site_id=kiosk.site_id, details={"store": kiosk.store, "label": kiosk.label})
        db.session.commit()


def for_token(raw: str) -> tuple[Kiosk, Site, Moment] | None:
    """The live kiosk a link names, with its site and active moment; None when the token is
    forged, garbled or too old, or the kiosk was revoked or its moment is gone or off."""
    try:
        data: dict[str, Any] = signing.loads(signing.app_keys(), signing.KIOSK, raw,
                                             int(current_app.config["KIOSK_MAX_AGE"]))
    except signing.TokenInvalid:
        return None
    ident = data.get("k")
    if not isinstance(ident, int) or isinstance(ident, bool) or not 0 < ident < 2**31:
        return None
    row = db.session.execute(
        select(Kiosk, Site, Moment).join(Site, Site.id == Kiosk.site_id)
        .join(Moment, (Moment.site_id == Kiosk.site_id) & (Moment.key == Kiosk.moment_key))
        .where(Kiosk.id == ident, Kiosk.revoked_at.is_(None), Moment.active.is_(True))
    ).first()
    return (row[0], row[1], row[2]) if row is not None else None


def valid_submission(value: Any) -> bool:
    return isinstance(value, str) and bool(_SUBMISSION.fullmatch(value))


def record(kiosk: Kiosk, site: Site, moment: Moment, submission_id: str, rating: int,
           locale: str) -> responses.Recorded:
    """One tap: an answer on the kiosk channel, once per (kiosk, submission id)."""
    prompt = Prompt(site=site, moment=moment, verified=False,
                    submission_id=f"k{kiosk.id}-{submission_id}", channel="kiosk",
                    detail=kiosk.store, locale=locale)
    return responses.record(prompt, rating, None)
