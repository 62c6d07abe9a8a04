"""Settings pages (issue 8, point 4): the site, secret rotation and the embed helper, moments,
webhook endpoints with their delivery log. Views stay thin: every change goes through the
functions the CLI uses (app/sites.py, app/loop/webhooks.py, app/loop/notify.py), every read
through the permission helpers, every change is a POST with CSRF and an audit row written in
the change's own transaction.

URLs: /admin/sites/<site_id>/settings/<section> (the navigation contract with the teams,
rules, templates and root-cause pages: /work/notes/settings-nav.md).
"""

from __future__ import annotations

import json
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from werkzeug.wrappers import Response as WerkzeugResponse

from .. import audit
from .. import sites as site_ops
from ..extensions import db
from ..loop import notify, webhooks
from ..models import DeliveryAttempt, Moment, Site, Team, WebhookDelivery, WebhookEndpoint
from ..responses import SCALES
from ..security import public_url
from ..signing import VERIFIED_PROMPT
from . import bp
from .permissions import ACTIONS, get_scoped_or_404, requires, role_on, sites_for

# The sub-navigation: (endpoint, label, action), in this order; a page shows in it once its
# endpoint exists and the person's role allows its action.
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("admin.settings_site", "Site", "site.settings"),
    ("admin.settings_branding", "Branding", "site.settings"),
    ("admin.settings_moments", "Moments", "moments.manage"),
    ("admin.settings_webhooks", "Webhooks", "webhooks.manage"),
    ("admin.settings_kiosks", "Kiosks", "kiosks.manage"),
    ("admin.settings_teams", "Teams", "teams.manage"),
    ("admin.settings_rules", "Rules", "rules.manage"),
    ("admin.settings_templates", "Templates", "templates.manage"),
    ("admin.settings_root_causes", "Root causes", "site.settings"),
    ("admin.settings_staff", "Staff", "staff.manage"),
    ("admin.settings_audit", "Audit log", "audit.read"),
)
SITE_FORM = [f for f in site_ops.SITE_FIELDS if f != "webhooks_allow_private"]
# One-click ratings of each scale, as Python source for the token recipe.
SCALE_RANGE_CODE = {"nps": "range(0, 11)", "csat": "range(1, 6)", "ces": "range(1, 6)",
                    "emoji": "range(1, 6)", "thumbs": "(1, 0)"}
LOG_LIMIT = 50
# The languages the customer pages speak (app/i18n.py), each with its own question field.
QUESTION_LANGUAGES = (("en", "English"), ("tr", "Turkish"), ("ru", "Russian"),
                      ("et", "Estonian"))


@bp.app_context_processor
def _settings_navigation() -> dict[str, Any]:
    """`settings_sections(site_id)` and `settings_home()` for the templates."""

    def settings_sections(site_id: int) -> list[tuple[str, str, str, bool]]:
        role = role_on(None, site_id)
        out = []
        for endpoint, label, action in SECTIONS:
            if endpoint in current_app.view_functions and role in ACTIONS[action]:
                url = url_for(endpoint, site_id=site_id)
                here = request.path == url or request.path.startswith(url + "/")
                out.append((url, label, endpoint, here))
        return out

    def settings_home() -> str | None:
        if not current_user.is_authenticated:
            return None
        return url_for("admin.settings_index") if _settings_sites() else None

    return {"settings_sections": settings_sections, "settings_home": settings_home}


def _settings_sites() -> list[Site]:
    ids: set[int] = set()
    for action in {action for _e, _l, action in SECTIONS}:
        ids.update(sites_for(None, action))
    if not ids:
        return []
    return list(db.session.scalars(select(Site).where(Site.id.in_(ids))
                                   .order_by(Site.name, Site.id)))


def _site(site_id: int) -> Site:
    return get_scoped_or_404(Site, site_id)


def _audit(action: str, site: Site, object_type: str, object_id: Any = None,
           **details: Any) -> None:
    audit.record(action, object_type=object_type, object_id=object_id, site_id=site.id,
                 details=json.loads(json.dumps(details, default=str)))


@bp.get("/settings")
@requires("responses.view")
def settings_index() -> WerkzeugResponse | str:
    """The settings of the person's one site, or a choice when they manage several."""
    managed = _settings_sites()
    if not managed:
        abort(403)
    if len(managed) == 1:
        return redirect(_first_section(managed[0].id))
    return render_template("admin/settings_index.html",
                           sites=[(s, _first_section(s.id)) for s in managed])


