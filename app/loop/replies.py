"""Root-cause categories and response templates: what a resolution records and what the
agent writes to the customer.

Categories are per site: fixed keys (what the dashboards count) with editable labels, the
defaults until a lead edits them. Templates are per site, key and locale; their placeholders
are filled by a plain substitution of four known names — never `str.format`, so a body like
`{case.__class__}` or `{0.__init__}` stays the text it is. The result is plain text: the
pages and emails escape it like any other text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from .. import audit
from ..extensions import db
from ..models import Case, Response, ResponseTemplate, Site

DEFAULT_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("product_defect", "Product defect"),
    ("packaging", "Packaging"),
    ("courier", "Courier"),
    ("pricing", "Pricing"),
    ("website", "Website"),
    ("staff", "Staff"),
    ("other", "Other"),
)
MAX_WHYS, MAX_WHY = 5, 500
MAX_LABEL, MAX_TITLE, MAX_BODY = 100, 200, 5000
PLACEHOLDERS = ("customer_name", "order", "sku", "case_link")
# A known placeholder with the comma and/or space before it, dropped when the value is empty:
# "Hello {customer_name}," becomes "Hello,", "Sorry, {customer_name}." becomes "Sorry.".
_PLACEHOLDER = re.compile(r"(,? ?)\{(" + "|".join(PLACEHOLDERS) + r")\}")
_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_LOCALE = re.compile(r"[a-z]{2,3}([-_][A-Za-z0-9]{2,8})?")


class ReplyError(ValueError):
    """Input a category list or template refuses (the message says why)."""


# -- root causes ---------------------------------------------------------------------------


def categories(site: Site) -> list[tuple[str, str]]:
    """The site's root-cause categories as (key, label), in order."""
    stored = site.root_cause_categories
    if not stored:
        return list(DEFAULT_CATEGORIES)
    return [(c["key"], c["label"]) for c in stored]


def check_whys(whys: list[str] | tuple[str, ...] | None) -> list[str] | None:
    """Trimmed non-empty "why" lines (at most 5 of at most 500 characters), None for none."""
    if whys is None:
        return None
    lines = [w.replace("\x00", "").strip() for w in whys]
    lines = [w for w in lines if w]
    if len(lines) > MAX_WHYS:
        raise ReplyError(f"at most {MAX_WHYS} whys")
    if any(len(w) > MAX_WHY for w in lines):
        raise ReplyError(f"a why has at most {MAX_WHY} characters")
    return lines or None


def check_category(site: Site, key: str | None) -> str | None:
    """`key` if it is one of the site's categories (None/empty for none)."""
    if not key:
        return None
    if key not in dict(categories(site)):
        raise ReplyError(f"unknown root-cause category {key[:64]!r}")
    return key


def set_labels(site: Site, labels: dict[str, str], actor: Any = None) -> list[tuple[str, str]]:
    """Change the labels of the site's categories (keys stay), audited; commits."""
    current = categories(site)
    out = []
    for key, _label in current:
        new = (labels.get(key) or "").strip()
        if not new:
            raise ReplyError(f"give the category {key} a label")
        if len(new) > MAX_LABEL:
            raise ReplyError(f"a label has at most {MAX_LABEL} characters")
        out.append((key, new))
    changed = {k: v for (k, v), (_, old) in zip(out, current, strict=True) if v != old}
    site.root_cause_categories = [{"key": k, "label": v} for k, v in out]
    audit.record("root_causes.update", actor=actor, object_type="site", object_id=site.id,
                 site_id=site.id, details={"changed": changed})
    db.session.commit()
    return out


# -- templates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What placeholders are filled with (empty when unknown)."""

    customer_name: str = ""
    order: str = ""
    sku: str = ""
    case_link: str = ""


def render(body: str, ctx: Context) -> str:
    """The body with its four placeholders filled; every other brace is left as written."""
    def fill(m: re.Match[str]) -> str:
        value = getattr(ctx, m.group(2))
        return f"{m.group(1)}{value}" if value else ""

    return _PLACEHOLDER.sub(fill, body)


