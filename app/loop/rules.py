"""Routing rules as data: validation, evaluation, JSON/YAML import and export, the defaults.

A rule is `{"name", "enabled", "conditions": {...}, "actions": {...}, "continue": bool}`.
All conditions of a rule must hold (a list means any of its values). Rules are tried in
order; the first that matches decides, unless it says `"continue": true`, in which case its
actions apply and later rules may add to them. A value an earlier matching rule set is kept
(first match wins); tags accumulate and `notify` is true if any matching rule asks for it.

Conditions: segment (promoter/passive/detractor/positive/neutral/negative; a family name
matches its segments), rating {min, max}, moment, channel, sku (exact or glob, e.g. "TV-*"),
keywords (case-insensitive, matched at word starts), regex (Python syntax), language
(the text's detected language, else the answer's locale), has_voice. Keywords, regex and
language read the answer's text: its typed comment and its voice note's transcript.
Actions: team, priority (critical/high/routine/low), sla {ack_hours, ack_late_hours,
followup_hours, close_hours, loop_hours}, tags, notify, template.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import yaml
from sqlalchemy import delete, select

from ..extensions import db
from ..models import Moment, Response, RoutingRule, Team
from ..responses import FAMILY

SEGMENTS = set(FAMILY)
PRIORITIES = ("critical", "high", "routine", "low")
SLA_KEYS = ("ack_hours", "ack_late_hours", "followup_hours", "close_hours", "loop_hours")
CONDITION_KEYS = ("segment", "rating", "moment", "channel", "sku", "keywords", "regex",
                  "language", "has_voice")
ACTION_KEYS = ("team", "priority", "sla", "tags", "notify", "template")
MAX_RULES = 200
_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

# Words that make an answer critical whatever its rating (PRODUCT.md: refund, broken, never
# arrived), in the four shipped languages.
CRITICAL_TERMS = [
    "refund", "broken", "never arrived", "not arrived", "never received", "not received",
    "damaged", "defective", "charged twice", "double charged", "wrong item", "missing",
    "scam", "fraud", "cancel", "complaint", "lawyer", "chargeback",
    "iade", "kırık", "bozuk", "gelmedi", "возврат", "сломан", "не пришл", "не доставлен",
    "raha tagasi", "katki", "ei saabunud",
]
DELIVERY_TERMS = ["deliver", "courier", "shipping", "shipment", "parcel", "package",
                  "never arrived", "late", "kargo", "доставк", "курьер", "tarne", "kuller"]
PRICE_TERMS = ["price", "pricing", "expensive", "discount", "coupon", "fiyat", "pahalı",
               "цена", "дорого", "hind", "kallis"]

# Page only for what matters: critical words and the lowest ratings alert the team at once;
# every other negative answer gets the 24 h follow-up (by segment) and SLA reminders, no page.
# A thumbs down ("Did you find what you were looking for?") is not a lowest rating.
DEFAULT_RULES: list[dict[str, Any]] = [
    {"name": "Critical words raise priority", "conditions": {"keywords": CRITICAL_TERMS},
     "actions": {"priority": "critical", "notify": True, "tags": ["critical-words"]},
     "continue": True},
    {"name": "Lowest NPS ratings (0-2) are critical",
     "conditions": {"segment": ["detractor"], "rating": {"max": 2}},
     "actions": {"priority": "critical", "notify": True, "tags": ["lowest-rating"]},
     "continue": True},
    {"name": "Lowest CSAT and emoji rating (1) is critical",
     "conditions": {"segment": ["negative"], "rating": {"min": 1, "max": 1}},
     "actions": {"priority": "critical", "notify": True, "tags": ["lowest-rating"]},
     "continue": True},
    {"name": "Other negative answers (NPS 3-6, CSAT/emoji 2, thumbs down): high, "
             "24 h follow-up, no alert",
     "conditions": {"segment": ["negative"]}, "actions": {"priority": "high"},
     "continue": True},
    {"name": "Delivery complaints to logistics",
     "conditions": {"moment": ["delivery"], "segment": ["negative", "neutral"]},
     "actions": {"team": "logistics", "tags": ["delivery"]}},
    {"name": "Delivery words to logistics", "conditions": {"keywords": DELIVERY_TERMS},
     "actions": {"team": "logistics", "tags": ["delivery"]}},
    {"name": "Price to sales", "conditions": {"keywords": PRICE_TERMS},
     "actions": {"team": "sales", "tags": ["price"]}},
    {"name": "Detractors to support", "conditions": {"segment": ["negative"]},
     "actions": {"team": "support"}},
]
FALLBACK_TEAM = "support"


def valid_key(key: str) -> bool:
    """A team or template key: lowercase letters, digits, `_ . -`, up to 64 characters."""
    return isinstance(key, str) and bool(_KEY.match(key))


class RuleError(ValueError):
    """A rule that cannot be saved; the message names the rule and the field."""


def _str_list(value: Any, name: str, limit: int = 200, item_limit: int = 200) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > limit:
        raise RuleError(f"{name} must be a non-empty list of at most {limit} strings")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip() or len(item) > item_limit:
            raise RuleError(f"{name} holds an empty, non-text or too long value: {item!r}")
        out.append(item.strip())
    return out


def _hours(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 24 * 90:
        raise RuleError(f"sla.{name} must be a whole number of hours between 1 and 2160")
    return value


def validate(raw: Any) -> dict[str, Any]:
    """Check one rule and return its normal form; raises RuleError."""
    if not isinstance(raw, dict):
        raise RuleError("a rule must be an object")
    unknown = set(raw) - {"name", "enabled", "conditions", "actions", "continue"}
    if unknown:
        raise RuleError(f"unknown rule fields: {', '.join(sorted(unknown))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise RuleError("name must be a non-empty string of at most 200 characters")
    cond_in, act_in = raw.get("conditions") or {}, raw.get("actions") or {}
    if not isinstance(cond_in, dict) or not isinstance(act_in, dict):
        raise RuleError("conditions and actions must be objects")
    for given, known, what in ((cond_in, CONDITION_KEYS, "conditions"),
                               (act_in, ACTION_KEYS, "actions")):
        if set(given) - set(known):
            raise RuleError(f"unknown {what}: {', '.join(sorted(set(given) - set(known)))}")
    if not act_in:
        raise RuleError("a rule needs at least one action")
    cond: dict[str, Any] = {}
    for key in ("moment", "channel", "sku", "keywords", "language"):
        if key in cond_in:
            cond[key] = _str_list(cond_in[key], key)
    if "language" in cond:  # compared with bare ISO 639-1 codes ("ru", not "RU" or "ru-RU")
        cond["language"] = list(dict.fromkeys(v.lower().replace("_", "-").split("-")[0]
                                              for v in cond["language"]))
    if "segment" in cond_in:
        cond["segment"] = _str_list(cond_in["segment"], "segment")
        bad = set(cond["segment"]) - SEGMENTS
        if bad:
            raise RuleError(f"unknown segments: {', '.join(sorted(bad))}")
    if "rating" in cond_in:
        r = cond_in["rating"]
        if not isinstance(r, dict) or set(r) - {"min", "max"} or not r or any(
            isinstance(v, bool) or not isinstance(v, int) for v in r.values()
        ):
            raise RuleError("rating must be {min, max} with whole numbers")
        cond["rating"] = {k: r[k] for k in ("min", "max") if k in r}
        if cond["rating"].get("min", 0) > cond["rating"].get("max", 10**9):
            raise RuleError("rating.min is greater than rating.max: the rule could never match")
    if "regex" in cond_in:
        pattern = cond_in["regex"]
        if not isinstance(pattern, str) or not pattern or len(pattern) > 500:
            raise RuleError("regex must be a pattern of at most 500 characters")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise RuleError(f"regex does not compile: {exc}") from None
        cond["regex"] = pattern
    if "has_voice" in cond_in:
        if not isinstance(cond_in["has_voice"], bool):
            raise RuleError("has_voice must be true or false")
        cond["has_voice"] = cond_in["has_voice"]
    act: dict[str, Any] = {}
    if "team" in act_in:
        if not valid_key(act_in["team"]):
            raise RuleError("team must be a team key (lowercase letters, digits, _ . -)")
        act["team"] = act_in["team"]
    if "priority" in act_in:
        if act_in["priority"] not in PRIORITIES:
            raise RuleError(f"priority must be one of {', '.join(PRIORITIES)}")
        act["priority"] = act_in["priority"]
    if "sla" in act_in:
        sla = act_in["sla"]
        if not isinstance(sla, dict) or not sla or set(sla) - set(SLA_KEYS):
            raise RuleError(f"sla must be an object with some of {', '.join(SLA_KEYS)}")
        act["sla"] = {k: _hours(v, k) for k, v in sla.items()}
    if "tags" in act_in:
        act["tags"] = _str_list(act_in["tags"], "tags", 20, 64)
    if "notify" in act_in:
        if not isinstance(act_in["notify"], bool):
            raise RuleError("notify must be true or false")
        act["notify"] = act_in["notify"]
    if "template" in act_in:
        if not valid_key(act_in["template"]):
            raise RuleError("template must be a template key")
        act["template"] = act_in["template"]
    for key in ("enabled", "continue"):
        if key in raw and not isinstance(raw[key], bool):
            raise RuleError(f"{key} must be true or false")
    return {"name": name.strip(), "enabled": raw.get("enabled", True), "conditions": cond,
            "actions": act, "continue": raw.get("continue", False)}


def validate_all(raw: Any) -> list[dict[str, Any]]:
    """Check a whole rule list (the import format); errors name the rule's position."""
    if isinstance(raw, dict) and "rules" in raw:
        raw = raw["rules"]
    if not isinstance(raw, list) or len(raw) > MAX_RULES:
        raise RuleError(f"expected a list of at most {MAX_RULES} rules")
    out = []
    for i, item in enumerate(raw, 1):
        try:
            out.append(validate(item))
        except RuleError as exc:
            raise RuleError(f"rule {i}: {exc}") from None
    return out


