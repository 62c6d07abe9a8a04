"""Routing rules: evaluation semantics, the playbook defaults through routing, validation,
the `flask rules`/`flask teams` commands and one routed answer per database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from app.extensions import db
from app.loop import routing
from app.loop import rules as rules_mod
from app.loop.rules import DEFAULT_RULES, Decision, RuleError, evaluate, validate, validate_all
from app.models import Case, CaseEvent, Moment, Response, Site

from .conftest import make_site, public_prompt

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RUSSIAN = "Заказ пришёл поздно, коробка была повреждена, очень недоволен обслуживанием"
TURKISH = "Sipariş çok geç geldi ve kutu hasarlıydı, hiç memnun kalmadım"
ENGLISH = "Thank you, everything arrived on time and works great"


def answer(rating: int = 1, segment: str = "negative", comment: str | None = None, *,
           channel: str = "web", skus: list[str] | None = None, locale: str = "en",
           has_voice: bool = False, scale: str = "csat", site_id: int | None = None) -> Response:
    """An unsaved response, as routing sees it."""
    return Response(rating=rating, segment=segment, comment=comment, channel=channel,
                    skus=list(skus or []), locale=locale, has_voice=has_voice, scale=scale,
                    site_id=site_id, created_at=T0)


def rule(name: str, conditions: dict[str, Any] | None = None, **actions: Any) -> dict[str, Any]:
    """A validated rule; `cont=True` sets "continue", `enabled=False` disables it."""
    cont, enabled = actions.pop("cont", False), actions.pop("enabled", True)
    return validate({"name": name, "enabled": enabled, "conditions": conditions or {},
                     "actions": actions or {"tags": ["x"]}, "continue": cont})


def hit(conditions: dict[str, Any], response: Response, moment: str = "checkout") -> bool:
    """Whether a single rule with these conditions matches."""
    return evaluate([rule("r", conditions)], response, Moment(key=moment)).matched == ["r"]


# -- 1. evaluation semantics --------------------------------------------------------------------


def test_first_match_wins():
    """Without `continue`, the first matching rule decides and later rules are not consulted."""
    rs = [rule("no", {"channel": ["email"]}, team="email-desk"),
          rule("first", {"segment": ["negative"]}, team="support", priority="high"),
          rule("second", {}, team="sales", priority="low", tags=["late"], notify=True)]
    d = evaluate(rs, answer(), Moment(key="checkout"))
    assert d == Decision(team="support", priority="high", matched=["first"])


def test_continue_applies_and_keeps_going():
    """A `continue` rule's actions apply and matching goes on until a rule without it."""
    rs = [rule("a", {}, priority="high", tags=["a"], cont=True),
          rule("b", {"channel": ["web"]}, team="support", tags=["b"], cont=True),
          rule("c", {}, team="sales", tags=["c"]),
          rule("d", {}, team="never", tags=["d"])]
    d = evaluate(rs, answer(), Moment(key="checkout"))
    assert d.matched == ["a", "b", "c"]
    assert (d.team, d.priority, d.tags) == ("support", "high", ["a", "b", "c"])


def test_earlier_values_win_tags_accumulate_notify_ors():
    """Earlier rules' team/priority/template/SLA hours win; tags add up without duplicates;
    notify stays true once any matching rule asked for it."""
    rs = [rule("a", {}, priority="critical", sla={"ack_hours": 1}, tags=["x"], notify=True,
               template="apology", cont=True),
          rule("b", {}, team="support", priority="low", sla={"ack_hours": 9, "close_hours": 10},
               tags=["x", "y"], notify=False, template="other", cont=True),
          rule("c", {}, team="sales", tags=["y", "z"])]
    d = evaluate(rs, answer(), Moment(key="checkout"))
    assert d == Decision(team="support", priority="critical",
                         sla={"ack_hours": 1, "close_hours": 10}, tags=["x", "y", "z"],
                         notify=True, template="apology", matched=["a", "b", "c"])


def test_notify_from_a_later_rule_counts():
    """notify is an OR: a later matching rule can switch it on."""
    rs = [rule("a", {}, priority="high", cont=True), rule("b", {}, notify=True)]
    d = evaluate(rs, answer(), Moment(key="checkout"))
    assert d.notify is True and d.priority == "high"


