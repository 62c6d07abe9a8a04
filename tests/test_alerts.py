"""No critical alert unheard: fallback past missing or address-less teams to the support
contact and the site's owners, the timeline's record of who heard it (or that nobody could),
`flask doctor` and `sites create` telling what would fall back, the team told of a customer's
"not resolved", no "is it resolved?" for a promoter's unworked case, and the flood bound on
alerts from public prompts (held alerts summarised once per team and window; verified answers
always alerted one by one)."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.loop import alerts, cases, jobs, notify, rules, sla, webhooks
from app.models import (
    Case,
    CaseEvent,
    EmailMessage,
    Response,
    Site,
    SiteMembership,
    StaffUser,
    Team,
)

from .conftest import make_site, public_prompt, verified_token

CONTACT = "help@shop.example"
CUSTOMER = "customer@mail.example"
SUPPORT = "support-team@shop.example"
BROKEN = "The TV arrived broken, I want a refund"


def _mail(port: int, **kw):
    return {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": port, "MAIL_FROM": "loop@closeloop.example",
            **kw}


def _verified(client, site, rating=1, comment=BROKEN, moment="delivery", email=CUSTOMER,
              **extra):
    if email:
        extra["email"] = email
    token = verified_token(site, moment=moment, channel="email", customer="c-1", **extra)
    data = {"rating": str(rating), **({"comment": comment} if comment else {})}
    resp = client.post(f"/p/{token}", data=data)
    assert resp.status_code == 303, resp.get_data(as_text=True)


def _public(client, site, rating=1, comment="bad, very bad"):
    path = public_prompt(client, site, "checkout", channel="web")
    resp = client.post(path, data={"rating": str(rating), "comment": comment})
    assert resp.status_code == 303, resp.get_data(as_text=True)


def _team(site_id: int, key: str) -> Team:
    return db.session.scalar(select(Team).where(Team.site_id == site_id, Team.key == key))


def _events(case_id: int, *kinds: str) -> list[CaseEvent]:
    db.session.expire_all()
    q = select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)
    if kinds:
        q = q.where(CaseEvent.kind.in_(kinds))
    return list(db.session.scalars(q))


def _last_case() -> Case:
    db.session.expire_all()
    return db.session.scalar(select(Case).order_by(Case.id.desc()))


# -- 1. who hears a critical alert ---------------------------------------------------------------


@pytest.mark.parametrize(("setup", "team", "reason"), [
    ("default", "logistics", "team 'logistics' has no addresses"),
    ("missing", "tv", "there is no team 'tv'"),
    ("alerts_off", "logistics", "team 'logistics' has alerts turned off"),
])
def test_unreachable_team_falls_back_to_support_contact(make_app, smtp_server, setup, team,
                                                        reason):
    """The issue's answer (rating 1, "broken … refund", after delivery) routed to a team that
    cannot hear it reaches the site's support contact; the timeline says who and why."""
    port, box = smtp_server
    app = make_app("sqlite", **_mail(port))
    site = make_site(app, support_contact=CONTACT)
    with app.app_context():
        _team(site.id, "support").emails = [SUPPORT]  # the one team that has an address
        if setup == "missing":
            rules.replace(site.id, [{"name": "TVs to the TV team", "conditions": {"sku": ["TV-*"]},
                                     "actions": {"team": "tv"}, "continue": True},
                                    *rules.DEFAULT_RULES])
        elif setup == "alerts_off":
            logistics = _team(site.id, "logistics")
            logistics.emails, logistics.alert_critical = ["logistics@shop.example"], False
        db.session.commit()
    _verified(app.test_client(), site, skus=["TV-55"])

    alerts_sent = [m for m in box.to(CONTACT) if "Critical feedback" in m["Subject"]]
    assert len(alerts_sent) == 1
    body = alerts_sent[0].get_body(("plain",)).get_content()
    assert "broken" in body and f"You receive this because {reason}." in body
    assert f"teams create {site.public_key} {team} --email" in body
    assert box.to(SUPPORT) == [] and box.to("logistics@shop.example") == []
    assert len(box.to(CUSTOMER)) == 1  # the customer's own email, nothing else
    with app.app_context():
        case = _last_case()
        assert (case.team, case.priority) == (team, "critical")
        (event,) = _events(case.id, "alerted", "alert_unheard")
        assert event.kind == "alerted"
        assert event.data == {"team": team, "recipients": [CONTACT], "via": "support_contact",
                              "reason": reason, "about": "critical"}
        assert reason in event.note