def _first_section(site_id: int) -> str:
    role = role_on(None, site_id)
    for endpoint, _label, action in SECTIONS:
        if endpoint in current_app.view_functions and role in ACTIONS[action]:
            return url_for(endpoint, site_id=site_id)
    return url_for("admin.settings_index")


# -- site ------------------------------------------------------------------------------------


def _form_values(site: Site) -> dict[str, str]:
    out = {}
    for field in SITE_FORM:
        value = getattr(site, field)
        out[field] = "\n".join(value) if isinstance(value, list) else (
            "" if value is None else str(value))
    return out


def _embed(site: Site) -> list[dict[str, str]]:
    """For each active moment: the script tag and the verified-token recipe."""
    widget = public_url("embed.widget")
    prompt = public_url("embed.prompt", token="TOKEN").removesuffix("TOKEN")
    out = []
    moments = db.session.scalars(select(Moment).where(Moment.site_id == site.id,
                                                      Moment.active.is_(True))
                                 .order_by(Moment.key)).all()
    for m in moments:
        tag = (f'<script src="{widget}" async\n        data-site="{site.public_key}" '
               f'data-moment="{m.key}"></script>')
        recipe = (
            "from itsdangerous import URLSafeTimedSerializer\n\n"
            f'signer = URLSafeTimedSerializer(SITE_SIGNING_SECRET, salt="{VERIFIED_PROMPT}")\n'
            f'token = signer.dumps({{"site": "{site.public_key}", "moment": "{m.key}", '
            '"channel": "email",\n'
            '                      "order": "1001", "customer": "c-42", '
            f'"locale": "{site.default_locale}"}})\n'
            f'link = f"{prompt}{{token}}"\n'
            f'ratings = [f"{{link}}?rating={{n}}" for n in {SCALE_RANGE_CODE[m.scale]}]'
            f"  # one-click links: {m.scale}")
        out.append({"key": m.key, "scale": m.scale, "tag": tag, "recipe": recipe})
    return out


def _site_page(site: Site, values: dict[str, str] | None = None,
               errors: dict[str, str] | None = None, new_secret: str | None = None,
               status: int = 200) -> tuple[str, int, dict[str, str]]:
    user = current_user._get_current_object()  # type: ignore[attr-defined]
    role = role_on(user, site.id)
    html = render_template(
        "admin/settings_site.html", site=site, values=values or _form_values(site),
        errors=errors or {}, new_secret=new_secret, embed=_embed(site),
        can_rotate=role in ACTIONS["site.keys"], secrets_count=len(site.signing_secrets))
    # A page with a new secret must not be kept by the browser or a proxy.
    return html, status, {"Cache-Control": "no-store"}


@bp.get("/sites/<int:site_id>/settings/site")
@requires("site.settings")
def settings_site(site_id: int) -> tuple[str, int, dict[str, str]]:
    """Site settings, secret rotation (owners) and the embed helper."""
    return _site_page(_site(site_id))


@bp.post("/sites/<int:site_id>/settings/site")
@requires("site.settings")
def settings_site_save(site_id: int) -> WerkzeugResponse | tuple[str, int, dict[str, str]]:
    """POST: save the site settings (friendly errors, nothing saved, when one is invalid)."""
    site = _site(site_id)
    form = request.form
    values = {f: form.get(f, "") for f in SITE_FORM}
    values_in: dict[str, Any] = dict(values)
    values_in["webhooks_allow_private"] = form.get("webhooks_allow_private") == "y"
    try:
        changed = site_ops.update_settings(site, values_in)
    except site_ops.SettingsError as exc:
        db.session.rollback()
        return _site_page(site, values, exc.errors, status=400)
    if changed:
        _audit("site.settings", site, "site", site.id,
               changed={f: {"from": old, "to": new} for f, (old, new) in changed.items()})
        db.session.commit()
        flash("Settings saved.", "ok")
    else:
        flash("Nothing changed.", "ok")
    return redirect(url_for("admin.settings_site", site_id=site.id))


@bp.post("/sites/<int:site_id>/settings/site/rotate")
@requires("site.keys")
def settings_site_rotate(site_id: int) -> tuple[str, int, dict[str, str]]:
    """POST: a new signing secret, shown on this response only; `drop_old` ends the others."""
    site = _site(site_id)
    drop_old = request.form.get("drop_old") == "y"
    _audit("site.secret_rotated", site, "site", site.id, drop_old=drop_old)
    secret = site_ops.rotate_secret(site, drop_old=drop_old)  # commits the audit row too
    return _site_page(site, new_secret=secret)


# -- moments ---------------------------------------------------------------------------------