def test_disabled_rules_are_skipped():
    """A disabled rule neither decides nor contributes, even with `continue`."""
    rs = [rule("off", {}, team="nobody", tags=["off"], notify=True, cont=True, enabled=False),
          rule("off2", {}, team="nobody2", enabled=False),
          rule("on", {}, team="support")]
    d = evaluate(rs, answer(), Moment(key="checkout"))
    assert d == Decision(team="support", matched=["on"])


def test_no_rule_matches_gives_an_empty_decision():
    """When nothing matches, the decision is empty (routing then uses the fallbacks)."""
    d = evaluate([rule("r", {"moment": ["delivery"]}, team="logistics")], answer(),
                 Moment(key="checkout"))
    assert d == Decision()


def test_all_conditions_of_a_rule_must_hold():
    """Conditions are ANDed: one failing condition defeats the rule."""
    cond = {"moment": ["checkout"], "segment": ["negative"], "channel": ["web"]}
    assert hit(cond, answer())
    assert not hit(cond, answer(channel="email"))
    assert not hit(cond, answer(rating=5, segment="positive"))
    assert not hit(cond, answer(), moment="delivery")


@pytest.mark.parametrize(("segments", "segment", "expected"), [
    (["negative"], "detractor", True),
    (["negative"], "negative", True),
    (["neutral"], "passive", True),
    (["positive"], "promoter", True),
    (["detractor"], "detractor", True),
    (["detractor"], "negative", False),
    (["promoter"], "positive", False),
    (["negative"], "passive", False),
    (["promoter", "passive"], "passive", True),
])
def test_segment_condition(segments, segment, expected):
    """A family name matches its segments; a specific segment matches only itself."""
    assert hit({"segment": segments}, answer(segment=segment)) is expected


@pytest.mark.parametrize(("bounds", "rating", "expected"), [
    ({"min": 2, "max": 4}, 1, False),
    ({"min": 2, "max": 4}, 2, True),
    ({"min": 2, "max": 4}, 4, True),
    ({"min": 2, "max": 4}, 5, False),
    ({"max": 6}, 0, True),
    ({"max": 6}, 6, True),
    ({"max": 6}, 7, False),
    ({"min": 9}, 8, False),
    ({"min": 9}, 10, True),
])
def test_rating_condition(bounds, rating, expected):
    """rating {min, max} is inclusive on both ends; either bound may be left out."""
    assert hit({"rating": bounds}, answer(rating=rating, scale="nps")) is expected


def test_moment_and_channel_conditions():
    """moment and channel match any of their listed values."""
    assert hit({"moment": ["delivery", "checkout"]}, answer(), moment="checkout")
    assert not hit({"moment": ["delivery", "checkout"]}, answer(), moment="post_chat")
    assert hit({"channel": ["email", "sms"]}, answer(channel="sms"))
    assert not hit({"channel": ["email", "sms"]}, answer(channel="web"))


@pytest.mark.parametrize(("patterns", "skus", "expected"), [
    (["TV-55"], ["CABLE-1", "TV-55"], True),
    (["TV-55"], ["TV-550"], False),
    (["TV-55"], ["XTV-55"], False),
    (["TV-*"], ["TV-55"], True),
    (["TV-*"], ["TV-OLED-65", "X"], True),
    (["TV-*"], ["XTV-55", "RADIO-1"], False),
    (["TV-*"], [], False),
    (["RADIO-?", "TV-*"], ["RADIO-1"], True),
])
def test_sku_condition(patterns, skus, expected):
    """sku matches when any of the answer's SKUs equals a value or fits a glob."""
    assert hit({"sku": patterns}, answer(skus=skus)) is expected


@pytest.mark.parametrize(("keywords", "comment", "expected"), [
    (["refund"], "Refunded at last", True),
    (["refund"], "I want a REFUND.", True),
    (["refund"], "(refund!)", True),
    (["refund"], "this prerefund fee", False),
    (["refund"], "no money back", False),
    (["refund"], None, False),
    (["never arrived"], "It Never arrived!", True),
    (["broken", "refund"], "screen was broken", True),
    (["возврат"], "Хочу Возврат денег", True),
    (["возврат"], "невозвратный платёж", False),
    (["kırık"], "Ekran kırıktı", True),
])
def test_keywords_condition(keywords, comment, expected):
    """keywords are case-insensitive and match at word starts only (any script)."""
    assert hit({"keywords": keywords}, answer(comment=comment)) is expected


