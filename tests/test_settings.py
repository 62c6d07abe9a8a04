"""Settings pages (issue 8, point 4): site settings, secret rotation shown once, the embed
helper, moments and webhook endpoints with their delivery log; every change a POST with CSRF,
audited, through the functions the CLI uses; roles and sites decide who may see and change."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from app.admin.settings import SECTIONS
from app.extensions import db
from app.loop import webhooks
from app.models import AuditEvent, DeliveryAttempt, Moment, Site, WebhookDelivery, WebhookEndpoint
from app.signing import VERIFIED_PROMPT

from .conftest import make_site
from .test_case_view import XSS, Tags, answer, csrf, member, signed_in

BASE = "https://feedback.example"


def settings_app(make_app, db_kind: str = "sqlite", **config):
    """An app with a public base URL, reached by the test client as localhost."""
    return make_app(db_kind, PUBLIC_BASE_URL=BASE, TRUSTED_HOSTS=["localhost"], **config)


def url(site_id: int, rest: str) -> str:
    return f"/admin/sites/{site_id}/settings/{rest}"


def form_post(client, page_url: str, action_url: str, **form):
    """POST a form of `page_url` with its CSRF token."""
    page = client.get(page_url).get_data(as_text=True)
    return client.post(action_url, data={"csrf_token": csrf(page), **form})


def site_form(site: Site, **changes) -> dict:
    """Every field of the site form as the page sends it, with `changes`."""
    values = {"name": site.name, "allowed_origins": "\n".join(site.allowed_origins),
              "default_locale": site.default_locale, "review_url": site.review_url or "",
              "referral_url": site.referral_url or "",
              "support_contact": site.support_contact or ""}
    for f in ("sla_ack_hours", "sla_ack_target", "sla_ack_late_hours", "sla_ack_late_target",
              "sla_close_hours", "sla_close_target", "sla_loop_hours", "sla_reminder_minutes",
              "followup_negative_hours", "followup_neutral_hours", "followup_positive_hours"):
        values[f] = str(getattr(site, f))
    values.update(changes)
    return values


def moment_form(m: Moment | None = None, **changes) -> dict:
    values = {"key": "", "question": "", "scale": "csat", "sampling_rate": "1.0",
              "cooldown_hours": "336", "comment_enabled": "y", "active": "y"}
    if m is not None:
        values.update(key=m.key, question=m.question, scale=m.scale,
                      sampling_rate=str(m.sampling_rate), cooldown_hours=str(m.cooldown_hours))
        for flag in ("comment_enabled", "voice_enabled", "active"):
            values.pop(flag, None)
            if getattr(m, flag):
                values[flag] = "y"
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def audits(app, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                  .order_by(AuditEvent.id)).all()
        db.session.expunge_all()
        return list(rows)


def fresh(app, model, ident):
    with app.app_context():
        obj = db.session.get(model, ident)
        db.session.expunge_all()
        return obj


# Each page and change: (method, path under the site's settings, action of ACTIONS).
PAGES = [("GET", "site", "site.settings"), ("POST", "site", "site.settings"),
         ("POST", "site/rotate", "site.keys"), ("GET", "moments", "moments.manage"),
         ("POST", "moments/new", "moments.manage"), ("POST", "moments/{m}", "moments.manage"),
         ("GET", "webhooks", "webhooks.manage"), ("POST", "webhooks/new", "webhooks.manage"),
         ("GET", "webhooks/{e}", "webhooks.manage"),
         ("POST", "webhooks/{e}/disable", "webhooks.manage"),
         ("POST", "webhooks/{e}/enable", "webhooks.manage"),
         ("POST", "webhooks/{e}/deliveries/{d}/redeliver", "webhooks.manage"),
         ("POST", "webhooks/{e}/remove", "webhooks.manage")]


def test_roles_and_sites_decide_every_settings_page(make_app, db_kind, receiver):
    """Owners reach every page and change, leads all but the secret, agents and viewers get
    403 on their own site; another site's settings, moment, endpoint or delivery is 404 for
    everyone and changes nothing."""
    from app.admin.permissions import ACTIONS

    app = settings_app(make_app, db_kind, WEBHOOK_LOOPBACK_PORTS_FOR_TESTS=[receiver.port])
    site, other = make_site(app, name="Own"), make_site(app, name="Other")
    with app.app_context():
        own_ep = webhooks.create_endpoint(db.session.get(Site, site.id),
                                          receiver.url("/ok"), [])
        other_ep = webhooks.create_endpoint(db.session.get(Site, other.id),
                                            receiver.url("/ok"), [])
        ids = {"own": (own_ep.id,), "other": (other_ep.id,)}
    answer(app, site)
    answer(app, other)
    with app.app_context():
        def first(model, **where):
            return db.session.scalar(select(model.id).filter_by(**where).order_by(model.id))
        refs = {name: {"m": first(Moment, site_id=s.id), "e": ids[name][0],
                       "d": first(WebhookDelivery, endpoint_id=ids[name][0])}
                for name, s in (("own", site), ("other", other))}
    assert refs["own"]["d"] and refs["other"]["d"]
    for role in ("owner", "lead", "agent", "viewer"):
        member(app, f"{role}@shop.example", site, role)
    member(app, "stranger@shop.example", other, "owner")

    def before() -> tuple:
        with app.app_context():
            s = db.session.get(Site, other.id)
            return (s.settings_version, list(s.signing_secrets),
                    db.session.scalar(select(func.count(WebhookEndpoint.id))),
                    db.session.scalar(select(func.count(Moment.id))),
                    db.session.scalar(select(func.count(AuditEvent.id)).where(
                        AuditEvent.site_id == other.id)))

    for role in ("owner", "lead", "agent", "viewer"):
        client = signed_in(app, f"{role}@shop.example")
        token = csrf(client.get("/admin/").get_data(as_text=True))
        for method, path, action in PAGES:
            # Another site: 404, whatever the role; nothing changes.
            snapshot = before()
            target = url(other.id, path.format(**refs["other"]))
            resp = (client.get(target) if method == "GET"
                    else client.post(target, data={"csrf_token": token}))
            assert resp.status_code == 404, (role, method, path)
            # Own site with another site's object: 404 too.
            if "{" in path:
                target = url(site.id, path.format(**refs["other"]))
                resp = (client.get(target) if method == "GET"
                        else client.post(target, data={"csrf_token": token}))
                # (403 first when the role lacks the action on the URL's site: nothing of
                # the other site's object is read.)
                assert resp.status_code == (404 if role in ACTIONS[action] else 403), (
                    role, method, path, "mixed")
            assert before() == snapshot
            # Own site: allowed or 403.
            if method == "GET" or role not in ACTIONS[action]:
                target = url(site.id, path.format(**refs["own"]))
                resp = (client.get(target) if method == "GET"
                        else client.post(target, data={"csrf_token": token}))
                assert resp.status_code == (200 if role in ACTIONS[action] else 403), (
                    role, method, path)
        nav = client.get("/admin/").get_data(as_text=True)
        assert ('href="/admin/settings"' in nav) is (role in ("owner", "lead")), role
    # A stranger's own site settings work for them.
    stranger = signed_in(app, "stranger@shop.example")
    assert stranger.get(url(other.id, "site")).status_code == 200
    assert stranger.get("/admin/settings").headers["Location"].endswith(url(other.id, "site"))


def test_settings_navigation(make_app):
    """The sub-navigation lists every settings section that exists, in the agreed order,
    only those the role allows, and marks the current one (also on a page answering a POST);
    /admin/settings lists the sites when a person manages several."""
    app = settings_app(make_app)
    site, second = make_site(app, name="Alpha"), make_site(app, name="Beta")
    member(app, "owner@shop.example", site, "owner")
    with app.app_context():
        from app.admin import permissions
        from app.models import StaffUser
        user = db.session.scalar(select(StaffUser).filter_by(email="owner@shop.example"))
        permissions.grant(user, db.session.get(Site, second.id), "lead")
    owner = signed_in(app, "owner@shop.example")
    index = owner.get("/admin/settings")
    assert index.status_code == 200
    links = re.findall(r'<a href="(/admin/sites/\d+/settings/site)">(\w+)</a>',
                       index.get_data(as_text=True))
    assert links == [(url(site.id, "site"), "Alpha"), (url(second.id, "site"), "Beta")]
    page = owner.get(url(site.id, "moments")).get_data(as_text=True)
    nav = re.search(r'<nav class="settings-nav".*?</nav>', page, re.S).group(0)
    labels = re.findall(r'>([A-Z][a-z ]+)</a>', nav)
    expected = [label for endpoint, label, _a in SECTIONS if endpoint in app.view_functions]
    assert labels == expected and labels[:4] == ["Site", "Branding", "Moments", "Webhooks"]
    assert re.search(r'aria-current="page">Moments<', nav)
    rotated = form_post(owner, url(site.id, "site"), url(site.id, "site/rotate"))
    assert 'aria-current="page">Site<' in rotated.get_data(as_text=True)


def test_changes_need_csrf_and_post(app):
    """A settings POST without the CSRF token is refused and changes nothing; GET on a
    change URL is 405."""
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    owner = signed_in(app, "owner@shop.example")
    assert owner.post(url(site.id, "site"), data=site_form(site, name="X")).status_code == 400
    assert owner.post(url(site.id, "site/rotate")).status_code == 400
    assert owner.get(url(site.id, "site/rotate")).status_code == 405
    assert fresh(app, Site, site.id).name == site.name
    assert fresh(app, Site, site.id).signing_secrets == site.signing_secrets


def test_site_settings_save_validate_and_audit(make_app, db_kind):
    """A lead saves name, origins, locale, URLs, contact, SLA targets and follow-up hours:
    the site and its settings_version change, one audit row names the changed fields;
    invalid values come back as friendly errors next to their fields and nothing is saved."""
    app = settings_app(make_app, db_kind)
    site = make_site(app, support_contact="old@shop.example")
    member(app, "lead@shop.example", site, "lead")
    lead = signed_in(app, "lead@shop.example")
    page = lead.get(url(site.id, "site")).get_data(as_text=True)
    assert 'value="old@shop.example"' in page and "Rotate the secret" not in page
    resp = lead.post(url(site.id, "site"), data={"csrf_token": csrf(page), **site_form(
        site, name="New name", allowed_origins="https://Shop.example/\nhttps://m.shop.example",
        default_locale="tr", review_url="https://reviews.example/shop",
        support_contact="help@shop.example", sla_ack_hours="3", sla_close_target="0.9",
        followup_negative_hours="12", webhooks_allow_private="y")})
    assert resp.status_code == 302
    assert "Settings saved." in lead.get(resp.headers["Location"]).get_data(as_text=True)
    saved = fresh(app, Site, site.id)
    assert (saved.name, saved.allowed_origins, saved.default_locale, saved.review_url,
            saved.support_contact, saved.sla_ack_hours, saved.sla_close_target,
            saved.followup_negative_hours, saved.webhooks_allow_private) == (
        "New name", ["https://shop.example", "https://m.shop.example"], "tr",
        "https://reviews.example/shop", "help@shop.example", 3, 0.9, 12, True)
    assert saved.settings_version == site.settings_version + 1
    [row] = audits(app, "site.settings")
    assert row.actor == "lead@shop.example" and row.site_id == site.id
    assert set(row.details["changed"]) == {
        "name", "allowed_origins", "default_locale", "review_url", "support_contact",
        "sla_ack_hours", "sla_close_target", "followup_negative_hours",
        "webhooks_allow_private"}

    bad = lead.post(url(site.id, "site"), data={"csrf_token": csrf(page), **site_form(
        saved, name="", allowed_origins="https://ok.example\nnot an origin",
        review_url="javascript:alert(1)", sla_ack_hours="two", sla_close_target="1.5",
        default_locale="english please")})
    assert bad.status_code == 400
    text = bad.get_data(as_text=True)
    for field, message in (("name", "Required."), ("allowed_origins", "not an origin"),
                           ("review_url", "An http(s) URL"), ("sla_ack_hours", "A whole number"),
                           ("sla_close_target", "A share between 0 and 1"),
                           ("default_locale", "A language code")):
        assert re.search(rf'id="e-{field}">[^<]*{re.escape(message)}', text), field
    assert 'value="javascript:alert(1)"' in text  # what was typed comes back, escaped
    assert fresh(app, Site, site.id).name == "New name"
    assert len(audits(app, "site.settings")) == 1


def test_cli_site_settings_shares_the_checks(app):
    """`flask site-settings` saves through the same function as the page: a valid value is
    saved, an invalid one is one `error:` line and changes nothing."""
    site = make_site(app)
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["site-settings", site.public_key, "--sla-ack-hours", "4"])
    assert ok.exit_code == 0 and "ack=4h" in ok.output
    bad = runner.invoke(args=["site-settings", site.public_key, "--sla-close-hours", "0"])
    assert bad.exit_code == 1
    assert "sla_close_hours: Between 1 and 8760." in bad.output + bad.stderr
    saved = fresh(app, Site, site.id)
    assert (saved.sla_ack_hours, saved.sla_close_hours) == (4, site.sla_close_hours)


def test_new_secret_is_shown_once(make_app, db_kind):
    """An owner rotates the signing secret: the response shows the new secret (not cached),
    the next page view never shows any secret; old secrets keep verifying unless dropped;
    each rotation is audited without the secret."""
    app = settings_app(make_app, db_kind)
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    owner = signed_in(app, "owner@shop.example")
    resp = form_post(owner, url(site.id, "site"), url(site.id, "site/rotate"))
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    secrets_now = fresh(app, Site, site.id).signing_secrets
    assert len(secrets_now) == 2 and secrets_now[0] == site.signing_secrets[0]
    new = secrets_now[-1]
    assert resp.get_data(as_text=True).count(new) == 1
    again = owner.get(url(site.id, "site")).get_data(as_text=True)
    assert new not in again and site.signing_secrets[0] not in again
    assert "sk_" not in again
    resp = form_post(owner, url(site.id, "site"), url(site.id, "site/rotate"), drop_old="y")
    newest = fresh(app, Site, site.id).signing_secrets
    assert len(newest) == 1 and newest[0] in resp.get_data(as_text=True)
    rows = audits(app, "site.secret_rotated")
    assert [r.details["drop_old"] for r in rows] == [False, True]
    assert not [r for r in rows if new in str(r.details) or newest[0] in str(r.details)]


def test_embed_helper_prints_tag_and_recipe_per_active_moment(make_app):
    """The site page shows, per active moment, the script tag on PUBLIC_BASE_URL and a token
    recipe with the site's key and the moment's one-click range; a token made with the
    recipe's values opens the prompt."""
    app = settings_app(make_app)
    site = make_site(app)
    member(app, "lead@shop.example", site, "lead")
    with app.app_context():
        db.session.scalar(select(Moment).filter_by(site_id=site.id, key="kiosk")).active = False
        db.session.commit()
    page = signed_in(app, "lead@shop.example").get(url(site.id, "site")).get_data(as_text=True)
    tag = (f'&lt;script src=&#34;{BASE}/widget.js&#34; async\n        data-site=&#34;'
           f'{site.public_key}&#34; data-moment=&#34;delivery&#34;&gt;&lt;/script&gt;')
    assert tag in page
    assert "data-moment=&#34;kiosk&#34;" not in page
    assert page.count("data-site=&#34;") == 6
    assert f"salt=&#34;{VERIFIED_PROMPT}&#34;" in page
    assert f"link = f&#34;{BASE}/p/{{token}}&#34;" in page
    assert "for n in range(0, 11)]  # one-click links: nps" in page
    assert "for n in (1, 0)]  # one-click links: thumbs" in page
    assert "for n in range(1, 6)]  # one-click links: csat" in page
    # The recipe, run as printed, with the site's secret: its token works.
    recipe = re.search(r'aria-label="Verified-token recipe for delivery">(.*?)</pre>', page,
                       re.S).group(1)
    import html
    code = html.unescape(recipe)
    scope = {"SITE_SIGNING_SECRET": site.signing_secrets[-1]}
    exec(code, scope)  # noqa: S102 - the page's own snippet
    assert len(scope["ratings"]) == 11
    client = app.test_client()
    link = scope["link"].removeprefix(BASE)
    assert client.get(link).status_code == 200


