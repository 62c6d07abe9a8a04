"""Which language a page speaks. Customer-facing pages (the prompt, thank-you, invalid-link and
verification pages) speak the customer's: the locale the prompt carries (the verified token's,
else the widget's `data-lang`, else the host page's `lang`, else the browser's language, else
the site's default: app/prompts.py normalises that order into the token), and for a page
without a prompt (a broken link) the browser's Accept-Language. Everything else — the admin,
the JSON API — stays in English: `select_locale` answers "en" unless a view chose with `use`.
Emails choose per message (app/loop/mail.py `render`).
"""

from __future__ import annotations

import flask_babel
from flask import g, request

# The languages with a complete customer-facing catalog (app/translations); English is the
# source language.
LANGUAGES = ("en", "tr", "ru", "et")


def supported(tag: str | None) -> str | None:
    """The supported language of a BCP 47 / POSIX tag ("tr-TR" → "tr"), else None."""
    if not isinstance(tag, str):
        return None
    lang = tag.replace("_", "-").split("-")[0].lower()
    return lang if lang in LANGUAGES else None


def use(tag: str | None, default: str | None = None) -> str:
    """Speak `tag`'s language for the rest of this request; when it is not one we speak, the
    browser's best supported one, else `default`'s (a site's default locale), else English.
    Returns the language chosen."""
    lang = (supported(tag) or request.accept_languages.best_match(LANGUAGES)
            or supported(default) or "en")
    g.locale = lang
    flask_babel.refresh()  # drop a locale Flask-Babel may have cached for this request
    return lang


def select_locale() -> str:
    """Flask-Babel's locale selector: what a view chose with `use`, else English."""
    return str(g.get("locale") or "en")