def test_team_with_addresses_hears_its_own_alert(make_app, smtp_server):
    """A reachable team gets its alert directly; the timeline records it without a reason."""
    port, box = smtp_server
    app = make_app("sqlite", **_mail(port))
    site = make_site(app, support_contact=CONTACT)
    with app.app_context():
        _team(site.id, "logistics").emails = ["logistics@shop.example"]
        db.session.commit()
    _verified(app.test_client(), site)
    assert len(box.to("logistics@shop.example")) == 1 and box.to(CONTACT) == []
    body = box.to("logistics@shop.example")[0].get_body(("plain",)).get_content()
    assert "You receive this because" not in body
    with app.app_context():
        (event,) = _events(_last_case().id, "alerted")
        assert event.data == {"team": "logistics", "recipients": ["logistics@shop.example"],
                              "via": "team", "about": "critical"}


def test_no_email_support_contact_falls_back_to_site_owners(make_app, smtp_server):
    """A support contact that is a URL is no mailbox: the site's owners (active staff with
    the owner role on it) hear the alert; its leads and agents, inactive owners and other
    sites' owners do not, and neither does the global role of an account."""
    port, box = smtp_server
    app = make_app("sqlite", **_mail(port))
    site = make_site(app, support_contact="https://shop.example/help")
    other = make_site(app, name="Other")
    with app.app_context():
        for email, role, active, where in (("owner@shop.example", "owner", True, site),
                                           ("lead@shop.example", "lead", True, site),
                                           ("agent@shop.example", "agent", True, site),
                                           ("gone@shop.example", "owner", False, site),
                                           ("else@other.example", "owner", True, other)):
            user = StaffUser(email=email, password_hash="x", role="admin", active=active)
            db.session.add(user)
            db.session.flush()
            db.session.add(SiteMembership(staff_id=user.id, site_id=where.id, role=role))
        db.session.commit()
        assert alerts.owners(site.id) == ["owner@shop.example"]
    _verified(app.test_client(), site)
    assert [rcpts for _f, rcpts, m in box.messages if "Critical" in m["Subject"]] == [
        ["owner@shop.example"]]
    with app.app_context():
        (event,) = _events(_last_case().id, "alerted")
        assert (event.data["via"], event.data["recipients"]) == ("owners", ["owner@shop.example"])


def test_nobody_to_alert_is_recorded_and_logged(make_app, smtp_server, caplog):
    """No team address, no support contact email and no owners: no email, but the timeline
    has an `alert_unheard` event and a warning is logged: never silently dropped."""
    port, box = smtp_server
    app = make_app("sqlite", **_mail(port))
    site = make_site(app)  # no support contact
    with caplog.at_level(logging.WARNING, logger="app.loop.alerts"):
        _verified(app.test_client(), site, email=None)
    assert box.messages == []
    with app.app_context():
        case = _last_case()
        assert case.priority == "critical"
        (event,) = _events(case.id, "alerted", "alert_unheard")
        assert event.kind == "alert_unheard"
        assert event.data == {"team": "logistics", "recipients": [], "via": "nobody",
                              "reason": "team 'logistics' has no addresses", "about": "critical"}
        case_id = case.id
    warned = [r for r in caplog.records if r.name == "app.loop.alerts"]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert f"case {case_id}" in warned[0].getMessage() and "unheard" in warned[0].getMessage()


def test_non_lowest_detractor_pages_nobody(make_app, smtp_server):
    """An NPS 5 without critical words gets its case and 24 h follow-up, but no alert email
    and no alert event."""
    port, box = smtp_server
    app = make_app("sqlite", **_mail(port))
    site = make_site(app, support_contact=CONTACT)
    _verified(app.test_client(), site, rating=5, comment="It was okay I guess", email=None)
    assert box.messages == []
    with app.app_context():
        case = _last_case()
        assert (case.priority, case.team) == ("high", "logistics")
        assert case.followup_due_at == case.created_at + timedelta(hours=24)
        assert [e.kind for e in _events(case.id)] == ["routed"]


