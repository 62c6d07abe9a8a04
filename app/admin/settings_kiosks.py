"""Settings: kiosks (owners and leads). A kiosk is an in-store tablet asking one moment; its
link works until it is revoked here (app/kiosks.py validates, audits and commits)."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response as WerkzeugResponse

from .. import kiosks
from ..extensions import db
from ..models import Kiosk, Moment, Site
from ..security import public_url
from . import bp
from .permissions import get_scoped_or_404, requires


def _page(site: Site, status: int = 200, error: str | None = None,
          values: dict[str, str] | None = None) -> tuple[str, int]:
    rows = db.session.scalars(select(Kiosk).where(Kiosk.site_id == site.id)
                              .order_by(Kiosk.revoked_at.is_not(None), Kiosk.id.desc())).all()
    moments = db.session.scalars(select(Moment).where(Moment.site_id == site.id)
                                 .order_by(Moment.key)).all()
    links = {k.id: public_url("embed.kiosk", token=kiosks.token(k))
             for k in rows if k.revoked_at is None}
    return render_template("admin/settings_kiosks.html", site=site, kiosks=rows, links=links,
                           moments=moments, error=error,
                           values=values or {"moment": "kiosk"}), status


def _kiosk(site: Site, kiosk_id: int) -> Kiosk:
    kiosk = db.session.get(Kiosk, kiosk_id)
    if kiosk is None or kiosk.site_id != site.id:
        abort(404)
    return kiosk


@bp.get("/sites/<int:site_id>/settings/kiosks")
@requires("kiosks.manage")
def settings_kiosks(site_id: int) -> tuple[str, int]:
    """The site's kiosks with their links, and a form to add one."""
    return _page(get_scoped_or_404(Site, site_id))


@bp.post("/sites/<int:site_id>/settings/kiosks/new")
@requires("kiosks.manage")
def settings_kiosks_add(site_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: add a kiosk (moment, store id, name)."""
    site = get_scoped_or_404(Site, site_id)
    values = {f: request.form.get(f, "") for f in ("moment", "store", "label")}
    try:
        kiosk = kiosks.create(site, values["moment"], values["store"], values["label"],
                              current_user._get_current_object())  # type: ignore[attr-defined]
    except kiosks.KioskError as exc:
        db.session.rollback()
        return _page(site, 400, str(exc), values)
    flash(f"Kiosk {kiosk.label} added: open its link on the tablet.", "ok")
    return redirect(url_for("admin.settings_kiosks", site_id=site.id) + f"#kiosk-{kiosk.id}")


@bp.post("/sites/<int:site_id>/settings/kiosks/<int:kiosk_id>/revoke")
@requires("kiosks.manage")
def settings_kiosks_revoke(site_id: int, kiosk_id: int) -> WerkzeugResponse:
    """POST: revoke a kiosk; its link stops working at once."""
    site = get_scoped_or_404(Site, site_id)
    kiosk = _kiosk(site, kiosk_id)
    kiosks.revoke(kiosk, current_user._get_current_object())  # type: ignore[attr-defined]
    flash(f"Kiosk {kiosk.label} revoked: its link no longer works.", "ok")
    return redirect(url_for("admin.settings_kiosks", site_id=site.id))
