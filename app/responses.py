"""Rating scales and segments, and recording an answer: response, SKUs, case and outbox row
in one transaction, idempotent on the prompt's submission id."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import (
    Executable,
    Integer,
    Text,
    bindparam,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError

from . import voice as voices
from .extensions import db
from .jobs import on_commit, outbox
from .models import (
    Case,
    CaseEvent,
    Outbox,
    Response,
    ResponseSku,
    UTCDateTime,
    VoiceNote,
    new_public_id,
    utcnow,
)
from .prompts import Prompt

ROUTE_TOPIC = "route_response"


@dataclass(frozen=True)
class Scale:
    """A rating scale: its values in display order, what each shows and how it is spoken."""

    key: str
    values: tuple[int, ...]
    shown: dict[int, str]
    spoken: dict[int, str]
    low_label: str = ""
    high_label: str = ""

    def segment(self, rating: int) -> str:
        """NPS: promoter 9-10, passive 7-8, detractor 0-6; others positive/neutral/negative."""
        if self.key == "nps":
            return "promoter" if rating >= 9 else "passive" if rating >= 7 else "detractor"
        if self.key == "thumbs":
            return "positive" if rating == 1 else "negative"
        return "positive" if rating >= 4 else "neutral" if rating == 3 else "negative"


def N_(text: str) -> str:
    """Marks a customer-facing label for the catalogs; pages translate it when they show it."""
    return text


_FIVE = (1, 2, 3, 4, 5)
_CSAT_SPOKEN = (N_("1, very dissatisfied"), N_("2, dissatisfied"), N_("3, neutral"),
                N_("4, satisfied"), N_("5, very satisfied"))
_CES_SPOKEN = (N_("1, very difficult"), N_("2, difficult"), N_("3, neither easy nor difficult"),
               N_("4, easy"), N_("5, very easy"))
_NPS = {0: N_("0, not at all likely"), 10: N_("10, extremely likely")}
SCALES: dict[str, Scale] = {
    "csat": Scale("csat", _FIVE, {v: str(v) for v in _FIVE},
                  dict(zip(_FIVE, _CSAT_SPOKEN, strict=True)),
                  N_("Very dissatisfied"), N_("Very satisfied")),
    # Customer effort: "How easy was it to …?" asks about ease, not satisfaction.
    "ces": Scale("ces", _FIVE, {v: str(v) for v in _FIVE},
                 dict(zip(_FIVE, _CES_SPOKEN, strict=True)),
                 N_("Very difficult"), N_("Very easy")),
    "nps": Scale("nps", tuple(range(11)), {v: str(v) for v in range(11)},
                 {v: _NPS.get(v, str(v)) for v in range(11)},
                 N_("Not at all likely"), N_("Extremely likely")),
    "thumbs": Scale("thumbs", (1, 0), {1: "👍", 0: "👎"}, {1: N_("Yes"), 0: N_("No")}),
    "emoji": Scale("emoji", _FIVE, dict(zip(_FIVE, "😠🙁😐🙂😍", strict=True)),
                   dict(zip(_FIVE, (N_("Awful"), N_("Bad"), N_("Okay"), N_("Good"),
                                    N_("Great")), strict=True)),
                   N_("Awful"), N_("Great")),
}
# Segment families drive follow-up timing and tone: negative, neutral, positive.
FAMILY = {"detractor": "negative", "negative": "negative", "passive": "neutral",
          "neutral": "neutral", "promoter": "positive", "positive": "positive"}


class InvalidAnswer(ValueError):
    """An answer that breaks a rule; the message is safe to show to the customer."""


# C0 controls but tab, LF and CR, and DEL: never stored, mailed or echoed back into a page.
_COMMENT_CONTROLS = dict.fromkeys([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


def comment_echo(text: str) -> str:
    """`text` without control characters or lone surrogates: safe to put back into the form
    that refused it."""
    text = text.translate(_COMMENT_CONTROLS)
    return text.encode("utf-8", "replace").decode("utf-8")


def clean_comment(text: str | None, limit: int) -> str | None:
    """Normalise newlines and whitespace; refuse control characters (NUL included, not tab or
    newlines), lone surrogates and long text."""
    if text is None:
        return None
    if "\x00" in text:
        raise InvalidAnswer(_("The comment contains a NUL byte."))
    if len(text.translate(_COMMENT_CONTROLS)) != len(text):
        bad = next(c for c in text if ord(c) in _COMMENT_CONTROLS)
        code = f"{ord(bad):04X}"
        raise InvalidAnswer(_("The comment contains a control character (U+%(code)s).",
                              code=code))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidAnswer(_("The comment is not valid text.")) from None
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(text) > limit:
        raise InvalidAnswer(_("The comment is longer than %(limit)s characters.", limit=limit))
    return text or None


# What became of a comment sent for an answer that already exists (see _amend).
ADDED = "added"  # stored (appended), the answer is routed again
UNCHANGED = "unchanged"  # nothing new: no comment sent, or this very comment is there (a retry)
CLOSED = "closed"  # the team has started on the case: the answer no longer changes
FULL = "full"  # the comments together would pass COMMENT_TOTAL_PARTS x COMMENT_MAX_CHARS
COMMENT_TOTAL_PARTS = 4
COMMENT_SEPARATOR = "\n\n"


class Recorded(NamedTuple):
    """The answer stored for a prompt; `amended` says what became of a repeat's comment."""

    response: Response
    created: bool
    amended: str | None = None