# -- 2. doctor and sites create ------------------------------------------------------------------


def test_doctor_lists_teams_that_would_fall_back_or_be_unheard(app, runner):
    """`flask doctor` names each site's unreachable teams with who would hear their alerts
    and exits 1 when an alert would reach nobody; 0 when every alert is heard."""
    ok = make_site(app, name="Fine")
    contact = make_site(app, name="Contact", support_contact=CONTACT)
    silent = make_site(app, name="Silent")
    with app.app_context():
        for key in ("support", "logistics", "sales"):
            _team(ok.id, key).emails = [f"{key}@fine.example"]
            _team(silent.id, key).emails = [f"{key}@silent.example"]
        rules.replace(silent.id, [{"name": "Billing", "conditions": {"keywords": ["invoice"]},
                                   "actions": {"team": "billing"}}, *rules.DEFAULT_RULES])
        db.session.commit()

    out = runner.invoke(args=["doctor"])
    assert out.exit_code == 1, out.output
    lines = out.output.splitlines()
    assert f"{ok.public_key} (Fine): ok, every team its rules route to has addresses" in lines
    for key in ("logistics", "sales", "support"):
        assert any(line.startswith(f"{contact.public_key} (Contact): fallback team {key!r} "
                                   "has no addresses") and line.endswith(f"({CONTACT})")
                   for line in lines), key
    (billing,) = [line for line in lines if line.startswith(f"{silent.public_key} (Silent)")]
    assert billing == (f"{silent.public_key} (Silent): UNHEARD  there is no team 'billing' "
                       "(rules: 'Billing'): no support contact email and no site owners "
                       "either; critical alerts would reach nobody")
    assert lines[-1] == "3 site(s): 1 team(s) unheard, 3 falling back"

    assert runner.invoke(args=["doctor", ok.public_key]).exit_code == 0
    out = runner.invoke(args=["doctor", contact.public_key])
    assert out.exit_code == 0 and "3 falling back" in out.output
    with app.app_context():
        _team(contact.id, "support").alert_critical = False
        db.session.get(Site, contact.id).support_contact = None
        db.session.commit()
    out = runner.invoke(args=["doctor", contact.public_key])
    assert out.exit_code == 1
    assert ("UNHEARD  team 'support' has alerts turned off (rules: 'Detractors to support')"
            in out.output)


def test_sites_create_says_which_teams_need_an_address(runner):
    """`sites create` lists the default teams without an address and who hears their alerts
    meanwhile (the support contact), or warns that nobody would."""
    out = runner.invoke(args=["sites", "create", "--name", "New", "--origin",
                              "https://new.example", "--support-contact", CONTACT])
    assert out.exit_code == 0, out.output
    assert "teams that need an address: logistics, sales, support" in out.output
    assert f"meanwhile their critical alerts go to the support contact: {CONTACT}" in out.output
    assert "flask --app app doctor" in out.output
    out = runner.invoke(args=["sites", "create", "--name", "Bare", "--origin",
                              "https://bare.example"])
    assert out.exit_code == 0, out.output
    assert "WARNING: no support contact email either" in out.output


# -- 3. "not resolved" and promoters -------------------------------------------------------------


LOOP_SUBJECTS = ("Is it resolved?", "About your feedback: here is what we did")


def _verify_link(box, answer: str) -> str:
    (msg,) = [m for m in box.to(CUSTOMER) if m["Subject"].startswith(LOOP_SUBJECTS)]
    text = msg.get_body(("plain",)).get_content()
    label = "Yes, it is resolved: " if answer == "yes" else "No, it is not resolved: "
    return text.split(label)[1].split()[0]