# -- evaluation --------------------------------------------------------------------------------

@lru_cache(maxsize=512)
def _words(terms: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(t) for t in terms) + r")", re.IGNORECASE)


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


@dataclass
class Decision:
    """What the matching rules decided; unset values fall back to the playbook defaults."""

    team: str | None = None
    priority: str | None = None
    sla: dict[str, int] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    notify: bool = False
    template: str | None = None
    matched: list[str] = field(default_factory=list)

    def take(self, rule: dict[str, Any]) -> None:
        """Merge a matching rule's actions (earlier values win; tags and notify add up)."""
        act = rule["actions"]
        self.team = self.team or act.get("team")
        self.priority = self.priority or act.get("priority")
        for key, hours in act.get("sla", {}).items():
            self.sla.setdefault(key, hours)
        self.tags += [t for t in act.get("tags", []) if t not in self.tags]
        self.notify = self.notify or bool(act.get("notify"))
        self.template = self.template or act.get("template")
        self.matched.append(rule["name"])


def answer_text(comment: str | None, transcript: str | None) -> str:
    """What the customer said: the typed comment and the voice note's transcript, one
    paragraph each, so keyword and language rules treat a spoken word like a typed one."""
    return "\n\n".join(t for t in (comment, transcript) if t)


def matches(cond: dict[str, Any], response: Response, moment: Moment,
            language: Callable[[], str | None], text: str | None = None) -> bool:
    """True when every condition holds for the response (`text`: see answer_text; the
    comment alone when not given)."""
    comment = (response.comment or "") if text is None else text
    if "segment" in cond and not (
        response.segment in cond["segment"] or FAMILY[response.segment] in cond["segment"]
    ):
        return False
    rating = cond.get("rating")
    if rating and not (rating.get("min", -10**9) <= response.rating <= rating.get("max", 10**9)):
        return False
    if "moment" in cond and moment.key not in cond["moment"]:
        return False
    if "channel" in cond and response.channel not in cond["channel"]:
        return False
    if "sku" in cond and not any(
        fnmatch.fnmatchcase(sku, pattern) for sku in response.skus or () for pattern in cond["sku"]
    ):
        return False
    if "keywords" in cond and not _words(tuple(cond["keywords"])).search(comment):
        return False
    if "regex" in cond and not _regex(cond["regex"]).search(comment):
        return False
    if "has_voice" in cond and bool(response.has_voice) != cond["has_voice"]:
        return False
    return not ("language" in cond and language() not in cond["language"])