def answered(prompt: Prompt) -> bool:
    """Whether this prompt's answer is stored already (a retry or a double click)."""
    return db.session.scalar(select(Response.id).where(
        Response.site_id == prompt.site.id,
        Response.submission_id == prompt.submission_id)) is not None


def record(prompt: Prompt, rating: int, comment: str | None,
           voice: VoiceNote | None = None) -> Recorded:
    """Store an answer once per submission id; returns (response, created, amended).

    A second submission for the same prompt returns the first response. Its comment, if any,
    is added while the case is still new (see _amend: appended, with the newer rating), and
    the amended response is routed again; `amended` says whether that happened and if not, why.

    `voice`, a staged voice note (app/voice.py), is claimed in the answer's transaction; when
    no answer is created with it (a repeat, a failure) its audio and row are deleted at once.
    """
    try:
        recorded = _record(prompt, rating, comment, voice)
    except BaseException:
        if voice is not None:
            voices.discard(voice)
        raise
    if voice is not None and not recorded.created:
        voices.discard(voice)
    return recorded


def _record(prompt: Prompt, rating: int, comment: str | None,
            voice: VoiceNote | None) -> Recorded:
    scale = SCALES[prompt.moment.scale]
    if rating not in scale.values:
        raise InvalidAnswer(_("Please choose one of the offered ratings."))
    if not prompt.moment.comment_enabled:
        comment = None
    now = utcnow()
    values = {
        "public_id": new_public_id(),
        "site_id": prompt.site.id,
        "moment_id": prompt.moment.id,
        "submission_id": prompt.submission_id,
        "scale": scale.key,
        "rating": rating,
        "segment": scale.segment(rating),
        "comment": comment,
        "channel": prompt.channel,
        "channel_detail": prompt.detail,
        "skus": list(prompt.skus),
        "order_ref": prompt.order,
        "customer_ref": prompt.customer,
        "customer_email": prompt.email,
        "has_voice": voice is not None,
        "verified": prompt.verified,
        "locale": prompt.locale,
        "page_url": prompt.page_url,
        "created_at": now,
        "updated_at": now,
    }
    session = db.session
    try:
        rid = _insert_answer(values, prompt.skus)  # its outbox row included
        if voice is not None:
            voices.claim(voice, rid)
        on_commit(ROUTE_TOPIC, rid)
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = session.scalar(
            select(Response).where(
                Response.site_id == prompt.site.id,
                Response.submission_id == prompt.submission_id,
            )
        )
        if existing is None:  # not our unique key: a real integrity fault
            raise
        amended = _amend(existing, rating, comment, scale)
        return Recorded(existing, False, amended)
    return Recorded(Response(id=rid, **values), True)


def add_comment(existing: Response, comment: str) -> str:
    """Add a comment to an answer (thank-you page) as _amend does; returns ADDED, UNCHANGED,
    CLOSED or FULL, and routes the answer again when ADDED."""
    return _amend(existing, existing.rating, comment, SCALES[existing.scale])