def test_not_resolved_reopens_and_tells_the_team(make_app, smtp_server, receiver):
    """The customer's "not resolved" reopens the case, emails the team (here through the
    fallback to the support contact) once, fires case.updated and is on the timeline."""
    port, box = smtp_server
    app = make_app("sqlite", **_mail(port))
    site = make_site(app, support_contact=CONTACT)
    with app.app_context():
        app.config["WEBHOOK_LOOPBACK_PORTS_FOR_TESTS"] = [receiver.port]
        webhooks.create_endpoint(db.session.get(Site, site.id), receiver.url("/ok"),
                                 ["case.updated"])
    _verified(app.test_client(), site, rating=2, comment="Not what I expected", moment="checkout")
    with app.app_context():
        case_id = _last_case().id
        assert _last_case().priority == "high"  # CSAT 2: no page
        cases.transition(case_id, "acknowledged", "agent@shop.example")
        cases.transition(case_id, "resolved", "agent@shop.example", resolution="Re-sent",
                         customer_message="We sent it again.")
    assert [m for m in box.messages if "Critical" in m[2]["Subject"]] == []
    token = _verify_link(box, "no").rsplit("/v/", 1)[1]
    with app.app_context(), app.test_request_context():
        assert cases.customer_verdict(token)[0] == "reopened"
        assert cases.customer_verdict(token)[0] == "already"

    (told,) = box.to(CONTACT)
    assert told["Subject"] == (f"[Shop] Not resolved, says the customer: case #{case_id} "
                               "is reopened")
    body = told.get_body(("plain",)).get_content()
    assert "What was done: Re-sent" in body and "We sent it again." in body
    assert "You receive this because team 'support' has no addresses." in body
    with app.app_context():
        kinds = [e.kind for e in _events(case_id)]
        assert kinds == ["routed", "acknowledged", "resolved", "reopened", "alerted"]
        assert _events(case_id, "alerted")[0].data["about"] == "reopened"
    statuses = [json.loads(b)["data"]["status"] for _p, _h, b in receiver.requests]
    assert statuses == ["new", "acknowledged", "resolved", "reopened"]


@pytest.mark.parametrize(("rating", "worked", "message", "expected"), [
    (10, None, None, None),                          # promoter, nobody worked it: not asked
    (10, "acknowledged", None, "Is it resolved?"),   # promoter whose case staff worked
    (10, "in_progress", None, "Is it resolved?"),
    (10, None, "Thanks for the kind words!", LOOP_SUBJECTS[1]),  # staff wrote to them
    (5, None, None, "Is it resolved?"),              # a detractor is always asked
])
def test_promoter_not_asked_about_an_unworked_case(make_app, smtp_server, rating, worked,
                                                   message, expected):
    """A promoter whose case no staff member acknowledged or worked gets no "is it
    resolved?" email when it is closed; worked cases and other segments still do."""
    port, box = smtp_server
    app = make_app("sqlite", **_mail(port))
    site = make_site(app)
    _verified(app.test_client(), site, rating=rating, comment=None)
    with app.app_context():
        case_id = _last_case().id
        if worked:
            cases.transition(case_id, worked, "agent@shop.example")
        cases.transition(case_id, "resolved", "agent@shop.example", resolution="Closed",
                         customer_message=message)
        loop_mail = db.session.scalars(select(EmailMessage.kind).where(
            EmailMessage.kind.in_(("verification", "resolution")))).all()
    subjects = [m["Subject"] for m in box.to(CUSTOMER)
                if m["Subject"].startswith(LOOP_SUBJECTS)]
    if expected is None:
        assert subjects == [] and loop_mail == []
    else:
        assert len(subjects) == 1 and subjects[0].startswith(expected), subjects


def test_system_acknowledgement_is_not_staff_work(app):
    """Only a person's acknowledge/in-progress counts as work (not the system's, not the
    customer's)."""
    site = make_site(app)
    _verified(app.test_client(), site, rating=10, comment=None, email=None)
    with app.app_context():
        case_id = _last_case().id
        cases.transition(case_id, "acknowledged", "system")
        assert cases.worked_by_staff(case_id) is False
        cases.transition(case_id, "in_progress", "agent@shop.example")
        assert cases.worked_by_staff(case_id) is True


# -- 4. alert floods ----------------------------------------------------------------------------

T0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)  # a window boundary for a 600 s window


