"""Routing of a response into its case: priority, owning team and the due time of each stage.

This is the built-in playbook; per-site rules (the rules engine) come on top of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..models import Case, Moment, Response, Site
from ..responses import FAMILY

# Words that make an answer critical whatever its rating (PRODUCT.md: refund, broken, never
# arrived), in the four shipped languages.
CRITICAL_TERMS = (
    "refund", "broken", "never arrived", "not arrived", "never received", "not received",
    "damaged", "defective", "charged twice", "double charged", "wrong item", "missing",
    "scam", "fraud", "cancel", "complaint", "lawyer", "chargeback",
    "iade", "kırık", "bozuk", "gelmedi", "возврат", "сломан", "не пришл", "не доставлен",
    "raha tagasi", "katki", "ei saabunud",
)
_CRITICAL = re.compile(r"\b(?:" + "|".join(re.escape(t) for t in CRITICAL_TERMS) + r")",
                       re.IGNORECASE)

# Default owners: first match on moment or comment wins, else support.
TEAM_DEFAULTS: tuple[tuple[str, frozenset[str], re.Pattern[str] | None], ...] = (
    ("logistics", frozenset({"delivery"}),
     re.compile(r"\b(?:deliver|courier|shipping|shipment|parcel|package|never arrived|late)",
                re.IGNORECASE)),
    ("sales", frozenset(), re.compile(r"\b(?:price|pricing|expensive|discount|coupon)",
                                      re.IGNORECASE)),
)


@dataclass(frozen=True)
class Route:
    """What routing decided for one response."""

    priority: str
    team: str
    ack_due_at: datetime
    followup_due_at: datetime
    close_due_at: datetime
    loop_due_at: datetime


def decide(response: Response, moment: Moment, site: Site) -> Route:
    """Pure routing decision from the response, its moment and its site's SLA targets."""
    comment = response.comment or ""
    family = FAMILY[response.segment]
    critical = family == "negative" or bool(_CRITICAL.search(comment))
    team = "support"
    for name, moments, pattern in TEAM_DEFAULTS:
        if moment.key in moments or (pattern is not None and pattern.search(comment)):
            team = name
            break
    followup_hours = {
        "negative": site.followup_negative_hours,
        "neutral": site.followup_neutral_hours,
        "positive": site.followup_positive_hours,
    }[family]
    start = response.created_at
    return Route(
        priority="critical" if critical else "routine",
        team=team,
        ack_due_at=start + timedelta(hours=site.sla_ack_hours),
        followup_due_at=start + timedelta(hours=followup_hours),
        close_due_at=start + timedelta(hours=site.sla_close_hours),
        loop_due_at=start + timedelta(hours=site.sla_loop_hours),
    )


def apply(case: Case, route: Route) -> None:
    """Write a routing decision onto the case."""
    case.priority = route.priority
    case.team = route.team
    case.ack_due_at = route.ack_due_at
    case.followup_due_at = route.followup_due_at
    case.close_due_at = route.close_due_at
    case.loop_due_at = route.loop_due_at