def add_contact(existing: Response, email: str) -> bool:
    """An anonymous customer leaves an address, with their consent, so the team can write
    to them about this answer (the thank-you page): stored once, only while the answer has
    none, with a `contact_given` event on the case's timeline. Returns whether it was
    stored; False leaves everything as it was (an address was there already)."""
    stored = db.session.execute(
        update(Response).where(Response.id == existing.id, Response.customer_email.is_(None))
        .values(customer_email=email, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]  # an UPDATE's CursorResult
    if stored != 1:
        db.session.rollback()
        return False
    case_id = db.session.scalar(select(Case.id).where(Case.response_id == existing.id))
    if case_id is not None:
        db.session.add(CaseEvent(case_id=case_id, kind="contact_given", actor="customer",
                                 data={"via": "thank-you page", "consent": True}))
    db.session.commit()
    return True


def can_amend(response_id: int) -> bool:
    """Whether comments may still be added to this answer: its case is still new."""
    status = db.session.scalar(select(Case.status).where(Case.response_id == response_id))
    return status == "new"


_ANSWER_COLUMNS = ("public_id", "site_id", "moment_id", "submission_id", "scale", "rating",
                   "segment", "comment", "channel", "channel_detail", "skus", "order_ref",
                   "customer_ref", "customer_email", "has_voice", "verified", "locale",
                   "page_url", "created_at", "updated_at")


@cache
def _answer_statements(dialect: str) -> tuple[Executable, ...]:
    """The insert statements of an answer, built once: constructing SQLAlchemy statements
    costs more than executing them. On PostgreSQL the four inserts are one statement
    (data-modifying CTEs): one round trip plus the commit."""
    responses_t, cases_t = Response.__table__, Case.__table__
    outbox_t, skus_t = Outbox.__table__, ResponseSku.__table__
    answer = insert(responses_t).values(
        {c: bindparam(c, type_=responses_t.c[c].type) for c in _ANSWER_COLUMNS})
    now = bindparam("created_at", type_=UTCDateTime)
    site = bindparam("site_id", type_=Integer)
    if dialect == "postgresql":
        r = answer.returning(responses_t.c.id).cte("r")
        case = insert(cases_t).from_select(
            ["response_id", "site_id", "status", "priority", "created_at", "updated_at", "tags",
             "cycle"],
            select(r.c.id, site, literal("new"), literal("routine"), now, now,
                   literal([], cases_t.c.tags.type), literal(0)),
        ).cte("c")
        box = insert(outbox_t).from_select(
            ["topic", "ref_id", "created_at", "attempts"],
            select(literal(ROUTE_TOPIC), r.c.id, now, literal(0)),
        ).cte("o")
        skus = insert(skus_t).from_select(
            ["response_id", "sku", "site_id"],
            select(r.c.id, func.unnest(bindparam("sku_list", type_=ARRAY(Text))), site),
        ).cte("s")
        return (select(r.c.id).add_cte(case, box, skus),)
    rid = bindparam("rid", type_=Integer)
    return (
        answer.returning(responses_t.c.id),
        insert(skus_t).values(response_id=rid, sku=bindparam("sku"), site_id=site),
        insert(cases_t).values(response_id=rid, site_id=site, status="new",
                               priority="routine", created_at=now, updated_at=now, tags=[],
                               cycle=0),
        insert(outbox_t).values(topic=ROUTE_TOPIC, ref_id=rid, created_at=now, attempts=0),
    )


def _insert_answer(values: dict[str, Any], skus: tuple[str, ...]) -> int:
    """Insert the response, its SKUs, its case and its outbox row; returns the response id.

    Core statements rather than the unit of work: this is the hot path and all four rows are
    known up front."""
    session = db.session
    statements = _answer_statements(session.get_bind().dialect.name)
    if len(statements) == 1:
        return session.execute(statements[0], {**values, "sku_list": list(skus)}).scalar_one()
    answer, sku_rows, case, box = statements
    rid = session.execute(answer, values).scalar_one()
    keys = {"rid": rid, "site_id": values["site_id"], "created_at": values["created_at"]}
    if skus:
        session.execute(sku_rows, [{**keys, "sku": sku} for sku in skus])
    session.execute(case, keys)
    session.execute(box, keys)
    return rid


def _amend(existing: Response, rating: int, comment: str | None, scale: Scale) -> str:
    """Add a comment to (and re-rate) an answer whose case nobody has touched yet.

    A later comment is APPENDED to an earlier one (a blank line between), not replacing it:
    the first words may already be in the team's alert, and the customer who comes back to
    add something ("and the box was wet") means "as well", not "instead". The rating sent with
    it becomes the answer's rating. Re-sending a comment that is already there (a retry or
    double click) changes nothing. Once the case is acknowledged or further, the answer is
    what the team works from and stays as it is (CLOSED); the total is capped (FULL).
    """
    if not comment:
        return UNCHANGED
    case = db.session.scalar(select(Case).where(Case.response_id == existing.id).with_for_update())
    if case is None or case.status != "new":
        db.session.rollback()
        return CLOSED
    db.session.refresh(existing)  # the comment as of the lock, not as first read
    current = existing.comment
    if current and (current == comment or current.endswith(COMMENT_SEPARATOR + comment)):
        db.session.rollback()
        return UNCHANGED
    combined = current + COMMENT_SEPARATOR + comment if current else comment
    if len(combined) > COMMENT_TOTAL_PARTS * current_app.config["COMMENT_MAX_CHARS"]:
        db.session.rollback()
        return FULL
    existing.comment = combined
    existing.rating = rating
    existing.segment = scale.segment(rating)
    outbox.rearm(ROUTE_TOPIC, existing.id)  # routed again once this commits
    db.session.commit()
    return ADDED