def _moments_page(site: Site, errors: dict[str, dict[str, str]] | None = None,
                  values: dict[str, dict[str, Any]] | None = None,
                  status: int = 200) -> tuple[str, int]:
    moments = db.session.scalars(select(Moment).where(Moment.site_id == site.id)
                                 .order_by(Moment.key)).all()
    return render_template("admin/settings_moments.html", site=site, moments=moments,
                           scales=list(SCALES), errors=errors or {},
                           values=values or {}, question_languages=QUESTION_LANGUAGES), status


def _moment_form() -> dict[str, Any]:
    form = request.form
    values: dict[str, Any] = {f: form.get(f, "") for f in
                              ("key", "question", "scale", "sampling_rate", "cooldown_hours")}
    for flag in ("comment_enabled", "voice_enabled", "active"):
        values[flag] = form.get(flag) == "y"
    values["questions"] = {lang: form.get(f"question_{lang}", "")
                           for lang, _name in QUESTION_LANGUAGES}
    return values


@bp.get("/sites/<int:site_id>/settings/moments")
@requires("moments.manage")
def settings_moments(site_id: int) -> tuple[str, int]:
    """The site's moments, each editable, and a form for a new one."""
    return _moments_page(_site(site_id))


@bp.post("/sites/<int:site_id>/settings/moments/new")
@requires("moments.manage")
def settings_moments_add(site_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: add a moment."""
    site = _site(site_id)
    values = _moment_form()
    try:
        moment, changed = site_ops.save_moment(site, None, values)
    except site_ops.SettingsError as exc:
        db.session.rollback()
        return _moments_page(site, {"new": exc.errors}, {"new": values}, 400)
    _audit("moment.create", site, "moment", moment.id, key=moment.key,
           values={f: new for f, (_o, new) in changed.items()})
    db.session.commit()
    flash(f"Moment {moment.key} added.", "ok")
    return redirect(url_for("admin.settings_moments", site_id=site.id, open=moment.id)
                    + f"#m-{moment.id}")


@bp.post("/sites/<int:site_id>/settings/moments/<int:moment_id>")
@requires("moments.manage")
def settings_moments_save(site_id: int, moment_id: int) -> WerkzeugResponse | tuple[str, int]:
    """POST: change a moment."""
    site = _site(site_id)
    moment = get_scoped_or_404(Moment, moment_id)
    if moment.site_id != site.id:
        abort(404)
    values = _moment_form()
    try:
        moment, changed = site_ops.save_moment(site, moment, values)
    except site_ops.SettingsError as exc:
        db.session.rollback()
        return _moments_page(site, {str(moment_id): exc.errors}, {str(moment_id): values}, 400)
    if changed:
        _audit("moment.update", site, "moment", moment.id, key=moment.key,
               changed={f: {"from": old, "to": new} for f, (old, new) in changed.items()})
        db.session.commit()
    flash(f"Moment {moment.key} saved." if changed else "Nothing changed.", "ok")
    return redirect(url_for("admin.settings_moments", site_id=site.id, open=moment.id)
                    + f"#m-{moment.id}")


# -- webhooks --------------------------------------------------------------------------------


def _webhooks_page(site: Site, error: str | None = None, values: dict[str, Any] | None = None,
                   status: int = 200, created: WebhookEndpoint | None = None
                   ) -> tuple[str, int]:
    teams = db.session.scalars(select(Team).where(Team.site_id == site.id)
                               .order_by(Team.key)).all()
    return render_template("admin/settings_webhooks.html", site=site,
                           endpoints=webhooks.endpoints_of(site), teams=teams,
                           events=webhooks.EVENTS, error=error,
                           values=values or {"events": list(webhooks.EVENTS)},
                           created=created), status


def _endpoint(site: Site, endpoint_id: int) -> WebhookEndpoint:
    endpoint = get_scoped_or_404(WebhookEndpoint, endpoint_id)
    if endpoint.site_id != site.id:
        abort(404)
    return endpoint


@bp.get("/sites/<int:site_id>/settings/webhooks")
@requires("webhooks.manage")
def settings_webhooks(site_id: int) -> tuple[str, int]:
    """The site's webhook endpoints with their state and pending deliveries; add one."""
    return _webhooks_page(_site(site_id))


@bp.post("/sites/<int:site_id>/settings/webhooks/new")
@requires("webhooks.manage")
def settings_webhooks_add(site_id: int) -> tuple[str, int] | tuple[str, int, dict[str, str]]:
    """POST: add an endpoint (its URL checked like `flask webhooks add`)."""
    site = _site(site_id)
    form = request.form
    url = form.get("url", "").strip()
    events = form.getlist("events")
    team_raw = form.get("team", "")
    description = form.get("description", "").strip()[:200] or None
    values = {"url": url, "events": events, "team": team_raw, "description": description}
    team_id = None
    if team_raw:
        team_id = db.session.scalar(select(Team.id).where(
            Team.site_id == site.id, Team.id == int(team_raw))) if team_raw.isdigit() else None
        if team_id is None:
            return _webhooks_page(site, "Unknown team.", values, 400)
    if not url:
        return _webhooks_page(site, "The URL is required.", values, 400)
    _audit("webhook.create", site, "webhook", None, url=url, events=events or "all",
           team_id=team_id)
    try:
        endpoint = webhooks.create_endpoint(site, url, events, team_id, description)
    except webhooks.EndpointError as exc:
        db.session.rollback()
        return _webhooks_page(site, str(exc), values, 400)
    # Its signing secret is shown on this response only (as `flask webhooks add` prints it).
    html, _status = _webhooks_page(site, created=endpoint)
    return html, 200, {"Cache-Control": "no-store"}


def _endpoint_action(name: str) -> None:
    def view(site_id: int, endpoint_id: int) -> WerkzeugResponse:
        site = _site(site_id)
        endpoint = _endpoint(site, endpoint_id)
        _audit(f"webhook.{name}", site, "webhook", endpoint.id, url=endpoint.url)
        if name == "remove":
            _ep, deleted = webhooks.remove_endpoint(endpoint.id)
            flash(f"Endpoint #{endpoint_id} removed with {deleted} "
                  f"deliver{'y' if deleted == 1 else 'ies'}.", "ok")
        else:
            _ep, pending = webhooks.set_active(endpoint.id, name == "enable")
            flash(f"Endpoint #{endpoint_id} {name}d ({pending} pending).", "ok")
        return redirect(url_for("admin.settings_webhooks", site_id=site.id))

    view.__name__ = f"settings_webhooks_{name}"
    view.__doc__ = f"POST: {name} a webhook endpoint (app/loop/webhooks.py, as the CLI)."
    bp.post(f"/sites/<int:site_id>/settings/webhooks/<int:endpoint_id>/{name}",
            endpoint=view.__name__)(requires("webhooks.manage")(view))


for _name in ("disable", "enable", "remove"):
    _endpoint_action(_name)


@bp.get("/sites/<int:site_id>/settings/webhooks/<int:endpoint_id>")
@requires("webhooks.manage")
def settings_webhooks_log(site_id: int, endpoint_id: int) -> tuple[str, int]:
    """The delivery log of one endpoint: its latest deliveries with every attempt."""
    site = _site(site_id)
    endpoint = _endpoint(site, endpoint_id)
    deliveries = db.session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
        .order_by(WebhookDelivery.id.desc()).limit(LOG_LIMIT)).all()
    attempts: dict[int, list[DeliveryAttempt]] = {d.id: [] for d in deliveries}
    if deliveries:
        for a in db.session.scalars(select(DeliveryAttempt).where(
                DeliveryAttempt.delivery_id.in_(list(attempts)))
                .order_by(DeliveryAttempt.id)):
            attempts[a.delivery_id].append(a)
    total = db.session.scalar(select(func.count(WebhookDelivery.id)).where(
        WebhookDelivery.endpoint_id == endpoint.id)) or 0
    return render_template("admin/settings_webhook_log.html", site=site, endpoint=endpoint,
                           deliveries=deliveries, attempts=attempts, total=total,
                           limit=LOG_LIMIT), 200


@bp.post("/sites/<int:site_id>/settings/webhooks/<int:endpoint_id>/deliveries/"
         "<int:delivery_id>/redeliver")
@requires("webhooks.manage")
def settings_webhooks_redeliver(site_id: int, endpoint_id: int,
                                delivery_id: int) -> WerkzeugResponse:
    """POST: send a delivery again (same webhook-id and body, a fresh series of attempts)."""
    site = _site(site_id)
    endpoint = _endpoint(site, endpoint_id)
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.endpoint_id != endpoint.id:
        abort(404)
    _audit("webhook.redeliver", site, "webhook_delivery", delivery.id, endpoint=endpoint.id,
           event=delivery.event)
    notify.redeliver(delivery.id)  # commits the audit row with it
    flash(f"Delivery #{delivery_id} queued again.", "ok")
    return redirect(url_for("admin.settings_webhooks_log", site_id=site.id,
                            endpoint_id=endpoint.id))