def test_public_flood_is_summarised_verified_alerts_never(make_app, smtp_server, clock):
    """12 public lowest ratings in one window: ALERT_BURST (3) alert emails, the other 9 held
    (every case routed, each held one on its timeline); verified answers in the same window are
    still alerted one by one. After the window one summary lists the 9 with links, once."""
    port, box = smtp_server
    app = make_app("sqlite", ALERT_BURST=3, **_mail(port))
    site = make_site(app)
    with app.app_context():
        _team(site.id, "support").emails = [SUPPORT]
        db.session.commit()
    client = app.test_client()
    clock.set(T0 + timedelta(seconds=5))
    for i in range(12):
        _public(client, site, comment=f"flood {i:02d}")
        clock.advance(timedelta(seconds=10))
    for i in range(4):
        _verified(client, site, moment="checkout", email=None, order=f"V-{i}")
    alerts_now = [m for m in box.to(SUPPORT) if "Critical feedback" in m["Subject"]]
    assert len(alerts_now) == 3 + 4
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Case)
                                 .where(Case.routed_at.is_not(None))) == 16
        held = db.session.scalars(select(EmailMessage).where(EmailMessage.kind == "alert_held")
                                  .order_by(EmailMessage.id)).all()
        assert len(held) == 9 and {h.status for h in held} == {"held"}
        held_cases = [h.case_id for h in held]
        ref = f"alerts:{site.id}:support:20300107T120000"
        for case_id in held_cases:
            (event,) = _events(case_id, "alerted", "alert_held", "alert_unheard")
            assert event.kind == "alert_held" and event.data["summary"] == ref
        # Verified answers were never held, whatever the count.
        verified_ids = set(db.session.scalars(select(Case.id).join(Response).where(
            Response.verified.is_(True))))
        assert len(verified_ids) == 4 and not verified_ids & set(held_cases)

        sla.scan(T0 + timedelta(minutes=10))  # the window is over, its grace is not
        assert [m for m in box.to(SUPPORT) if "more critical" in m["Subject"]] == []
    clock.set(T0 + timedelta(minutes=11, seconds=1))
    with app.app_context():
        sla.scan(clock.now)
        sla.scan(clock.now)  # a second run sends nothing more
        assert alerts.flush_summaries(clock.now + timedelta(hours=1)) == 0
    (summary,) = [m for m in box.to(SUPPORT) if "more critical" in m["Subject"]]
    assert summary["Subject"].startswith("[Shop] 9 more critical answers for Customer support")
    text = summary.get_body(("plain",)).get_content()
    with app.app_context():
        for case_id in held_cases:
            assert f"  {notify.case_url(case_id)}\n" in text.replace("\r\n", "\n")
    for i in range(12):
        assert (f"checkout · flood {i:02d}" in text) is (i >= 3)
    assert len(box.messages) == 3 + 4 + 1
    with app.app_context():
        assert {h.status for h in db.session.scalars(
            select(EmailMessage).where(EmailMessage.kind == "alert_held"))} == {"summarised"}
        for case_id in held_cases:
            kinds = [e.kind for e in _events(case_id, "alert_held", "alerted")]
            assert kinds == ["alert_held", "alerted"]
            assert _events(case_id, "alerted")[0].data["summary"] == ref

    # The next window starts a fresh count.
    clock.set(T0 + timedelta(minutes=20))
    _public(client, site)
    assert len([m for m in box.to(SUPPORT) if "Critical feedback" in m["Subject"]]) == 3 + 4 + 1


def test_burst_bound_is_exact_under_concurrent_routing(make_app, redis_url, clock):
    """PostgreSQL, 4 threads routing 20 public critical answers at once: exactly ALERT_BURST
    alert emails are decided, the other 16 held, every case routed."""
    app = make_app("postgres", REDIS_URL=redis_url, ALERT_BURST=4)
    site = make_site(app)
    with app.app_context():
        _team(site.id, "support").emails = [SUPPORT]
        db.session.commit()
    clock.set(T0 + timedelta(seconds=1))
    client = app.test_client()
    for i in range(20):
        _public(client, site, comment=f"concurrent {i}")
    with app.app_context():
        ids = db.session.scalars(select(Response.id).order_by(Response.id)).all()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def route(chunk: list[int]) -> None:
        try:
            with app.app_context():
                start.wait()
                for rid in chunk:
                    assert jobs.route_response(rid) in ("routed", "already done")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=route, args=(ids[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with app.app_context():
        kinds = db.session.execute(select(EmailMessage.kind, func.count())
                                   .group_by(EmailMessage.kind)).all()
        assert dict(kinds) == {"alert": 4, "alert_held": 16}
        assert db.session.scalar(select(func.count()).select_from(Case)
                                 .where(Case.routed_at.is_not(None))) == 20
