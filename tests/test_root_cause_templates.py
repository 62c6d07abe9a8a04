"""Root cause "five whys" with a per-site category list, and response templates per site and
locale (issue 8, point 3): resolving records them through loop.cases.transition, templates
fill their placeholders safely and are preselected by the routing rule's `template` key, and
the settings pages that manage both are for owners and leads of the site only."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.loop import cases, replies, rules
from app.models import AuditEvent, Case, CaseEvent, ResponseTemplate, Site

from .conftest import make_site
from .test_case_view import XSS, Tags, answer, csrf, member, post, signed_in


def add_template(app, site: Site, key: str, locale: str, title: str, body: str) -> int:
    """A template stored directly; returns its id."""
    with app.app_context():
        t = ResponseTemplate(site_id=site.id, key=key, locale=locale, title=title, body=body)
        db.session.add(t)
        db.session.commit()
        return t.id


def audits(app, action: str) -> list[dict]:
    """Details of the audit rows with this action, in order."""
    with app.app_context():
        return [d for d in db.session.scalars(select(AuditEvent.details).where(
            AuditEvent.action == action).order_by(AuditEvent.id))]


def test_resolve_records_whys_and_category_on_the_timeline(make_app, db_kind):
    """Resolving in the case view with a category and whys stores them on the case (blank
    why lines dropped), on the resolved event and in the audit row; the page shows the
    category's label (an edited one) and the whys in order."""
    app = make_app(db_kind)
    site = make_site(app)
    member(app, "agent@shop.example", site, "agent")
    with app.app_context():
        replies.set_labels(db.session.get(Site, site.id),
                           {**dict(replies.DEFAULT_CATEGORIES), "courier": "Courier (DHL)"},
                           actor="test")
    case_id = answer(app, site, 1)
    agent = signed_in(app, "agent@shop.example")
    resp = post(agent, case_id, "resolve", resolution="Sent a new TV",
                root_cause_category="courier",
                why=["The TV arrived broken", "", "The box was dropped", "  "])
    assert resp.status_code == 302
    with app.app_context():
        case = db.session.get(Case, case_id)
        assert (case.status, case.root_cause_category) == ("resolved", "courier")
        assert case.whys == ["The TV arrived broken", "The box was dropped"]
        event = db.session.scalar(select(CaseEvent).where(CaseEvent.case_id == case_id,
                                                          CaseEvent.kind == "resolved"))
        assert event.data["category"] == "courier"
        assert event.data["whys"] == ["The TV arrived broken", "The box was dropped"]
    assert audits(app, "case.resolve")[-1]["category"] == "courier"
    assert audits(app, "case.resolve")[-1]["whys"] == 2
    page = agent.get(f"/admin/cases/{case_id}").get_data(as_text=True)
    timeline = page.split('id="timeline"')[1].split("</ol>")[0]
    assert "category: Courier (DHL)" in timeline
    assert "<li>Why? The TV arrived broken</li><li>Why? The box was dropped</li>" in timeline
    assert "<strong>Category:</strong> Courier (DHL)" in page