def test_regex_condition():
    """regex is searched anywhere in the comment; no comment never matches."""
    cond = {"regex": r"order\s*#?\d{4}\b"}
    assert hit(cond, answer(comment="where is my order #1234 please"))
    assert not hit(cond, answer(comment="where is my order #12 please"))
    assert not hit(cond, answer(comment=None))


@pytest.mark.parametrize(("languages", "comment", "locale", "expected"), [
    (["ru"], RUSSIAN, "en", True),
    (["en"], RUSSIAN, "en", False),
    (["tr"], TURKISH, "en", True),
    (["tr", "ru"], TURKISH, "ru", True),
    (["ru"], ENGLISH, "ru", False),
    (["tr"], "Çok kötü", "tr-TR", True),   # short: the answer's locale decides
    (["tr"], "Çok kötü", "en", False),
    (["ru"], None, "ru", True),
    (["et"], "", "ET-ee", True),
])
def test_language_condition(languages, comment, locale, expected):
    """language uses the detected language of a long comment, else the answer's locale."""
    assert hit({"language": languages}, answer(comment=comment, locale=locale)) is expected


def test_detect_language_falls_back_to_locale_base():
    """Short or missing comments give the locale's base language, lower-cased."""
    assert rules_mod.detect_language("Hi", "pt-BR") == "pt"
    assert rules_mod.detect_language(None, "") == "en"
    assert rules_mod.detect_language(RUSSIAN, "en") == "ru"


def test_detected_language_is_a_bare_language_code():
    """A long Chinese comment is "zh" like a short one with a zh-CN locale (langdetect says
    "zh-cn"), so `language: [zh]` matches both."""
    long_zh = "我的订单到得很晚，而且盒子坏了，我非常不满意这次的服务"
    assert rules_mod.detect_language(long_zh, "en") == "zh"
    assert hit({"language": ["zh"]}, answer(comment=long_zh, locale="en"))
    assert hit({"language": ["zh"]}, answer(comment="我的订单", locale="zh-CN"))


def test_has_voice_condition():
    """has_voice matches answers with (true) or without (false) a voice note."""
    assert hit({"has_voice": True}, answer(has_voice=True))
    assert not hit({"has_voice": True}, answer(has_voice=False))
    assert hit({"has_voice": False}, answer(has_voice=False))
    assert not hit({"has_voice": False}, answer(has_voice=True))


# -- 2. the defaults through routing.decide ---------------------------------------------------


@pytest.fixture
def shop(app):
    """A freshly created site (default teams and rules), loaded inside an app context."""
    created = make_site(app)
    with app.app_context():
        yield db.session.get(Site, created.id)


def moment_of(site: Site, key: str) -> Moment:
    """The site's stored moment."""
    return db.session.scalars(
        select(Moment).where(Moment.site_id == site.id, Moment.key == key)).one()


def test_new_site_starts_with_default_rules(shop):
    """Site creation stores DEFAULT_RULES in order, in normal form."""
    assert rules_mod.for_site(shop.id) == validate_all(DEFAULT_RULES)


def test_defaults_detractor_with_refund_at_checkout(shop):
    """A negative checkout answer asking for a refund is critical, notifies, goes to support."""
    r = answer(1, "negative", "Broken on arrival, I want a refund", site_id=shop.id)
    route = routing.decide(r, moment_of(shop, "checkout"), shop)
    assert (route.priority, route.team, route.notify) == ("critical", "support", True)
    assert route.tags == ["critical-words", "lowest-rating"]
    assert route.matched == ["Critical words raise priority",
                             "Lowest CSAT and emoji rating (1) is critical", OTHER_NEGATIVE,
                             "Detractors to support"]
    assert route.followup_due_at == T0 + timedelta(hours=24)


OTHER_NEGATIVE = ("Other negative answers (NPS 3-6, CSAT/emoji 2, thumbs down): high, "
                  "24 h follow-up, no alert")


