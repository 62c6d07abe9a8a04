"""Settings of the loop (issue 8, point 4): teams and members, and routing rules edited as
YAML/JSON with "test against the last 100 answers" — per role and site, audited, validated
like `flask rules import`, and the preview is what routing then does."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
import yaml
from sqlalchemy import func, select

from app import staff
from app.admin import permissions
from app.extensions import db
from app.loop import alerts
from app.loop import rules as rules_mod
from app.models import AuditEvent, Case, RoutingRule, Site, StaffUser, Team

from .conftest import make_site
from .test_case_view import XSS, Tags, answer, csrf, signed_in

RULES = {  # a lead's rules: price to sales, broken things critical to logistics, else support
    "rules": [
        {"name": "Broken goods are critical", "conditions": {"keywords": ["broken"]},
         "actions": {"priority": "critical", "team": "logistics", "tags": ["broken"],
                     "notify": True, "sla": {"ack_hours": 1}}},
        {"name": "Price talk", "conditions": {"keywords": ["price", "expensive"]},
         "actions": {"team": "sales", "tags": ["price"]}, "continue": True},
        {"name": "Unhappy", "conditions": {"segment": ["negative"]},
         "actions": {"priority": "high", "tags": ["unhappy"]}},
    ]
}
PASSWORD = "a long enough password"
COMMENTS = [(1, "It arrived broken"), (9, "Great price"), (4, "Too expensive for me"),
            (3, "Slow"), (10, None)]


def member(app, email: str, site: Site, role: str) -> int:
    """A staff account with `role` on `site`, in none of its teams; returns its id."""
    with app.app_context():
        user = staff.create(email, PASSWORD, "agent")
        permissions.grant(user, db.session.get(Site, site.id), role)
        return user.id


def stored(app, site: Site) -> list[dict]:
    """The site's stored rules."""
    with app.app_context():
        return rules_mod.for_site(site.id)


def audit_actions(app, site: Site) -> list[str]:
    """Audit actions of these settings (teams, rules) recorded on this site, in order."""
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.site_id == site.id, AuditEvent.action.not_like("membership.%"))
            .order_by(AuditEvent.id)))


def form_post(client, url: str, page_url: str | None = None, **data):
    """POST a settings form with the CSRF token of the page it is on."""
    page = client.get(page_url or url).get_data(as_text=True)
    return client.post(url, data={"csrf_token": csrf(page), **data})