def test_moments_edit_add_and_errors(make_app, db_kind):
    """A lead edits a moment (question, scale, comment off, sampling, cooldown, inactive)
    and adds one with a valid key; a bad key, a taken key, an empty question, a sampling
    outside 0–1 and an unknown scale are friendly errors and save nothing; each change is
    audited and bumps the site's settings_version."""
    app = settings_app(make_app, db_kind)
    site = make_site(app)
    member(app, "lead@shop.example", site, "lead")
    lead = signed_in(app, "lead@shop.example")
    with app.app_context():
        m = db.session.scalar(select(Moment).filter_by(site_id=site.id, key="checkout"))
        db.session.expunge(m)
    page_url = url(site.id, "moments")
    resp = form_post(lead, page_url, url(site.id, f"moments/{m.id}"), **moment_form(
        m, question="How was checking out?", scale="nps", comment_enabled=None,
        sampling_rate="0.25", cooldown_hours="48", active=None,
        question_tr="Ödeme nasıldı?", question_ru=" "))
    assert resp.status_code == 302
    after = lead.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Moment checkout saved." in after and f'id="m-{m.id}" open>' in after
    saved = fresh(app, Moment, m.id)
    assert (saved.question, saved.scale, saved.comment_enabled, saved.sampling_rate,
            saved.cooldown_hours, saved.active) == ("How was checking out?", "nps", False,
                                                    0.25, 48, False)
    assert saved.questions == {"tr": "Ödeme nasıldı?"}  # a blank language is left out
    assert 'name="question_tr" lang="tr" value="Ödeme nasıldı?"' in after
    # Without its own text, a language shows what customers will see: for a default
    # moment's question, the catalog's translation.
    assert "Empty: customers see “<span lang=\"tr\">Bizi bir arkadaşınıza önerme" in after
    assert fresh(app, Site, site.id).settings_version == site.settings_version + 1
    resp = form_post(lead, page_url, url(site.id, "moments/new"), **moment_form(
        key="post_purchase", question="All good with your order?", scale="thumbs"))
    assert resp.status_code == 302
    with app.app_context():
        added = db.session.scalar(select(Moment).filter_by(site_id=site.id,
                                                           key="post_purchase"))
        assert (added.scale, added.question, added.active) == (
            "thumbs", "All good with your order?", True)
    assert [r.details["key"] for r in audits(app, "moment.update")] == ["checkout"]
    assert [r.details["key"] for r in audits(app, "moment.create")] == ["post_purchase"]

    with app.app_context():
        count = db.session.scalar(select(func.count(Moment.id)))
    cases = [({"key": "Bad Key!"}, "key", "Lower-case letters"),
             ({"key": "delivery"}, "key", "already has a moment"),
             ({"question": ""}, "question", "Required."),
             ({"sampling_rate": "2"}, "sampling_rate", "A share between 0 and 1"),
             ({"scale": "stars"}, "scale", "One of csat"),
             ({"question_et": "x" * 301}, "question_et", "At most 300 characters.")]
    for change, field, message in cases:
        resp = form_post(lead, page_url, url(site.id, "moments/new"), **moment_form(
            **{"key": "fresh", "question": "Q?", **change}))
        assert resp.status_code == 400, change
        assert re.search(rf'id="e-new-{field}">[^<]*{re.escape(message)}',
                         resp.get_data(as_text=True)), change
    resp = form_post(lead, page_url, url(site.id, f"moments/{m.id}"),
                     **moment_form(saved, key="post_purchase"))
    assert resp.status_code == 400
    assert f'id="e-m{m.id}-key">' in resp.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count(Moment.id))) == count
    assert fresh(app, Moment, m.id).key == "checkout"
    assert len(audits(app, "moment.create")) == 1 and len(audits(app, "moment.update")) == 1


