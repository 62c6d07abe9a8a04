"""The prompt form: a plain WTForms form (no CSRF cookie: the signed token protects it)."""

from __future__ import annotations

from typing import Any

from flask_babel import gettext, lazy_gettext, ngettext
from wtforms import BooleanField, EmailField, Form, RadioField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, ValidationError

from ..responses import InvalidAnswer, Scale, clean_comment, comment_echo


class _CleanComment:
    def __init__(self, limit: int):
        self.limit = limit

    def __call__(self, form: Form, field: Any) -> None:
        try:
            field.data = clean_comment(field.data, self.limit)
        except InvalidAnswer as exc:
            if isinstance(field.data, str):  # the page shows the text again: never a NUL
                field.data = comment_echo(field.data)
            raise ValidationError(str(exc)) from None


# WTForms' own messages a customer can meet, for the catalogs (their text is WTForms').
_WTFORMS_MESSAGES = (lazy_gettext("Not a valid choice."),
                     lazy_gettext("Invalid Choice: could not coerce."))


class _BabelTranslations:
    """WTForms' built-in messages through our catalogs, in the request's language."""

    def gettext(self, text: str) -> str:
        return gettext(text)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return ngettext(singular, plural, n)


class _BabelForm(Form):
    """A customer-facing form: WTForms' messages in the request's language."""

    class Meta:
        def get_translations(self, form: Form) -> _BabelTranslations:
            return _BabelTranslations()


class CommentForm(_BabelForm):
    """Just the comment (the thank-you page's "anything to add?")."""

    comment = TextAreaField("Comment")
    # Honeypot: hidden from people and assistive tech; bots that fill it are not stored.
    website = StringField("Leave this empty")

    @classmethod
    def build(cls, limit: int, formdata: Any = None, **kw: Any) -> CommentForm:
        """A form whose comment validator knows the length limit."""
        form = cls(formdata, **kw)
        form.comment.validators = [_CleanComment(limit)]
        return form


class PromptForm(CommentForm):
    """One rating from the moment's scale plus the optional comment."""

    rating = RadioField("Rating", coerce=int, validate_choice=True,
                        validators=[InputRequired(lazy_gettext("Please choose a rating."))])

    @classmethod
    def for_scale(cls, scale: Scale, limit: int, formdata: Any = None, **kw: Any) -> PromptForm:
        """Bind the rating choices of `scale`, their labels in the request's language."""
        form = cls.build(limit, formdata, **kw)
        form.rating.choices = [(v, gettext(scale.spoken[v])) for v in scale.values]
        return form


class _Address:
    def __call__(self, form: Form, field: Any) -> None:
        from ..loop.mail import valid_address

        field.data = (field.data or "").strip()
        if not valid_address(field.data):
            raise ValidationError(gettext("Please enter a valid email address."))


class ContactForm(_BabelForm):
    """"May we contact you?": an address and the explicit consent to use it for this answer
    (offered to an anonymous customer after a negative answer)."""

    contact_email = EmailField("Email", validators=[_Address()])
    consent = BooleanField("Consent", validators=[DataRequired(lazy_gettext(
        "Please tick the box if we may contact you."))])