class PreviewRows(HTMLParser):
    """The preview table's rows as {data-label: cell text}."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self._label: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self._label:  # a <div> or <span> inside a cell separates words
            self.rows[-1][self._label] += " "
        if tag == "tr" and self.rows is not None and "preview" in self._tables:
            self.rows.append({})
        if tag == "table":
            self._tables.append(a.get("class") or "")
        if tag == "td" and a.get("data-label"):
            self._label = a["data-label"]
            self.rows[-1][self._label] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._label = None

    def handle_data(self, data: str) -> None:
        if self._label:
            self.rows[-1][self._label] += data

    def feed(self, data: str) -> None:
        self._tables: list[str] = []
        super().feed(data)
        self.rows = [r for r in self.rows if r]


def preview_rows(page: str) -> list[dict[str, str]]:
    """Parsed preview rows, cell text squeezed."""
    p = PreviewRows()
    p.feed(page)
    return [{k: " ".join(v.split()) for k, v in r.items()} for r in p.rows]


def test_roles_and_sites_decide_access(make_app, db_kind):
    """Owners and leads open both pages; agents and viewers get 403 and their POSTs change
    nothing; a lead of another site gets 404 for every page and action, and so does another
    site's team id under one's own site; signed-out visitors are sent to sign in."""
    app = make_app(db_kind)
    site, other = make_site(app, name="Own"), make_site(app, name="Other")
    for role in ("owner", "lead", "agent", "viewer"):
        member(app, f"{role}@shop.example", site, role)
    member(app, "stranger@shop.example", other, "lead")
    with app.app_context():
        own_team = db.session.scalar(select(Team.id).where(Team.site_id == site.id))
        other_team = db.session.scalar(select(Team.id).where(Team.site_id == other.id))
        staff_id = db.session.scalar(select(StaffUser.id).where(
            StaffUser.email == "agent@shop.example"))
    base = f"/admin/sites/{site.id}/settings"
    posts = {f"{base}/teams": {"key": "x", "name": "X"},
             f"{base}/teams/{own_team}": {"name": "Renamed"},
             f"{base}/teams/{own_team}/members": {"staff_id": str(staff_id)},
             f"{base}/teams/{own_team}/members/{staff_id}/remove": {},
             f"{base}/rules": {"rules": "rules: []", "action": "save"},
             f"{base}/rules/defaults": {}}
    before_rules = stored(app, site)
    for role, code in (("owner", 200), ("lead", 200), ("agent", 403), ("viewer", 403),
                       ("stranger", 404)):
        client = signed_in(app, f"{role}@shop.example")
        for section in ("teams", "rules"):
            assert client.get(f"{base}/{section}").status_code == code, (role, section)
        if code != 200:
            token = csrf(client.get("/admin/").get_data(as_text=True))
            for url, data in posts.items():
                assert client.post(url, data={"csrf_token": token, **data}).status_code == code
    lead = signed_in(app, "lead@shop.example")
    token = csrf(lead.get(f"{base}/teams").get_data(as_text=True))
    for url in (f"{base}/teams/{other_team}", f"{base}/teams/{other_team}/members",
                f"{base}/teams/999999"):
        assert lead.post(url, data={"csrf_token": token, "name": "Mine now",
                                    "staff_id": str(staff_id)}).status_code == 404
    assert lead.get(f"/admin/sites/{other.id}/settings/rules").status_code == 404
    assert lead.get("/admin/sites/999999/settings/teams").status_code == 404
    assert app.test_client().get(f"{base}/rules").status_code == 302
    assert stored(app, site) == before_rules
    with app.app_context():
        assert db.session.get(Team, other_team).name != "Mine now"
        assert db.session.scalar(select(func.count()).select_from(Team).where(
            Team.key == "x")) == 0
        assert db.session.get(Team, own_team).members == []
    assert audit_actions(app, site) == audit_actions(app, other) == []


def test_rules_page_shows_the_site_rules_as_yaml(app):
    """The textarea holds exactly `rules.dump` of the site's rules (YAML, or JSON on
    request); a POST without the CSRF
    token is refused and a GET changes nothing."""
    site = make_site(app)
    member(app, "lead@shop.example", site, "lead")
    lead = signed_in(app, "lead@shop.example")
    page = lead.get(f"/admin/sites/{site.id}/settings/rules").get_data(as_text=True)
    text = re.search(r'<textarea id="rules"[^>]*>(.*?)</textarea>', page, re.S).group(1)
    import html

    assert yaml.safe_load(html.unescape(text)) == {"rules": stored(app, site)}
    assert len(stored(app, site)) == len(rules_mod.DEFAULT_RULES)
    page = lead.get(f"/admin/sites/{site.id}/settings/rules?format=json").get_data(as_text=True)
    text = re.search(r'<textarea id="rules"[^>]*>(.*?)</textarea>', page, re.S).group(1)
    assert html.unescape(text) == rules_mod.dump(stored(app, site), "json")
    resp = lead.post(f"/admin/sites/{site.id}/settings/rules",
                     data={"rules": "rules: []", "action": "save"})
    assert resp.status_code == 400
    assert len(stored(app, site)) == len(rules_mod.DEFAULT_RULES)


@pytest.mark.parametrize("text, message", [
    ("rules: [ {name: x", "cannot parse the file"),
    ("rules:\n  - name: Odd\n    actions: {priority: urgent}\n",
     "rule 1: priority must be one of critical, high, routine, low"),
    ('{"rules": [{"name": "J", "actions": {"team": "Bad Team"}}]}', "rule 1: team must be"),
    ("rules:\n  - name: ok\n    actions: {team: sales}\n  - name: r\n    conditions: "
     "{regex: '('}\n    actions: {tags: [x]}\n", "rule 2: regex does not compile"),
])
def test_invalid_rules_change_nothing(make_app, db_kind, text, message):
    """YAML that does not parse or a rule that does not validate (as `flask rules import`
    checks it) is shown back in the textarea with the error next to it (400); the stored
    rules and the audit log stay as they were, for preview and save alike."""
    app = make_app(db_kind)
    site = make_site(app)
    member(app, "lead@shop.example", site, "lead")
    lead = signed_in(app, "lead@shop.example")
    url = f"/admin/sites/{site.id}/settings/rules"
    before = stored(app, site)
    for action in ("preview", "save"):
        resp = form_post(lead, url, rules=text, action=action)
        assert resp.status_code == 400
        page = resp.get_data(as_text=True)
        assert "Not saved, nothing changed:" in page and message in page, page[:3000]
        assert 'aria-invalid="true" aria-describedby="rules-error"' in page
        from markupsafe import escape

        assert f">{escape(text)}</textarea>" in page
    assert stored(app, site) == before
    assert audit_actions(app, site) == []


def test_preview_saves_nothing_and_is_what_routing_does(make_app, db_kind):
    """"Test against the last 100 answers" lists this site's newest answers (never another
    site's, at most 100) with the matched rules, team, priority, tags, SLA and alert the
    proposed rules give, and saves nothing; after saving, the same answers sent again are
    routed by the job exactly as the preview said. Rules naming a missing team are warned
    about on preview and save."""
    app = make_app(db_kind)
    site, other = make_site(app, name="Own"), make_site(app, name="Other")
    member(app, "lead@shop.example", site, "lead")
    answer(app, other, 0, "broken, other shop's answer", order="elsewhere")
    for i, (rating, comment) in enumerate(COMMENTS):
        answer(app, site, rating, comment, order=f"first-{i}")
    lead = signed_in(app, "lead@shop.example")
    url = f"/admin/sites/{site.id}/settings/rules"
    text = yaml.safe_dump(RULES)
    before = stored(app, site)
    resp = form_post(lead, url, rules=text, action="preview")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert stored(app, site) == before and audit_actions(app, site) == []
    assert "other shop" not in page and "(not saved yet)" in page
    rows = preview_rows(page)
    assert len(rows) == len(COMMENTS)
    newest_first = list(reversed(COMMENTS))
    expected = {  # comment -> (matched, team, priority, tags, alert)
        "It arrived broken": ("Broken goods are critical", "logistics", "critical", "broken",
                              "yes"),
        "Great price": ("Price talk", "sales", "routine", "price", "no"),
        "Too expensive for me": ("Price talk Unhappy", "sales", "high", "price unhappy", "no"),
        "Slow": ("Unhappy", "support", "high", "unhappy", "no"),
        None: ("none: defaults", "support", "routine", "—", "no"),
    }
    for row, (_rating, comment) in zip(rows, newest_first, strict=True):
        matched, team, priority, tags, alert = expected[comment]
        assert row["Matched"] == matched, row
        assert row["Team"].split(" was ")[0] == team
        assert row["Priority"].split(" was ")[0] == priority
        assert (row["Tags"], row["Alert"]) == (tags, alert)
    assert rows[-1]["SLA (h)"].startswith("ack 1 ")  # the broken one: the rule's 1 h target
    # Save, then send the same answers again: the routing job decides what the preview said.
    resp = form_post(lead, url, rules=text, action="save")
    assert resp.status_code == 302
    assert stored(app, site) == rules_mod.validate_all(RULES)
    assert audit_actions(app, site) == ["rules.replace"]
    ids = [answer(app, site, rating, comment, order=f"again-{i}")
           for i, (rating, comment) in enumerate(COMMENTS)]
    with app.app_context():
        routed = [db.session.get(Case, i) for i in reversed(ids)]
        for case, row in zip(routed, rows, strict=True):
            assert case.routed_at is not None
            assert (case.team, case.priority, " ".join(case.tags) or "—") == (
                row["Team"].split(" was ")[0], row["Priority"].split(" was ")[0], row["Tags"])
    # A missing team: warned about on preview and after saving.
    missing = yaml.safe_dump({"rules": [{"name": "To nowhere", "actions": {"team": "ghosts"}}]})
    page = form_post(lead, url, rules=missing, action="preview").get_data(as_text=True)
    assert "routes to team <code>ghosts</code>, which this site does not have" in page
    resp = form_post(lead, url, rules=missing, action="save")
    page = lead.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Rule &#39;To nowhere&#39; routes to team &#39;ghosts&#39;" in page


def test_preview_takes_the_last_100_answers(make_app):
    """The preview lists exactly the 100 newest answers of the site, newest first."""
    app = make_app(LIMIT_SUBMIT="500 per minute")  # 103 answers from one address
    site = make_site(app)
    member(app, "lead@shop.example", site, "lead")
    from datetime import timedelta

    from app.models import Response, utcnow

    for i in range(103):
        answer(app, site, 5, f"answer number {i}", order=f"o-{i}")
    with app.app_context():  # spread them out in time: i minutes ago for answer i's inverse
        now = utcnow()
        for n, r in enumerate(db.session.scalars(select(Response).order_by(Response.id))):
            r.created_at = now - timedelta(minutes=200 - n)
        db.session.commit()
    lead = signed_in(app, "lead@shop.example")
    url = f"/admin/sites/{site.id}/settings/rules"
    page = form_post(lead, url, rules=yaml.safe_dump(RULES), action="preview").get_data(
        as_text=True)
    rows = preview_rows(page)
    assert len(rows) == 100
    assert "answer number 102" in rows[0]["Answer"] and "answer number 3" in rows[-1]["Answer"]


def test_reset_to_defaults(app):
    """"Reset to defaults" stores the playbook rules, audited."""
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    with app.app_context():
        rules_mod.replace(site.id, rules_mod.validate_all(RULES))
    owner = signed_in(app, "owner@shop.example")
    base = f"/admin/sites/{site.id}/settings/rules"
    resp = form_post(owner, f"{base}/defaults", page_url=base)
    assert resp.status_code == 302
    assert stored(app, site) == rules_mod.validate_all(rules_mod.DEFAULT_RULES)
    assert audit_actions(app, site) == ["rules.reset_defaults"]
    assert "Rules reset to the 8 default rules." in owner.get(base).get_data(as_text=True)


def test_team_and_member_edits(make_app, db_kind):
    """A lead creates a team, edits its addresses, flags and locale, adds a member of the
    site (not a stranger), removes them; each change is audited; bad input changes nothing;
    the page shows who hears each team's alerts exactly as `flask doctor` says it."""
    app = make_app(db_kind)
    site = make_site(app, support_contact="help@shop.example")
    other = make_site(app, name="Other")
    lead_id = member(app, "lead@shop.example", site, "lead")
    agent_id = member(app, "agent@shop.example", site, "agent")
    stranger_id = member(app, "stranger@shop.example", other, "agent")
    lead = signed_in(app, "lead@shop.example")
    base = f"/admin/sites/{site.id}/settings/teams"
    with app.app_context():  # a rule naming a team the site does not have
        rules_mod.replace(site.id, [{"name": "Ghosts", "conditions": {"keywords": ["boo"]},
                                     "actions": {"team": "ghosts"}}, *rules_mod.DEFAULT_RULES])
    page = lead.get(base).get_data(as_text=True)
    assert "there is no team &#39;ghosts&#39; (rules: &#39;Ghosts&#39;)" in page
    with app.app_context():
        findings = alerts.check_site(db.session.get(Site, site.id))
        lines = [alerts.describe(f) for f in findings]
    assert lines and all(f.heard_by.via == "support_contact" for f in findings)
    from markupsafe import escape

    for line in lines:
        assert str(escape(line)) in page
    # Bad input: no change.
    for data, message in (({"key": "Bad Key", "name": "B"}, "The key must be"),
                          ({"key": "support", "name": "Dup"}, "already has a team"),
                          ({"key": "vip", "name": "VIP", "emails": "not-an-address"},
                           "Not an email address: not-an-address")):
        resp = form_post(lead, base, **data)
        assert resp.status_code == 400 and message in resp.get_data(as_text=True)
    assert audit_actions(app, site) == []
    # Create.
    resp = form_post(lead, base, key="vip", name="VIP desk", emails="vip@shop.example",
                     alert_critical="y", weekly_digest="y", locale="et")
    assert resp.status_code == 302
    with app.app_context():
        team = db.session.scalar(select(Team).where(Team.site_id == site.id, Team.key == "vip"))
        assert (team.name, team.emails, team.alert_critical, team.sla_alerts,
                team.weekly_digest, team.locale) == ("VIP desk", ["vip@shop.example"], True,
                                                     False, True, "et")
        team_id = team.id
    # Edit.
    resp = form_post(lead, f"{base}/{team_id}", page_url=base, name="VIP",
                     emails="a@shop.example\nb@shop.example, a@shop.example", sla_alerts="y",
                     locale="ru")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"#team-{team_id}")
    assert form_post(lead, f"{base}/{team_id}", page_url=base, name="",
                     locale="en").status_code == 400
    # Members: the site's staff only.
    assert form_post(lead, f"{base}/{team_id}/members", page_url=base,
                     staff_id=str(stranger_id)).status_code == 400
    assert form_post(lead, f"{base}/{team_id}/members", page_url=base,
                     staff_id=str(agent_id)).status_code == 302
    assert form_post(lead, f"{base}/{team_id}/members", page_url=base,
                     staff_id=str(lead_id)).status_code == 302
    with app.app_context():
        team = db.session.get(Team, team_id)
        assert (team.name, team.emails, team.alert_critical, team.sla_alerts,
                team.weekly_digest, team.locale) == ("VIP", ["a@shop.example", "b@shop.example"],
                                                     False, True, False, "ru")
        assert sorted(m.email for m in team.members) == ["agent@shop.example",
                                                        "lead@shop.example"]
    page = lead.get(base).get_data(as_text=True)
    section = page.split(f'id="team-{team_id}"')[1].split("</section>")[0]
    with app.app_context():
        aud = alerts.audience(db.session.get(Site, site.id), "vip")
    assert aud.via == "support_contact" and "team &#39;vip&#39; has alerts turned off" in section
    assert "agent@shop.example" in section and 'aria-label="Remove agent@shop.example' in section
    assert form_post(lead, f"{base}/{team_id}/members/{agent_id}/remove",
                     page_url=base).status_code == 302
    assert form_post(lead, f"{base}/{team_id}/members/{agent_id}/remove",
                     page_url=base).status_code == 404  # not a member any more
    with app.app_context():
        assert [m.email for m in db.session.get(Team, team_id).members] == ["lead@shop.example"]
        rows = db.session.execute(select(AuditEvent.action, AuditEvent.object_id,
                                         AuditEvent.actor_id).where(
            AuditEvent.site_id == site.id, AuditEvent.action.like("team.%"))
            .order_by(AuditEvent.id)).all()
    assert rows == [(a, str(team_id), lead_id) for a in (
        "team.create", "team.update", "team.member_add", "team.member_add",
        "team.member_remove")]
    # With alerts on and an address, the team hears its own alerts.
    form_post(lead, f"{base}/{team_id}", page_url=base, name="VIP", alert_critical="y",
              locale="ru")
    section = lead.get(base).get_data(as_text=True).split(f'id="team-{team_id}"')[1]
    assert "Alerts go to lead@shop.example." in section.split("</section>")[0]