def context_for(case: Case, response: Response) -> Context:
    """The placeholders' values for a case. No customer name is stored today (prompts carry a
    customer ref, not a name), so {customer_name} is left out."""
    from .notify import case_url

    return Context(order=response.order_ref or "", sku=", ".join(response.skus or []),
                   case_link=case_url(case.id))


SAMPLE = Context(customer_name="Alex", order="1001", sku="TV-1",
                 case_link="https://feedback.example/admin/cases/42")


def for_case(site: Site, locale: str | None) -> list[ResponseTemplate]:
    """The site's templates for a case in `locale`: per key the one in that locale, else the
    one in the site's default locale (keys in neither are left out), ordered by title."""
    wanted = [x for x in dict.fromkeys((locale, site.default_locale)) if x]
    rows = db.session.scalars(select(ResponseTemplate).where(
        ResponseTemplate.site_id == site.id, ResponseTemplate.locale.in_(wanted))).all()
    best: dict[str, ResponseTemplate] = {}
    for row in sorted(rows, key=lambda r: wanted.index(r.locale)):
        best.setdefault(row.key, row)
    return sorted(best.values(), key=lambda r: (r.title.lower(), r.key))


def list_templates(site_id: int) -> list[ResponseTemplate]:
    """All the site's templates, by key and locale."""
    return list(db.session.scalars(select(ResponseTemplate).where(
        ResponseTemplate.site_id == site_id).order_by(ResponseTemplate.key,
                                                       ResponseTemplate.locale)))


def check_template(site_id: int, key: str, locale: str, title: str, body: str,
                   ident: int | None = None) -> dict[str, str]:
    """Validated fields of a template (ReplyError says what is wrong)."""
    key, locale = key.strip(), locale.strip()
    title, body = title.replace("\x00", "").strip(), body.replace("\x00", "").strip()
    if not _KEY.fullmatch(key):
        raise ReplyError("key: lowercase letters, digits, _ . - (up to 64), as rules name it")
    if not _LOCALE.fullmatch(locale):
        raise ReplyError("locale: a language code such as en, tr or pt-BR")
    if not title or len(title) > MAX_TITLE:
        raise ReplyError(f"title: 1 to {MAX_TITLE} characters")
    if not body or len(body) > MAX_BODY:
        raise ReplyError(f"body: 1 to {MAX_BODY} characters")
    clash = db.session.scalar(select(ResponseTemplate.id).where(
        ResponseTemplate.site_id == site_id, ResponseTemplate.key == key,
        ResponseTemplate.locale == locale))
    if clash is not None and clash != ident:
        raise ReplyError(f"the site has a template {key} in {locale} already")
    return {"key": key, "locale": locale, "title": title, "body": body}


def save_template(site_id: int, fields: dict[str, str], template: ResponseTemplate | None = None,
                  actor: Any = None) -> ResponseTemplate:
    """Create (template None) or update a template with checked fields, audited; commits."""
    fields = check_template(site_id, fields.get("key", ""), fields.get("locale", ""),
                            fields.get("title", ""), fields.get("body", ""),
                            template.id if template else None)
    action = "template.update" if template else "template.create"
    if template is None:
        template = ResponseTemplate(site_id=site_id, **fields)
        db.session.add(template)
    else:
        for name, value in fields.items():
            setattr(template, name, value)
    db.session.flush()
    audit.record(action, actor=actor, object_type="template", object_id=template.id,
                 site_id=site_id, details={"key": fields["key"], "locale": fields["locale"]})
    db.session.commit()
    return template


def delete_template(template: ResponseTemplate, actor: Any = None) -> None:
    """Delete a template, audited; commits."""
    audit.record("template.delete", actor=actor, object_type="template", object_id=template.id,
                 site_id=template.site_id, details={"key": template.key,
                                                    "locale": template.locale})
    db.session.delete(template)
    db.session.commit()
