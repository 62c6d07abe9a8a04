"""Settings: response templates and root-cause categories (owners and leads).

Thin views over app/loop/replies.py (which validates, audits and commits). Every URL carries
the site id: `requires` answers 404 for a site the person is not a member of, and a template
id is looked up within that site only, so another site's template is 404 as well.
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response as WerkzeugResponse

from ..extensions import db
from ..loop import replies
from ..models import Case, Response, ResponseTemplate, Site
from . import bp
from .permissions import requires

FIELDS = ("key", "locale", "title", "body")


def _site(site_id: int) -> Site:
    site = db.session.get(Site, site_id)
    if site is None:
        abort(404)
    return site


def _template(site_id: int, template_id: int) -> ResponseTemplate:
    """The site's template with this id; 404 for a missing one or another site's."""
    template = db.session.scalar(select(ResponseTemplate).where(
        ResponseTemplate.id == template_id, ResponseTemplate.site_id == site_id))
    if template is None:
        abort(404)
    return template


def _sample(site: Site) -> tuple[replies.Context, str]:
    """Placeholder values for previews: the site's newest case, else made-up values."""
    row = db.session.execute(
        select(Case, Response).join(Response, Response.id == Case.response_id)
        .where(Case.site_id == site.id).order_by(Case.id.desc()).limit(1)).first()
    if row is None:
        return replies.SAMPLE, "a made-up case"
    case, response = row
    ctx = replies.context_for(case, response)
    return ctx, f"case #{case.id}"


def _page(site: Site, form: dict[str, str], editing: ResponseTemplate | None = None,
          error: str | None = None, preview: str | None = None,
          status: int = 200) -> tuple[str, int]:
    _ctx, sample_name = _sample(site)
    return render_template(
        "admin/settings_templates.html", site=site, templates=replies.list_templates(site.id),
        form=form, editing=editing, error=error, preview=preview, sample_name=sample_name,
        placeholders=replies.PLACEHOLDERS), status


def _form() -> dict[str, str]:
    return {name: request.form.get(name, "") for name in FIELDS}


def _save(site: Site, editing: ResponseTemplate | None) -> WerkzeugResponse | tuple[str, int]:
    form = _form()
    if "preview" in request.form:
        ctx, _name = _sample(site)
        return _page(site, form, editing, preview=replies.render(form["body"], ctx))
    try:
        template = replies.save_template(site.id, form, editing,
                                         actor=current_user._get_current_object())  # type: ignore[attr-defined]
    except replies.ReplyError as exc:
        db.session.rollback()
        return _page(site, form, editing, error=str(exc), status=400)
    flash(f"Template {template.key} ({template.locale}) saved.", "ok")
    return redirect(url_for("admin.settings_templates", site_id=site.id))


@bp.route("/sites/<int:site_id>/settings/templates", methods=["GET", "POST"])
@requires("templates.manage")
def settings_templates(site_id: int) -> WerkzeugResponse | tuple[str, int]:
    """The site's response templates; POST creates one (or previews it with `preview`)."""
    site = _site(site_id)
    if request.method == "POST":
        return _save(site, None)
    return _page(site, {"key": "", "locale": site.default_locale, "title": "", "body": ""})


@bp.route("/sites/<int:site_id>/settings/templates/<int:template_id>", methods=["GET", "POST"])
@requires("templates.manage")
def settings_template_edit(site_id: int, template_id: int) -> WerkzeugResponse | tuple[str, int]:
    """One template's edit form with its preview; POST saves it (or previews the edit)."""
    site = _site(site_id)
    template = _template(site_id, template_id)
    if request.method == "POST":
        return _save(site, template)
    ctx, _name = _sample(site)
    return _page(site, {name: getattr(template, name) for name in FIELDS}, template,
                 preview=replies.render(template.body, ctx))


@bp.post("/sites/<int:site_id>/settings/templates/<int:template_id>/delete")
@requires("templates.manage")
def settings_template_delete(site_id: int, template_id: int) -> WerkzeugResponse:
    """POST: delete a template."""
    template = _template(site_id, template_id)
    name = f"{template.key} ({template.locale})"
    replies.delete_template(template, actor=current_user._get_current_object())  # type: ignore[attr-defined]
    flash(f"Template {name} deleted.", "ok")
    return redirect(url_for("admin.settings_templates", site_id=site_id))


@bp.route("/sites/<int:site_id>/settings/root-causes", methods=["GET", "POST"])
@requires("site.settings")
def settings_root_causes(site_id: int) -> WerkzeugResponse | tuple[str, int]:
    """The site's root-cause categories; POST changes their labels (the keys stay)."""
    site = _site(site_id)
    error = None
    labels = dict(replies.categories(site))
    if request.method == "POST":
        labels = {key: request.form.get(f"label-{key}", "") for key in labels}
        try:
            replies.set_labels(site, labels, actor=current_user._get_current_object())  # type: ignore[attr-defined]
        except replies.ReplyError as exc:
            db.session.rollback()
            error = str(exc)
        else:
            flash("Root-cause categories saved.", "ok")
            return redirect(url_for("admin.settings_root_causes", site_id=site_id))
    return render_template("admin/settings_root_causes.html", site=site,
                           labels=labels, error=error), 400 if error else 200