def test_defaults_nps_detractor_at_delivery(shop):
    """An NPS 3 after delivery is high priority for logistics with the 24 h follow-up, but
    pages nobody: only critical words and the lowest ratings alert."""
    r = answer(3, "detractor", "meh", scale="nps", site_id=shop.id)
    route = routing.decide(r, moment_of(shop, "delivery"), shop)
    assert (route.priority, route.team, route.notify) == ("high", "logistics", False)
    assert route.tags == ["delivery"]
    assert route.matched == [OTHER_NEGATIVE, "Delivery complaints to logistics"]
    assert route.followup_due_at == T0 + timedelta(hours=24)


@pytest.mark.parametrize(("scale", "moment", "rating", "priority", "notify"), [
    ("nps", "delivery", 0, "critical", True), ("nps", "delivery", 1, "critical", True),
    ("nps", "delivery", 2, "critical", True), ("nps", "delivery", 3, "high", False),
    ("nps", "delivery", 6, "high", False), ("nps", "delivery", 7, "routine", False),
    ("csat", "checkout", 1, "critical", True), ("csat", "checkout", 2, "high", False),
    ("csat", "checkout", 3, "routine", False), ("emoji", "kiosk", 1, "critical", True),
    ("emoji", "kiosk", 2, "high", False), ("thumbs", "product_page", 0, "high", False),
    ("thumbs", "product_page", 1, "routine", False),
])
def test_defaults_page_only_for_the_lowest_ratings(shop, scale, moment, rating, priority,
                                                   notify):
    """Without critical words the defaults page only for NPS 0-2 and CSAT/emoji 1; other
    negatives (thumbs down included) are high priority with the 24 h follow-up, no alert."""
    from app.responses import FAMILY, SCALES

    segment = SCALES[scale].segment(rating)
    r = answer(rating, segment, "no opinion words here", scale=scale, site_id=shop.id)
    route = routing.decide(r, moment_of(shop, moment), shop)
    assert (route.priority, route.notify) == (priority, notify)
    assert ("lowest-rating" in route.tags) is notify
    hours = {"negative": 24, "neutral": 48, "positive": 168}[FAMILY[segment]]
    assert route.followup_due_at == T0 + timedelta(hours=hours)


@pytest.mark.parametrize(("scale", "rating", "segment"), [("nps", 8, "passive"),
                                                          ("csat", 3, "neutral")])
def test_defaults_passive_price_complaint_to_sales(shop, scale, rating, segment):
    """A passive/neutral checkout answer about price goes to sales at routine priority."""
    r = answer(rating, segment, "The price is too expensive", scale=scale, site_id=shop.id)
    route = routing.decide(r, moment_of(shop, "checkout"), shop)
    assert (route.priority, route.team, route.notify) == ("routine", "sales", False)
    assert route.tags == ["price"] and route.matched == ["Price to sales"]
    assert route.followup_due_at == T0 + timedelta(hours=48)


def test_defaults_promoter_without_comment(shop):
    """A promoter without a comment matches no rule: support, routine, no alert."""
    r = answer(10, "promoter", None, scale="nps", site_id=shop.id)
    route = routing.decide(r, moment_of(shop, "delivery"), shop)
    assert (route.priority, route.team, route.notify) == ("routine", "support", False)
    assert route.tags == [] and route.matched == []
    assert route.followup_due_at == T0 + timedelta(hours=168)


def test_sla_override_changes_only_its_stage(shop):
    """actions.sla.ack_hours moves ack_due_at; every other stage keeps the site's targets."""
    shop.sla_ack_late_hours, shop.sla_close_hours, shop.sla_loop_hours = 5, 30, 60
    r = answer(1, "negative", "slow", site_id=shop.id)
    checkout = moment_of(shop, "checkout")
    before = routing.decide(r, checkout, shop)
    assert before.ack_due_at == T0 + timedelta(hours=shop.sla_ack_hours)

    fast = {"name": "Fast ack", "conditions": {"segment": ["negative"]},
            "actions": {"sla": {"ack_hours": 1}}, "continue": True}
    rules_mod.replace(shop.id, [fast, *DEFAULT_RULES])
    route = routing.decide(r, checkout, shop)
    assert route.ack_due_at == T0 + timedelta(hours=1)
    assert route.ack_late_due_at == T0 + timedelta(hours=5)
    assert route.close_due_at == T0 + timedelta(hours=30)
    assert route.loop_due_at == T0 + timedelta(hours=60)
    assert route.followup_due_at == T0 + timedelta(hours=24)
    assert (route.priority, route.team) == ("critical", "support")  # defaults still apply
    assert route.matched[0] == "Fast ack"