def test_webhook_endpoints_add_disable_enable_remove(make_app, db_kind, receiver):
    """A lead adds an endpoint (its secret shown once), sees its state and pending count,
    disables, enables and removes it; an unsafe or malformed URL is a friendly error and
    adds nothing; every change is audited."""
    app = settings_app(make_app, db_kind, WEBHOOK_LOOPBACK_PORTS_FOR_TESTS=[receiver.port])
    site = make_site(app)
    member(app, "lead@shop.example", site, "lead")
    lead = signed_in(app, "lead@shop.example")
    page_url = url(site.id, "webhooks")
    for bad, message in (("http://169.254.169.254/latest", "URL refused"),
                         ("ftp://example.com/x", "URL refused"), ("", "The URL is required")):
        resp = form_post(lead, page_url, url(site.id, "webhooks/new"), url=bad,
                         events="case.updated")
        assert resp.status_code == 400, bad
        assert message in resp.get_data(as_text=True), bad
    assert not audits(app, "webhook.create")
    resp = form_post(lead, page_url, url(site.id, "webhooks/new"), url=receiver.url("/ok"),
                     events=["case.updated", "case.resolved"], description="Helpdesk")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    with app.app_context():
        ep = db.session.scalar(select(WebhookEndpoint))
        db.session.expunge(ep)
    assert ep.events == ["case.resolved", "case.updated"]
    assert resp.get_data(as_text=True).count(ep.secret) == 1
    listing = lead.get(page_url).get_data(as_text=True)
    assert ep.secret not in listing and "Helpdesk" in listing
    assert re.search(r'data-label="State"><span><span class="badge on">active', listing)

    assert form_post(lead, page_url, url(site.id, f"webhooks/{ep.id}/disable")).status_code == 302
    assert fresh(app, WebhookEndpoint, ep.id).active is False
    assert "badge off" in lead.get(page_url).get_data(as_text=True)
    assert form_post(lead, page_url, url(site.id, f"webhooks/{ep.id}/enable")).status_code == 302
    assert fresh(app, WebhookEndpoint, ep.id).active is True
    assert form_post(lead, page_url, url(site.id, f"webhooks/{ep.id}/remove")).status_code == 302
    assert fresh(app, WebhookEndpoint, ep.id) is None
    assert [a for a in ("create", "disable", "enable", "remove")
            if audits(app, f"webhook.{a}")] == ["create", "disable", "enable", "remove"]
    assert audits(app, "webhook.create")[0].details["url"] == receiver.url("/ok")


