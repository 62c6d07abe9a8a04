"""Dashboard aggregates in SQL: volume, average rating, NPS, CSAT, negative-experience rate,
top negative SKUs and moments, sample comments. Every function takes a period and slices."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, TypeVar

from sqlalchemy import Select, case, func, or_, select

from .extensions import db
from .models import Case, Moment, Response, ResponseSku

NEGATIVE = ("detractor", "negative")
POSITIVE = ("promoter", "positive")


@dataclass
class Summary:
    """The figures of one period."""

    volume: int = 0
    by_scale: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    negative: int = 0
    nps: float | None = None
    csat: float | None = None
    ces: float | None = None

    @property
    def negative_rate(self) -> float | None:
        """Share of answers in a negative segment (detractor or negative)."""
        return self.negative / self.volume if self.volume else None


Q = TypeVar("Q", bound=Select)  # any select, whatever its columns


def _scoped(q: Q, site_id: int, start: datetime, end: datetime, team: str | None) -> Q:
    q = q.where(Response.site_id == site_id, Response.created_at >= start,
                Response.created_at < end)
    if team is not None:
        q = q.join(Case, Case.response_id == Response.id).where(Case.team == team)
    return q


def summary(site_id: int, start: datetime, end: datetime, team: str | None = None) -> Summary:
    """Volume, average per scale, NPS (promoters − detractors, in points), CSAT (share of 4–5
    on the csat scale, in %), CES (share of 4–5, "easy", on the ces scale, in %) and negative
    count for answers created in [start, end)."""
    q = _scoped(select(
        Response.scale,
        func.count().label("n"),
        func.avg(Response.rating).label("avg"),
        func.sum(case((Response.segment.in_(NEGATIVE), 1), else_=0)).label("neg"),
        func.sum(case((Response.segment.in_(POSITIVE), 1), else_=0)).label("pos"),
    ).select_from(Response), site_id, start, end, team).group_by(Response.scale)
    out = Summary()
    for row in db.session.execute(q).mappings():
        n, neg, pos = int(row["n"]), int(row["neg"] or 0), int(row["pos"] or 0)
        out.volume += n
        out.negative += neg
        out.by_scale[row["scale"]] = {"count": n, "average": float(row["avg"]),
                                      "positive": pos, "negative": neg}
        if row["scale"] == "nps":
            out.nps = 100.0 * (pos - neg) / n
        if row["scale"] == "csat":
            out.csat = 100.0 * pos / n
        if row["scale"] == "ces":  # customer effort: share of easy answers (4-5)
            out.ces = 100.0 * pos / n
    return out


def top_negative(site_id: int, start: datetime, end: datetime, by: str, team: str | None = None,
                 limit: int = 5) -> list[tuple[str, int, int]]:
    """(key, negative answers, all answers) for the SKUs or moments with the most negative
    answers in the period, most first."""
    key = ResponseSku.sku if by == "sku" else Moment.key
    neg = func.sum(case((Response.segment.in_(NEGATIVE), 1), else_=0))
    q = select(key, neg.label("neg"), func.count().label("n")).select_from(Response)
    if by == "sku":
        q = q.join(ResponseSku, ResponseSku.response_id == Response.id)
    else:
        q = q.join(Moment, Moment.id == Response.moment_id)
    q = _scoped(q, site_id, start, end, team).group_by(key).having(neg > 0)
    q = q.order_by(neg.desc(), key).limit(limit)
    return [(r[0], int(r[1]), int(r[2])) for r in db.session.execute(q)]


class Sample(NamedTuple):
    """A quoted answer: what the customer typed and, after it, what their voice note said."""

    rating: int
    segment: str
    text: str
    spoken: bool  # the text holds a voice note's transcript


def sample_comments(site_id: int, start: datetime, end: datetime, team: str | None = None,
                    negative: int = 3, positive: int = 2) -> list[Sample]:
    """The latest few negative and positive answers of the period that say something, typed
    or spoken (a voice note's transcript counts as a comment)."""
    out: list[Sample] = []
    for segments, n in ((NEGATIVE, negative), (POSITIVE, positive)):
        q = _scoped(select(Response.rating, Response.segment, Response.comment,
                           Response.transcript), site_id, start, end, team).where(
            Response.segment.in_(segments),
            or_(Response.comment.is_not(None), Response.transcript.is_not(None)))
        for rating, segment, comment, transcript in db.session.execute(
                q.order_by(Response.created_at.desc()).limit(n)):
            text = "\n\n".join(t for t in (comment, transcript) if t)
            out.append(Sample(rating, segment, text, bool(transcript)))
    return out