# -- 3. validation ------------------------------------------------------------------------------

GOOD: dict[str, Any] = {"name": "ok", "conditions": {"segment": ["negative"]},
                        "actions": {"team": "support"}}


@pytest.mark.parametrize(("bad", "message"), [
    ({**GOOD, "conditions": {"weather": ["rain"]}}, "unknown conditions: weather"),
    ({**GOOD, "actions": {"team": "support", "escalate": True}}, "unknown actions: escalate"),
    ({**GOOD, "actions": {"priority": "urgent"}}, "priority must be one of"),
    ({**GOOD, "conditions": {"segment": ["angry"]}}, "unknown segments: angry"),
    ({**GOOD, "conditions": {"regex": "(unclosed"}}, "regex does not compile"),
    ({**GOOD, "actions": {"sla": {"ack_hours": True}}}, "sla.ack_hours"),
    ({**GOOD, "actions": {"sla": {"close_hours": 0}}}, "sla.close_hours"),
    ({**GOOD, "actions": {"sla": {"ack_hours": 1.5}}}, "sla.ack_hours"),
    ({**GOOD, "actions": {"sla": {"breakfast_hours": 1}}}, "sla must be"),
    ({**GOOD, "conditions": {"keywords": []}}, "keywords must be a non-empty list"),
    ({**GOOD, "conditions": {"keywords": ["refund", " "]}}, "keywords holds an empty"),
    ({"conditions": {}, "actions": {"team": "support"}}, "name must be"),
    ({**GOOD, "name": "   "}, "name must be"),
    ({"name": "x", "conditions": {"segment": ["negative"]}}, "at least one action"),
    ({**GOOD, "actions": {}}, "at least one action"),
    ({**GOOD, "actions": {"team": "Customer Support"}}, "team must be"),
    ({**GOOD, "actions": {"template": "../etc"}}, "template must be"),
    ({**GOOD, "actions": {"notify": "yes"}}, "notify must be"),
    ({**GOOD, "actions": {"tags": ["t"] * 21}}, "tags must be"),
    ({**GOOD, "conditions": {"rating": {"min": "1"}}}, "rating must be"),
    ({**GOOD, "conditions": {"rating": {"min": True}}}, "rating must be"),
    ({**GOOD, "conditions": {"rating": {"least": 1}}}, "rating must be"),
    ({**GOOD, "conditions": {"has_voice": "yes"}}, "has_voice must be"),
    ({**GOOD, "enabled": "no"}, "enabled must be"),
    ({**GOOD, "continue": 1}, "continue must be"),
    ({**GOOD, "priority": "high"}, "unknown rule fields: priority"),
    ({**GOOD, "conditions": ["segment"]}, "conditions and actions must be objects"),
    (["not", "a", "rule"], "a rule must be an object"),
])
def test_validate_rejects_bad_rules(bad, message):
    """Each bad rule raises RuleError whose message names the offending field."""
    with pytest.raises(RuleError) as err:
        validate(bad)
    assert message in str(err.value)


def test_validate_returns_normal_form():
    """Defaults are filled in, text is trimmed, a single string becomes a list; idempotent."""
    raw = {"name": "  Price ", "conditions": {"keywords": " price ", "sku": "TV-*",
                                              "rating": {"max": 3}},
           "actions": {"team": "sales", "tags": "price"}}
    clean = validate(raw)
    assert clean == {"name": "Price", "enabled": True,
                     "conditions": {"keywords": ["price"], "sku": ["TV-*"],
                                    "rating": {"max": 3}},
                     "actions": {"team": "sales", "tags": ["price"]}, "continue": False}
    assert validate(clean) == clean