def test_delivery_log_and_redeliver(make_app, db_kind, receiver):
    """The delivery log lists an endpoint's deliveries with each attempt (HTTP status); the
    redeliver button sends the same webhook-id and body again, audited."""
    app = settings_app(make_app, db_kind, WEBHOOK_LOOPBACK_PORTS_FOR_TESTS=[receiver.port])
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    with app.app_context():
        ep = webhooks.create_endpoint(db.session.get(Site, site.id), receiver.url("/ok"),
                                      ["response.created"])
        ep_id = ep.id
    answer(app, site)
    assert len(receiver.requests) == 1
    owner = signed_in(app, "owner@shop.example")
    log_url = url(site.id, f"webhooks/{ep_id}")
    page = owner.get(log_url).get_data(as_text=True)
    with app.app_context():
        delivery = db.session.scalar(select(WebhookDelivery))
        d_id, msg_id = delivery.id, delivery.msg_id
    assert f"#{d_id} response.created" in page and "badge st-succeeded" in page
    assert "<td>204</td>" in page and "1 attempt" in page
    resp = form_post(owner, log_url, url(site.id, f"webhooks/{ep_id}/deliveries/{d_id}/redeliver"))
    assert resp.status_code == 302 and resp.headers["Location"].endswith(log_url)
    assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first[1]["webhook-id"] == second[1]["webhook-id"] == msg_id
    assert first[2] == second[2]
    with app.app_context():
        assert db.session.scalar(select(func.count(DeliveryAttempt.id))) == 2
    assert owner.get(log_url).get_data(as_text=True).count("<td>204</td>") == 2  # both kept
    [row] = audits(app, "webhook.redeliver")
    assert row.object_id == str(d_id) and row.details["endpoint"] == ep_id