def test_hostile_names_come_out_inert(app):
    """The XSS corpus as rule names, team names, refused addresses and answer comments comes
    out of the teams page, the rules textarea, the preview and the error messages as text:
    no element, no event-handler attribute, no javascript: link."""
    site = make_site(app)
    member(app, "lead@shop.example", site, "lead")
    lead = signed_in(app, "lead@shop.example")
    answer(app, site, 1, "".join(XSS), order="x")
    hostile_rules = {"rules": [{"name": x, "conditions": {"keywords": ["arrived", "alert"]},
                                "actions": {"team": "sales", "tags": [x[:60]]},
                                "continue": True} for x in XSS]}
    rules_url = f"/admin/sites/{site.id}/settings/rules"
    teams_url = f"/admin/sites/{site.id}/settings/teams"
    assert form_post(lead, rules_url, rules=yaml.safe_dump(hostile_rules),
                     action="save").status_code == 302
    for i, x in enumerate(XSS):
        assert form_post(lead, teams_url, key=f"t{i}", name=x).status_code == 302
    pages = [
        lead.get(rules_url).get_data(as_text=True),
        form_post(lead, rules_url, rules=yaml.safe_dump(hostile_rules),
                  action="preview").get_data(as_text=True),
        form_post(lead, rules_url, rules="rules:\n  - name: '" + XSS[4] + "'\n",
                  action="save").get_data(as_text=True),
        lead.get(teams_url).get_data(as_text=True),
        form_post(lead, teams_url, key="bad", name="n",
                  emails="<script>alert(9)</script>@x.example").get_data(as_text=True),
    ]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1]
    for page in pages:
        for raw in XSS:
            if raw != "javascript:alert(3)":
                assert raw not in page, raw
        tags = Tags()
        tags.feed(page)
        assert not {"script", "svg", "img", "iframe"} & {t for t, _a in tags.found}
        attrs = [(k, v or "") for _t, a in tags.found for k, v in a]
        assert not [k for k, _v in attrs if k.startswith("on")]
        assert not [v for k, v in attrs if k in ("href", "src", "action", "formaction")
                    and v.strip().lower().startswith("javascript:")]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(RoutingRule).where(
            RoutingRule.site_id == site.id)) == len(XSS)