def test_validate_all_names_the_rule_position():
    """validate_all prefixes errors with "rule N:" (1-based) and accepts {"rules": [...]}."""
    bad = {**GOOD, "actions": {"priority": "urgent"}}
    with pytest.raises(RuleError, match=r"^rule 3: priority must be one of"):
        validate_all([GOOD, GOOD, bad, GOOD])
    with pytest.raises(RuleError, match=r"^rule 1: unknown segments: angry"):
        validate_all({"rules": [{**GOOD, "conditions": {"segment": "angry"}}]})
    assert validate_all({"rules": [GOOD]}) == [validate(GOOD)]
    with pytest.raises(RuleError, match="expected a list"):
        validate_all({"name": "not a list"})
    with pytest.raises(RuleError, match="at most 200 rules"):
        validate_all([GOOD] * 201)


def test_parse_reports_unreadable_files():
    """parse reads JSON and YAML and turns syntax errors into RuleError."""
    assert rules_mod.parse('{"rules": []}', "json") == {"rules": []}
    assert rules_mod.parse("rules:\n- name: a\n") == {"rules": [{"name": "a"}]}
    with pytest.raises(RuleError, match="cannot parse"):
        rules_mod.parse("{not json", "json")
    with pytest.raises(RuleError, match="cannot parse"):
        rules_mod.parse("rules: [unclosed")


# -- 4. the commands ----------------------------------------------------------------------------

VIP = {"name": "TV buyers first", "conditions": {"sku": ["TV-*"]},
       "actions": {"priority": "high", "tags": ["tv"]}, "continue": True}


def invoke(runner, *args: str, **kw: Any):
    """Run a `flask` command."""
    return runner.invoke(args=list(args), **kw)


def test_rules_json_export_edit_import_roundtrip(app, runner, tmp_path):
    """Exported JSON, edited and imported, is exactly what the next export prints."""
    site = make_site(app)
    out = invoke(runner, "rules", "export", site.public_key, "--format", "json")
    assert out.exit_code == 0, out.output
    exported = rules_mod.parse(out.stdout, "json")["rules"]
    assert exported == validate_all(DEFAULT_RULES)

    edited = [VIP, *exported]
    price = next(i for i, r in enumerate(edited) if r["name"] == "Price to sales")
    edited[price]["enabled"] = False
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(edited), encoding="utf-8")  # a bare list imports too
    out = invoke(runner, "rules", "import", site.public_key, str(path))
    assert out.exit_code == 0, out.output
    assert f"imported {len(edited)} rule(s)" in out.stdout and "warning" not in out.output

    again = invoke(runner, "rules", "export", site.public_key, "--format", "json")
    assert rules_mod.parse(again.stdout, "json")["rules"] == validate_all(edited)
    with app.app_context():
        stored = rules_mod.for_site(site.id)
    assert stored[0]["name"] == "TV buyers first" and stored[price]["enabled"] is False


def test_rules_yaml_roundtrip(app, runner, tmp_path):
    """YAML export keeps non-Latin keywords readable and imports back unchanged."""
    site = make_site(app)
    out = invoke(runner, "rules", "export", site.public_key)
    assert out.exit_code == 0, out.output
    assert "возврат" in out.stdout and "kırık" in out.stdout
    doc = yaml.safe_load(out.stdout)
    assert doc["rules"] == validate_all(DEFAULT_RULES)

    edited = doc["rules"][:4] + [
        {"name": "Russian complaints", "conditions": {"language": ["ru"],
                                                      "keywords": ["плохо", "ужас"],
                                                      "regex": r"заказ\s*№?\d+"},
         "actions": {"team": "support", "tags": ["ru"], "sla": {"ack_hours": 4}}},
        {"name": "Yes and no", "conditions": {"keywords": ["no", "yes", "on"]},
         "actions": {"tags": ["null", "true"]}},
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(rules_mod.dump(edited, "yaml"), encoding="utf-8")
    out = invoke(runner, "rules", "import", site.public_key, str(path))
    assert out.exit_code == 0, out.output
    again = invoke(runner, "rules", "export", site.public_key, "--format", "yaml")
    assert yaml.safe_load(again.stdout)["rules"] == validate_all(edited)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bad.yaml", "rules:\n- name: ok\n  actions: {team: support}\n"
                 "- name: bad\n  actions: {priority: urgent}\n",
     "rule 2: priority must be one of"),
    ("bad.json", '{"rules": [{"name": "x", "actions": {"team": "support"}},',
     "cannot parse the file"),
    ("bad.yml", "rules: [{name: x, conditions: {regex: '(('}, actions: {team: a}}]",
     "rule 1: regex does not compile"),
    ("bad2.yaml", "just a string", "expected a list"),
])
def test_rules_import_invalid_file_changes_nothing(app, runner, tmp_path, name, text, message):
    """An invalid file exits non-zero with the reason and leaves the stored rules as they were."""
    site = make_site(app)
    with app.app_context():
        rules_mod.replace(site.id, [VIP, GOOD])
        before = rules_mod.for_site(site.id)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    out = invoke(runner, "rules", "import", site.public_key, str(path))
    assert out.exit_code != 0
    assert message in out.output
    with app.app_context():
        assert rules_mod.for_site(site.id) == before


