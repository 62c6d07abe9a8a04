"""Rating scales and segments, and recording an answer: response, SKUs, case and outbox row
in one transaction, idempotent on the prompt's submission id."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from . import queue
from .extensions import db
from .models import Case, Outbox, Response, ResponseSku, utcnow
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


_FIVE = (1, 2, 3, 4, 5)
_CSAT = ("Very dissatisfied", "Dissatisfied", "Neutral", "Satisfied", "Very satisfied")
_NPS = {0: "0, not at all likely", 10: "10, extremely likely"}
SCALES: dict[str, Scale] = {
    "csat": Scale("csat", _FIVE, {v: str(v) for v in _FIVE},
                  {v: f"{v}, {_CSAT[v - 1].lower()}" for v in _FIVE},
                  "Very dissatisfied", "Very satisfied"),
    "nps": Scale("nps", tuple(range(11)), {v: str(v) for v in range(11)},
                 {v: _NPS.get(v, str(v)) for v in range(11)},
                 "Not at all likely", "Extremely likely"),
    "thumbs": Scale("thumbs", (1, 0), {1: "👍", 0: "👎"}, {1: "Yes", 0: "No"}),
    "emoji": Scale("emoji", _FIVE, dict(zip(_FIVE, "😠🙁😐🙂😍", strict=True)),
                   dict(zip(_FIVE, ("Awful", "Bad", "Okay", "Good", "Great"), strict=True)),
                   "Awful", "Great"),
}
# Segment families drive follow-up timing and tone: negative, neutral, positive.
FAMILY = {"detractor": "negative", "negative": "negative", "passive": "neutral",
          "neutral": "neutral", "promoter": "positive", "positive": "positive"}


class InvalidAnswer(ValueError):
    """An answer that breaks a rule; the message is safe to show to the customer."""


def clean_comment(text: str | None, limit: int) -> str | None:
    """Normalise newlines and whitespace; refuse NUL bytes, lone surrogates and long text."""
    if text is None:
        return None
    if "\x00" in text:
        raise InvalidAnswer("The comment contains a NUL byte.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidAnswer("The comment is not valid text.") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(text) > limit:
        raise InvalidAnswer(f"The comment is longer than {limit} characters.")
    return text or None


def record(prompt: Prompt, rating: int, comment: str | None) -> tuple[Response, bool]:
    """Store an answer once per submission id; returns (response, created).

    A second submission for the same prompt returns the first response, amending it only when
    it adds what the first lacked (a one-click rating from an email, then the comment) while the
    case is still untouched; the amended response is routed again.
    """
    scale = SCALES[prompt.moment.scale]
    if rating not in scale.values:
        raise InvalidAnswer("Please choose one of the offered ratings.")
    if not prompt.moment.comment_enabled:
        comment = None
    response = Response(
        site_id=prompt.site.id,
        moment_id=prompt.moment.id,
        submission_id=prompt.submission_id,
        scale=scale.key,
        rating=rating,
        segment=scale.segment(rating),
        comment=comment,
        channel=prompt.channel,
        skus=list(prompt.skus),
        order_ref=prompt.order,
        customer_ref=prompt.customer,
        verified=prompt.verified,
        locale=prompt.locale,
        page_url=prompt.page_url,
    )
    session = db.session
    try:
        session.add(response)
        session.flush()  # the response id, for the rows below
        session.add_all(
            [ResponseSku(response_id=response.id, sku=s, site_id=prompt.site.id)
             for s in prompt.skus]
            + [Case(response_id=response.id, site_id=prompt.site.id),
               Outbox(topic=ROUTE_TOPIC, ref_id=response.id)]
        )
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
        if _amend(existing, rating, comment, scale):
            queue.dispatch(ROUTE_TOPIC, existing.id)
        return existing, False
    queue.dispatch(ROUTE_TOPIC, response.id)
    return response, True


def add_comment(existing: Response, comment: str) -> bool:
    """Add a comment to an answer that has none (thank-you page), then route it again."""
    if _amend(existing, existing.rating, comment, SCALES[existing.scale]):
        queue.dispatch(ROUTE_TOPIC, existing.id)
        return True
    return False


def _amend(existing: Response, rating: int, comment: str | None, scale: Scale) -> bool:
    """Add a comment to (and re-rate) an answer whose case nobody has touched yet."""
    if not comment or existing.comment:
        return False
    case = db.session.scalar(select(Case).where(Case.response_id == existing.id).with_for_update())
    if case is None or case.status != "new":
        db.session.rollback()
        return False
    existing.comment = comment
    existing.rating = rating
    existing.segment = scale.segment(rating)
    db.session.execute(
        Outbox.__table__.update()
        .where(Outbox.topic == ROUTE_TOPIC, Outbox.ref_id == existing.id)
        .values(done_at=None, failed_at=None, attempts=0, last_enqueued_at=None,
                created_at=utcnow())
    )
    db.session.commit()
    return True
