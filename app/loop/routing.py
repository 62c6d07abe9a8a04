"""Routing of a response into its case: the site's rules decide team, priority, tags and SLA
overrides; the site's targets and the segment's follow-up timing give each stage's due time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..models import Case, Moment, Response, Site
from ..responses import FAMILY
from . import rules as rules_mod


@dataclass(frozen=True)
class Route:
    """What routing decided for one response."""

    priority: str
    team: str
    ack_due_at: datetime
    ack_late_due_at: datetime
    followup_due_at: datetime
    close_due_at: datetime
    loop_due_at: datetime
    tags: list[str] = field(default_factory=list)
    notify: bool = False
    template: str | None = None
    matched: list[str] = field(default_factory=list)


def followup_hours(site: Site, segment: str) -> int:
    """PRODUCT.md: detractors within 24 h, passives 48 h, promoters 7 days (site-editable)."""
    return {
        "negative": site.followup_negative_hours,
        "neutral": site.followup_neutral_hours,
        "positive": site.followup_positive_hours,
    }[FAMILY[segment]]


def decide(response: Response, moment: Moment, site: Site,
           rules: list[dict] | None = None, transcript: str | None = None) -> Route:
    """Routing decision from the response (and its voice note's transcript), its moment, the
    site's rules and SLA targets."""
    if rules is None:
        rules = rules_mod.for_site(site.id)
    d = rules_mod.evaluate(rules, response, moment, transcript)
    sla = d.sla
    start = response.created_at

    def due(key: str, default: int) -> datetime:
        return start + timedelta(hours=sla.get(key, default))

    return Route(
        priority=d.priority or "routine",
        team=d.team or rules_mod.FALLBACK_TEAM,
        ack_due_at=due("ack_hours", site.sla_ack_hours),
        ack_late_due_at=due("ack_late_hours", site.sla_ack_late_hours),
        followup_due_at=due("followup_hours", followup_hours(site, response.segment)),
        close_due_at=due("close_hours", site.sla_close_hours),
        loop_due_at=due("loop_hours", site.sla_loop_hours),
        tags=d.tags,
        notify=d.notify,
        template=d.template,
        matched=d.matched,
    )


def apply(case: Case, route: Route) -> None:
    """Write a routing decision onto the case."""
    case.priority = route.priority
    case.team = route.team
    case.tags = list(route.tags)
    case.template = route.template
    case.ack_due_at = route.ack_due_at
    case.ack_late_due_at = route.ack_late_due_at
    case.followup_due_at = route.followup_due_at
    case.close_due_at = route.close_due_at
    case.loop_due_at = route.loop_due_at