def test_rules_import_warns_about_unknown_team(app, runner, tmp_path):
    """A rule routing to a team the site does not have is imported, with a warning."""
    site = make_site(app)
    path = tmp_path / "rules.yaml"
    path.write_text(rules_mod.dump([
        {"name": "Billing", "conditions": {"keywords": ["invoice"]},
         "actions": {"team": "billing"}},
        {"name": "Rest", "conditions": {}, "actions": {"team": "support"}},
    ]), encoding="utf-8")
    out = invoke(runner, "rules", "import", site.public_key, str(path))
    assert out.exit_code == 0, out.output
    assert "warning: rule 'Billing' routes to unknown team 'billing'" in out.stderr
    assert "'Rest'" not in out.stderr
    assert "imported 2 rule(s)" in out.stdout
    with app.app_context():
        assert [r["name"] for r in rules_mod.for_site(site.id)] == ["Billing", "Rest"]


def test_rules_defaults_restores_the_playbook(app, runner):
    """`flask rules defaults` replaces custom rules with DEFAULT_RULES."""
    site = make_site(app)
    with app.app_context():
        rules_mod.replace(site.id, [VIP])
    out = invoke(runner, "rules", "defaults", site.public_key)
    assert out.exit_code == 0, out.output
    assert f"{len(DEFAULT_RULES)} rule(s) set" in out.stdout
    with app.app_context():
        assert rules_mod.for_site(site.id) == validate_all(DEFAULT_RULES)


def test_rules_commands_refuse_unknown_site(runner, tmp_path):
    """An unknown public key is a usage error, not a crash."""
    out = invoke(runner, "rules", "export", "pk_nope")
    assert out.exit_code == 2 and "no site with public key pk_nope" in out.output
    out = invoke(runner, "rules", "defaults", "pk_nope")
    assert out.exit_code == 2


def test_teams_create_add_member_list(app, runner, monkeypatch):
    """Teams get extra addresses and staff members; `teams list` shows every recipient."""
    site = make_site(app)
    key = site.public_key
    out = invoke(runner, "teams", "create", key, "billing", "--name", "Billing desk",
                 "--email", "a@b.example")
    assert out.exit_code == 0, out.output
    assert "team billing: a@b.example" in out.stdout

    monkeypatch.setenv("CLOSELOOP_STAFF_PASSWORD", "a long enough password")
    out = invoke(runner, "staff", "create", "Agent@Shop.example")
    assert out.exit_code == 0, out.output
    monkeypatch.delenv("CLOSELOOP_STAFF_PASSWORD")
    out = invoke(runner, "staff", "create", "lead@shop.example", "--role", "lead",
                 input="another long password\nanother long password\n")
    assert out.exit_code == 0, out.output

    out = invoke(runner, "teams", "add-member", key, "billing", "AGENT@shop.example")
    assert out.exit_code == 0, out.output
    assert "team billing: a@b.example, agent@shop.example" in out.stdout
    out = invoke(runner, "teams", "add-member", key, "support", "lead@shop.example")
    assert out.exit_code == 0, out.output
    # Adding twice keeps one membership; creating again only adds addresses.
    assert invoke(runner, "teams", "add-member", key, "billing", "agent@shop.example"
                  ).exit_code == 0
    out = invoke(runner, "teams", "create", key, "billing", "--email", "ops@b.example")
    assert "team billing: a@b.example, ops@b.example, agent@shop.example" in out.stdout

    out = invoke(runner, "teams", "list", key)
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == [
        "billing\tBilling desk\ta@b.example, ops@b.example, agent@shop.example",
        "logistics\tLogistics\t",
        "sales\tSales\t",
        "support\tCustomer support\tlead@shop.example",
    ]


