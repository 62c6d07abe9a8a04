"""Email over SMTP: rendering localized text + HTML templates and sending one stored message.

Headers are built with the stdlib's `email.message.EmailMessage` under the SMTP policy, which
refuses CR/LF in header values; on top of that every header value passes `_header()`, so a site
name or an address can never add a header (no header injection).
"""

from __future__ import annotations

import re
import smtplib
import ssl
import sys
from email.headerregistry import Address
from email.message import EmailMessage as MimeMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import Any

from babel import Locale, UnknownLocaleError
from flask import current_app, render_template
from flask_babel import force_locale

from ..models import EmailMessage

_ADDR = re.compile(r"^[^@\s<>\"',;()\[\]\\]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")


def valid_address(addr: Any) -> bool:
    """A plain mailbox (local@domain.tld), nothing a header could be smuggled through."""
    return isinstance(addr, str) and len(addr) <= 254 and bool(_ADDR.match(addr))


def _header(value: str, limit: int = 250) -> str:
    """One line of header text: control characters (CR, LF, NUL...) become spaces."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", value).strip()[:limit]


def babel_locale(value: str | None) -> str:
    """A locale Babel knows for a stored tag ("tr-TR" → "tr_TR", unknown → its language,
    else "en")."""
    tag = (value or "en").replace("-", "_")
    for candidate in (tag, tag.split("_")[0]):
        try:
            return str(Locale.parse(candidate))
        except (ValueError, UnknownLocaleError):
            continue
    return "en"


def render(kind: str, locale: str, **context: Any) -> tuple[str, str, str]:
    """(subject, text, html) of template `email/<kind>` in the reader's locale."""
    with force_locale(babel_locale(locale)):
        text = render_template(f"email/{kind}.txt", **context)
        html = render_template(f"email/{kind}.html", **context)
        subject = render_template(f"email/{kind}.subject.txt", **context)
    return _header(subject, 250), text, html


def build(msg: EmailMessage, from_name: str | None = None, reply_to: str | None = None
          ) -> MimeMessage:
    """The MIME message of a stored email: multipart/alternative, stable Message-ID."""
    cfg = current_app.config
    mime = MimeMessage(policy=SMTP)
    sender = cfg["MAIL_FROM"]
    mime["From"] = (Address(_header(from_name, 80), addr_spec=sender) if from_name
                    else sender)
    mime["To"] = ", ".join(a for a in msg.recipients if valid_address(a))
    if reply_to and valid_address(reply_to):
        mime["Reply-To"] = reply_to
    mime["Subject"] = _header(msg.subject)
    mime["Date"] = formatdate(localtime=False)
    # Deterministic, so a receiving system can drop a duplicate if a send is ever repeated.
    mime["Message-ID"] = msg.message_id
    mime["Auto-Submitted"] = "auto-generated"
    mime.set_content(msg.body_text)
    mime.add_alternative(msg.body_html, subtype="html")
    return mime


def send(mime: MimeMessage) -> None:
    """Hand one message to the configured SMTP server; raises smtplib/OSError on failure.
    MAIL_BACKEND = "console" (what `make run` configures) prints it to stderr instead."""
    cfg = current_app.config
    if cfg.get("MAIL_BACKEND") == "console":  # development: show it, send nothing
        heads = "".join(f"{h}: {mime[h]}\n" for h in ("From", "To", "Reply-To", "Subject")
                        if mime[h])
        text = mime.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        sys.stderr.write(f"--- email (console backend, not sent) ---\n{heads}\n{text}---\n")
        return
    host, port = cfg["MAIL_SERVER"], int(cfg["MAIL_PORT"])
    timeout = float(cfg["MAIL_TIMEOUT"])
    if cfg["MAIL_USE_SSL"]:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout,
                                              context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    with smtp:
        if cfg["MAIL_USE_TLS"] and not cfg["MAIL_USE_SSL"]:
            smtp.starttls(context=ssl.create_default_context())
        if cfg.get("MAIL_USERNAME"):
            smtp.login(cfg["MAIL_USERNAME"], cfg.get("MAIL_PASSWORD") or "")
        smtp.send_message(mime)