def test_hostile_text_in_settings_is_inert(make_app, receiver):
    """The XSS corpus as site name, support contact, moment question and webhook
    description/URL comes out as text on every settings page: no element, no event-handler
    attribute, no javascript: link of theirs."""
    app = settings_app(make_app, WEBHOOK_LOOPBACK_PORTS_FOR_TESTS=[receiver.port])
    site = make_site(app)
    member(app, "owner@shop.example", site, "owner")
    owner = signed_in(app, "owner@shop.example")
    evil = XSS[0] + XSS[1] + XSS[3]
    assert form_post(owner, url(site.id, "site"), url(site.id, "site"), **site_form(
        site, name=evil[:200], support_contact=XSS[4] + XSS[2])).status_code == 302
    with app.app_context():
        m = db.session.scalar(select(Moment).filter_by(site_id=site.id, key="checkout"))
        db.session.expunge(m)
    assert form_post(owner, url(site.id, "moments"), url(site.id, f"moments/{m.id}"),
                     **moment_form(m, question=XSS[4] + XSS[1])).status_code == 302
    hostile_url = receiver.url("/ok?x=" + XSS[1].replace(" ", "%20") + "<svg/onload=alert(7)>")
    resp = form_post(owner, url(site.id, "webhooks"), url(site.id, "webhooks/new"),
                     url=hostile_url, description=XSS[0])
    assert resp.status_code == 200, resp.get_data(as_text=True)
    # A bad URL echoed back in the error form is inert too.
    echoed = form_post(owner, url(site.id, "webhooks"), url(site.id, "webhooks/new"),
                       url="javascript:alert(3)" + XSS[1]).get_data(as_text=True)
    with app.app_context():
        ep_id = db.session.scalar(select(WebhookEndpoint.id))
    pages = [echoed] + [owner.get(url(site.id, p)).get_data(as_text=True)
                        for p in ("site", "moments", "webhooks", f"webhooks/{ep_id}")]
    for page in pages:
        for raw in (XSS[0], XSS[1], XSS[3], XSS[4], "<svg/onload=alert(7)>"):
            assert raw not in page, raw
        tags = Tags()
        tags.feed(page)
        assert not {"svg", "img", "iframe"} & {t for t, _a in tags.found}
        scripts = [dict(a).get("src") or "" for t, a in tags.found if t == "script"]
        assert all(s.startswith("/static/settings.js") for s in scripts), scripts
        attrs = [(k, v or "") for _t, a in tags.found for k, v in a]
        assert not [k for k, _v in attrs if k.startswith("on")]
        assert not [v for k, v in attrs if k in ("href", "src", "action", "formaction")
                    and v.strip().lower().startswith("javascript:")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1]