def test_teams_commands_refuse_bad_input(app, runner):
    """Bad team keys, bad addresses, unknown teams and unknown staff are refused."""
    key = make_site(app).public_key
    assert invoke(runner, "teams", "create", key, "Bad Key").exit_code != 0
    out = invoke(runner, "teams", "create", key, "ok", "--email", "not-an-address")
    assert out.exit_code != 0
    out = invoke(runner, "teams", "add-member", key, "nope", "a@b.example")
    assert out.exit_code != 0 and "no team 'nope'" in out.output
    out = invoke(runner, "teams", "add-member", key, "support", "ghost@shop.example")
    assert out.exit_code != 0 and "no staff account ghost@shop.example" in out.output
    listed = invoke(runner, "teams", "list", key).stdout
    assert [line.split("\t")[0] for line in listed.splitlines()] == [
        "logistics", "sales", "support"]


# -- 5. end to end, per database ----------------------------------------------------------------

CUSTOM = [
    {"name": "Disabled catch-all", "enabled": False, "conditions": {},
     "actions": {"team": "nobody", "tags": ["never"]}},
    {"name": "Broken TVs", "conditions": {"sku": ["TV-*"], "keywords": ["cracked", "broken"],
                                          "rating": {"max": 2}},
     "actions": {"team": "tv-desk", "priority": "high", "tags": ["tv", "hardware"],
                 "template": "tv-replacement"}, "continue": True},
    {"name": "Web checkout", "conditions": {"moment": ["checkout"], "channel": ["web"],
                                            "segment": ["negative"]},
     "actions": {"team": "support", "priority": "low", "tags": ["checkout", "tv"]}},
    {"name": "Everything else", "conditions": {}, "actions": {"team": "sales"}},
]


def test_custom_rules_route_a_real_answer(make_app, db_kind):
    """Rules imported with rules.replace decide the case of an answer sent through the form,
    and the "routed" event lists the rules that matched."""
    app = make_app(db_kind)
    site = make_site(app)
    with app.app_context():
        assert rules_mod.replace(site.id, CUSTOM) == 4
    client = app.test_client()
    path = public_prompt(client, site, "checkout", skus=["TV-55"])
    resp = client.post(path, data={"rating": "2", "comment": "The screen arrived Cracked"})
    assert resp.status_code == 303, resp.get_data(as_text=True)

    with app.app_context():
        response = db.session.scalars(select(Response)).one()
        assert (response.segment, response.skus) == ("negative", ["TV-55"])
        case = db.session.scalars(select(Case)).one()
        assert case.routed_at is not None
        assert (case.team, case.priority, case.template) == ("tv-desk", "high", "tv-replacement")
        assert case.tags == ["tv", "hardware", "checkout"]
        assert case.ack_due_at == response.created_at + timedelta(hours=2)
        event = db.session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id,
                                                           CaseEvent.kind == "routed")).one()
        assert event.data["rules"] == ["Broken TVs", "Web checkout"]
        assert (event.data["team"], event.data["priority"]) == ("tv-desk", "high")
        assert event.data["tags"] == ["tv", "hardware", "checkout"]


def test_language_values_are_normalised_to_bare_codes():
    """Values like "RU" and "ru-RU" are stored as "ru", so they can match a detected language."""
    rule = rules_mod.validate({"name": "ru",
                               "conditions": {"language": ["RU", "ru-RU", "tr_TR"]},
                               "actions": {"team": "support"}})
    assert rule["conditions"]["language"] == ["ru", "tr"]


def test_inverted_rating_range_is_refused():
    """A rating range whose min exceeds its max could never match: refused when saved."""
    with pytest.raises(rules_mod.RuleError, match="rating.min"):
        rules_mod.validate({"name": "x", "conditions": {"rating": {"min": 5, "max": 1}},
                        "actions": {"team": "support"}})