def detect_language(text: str | None, fallback: str) -> str:
    """The comment's language (ISO 639-1) when detection is confident, else the locale's."""
    base = (fallback or "en").split("-")[0].lower()
    if not text or len(text) < 12:
        return base
    from langdetect import DetectorFactory, LangDetectException, detect_langs

    DetectorFactory.seed = 0  # deterministic
    try:
        best = detect_langs(text)[0]
    except LangDetectException:
        return base
    return best.lang.split("-")[0] if best.prob >= 0.8 else base


def evaluate(rules: Iterable[dict[str, Any]], response: Response, moment: Moment,
             transcript: str | None = None) -> Decision:
    """Run the ordered rules over a response (and its voice note's transcript, if any)."""
    decision = Decision()
    lang: list[str] = []
    text = answer_text(response.comment, transcript)

    def language() -> str:
        if not lang:
            lang.append(detect_language(text, response.locale))
        return lang[0]

    for rule in rules:
        if rule.get("enabled", True) and matches(rule["conditions"], response, moment, language,
                                                 text):
            decision.take(rule)
            if not rule.get("continue"):
                break
    return decision


# -- storage, import and export ----------------------------------------------------------------

def as_dict(rule: RoutingRule) -> dict[str, Any]:
    """A stored rule in the import/export format."""
    return {"name": rule.name, "enabled": rule.enabled, "conditions": rule.conditions,
            "actions": rule.actions, "continue": rule.continue_matching}