# -- in a browser -----------------------------------------------------------------------------


@pytest.mark.browser
def test_lead_edits_previews_and_saves_a_rule_in_chromium(make_app):
    """A lead signs in, opens the routing rules, changes a rule in the textarea, tests it
    against the recent answers (the table shows the new team, nothing is saved), saves, and
    the site's rules are the edited ones. No axe-core violations on the teams page, the
    preview and the saved page; screenshots at 1280 and 390 px."""

    from .conftest import free_port
    from .test_browser import check_page, chromium_serving, sign_in

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(PUBLIC_BASE_URL=base, MAIL_BACKEND="console",
                   TRUSTED_HOSTS=["127.0.0.1", "localhost"])
    site = make_site(app, support_contact="help@shop.example")
    member(app, "lead@shop.example", site, "lead")
    member(app, "agent@shop.example", site, "agent")
    with app.app_context():
        rules_mod.replace(site.id, rules_mod.validate_all(RULES))
    for i, (rating, comment) in enumerate(COMMENTS):
        answer(app, site, rating, comment, order=f"o-{i}")
    wait = 10_000
    with chromium_serving(app, port) as (browser, _url):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        sign_in(page, base, "lead@shop.example", PASSWORD)
        page.get_by_role("button", name="Sign out everywhere").wait_for(timeout=wait)
        page.goto(f"{base}/admin/sites/{site.id}/settings/teams")
        page.get_by_role("heading", name="Teams and members").wait_for(timeout=wait)
        check_page(page, "settings-teams")
        page.goto(f"{base}/admin/sites/{site.id}/settings/rules")
        box = page.get_by_label("Rules")
        text = box.input_value()
        assert "Price talk" in text and "team: sales" in text
        box.fill(text.replace("team: sales", "team: support"))
        page.get_by_role("button", name="Test against the last 100 answers").click()
        page.get_by_role("heading", name=re.compile("Preview: 5 recent answers")
                         ).wait_for(timeout=wait)
        table = page.locator("table.preview")
        teams = table.locator("td[data-label=Team] code").all_inner_texts()
        assert teams.count("sales") == 0 and teams.count("support") == 4, teams
        assert table.locator("td[data-label=Team]", has_text="was sales").count() == 2
        assert [r["actions"].get("team") for r in stored(app, site)] == [
            "logistics", "sales", None]
        check_page(page, "settings-rules-preview")
        page.get_by_role("button", name="Save rules").click()
        page.get_by_text("3 rule(s) saved.").wait_for(timeout=wait)
        check_page(page, "settings-rules-saved")
    assert [r["actions"].get("team") for r in stored(app, site)] == [
        "logistics", "support", None]
    assert audit_actions(app, site) == ["rules.replace"]