def test_whys_and_category_are_validated(app):
    """More than five whys, a why over 500 characters, a category not in the site's list, or
    whys on a step other than resolve are refused and change nothing; the CLI takes --why
    (repeated) and --category the same way."""
    site = make_site(app)
    case_id = answer(app, site, 1)
    bad = [({"whys": ["w"] * 6}, "at most 5 whys"),
           ({"whys": ["x" * 501]}, "at most 500 characters"),
           ({"root_cause_category": "weather"}, "unknown root-cause category")]
    with app.app_context():
        for kw, message in bad:
            with pytest.raises(cases.TransitionError, match=message):
                cases.transition(case_id, "resolved", "cli", resolution="done", **kw)
        with pytest.raises(cases.TransitionError, match="belong to a resolution"):
            cases.transition(case_id, "acknowledged", "cli", whys=["why"])
        case = db.session.get(Case, case_id)
        assert (case.status, case.whys, case.root_cause_category) == ("new", None, None)
        assert cases.transition(case_id, "resolved", "cli", resolution="done",
                                whys=["y" * 500] * 5, root_cause_category="other").whys == [
            "y" * 500] * 5
    runner = app.test_cli_runner()
    case2 = answer(app, site, 2, order="1002")
    result = runner.invoke(args=["cases", "transition", str(case2), "resolved", "--actor", "cli",
                                 "--resolution", "Refunded", "--category", "weather"])
    assert result.exit_code == 1 and "unknown root-cause category" in result.output
    result = runner.invoke(args=["cases", "transition", str(case2), "resolved", "--actor", "cli",
                                 "--resolution", "Refunded", "--category", "packaging",
                                 "--why", "Box too thin", "--why", "Cheapest supplier"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        case = db.session.get(Case, case2)
        assert (case.root_cause_category, case.whys) == (
            "packaging", ["Box too thin", "Cheapest supplier"])


def test_placeholders_render_safely():
    """The four placeholders are filled; an unknown customer name is left out with its
    space; format-string tricks (attribute access, indexes, conversions, format specs,
    unknown names) stay the literal text they are; nothing is HTML-unescaped."""
    ctx = replies.Context(order="1001", sku="TV-1, TV-2", case_link="https://x.example/c/7")
    body = ("Hello {customer_name}, about order {order} ({sku}): {case_link}\n"
            "{case.__class__} {0.__init__} {order.__class__} {order!r} {order:>10} "
            "{sku[0]} {unknown} &lt;b&gt; <b>")
    assert replies.render(body, ctx) == (
        "Hello, about order 1001 (TV-1, TV-2): https://x.example/c/7\n"
        "{case.__class__} {0.__init__} {order.__class__} {order!r} {order:>10} "
        "{sku[0]} {unknown} &lt;b&gt; <b>")
    named = replies.Context(customer_name="Alex", order="9")
    assert replies.render("Hi {customer_name}, {order}{sku}.", named) == "Hi Alex, 9."
    assert replies.render("Sorry, {customer_name}. {sku}", ctx) == "Sorry. TV-1, TV-2"


def test_rule_template_preselected_and_filled(make_app, db_kind):
    """The routing rule's `template` key preselects that template in the case's locale (else
    the site's default locale), its placeholders filled for the case; ?template= picks
    another or none; the agent's edited message is what the resolution stores."""
    app = make_app(db_kind)
    site = make_site(app)
    member(app, "agent@shop.example", site, "agent")
    with app.app_context():
        rules.replace(site.id, [{"name": "TVs", "conditions": {"sku": ["TV-*"]},
                                 "actions": {"template": "tv_damage"}, "continue": True},
                                *rules.DEFAULT_RULES])
        db.session.commit()
    add_template(app, site, "tv_damage", "en", "TV damaged",
                 "Hello {customer_name}, sorry about order {order} ({sku}). {case_link}")
    add_template(app, site, "tv_damage", "tr", "TV hasarlı", "Merhaba, sipariş {order}.")
    add_template(app, site, "apology", "en", "Apology", "We are sorry about {sku}.")
    add_template(app, site, "refund", "tr", "İade", "only in Turkish")
    english = answer(app, site, 1, locale="de")  # no German templates: the site's English
    turkish = answer(app, site, 1, order="2002", locale="tr")
    with app.app_context():
        assert db.session.get(Case, english).template == "tv_damage"
    agent = signed_in(app, "agent@shop.example")

    page = agent.get(f"/admin/cases/{english}").get_data(as_text=True)
    assert '<option value="tv_damage" selected>TV damaged (en)</option>' in page
    assert '<option value="apology">Apology (en)</option>' in page and "refund" not in page
    message = re.search(r'<textarea id="customer_message"[^>]*>(.*?)</textarea>', page,
                        re.S).group(1)
    assert html.unescape(message) == (
        f"Hello, sorry about order 1001 (TV-1, TV-2). http://localhost/admin/cases/{english}")

    page = agent.get(f"/admin/cases/{turkish}").get_data(as_text=True)
    assert '<option value="tv_damage" selected>TV hasarlı (tr)</option>' in page
    assert '<option value="refund">İade (tr)</option>' in page
    assert ">Merhaba, sipariş 2002.</textarea>" in page

    page = agent.get(f"/admin/cases/{english}?template=apology").get_data(as_text=True)
    assert '<option value="apology" selected>' in page
    assert ">We are sorry about TV-1, TV-2.</textarea>" in page
    page = agent.get(f"/admin/cases/{english}?template=").get_data(as_text=True)
    assert '<option value="" selected>No template</option>' in page
    assert 'rows="6"></textarea>' in page

    edited = "Hello Alex, sorry about order 1001. A new TV leaves today."
    assert post(agent, english, "resolve", resolution="New TV sent",
                customer_message=edited).status_code == 302
    with app.app_context():
        assert db.session.get(Case, english).customer_message == edited


def test_hostile_template_inert_in_page_and_email(make_app, smtp_server):
    """Script tags, event handlers, SVG and format tricks in a template's title and body are
    escaped text in the settings page, the preview and the case view, and escaped in the
    HTML email the resolution sends (the text email carries them as typed)."""
    port, box = smtp_server
    app = make_app("sqlite", MAIL_SERVER="127.0.0.1", MAIL_PORT=port)
    site = make_site(app)
    member(app, "lead@shop.example", site, "lead")
    body = " ".join(XSS) + " {order} {case.__class__}"
    tid = add_template(app, site, "evil", "en", XSS[0], body)
    case_id = answer(app, site, 1, order="1001")
    with app.app_context():
        db.session.get(Case, case_id).template = "evil"
        db.session.commit()
    lead = signed_in(app, "lead@shop.example")
    pages = [lead.get(f"/admin/sites/{site.id}/settings/templates").get_data(as_text=True),
             lead.get(f"/admin/sites/{site.id}/settings/templates/{tid}").get_data(as_text=True),
             lead.get(f"/admin/cases/{case_id}").get_data(as_text=True)]
    for page in pages:
        for raw in XSS:
            if raw != "javascript:alert(3)":
                assert raw not in page, raw
        tags = Tags()
        tags.feed(page)
        assert not {"script", "svg", "img", "iframe"} & {t for t, _a in tags.found}
        assert not [k for _t, a in tags.found for k, _v in a if k.startswith("on")]
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "{case.__class__}" in pages[1]  # the preview: inert, not evaluated
    message = re.search(r'<textarea id="customer_message"[^>]*>(.*?)</textarea>', pages[2],
                        re.S).group(1)
    assert html.unescape(message) == " ".join(XSS) + " 1001 {case.__class__}"
    assert post(lead, case_id, "resolve", resolution="done",
                customer_message=html.unescape(message)).status_code == 302
    mails = [m for m in box.to("customer@mail.example") if "what we did" in m["Subject"]]
    assert len(mails) == 1
    html_part = mails[0].get_body(("html",)).get_content()
    for raw in XSS:
        if raw != "javascript:alert(3)":
            assert raw not in html_part, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_part
    assert "<script>alert(1)</script>" in mails[0].get_body(("plain",)).get_content()


ROLES = [("owner", 200), ("lead", 200), ("agent", 403), ("viewer", 403)]


@pytest.mark.parametrize("role,status", ROLES)
def test_settings_pages_per_role_and_site(make_app, db_kind, role, status):
    """Owners and leads list, create (with preview), edit and delete templates and relabel
    root-cause categories, each audited; agents and viewers get 403 and change nothing;
    another site's pages and templates answer 404 and change nothing; a POST without the
    CSRF token is refused."""
    app = make_app(db_kind)
    site, other = make_site(app, name="Own"), make_site(app, name="Other")
    member(app, "me@shop.example", site, role)
    theirs = add_template(app, other, "theirs", "en", "Theirs", "other shop's body")
    me = signed_in(app, "me@shop.example")
    base = f"/admin/sites/{site.id}/settings"
    token = csrf(me.get("/admin/").get_data(as_text=True))

    for url in (f"{base}/templates", f"{base}/root-causes"):
        assert me.get(url).status_code == status
    for url in (f"/admin/sites/{other.id}/settings/templates",
                f"/admin/sites/{other.id}/settings/root-causes",
                f"/admin/sites/{other.id}/settings/templates/{theirs}"):
        assert me.get(url).status_code == 404
        assert me.post(url, data={"csrf_token": token, "key": "x", "locale": "en",
                                  "title": "x", "body": "x"}).status_code == 404
    assert me.post(f"/admin/sites/{other.id}/settings/templates/{theirs}/delete",
                   data={"csrf_token": token}).status_code == 404
    if status == 200:  # the other site's template id under one's own site: 404 too
        assert me.get(f"{base}/templates/{theirs}").status_code == 404
        assert me.post(f"{base}/templates/{theirs}/delete",
                       data={"csrf_token": token}).status_code == 404

    new = {"key": "late_delivery", "locale": "en", "title": "Late delivery",
           "body": "Order {order} is late, {customer_name}."}
    assert me.post(f"{base}/templates", data=new).status_code == 400  # no CSRF token
    resp = me.post(f"{base}/templates", data={"csrf_token": token, "preview": "1", **new})
    assert resp.status_code == status
    if status == 200:
        assert "Order 1001 is late, Alex.</p>" in resp.get_data(as_text=True)  # made-up case
    resp = me.post(f"{base}/templates", data={"csrf_token": token, **new})
    assert resp.status_code == (302 if status == 200 else 403)
    labels = {f"label-{k}": v for k, v in replies.DEFAULT_CATEGORIES}
    resp = me.post(f"{base}/root-causes", data={"csrf_token": token, **labels,
                                                "label-courier": "Carrier"})
    assert resp.status_code == (302 if status == 200 else 403)
    with app.app_context():
        ours = db.session.scalars(select(ResponseTemplate).where(
            ResponseTemplate.site_id == site.id)).all()
        assert db.session.get(ResponseTemplate, theirs).body == "other shop's body"
        assert db.session.get(Site, other.id).root_cause_categories is None
        own = db.session.get(Site, site.id)
    if status != 200:
        assert ours == [] and own.root_cause_categories is None
        assert audits(app, "template.create") == audits(app, "root_causes.update") == []
        return
    assert [(t.key, t.locale, t.title) for t in ours] == [("late_delivery", "en",
                                                           "Late delivery")]
    assert ("courier", "Carrier") in [(c["key"], c["label"]) for c in own.root_cause_categories]
    assert audits(app, "root_causes.update") == [{"changed": {"courier": "Carrier"}}]
    tid = ours[0].id
    page = me.get(f"{base}/templates/{tid}").get_data(as_text=True)
    assert "Order  is late" not in page and "Late delivery" in page
    dup = {**new, "key": "late_delivery"}
    assert me.post(f"{base}/templates", data={"csrf_token": token, **dup}).status_code == 400
    assert me.post(f"{base}/templates/{tid}", data={"csrf_token": token, **new,
                                                    "title": "Late (edited)"}).status_code == 302
    bad = me.post(f"{base}/templates/{tid}", data={"csrf_token": token, **new, "key": "Bad Key"})
    assert bad.status_code == 400 and "Not saved:" in bad.get_data(as_text=True)
    assert me.post(f"{base}/templates/{tid}/delete", data={"csrf_token": token}).status_code == 302
    assert [d["key"] for d in audits(app, "template.create")] == ["late_delivery"]
    assert [d["key"] for d in audits(app, "template.update")] == ["late_delivery"]
    assert [d["key"] for d in audits(app, "template.delete")] == ["late_delivery"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ResponseTemplate)) == 1


@pytest.mark.browser
def test_settings_pages_accessible_in_chromium(make_app):
    """The templates page (with a preview), one template's edit page, the root-cause page and
    the resolve form with a preselected template: no axe-core violations; screenshots at 1280
    and 390 px."""

    from .conftest import free_port
    from .test_browser import check_page, chromium_serving, sign_in
    from .test_case_view import PASSWORD

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(PUBLIC_BASE_URL=base, TRUSTED_HOSTS=["127.0.0.1", "localhost"])
    site = make_site(app, name="Demo shop")
    member(app, "lead@shop.example", site, "lead")
    add_template(app, site, "tv_damage", "en", "TV arrived damaged",
                 "Hello {customer_name},\n\nwe are sorry your order {order} ({sku}) arrived "
                 "damaged. A replacement leaves our warehouse today.\n\nYour case: {case_link}")
    add_template(app, site, "late", "en", "Late delivery", "Order {order} is on its way.")
    case_id = answer(app, site, 1)
    with app.app_context():
        db.session.get(Case, case_id).template = "tv_damage"
        db.session.commit()
    wait = 10_000
    with chromium_serving(app, port) as (browser, _url):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        sign_in(page, base, "lead@shop.example", PASSWORD)
        page.get_by_role("link", name="Inbox").first.wait_for(timeout=wait)
        page.goto(f"{base}/admin/sites/{site.id}/settings/templates")
        page.get_by_label("Key").fill("apology")
        page.get_by_label("Title").fill("Apology")
        page.get_by_label("Message").fill("Sorry about {sku}, {customer_name}.")
        page.get_by_role("button", name="Preview").click()
        page.get_by_text("Sorry about TV-1, TV-2.").wait_for(timeout=wait)
        check_page(page, "settings-templates")
        page.get_by_role("button", name="Save template").click()
        page.get_by_text("Template apology (en) saved.").wait_for(timeout=wait)
        page.get_by_role("link", name="Edit tv_damage (en)").click()
        page.get_by_role("heading", name="Edit tv_damage (en)").wait_for(timeout=wait)
        check_page(page, "settings-template-edit")
        page.goto(f"{base}/admin/sites/{site.id}/settings/root-causes")
        page.get_by_label("Label of courier").fill("Carrier")
        page.get_by_role("button", name="Save labels").click()
        page.get_by_text("Root-cause categories saved.").wait_for(timeout=wait)
        check_page(page, "settings-root-causes")
        page.goto(f"{base}/admin/cases/{case_id}")
        assert page.get_by_label("Response template").input_value() == "tv_damage"
        assert "order 1001 (TV-1, TV-2)" in page.get_by_label(
            "Message to the customer").input_value()
        page.get_by_label("Response template").select_option("late")
        page.get_by_role("button", name="Use template").click()
        page.wait_for_url(re.compile(r"template=late"))
        assert page.get_by_label("Message to the customer").input_value() == (
            "Order 1001 is on its way.")
        page.get_by_label("Root-cause category").select_option("courier")
        check_page(page, "case-resolve-template")