def for_site(site_id: int) -> list[dict[str, Any]]:
    """The site's rules in order, as dicts (new sites start with DEFAULT_RULES)."""
    rows = db.session.scalars(
        select(RoutingRule).where(RoutingRule.site_id == site_id).order_by(RoutingRule.position)
    ).all()
    return [as_dict(r) for r in rows]


def replace(site_id: int, rules: list[dict[str, Any]]) -> int:
    """Validate, then replace all of a site's rules in one transaction; returns the count."""
    clean = validate_all(rules)
    db.session.execute(delete(RoutingRule).where(RoutingRule.site_id == site_id))
    for pos, rule in enumerate(clean):
        db.session.add(RoutingRule(
            site_id=site_id, position=pos, name=rule["name"], enabled=rule["enabled"],
            conditions=rule["conditions"], actions=rule["actions"],
            continue_matching=rule["continue"],
        ))
    db.session.commit()
    return len(clean)


def missing_teams(site_id: int, rules: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """(rule name, team key) of each rule that routes to a team the site does not have (the
    CLI import and the settings page warn about them; such cases fall back in alerts)."""
    known = set(db.session.scalars(select(Team.key).where(Team.site_id == site_id)))
    return [(r["name"], r["actions"]["team"]) for r in rules
            if r["actions"].get("team") and r["actions"]["team"] not in known]


def parse(text: str, fmt: str | None = None) -> Any:
    """Parse an import file (JSON or YAML; YAML is a superset, so it reads both)."""
    try:
        return json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise RuleError(f"cannot parse the file: {exc}") from None


def dump(rules: list[dict[str, Any]], fmt: str = "yaml") -> str:
    """Serialise rules for export."""
    doc = {"rules": rules}
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