# -- Chromium ----------------------------------------------------------------------------------


@pytest.mark.browser
def test_owner_changes_contact_and_adds_webhook_in_chromium(make_app, receiver):
    """An owner signs in, opens Settings, changes the support contact, rotates the secret
    (shown once), adds a webhook endpoint and opens its delivery log; axe-core reports no
    violation on any settings page; screenshots at 1280 and 390 px."""

    from .conftest import free_port
    from .test_browser import check_page, chromium_serving, sign_in

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(PUBLIC_BASE_URL=base, TRUSTED_HOSTS=["127.0.0.1", "localhost"],
                   WEBHOOK_LOOPBACK_PORTS_FOR_TESTS=[receiver.port])
    site = make_site(app, support_contact="old@shop.example")
    member(app, "owner@shop.example", site, "owner")
    answer(app, site)
    wait = 10_000
    with chromium_serving(app, port) as (browser, _url):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        sign_in(page, base, "owner@shop.example", PASSWORD)
        page.get_by_role("link", name="Settings").click()
        page.get_by_role("heading", name="Site settings").wait_for(timeout=wait)
        check_page(page, "settings-site")
        page.get_by_label("Support contact").fill("care@shop.example")
        page.get_by_role("button", name="Save settings").click()
        page.get_by_text("Settings saved.").wait_for(timeout=wait)
        assert page.get_by_label("Support contact").input_value() == "care@shop.example"
        page.get_by_label("Support contact").fill("")
        page.get_by_label("Allowed origins").fill("not an origin")
        page.get_by_role("button", name="Save settings").click()
        page.get_by_text("not an origin (scheme://host[:port])").wait_for(timeout=wait)
        check_page(page, "settings-site-errors")
        page.goto(f"{base}/admin/sites/{site.id}/settings/site")
        page.get_by_role("button", name="Rotate the secret").click()
        page.get_by_role("heading", name="New signing secret").wait_for(timeout=wait)
        shown = page.locator("#new-secret").inner_text()
        check_page(page, "settings-site-secret")
        page.get_by_role("link", name="Moments").click()
        page.get_by_role("heading", name="Moments").wait_for(timeout=wait)
        check_page(page, "settings-moments")
        page.get_by_role("link", name="Webhooks", exact=True).click()
        page.get_by_label("URL").fill(receiver.url("/ok"))
        page.get_by_label("Description").fill("Helpdesk")
        page.get_by_role("button", name="Add endpoint").click()
        page.get_by_role("heading", name=re.compile("Endpoint #\\d+ added")).wait_for(
            timeout=wait)
        check_page(page, "settings-webhooks")
        answer(app, site, 9, None)  # a response.created delivery to the endpoint
        page.get_by_role("link", name="Webhooks", exact=True).click()
        page.get_by_role("link", name=re.compile("Delivery log")).first.click()
        page.get_by_role("heading", name=re.compile("Delivery log")).wait_for(
            timeout=wait)
        sent = page.locator("section.delivery").count()  # response.created + case
        assert sent >= 1 and page.locator("table.attempts tbody tr").count() == sent
        check_page(page, "settings-webhook-log")
        page.get_by_role("button", name=re.compile("Redeliver")).first.click()
        page.get_by_text(re.compile(r"Delivery #\d+ queued again")).wait_for(
            timeout=wait)
        assert page.locator("table.attempts tbody tr").count() == sent + 1
    saved = fresh(app, Site, site.id)
    assert saved.support_contact == "care@shop.example"
    assert saved.signing_secrets[-1] == shown
    with app.app_context():
        [ep] = db.session.scalars(select(WebhookEndpoint)).all()
        assert (ep.url, ep.description, ep.active) == (receiver.url("/ok"), "Helpdesk", True)


PASSWORD = "a long enough password"
