"""The route-level permission matrix (issue 8): every staff route × every role (owner, lead,
agent, viewer, a member of no site, anonymous) × own site / another site. On its own site a
role the route's action allows gets through (2xx, 3xx or 409), any other role gets 403 and
changes nothing; another site's URL, or the own site's URL with another site's object id in
it, is 404 for everyone and changes nothing (every table's rows hashed before and after);
anonymous is sent to sign in. Each request also checks that
the view declares the action the table says (`@requires`).

ROUTES must name every rule of `app.url_map` that is not in PUBLIC: a new route fails
`test_every_route_is_in_the_matrix` until it is added here with its arguments and action.
CSRF is switched off in this test's app (WTF_CSRF_ENABLED=False): its refusal is tested in
tests/test_auth.py; here only the permission decides.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask import g
from sqlalchemy import select, update

from app.admin.permissions import ACTIONS
from app.extensions import db
from app.loop import replies, webhooks
from app.loop import rules as rules_mod
from app.models import (
    Case,
    Moment,
    ResponseTemplate,
    Site,
    StaffUser,
    Team,
    WebhookDelivery,
)

from .conftest import make_site
from .test_branding import png_bytes
from .test_inbox import PASSWORD, answer, member
from .test_settings import moment_form, site_form

ROLES = ("owner", "lead", "agent", "viewer")
OK = frozenset({*range(200, 400), 409})  # allowed: through, whatever the outcome

# Routes anyone may open (sign-in and reset, the customer-facing embed, the demo, assets).
PUBLIC = frozenset({
    "admin.login", "admin.reset_request", "admin.reset_password",
    "admin.invite_accept",  # the link's signed token decides (tests/test_staff_admin.py)
    "embed.issue_prompt", "embed.prompt", "embed.prompt_page", "embed.thanks", "embed.verify",
    "embed.short_link",  # an SMS link: a redirect to a signed prompt (tests/test_channels.py)
    "embed.kiosk",  # a kiosk's signed, revocable link decides (tests/test_kiosk.py)
    "embed.brand_logo",  # a shop's logo: public, on every customer page (tests/test_branding.py)
    "embed.widget", "embed.widget_versioned", "demo.index", "demo.page", "static",
})
# Signed in, no site and no action: anonymous is sent to sign in (its behaviour: test_auth).
SIGNED_IN_ONLY = frozenset({("admin.logout", "POST")})


class Ctx:
    """The two sites of the matrix and fresh objects on them, made before each request."""

    def __init__(self, app, own: Site, other: Site, endpoint_url: str) -> None:
        self.app, self.endpoint_url = app, endpoint_url
        self.site = {"own": own.id, "other": other.id}
        self.n = itertools.count(1)
        self.cases: dict[str, int] = {}
        self.staff: dict[str, int] = {}

    def _with(self, fn: Callable[[], Any]) -> Any:
        with self.app.app_context():
            try:
                return fn()
            finally:
                db.session.remove()

    def s(self, which: str) -> dict[str, int]:
        return {"site_id": self.site[which]}

    # -- cases: one per site, reset to a status the action applies to before each request --

    def case(self, which: str, status: str = "new") -> int:
        case_id = self.cases[which]

        def reset() -> None:
            db.session.execute(update(Case).where(Case.id == case_id).values(
                status=status, team=None, assignee_id=None, priority="routine", tags=[]))
            db.session.commit()

        self._with(reset)
        return case_id

    def version(self, case_id: int) -> str:
        return self._with(lambda: db.session.get(Case, case_id).updated_at.isoformat())

    def case_form(self, which: str, status: str, **form: Any) -> tuple[dict, dict]:
        case_id = self.case(which, status)
        return {"case_id": case_id}, {"version": self.version(case_id), **form}

    # -- settings objects ------------------------------------------------------------------

    def first(self, model: Any, which: str, **where: Any) -> int:
        return self._with(lambda: db.session.scalar(
            select(model.id).filter_by(site_id=self.site[which], **where).order_by(model.id)))

    def team(self, which: str) -> int:
        return self.first(Team, which, key="matrix")

    def team_member(self, which: str) -> dict[str, int]:
        """The site's team with its member in it (a remove takes them out: put them back)."""
        team_id, staff_id = self.team(which), self.staff[which]

        def ensure() -> None:
            team = db.session.get(Team, team_id)
            user = db.session.get(StaffUser, staff_id)
            if user not in team.members:
                team.members.append(user)
                db.session.commit()

        self._with(ensure)
        return {**self.s(which), "team_id": team_id, "staff_id": staff_id}

    def template(self, which: str) -> int:
        """A fresh response template (a delete removes it)."""
        def make() -> int:
            t = ResponseTemplate(site_id=self.site[which], key=f"tpl{next(self.n)}",
                                 locale="en", title="Thanks", body="Hello {customer_name}")
            db.session.add(t)
            db.session.commit()
            return t.id
        return self._with(make)

    def endpoint(self, which: str, fresh: bool = False) -> int:
        """The site's webhook endpoint, or a fresh one (a remove deletes it)."""
        if not fresh:
            return self.first(webhooks.WebhookEndpoint, which, description="matrix")
        return self._with(lambda: webhooks.create_endpoint(
            db.session.get(Site, self.site[which]), self.endpoint_url, []).id)

    def delivery(self, which: str) -> dict[str, int]:
        endpoint_id = self.endpoint(which)
        delivery_id = self._with(lambda: db.session.scalar(
            select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.id)))
        assert delivery_id is not None
        return {**self.s(which), "endpoint_id": endpoint_id, "delivery_id": delivery_id}

    def site_form(self, which: str) -> dict[str, str]:
        return self._with(lambda: site_form(db.session.get(Site, self.site[which])))

    def moment(self, which: str) -> tuple[dict, dict]:
        def read() -> tuple[int, dict]:
            m = db.session.get(Moment, self.first(Moment, which))
            return m.id, moment_form(m)
        moment_id, form = self._with(read)
        return {**self.s(which), "moment_id": moment_id}, form

    def kiosk(self, which: str) -> dict[str, int]:
        """A fresh kiosk of the site (a revoke ends it)."""
        from app import kiosks

        kiosk_id = self._with(lambda: kiosks.create(
            db.session.get(Site, self.site[which]), "kiosk", "store-1", f"Till {next(self.n)}",
            "matrix").id)
        return {**self.s(which), "kiosk_id": kiosk_id}

    def invitation(self, which: str) -> dict[str, int]:
        """A fresh pending invitation of the site (a revoke ends it)."""
        from app import invitations

        def make() -> int:
            inv, _new = invitations.invite(db.session.get(Site, self.site[which]),
                                           f"inv{next(self.n)}@{which}.example", "viewer",
                                           actor="cli")
            return inv.id
        return {**self.s(which), "invitation_id": self._with(make)}

    def membership(self, which: str, fresh: bool = False) -> dict[str, int]:
        """The site's agent's membership, or a fresh member's (a remove deletes it)."""
        from app import staff
        from app.models import SiteMembership

        def make() -> int:
            staff_id = self.staff[which]
            if fresh:
                user = staff.add(f"m{next(self.n)}@{which}.example", PASSWORD, "agent")
                db.session.flush()
                staff_id = user.id
                db.session.add(SiteMembership(staff_id=staff_id, site_id=self.site[which],
                                              role="viewer"))
                db.session.commit()
            return db.session.scalar(select(SiteMembership.id).where(
                SiteMembership.staff_id == staff_id,
                SiteMembership.site_id == self.site[which]))
        return {**self.s(which), "membership_id": self._with(make)}

    def with_logo(self, which: str) -> dict:
        """Give the site a logo (a remove then really removes one); no form fields."""
        from app import branding

        self._with(lambda: branding.set_logo(db.session.get(Site, self.site[which]),
                                             png_bytes()))
        return {}

    def labels(self, which: str) -> dict[str, str]:
        return self._with(lambda: {f"label-{k}": v for k, v in replies.categories(
            db.session.get(Site, self.site[which]))})


Args = Callable[[Ctx, str], dict]
Form = Callable[[Ctx, str], dict]


@dataclass(frozen=True)
class Route:
    """One rule and method: how to call it for the own or the other site, and who may."""

    endpoint: str
    method: str
    action: str
    args: Callable[[Ctx, str], Any]  # -> URL values, or (URL values, form) for case routes
    form: Form | None = None
    query: Callable[[Ctx, str], str] | None = None
    roles: frozenset[str] | None = None  # who gets through, when not ACTIONS[action]
    other: frozenset[int] = frozenset({404})  # another site's request: refused like this
    nonmember: frozenset[int] = frozenset({404})  # a member of no site, on the own site

    def allowed(self) -> frozenset[str]:
        return self.roles if self.roles is not None else ACTIONS[self.action]


def site_only(ctx: Ctx, which: str) -> dict:
    return ctx.s(which)


def case_route(name: str, action: str, status: str,
               form: Callable[[Ctx, str], dict] = lambda ctx, w: {}) -> Route:
    """A case action on the site's case, reset to `status` first; the form carries the
    case's current version, so an allowed request really changes it."""
    return Route(f"admin.case_{name}", "POST", action,
                 lambda ctx, which: ctx.case_form(which, status, **form(ctx, which)))


ROUTES: list[Route] = [
    # -- the inbox and export: no site in the URL; another site's ids in the query or form
    #    are refused (400/403) or ignored (the bulk action), and change nothing.
    Route("admin.responses", "GET", "cases.view", lambda ctx, w: {},
          query=lambda ctx, w: "" if w == "own" else f"site={ctx.site['other']}",
          other=frozenset({400}), nonmember=frozenset({200})),
    Route("admin.inbox_bulk", "POST", "cases.view", lambda ctx, w: {},
          form=lambda ctx, w: {"action": "tag", "tag": "matrix", "ids": ctx.case(w)},
          other=frozenset({302}), nonmember=frozenset({302})),
    Route("admin.export_csv", "GET", "export.csv", lambda ctx, w: {},
          query=lambda ctx, w: "" if w == "own" else f"site={ctx.site['other']}",
          other=frozenset({400, 403}), nonmember=frozenset({403})),
    Route("admin.settings_index", "GET", "responses.view", lambda ctx, w: {},
          roles=frozenset({"owner", "lead"}), other=frozenset(), nonmember=frozenset({403})),
    # -- the case view and its actions
    Route("admin.case_view", "GET", "cases.view", lambda ctx, w: {"case_id": ctx.case(w)}),
    Route("admin.case_voice", "GET", "voice.play", lambda ctx, w: {"case_id": ctx.cases[w]}),
    case_route("acknowledge", "cases.acknowledge", "new"),
    case_route("start", "cases.acknowledge", "acknowledged"),
    case_route("reopen", "cases.reopen", "resolved"),
    case_route("resolve", "cases.resolve", "in_progress",
               lambda ctx, w: {"resolution": "Refunded the order"}),
    case_route("note", "cases.note", "new", lambda ctx, w: {"note": "Called the customer"}),
    case_route("tags", "cases.tag", "new", lambda ctx, w: {"add": "matrix"}),
    case_route("priority", "cases.priority", "new", lambda ctx, w: {"priority": "high"}),
    case_route("assign", "cases.assign", "new",
               lambda ctx, w: {"assignee": str(ctx.staff[w])}),
    # -- site settings
    Route("admin.settings_site", "GET", "site.settings", site_only),
    Route("admin.settings_site_save", "POST", "site.settings", site_only,
          form=lambda ctx, w: ctx.site_form(w)),
    Route("admin.settings_site_rotate", "POST", "site.keys", site_only, form=lambda c, w: {}),
    Route("admin.settings_branding", "GET", "site.settings", site_only),
    Route("admin.settings_branding_logo", "POST", "site.settings", site_only,
          form=lambda ctx, w: {"logo": (io.BytesIO(png_bytes()), "logo.png")}),
    Route("admin.settings_branding_logo_remove", "POST", "site.settings", site_only,
          form=lambda ctx, w: ctx.with_logo(w)),
    Route("admin.settings_branding_accent", "POST", "site.settings", site_only,
          form=lambda ctx, w: {"accent": f"#1a4d{next(ctx.n) % 100:02d}"}),
    Route("admin.settings_moments", "GET", "moments.manage", site_only),
    Route("admin.settings_moments_add", "POST", "moments.manage", site_only,
          form=lambda ctx, w: moment_form(key=f"matrix{next(ctx.n)}",
                                          question="How was it?")),
    Route("admin.settings_moments_save", "POST", "moments.manage",
          lambda ctx, w: ctx.moment(w)),
    Route("admin.settings_root_causes", "GET", "site.settings", site_only),
    Route("admin.settings_root_causes", "POST", "site.settings", site_only,
          form=lambda ctx, w: ctx.labels(w)),
    Route("admin.settings_audit", "GET", "audit.read", site_only),
    # -- staff: members and invitations
    Route("admin.settings_staff", "GET", "staff.manage", site_only),
    Route("admin.settings_staff_invite", "POST", "staff.manage", site_only,
          form=lambda ctx, w: {"email": f"new{next(ctx.n)}@{w}.example", "role": "agent"}),
    Route("admin.settings_staff_resend", "POST", "staff.manage",
          lambda ctx, w: ctx.invitation(w)),
    Route("admin.settings_staff_revoke", "POST", "staff.manage",
          lambda ctx, w: ctx.invitation(w)),
    Route("admin.settings_staff_role", "POST", "staff.manage",
          lambda ctx, w: ctx.membership(w), form=lambda ctx, w: {"role": "agent"}),
    Route("admin.settings_staff_remove", "POST", "staff.manage",
          lambda ctx, w: ctx.membership(w, fresh=True)),
    Route("admin.settings_audit_csv", "GET", "audit.read", site_only),
    # -- webhooks
    Route("admin.settings_webhooks", "GET", "webhooks.manage", site_only),
    Route("admin.settings_webhooks_add", "POST", "webhooks.manage", site_only,
          form=lambda ctx, w: {"url": ctx.endpoint_url, "description": "added"}),
    Route("admin.settings_webhooks_log", "GET", "webhooks.manage",
          lambda ctx, w: {**ctx.s(w), "endpoint_id": ctx.endpoint(w)}),
    *(Route(f"admin.settings_webhooks_{name}", "POST", "webhooks.manage",
            lambda ctx, w, fresh=(name == "remove"): {
                **ctx.s(w), "endpoint_id": ctx.endpoint(w, fresh=fresh)})
      for name in ("disable", "enable", "remove")),
    Route("admin.settings_webhooks_redeliver", "POST", "webhooks.manage",
          lambda ctx, w: ctx.delivery(w)),
    # -- teams and rules
    Route("admin.settings_teams", "GET", "teams.manage", site_only),
    Route("admin.settings_team_create", "POST", "teams.manage", site_only,
          form=lambda ctx, w: {"key": f"team{next(ctx.n)}", "name": "Night shift",
                               "locale": "en"}),
    Route("admin.settings_team_edit", "POST", "teams.manage",
          lambda ctx, w: {**ctx.s(w), "team_id": ctx.team(w)},
          form=lambda ctx, w: {"name": "Matrix team", "locale": "en", "sla_alerts": "y"}),
    Route("admin.settings_team_add_member", "POST", "teams.manage",
          lambda ctx, w: {**ctx.s(w), "team_id": ctx.team(w)},
          form=lambda ctx, w: {"staff_id": str(ctx.staff[w])}),
    Route("admin.settings_team_remove_member", "POST", "teams.manage",
          lambda ctx, w: ctx.team_member(w)),
    Route("admin.settings_rules", "GET", "rules.manage", site_only),
    Route("admin.settings_rules_save", "POST", "rules.manage", site_only,
          form=lambda ctx, w: {"rules": rules_mod.dump(rules_mod.DEFAULT_RULES),
                               "action": "save"}),
    Route("admin.settings_rules_defaults", "POST", "rules.manage", site_only,
          form=lambda ctx, w: {}),
    # -- response templates
    Route("admin.settings_templates", "GET", "templates.manage", site_only),
    Route("admin.settings_templates", "POST", "templates.manage", site_only,
          form=lambda ctx, w: {"key": f"k{next(ctx.n)}", "locale": "en", "title": "Thanks",
                               "body": "Hello {customer_name}"}),
    Route("admin.settings_template_edit", "GET", "templates.manage",
          lambda ctx, w: {**ctx.s(w), "template_id": ctx.template(w)}),
    Route("admin.settings_template_edit", "POST", "templates.manage",
          lambda ctx, w: {**ctx.s(w), "template_id": ctx.template(w)},
          form=lambda ctx, w: {"key": f"k{next(ctx.n)}", "locale": "en", "title": "Edited",
                               "body": "Hello again"}),
    Route("admin.settings_template_delete", "POST", "templates.manage",
          lambda ctx, w: {**ctx.s(w), "template_id": ctx.template(w)}),
    Route("admin.settings_kiosks", "GET", "kiosks.manage", site_only),
    Route("admin.settings_kiosks_add", "POST", "kiosks.manage", site_only,
          form=lambda c, w: {"label": "Till 9", "store": "s-9", "moment": "kiosk"}),
    Route("admin.settings_kiosks_revoke", "POST", "kiosks.manage",
          lambda ctx, w: ctx.kiosk(w)),
]
BY_KEY = {(r.endpoint, r.method): r for r in ROUTES}


def rule_methods(app) -> set[tuple[str, str]]:
    """(endpoint, method) of every rule of the app that is not public."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.add((rule.endpoint, method))
    return out


def test_every_route_is_in_the_matrix(app):
    """Every non-public (endpoint, method) of app.url_map has a row in ROUTES (a new staff
    route must say how to call it and which action guards it), and no row is stale."""
    have = rule_methods(app)
    listed = set(BY_KEY) | SIGNED_IN_ONLY
    assert len(BY_KEY) == len(ROUTES), "a route is listed twice"
    assert not have - listed, f"routes missing from ROUTES: {sorted(have - listed)}"
    assert not listed - have, f"ROUTES names routes that do not exist: {sorted(listed - have)}"
    for r in ROUTES:
        assert r.action in ACTIONS, r


# -- the matrix -----------------------------------------------------------------------------


def snapshot(app) -> dict[str, tuple[int, str]]:
    """Each table's row count and a hash of its rows in primary-key order."""
    out = {}
    with app.app_context():
        with db.engine.connect() as conn:
            for table in db.metadata.sorted_tables:
                rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
                digest = hashlib.sha256(repr([tuple(r) for r in rows]).encode()).hexdigest()
                out[table.name] = (len(rows), digest)
    return out


def changed(before: dict, after: dict) -> list[str]:
    return [name for name in before if before[name] != after[name]]


@pytest.fixture
def matrix(make_app, db_kind, receiver):
    """One app per database: an own and another site, each with a case, a team, a webhook
    endpoint with deliveries; the four roles on `own`, an owner of `other`, and a member of
    no site. Returns (app, ctx, seen actions)."""
    app = make_app(db_kind, WTF_CSRF_ENABLED=False,
                   WEBHOOK_LOOPBACK_PORTS_FOR_TESTS=[receiver.port])
    seen: list[str | None] = []

    # after_request, not teardown_request: a streamed response (the CSV downloads) is torn
    # down after its body, and with Flask 3.1.0 (the lowest allowed) in another `g`.
    @app.after_request
    def _action(response: Any) -> Any:
        seen.append(g.get("permission_action"))
        return response

    own, other = make_site(app, name="Own"), make_site(app, name="Other")
    ctx = Ctx(app, own, other, receiver.url("/ok"))
    with app.app_context():
        for which in ("own", "other"):
            site = db.session.get(Site, ctx.site[which])
            webhooks.create_endpoint(site, ctx.endpoint_url, [], description="matrix")
            db.session.add(Team(site_id=site.id, key="matrix", name="Matrix"))
        db.session.commit()
    client = app.test_client()
    for which, s in (("own", own), ("other", other)):
        ctx.cases[which] = answer(client, s, 2, "It broke")
    with app.app_context():  # each case has a voice note (bytes need not be audio to serve)
        from app import storage
        from app.models import VoiceNote

        for case_id in ctx.cases.values():
            case = db.session.get(Case, case_id)
            key = storage.new_key("voice", "webm")
            storage.storage().put(key, b"\x1aE\xdf\xa3 matrix", "audio/webm")
            db.session.add(VoiceNote(site_id=case.site_id, response_id=case.response_id,
                                     storage_key=key, content_type="audio/webm",
                                     size_bytes=12, duration_ms=1000))
        db.session.commit()
    for role in ROLES:
        uid = member(app, f"{role}@own.example", own, role)
        if role == "agent":
            ctx.staff["own"] = uid
    ctx.staff["other"] = member(app, "owner@other.example", other, "owner")
    with app.app_context():
        from app import staff
        staff.create("nobody@own.example", PASSWORD, "agent")
    assert ctx.delivery("own") and ctx.delivery("other")
    return app, ctx, seen


def build(route: Route, ctx: Ctx, which: str) -> tuple[str, dict | None]:
    """The route's URL and form for `which` site; fresh objects are made (and cases reset)
    here, before any snapshot is taken."""
    from flask import url_for

    mixed = which == "mixed"  # the own site's URL with the other site's object ids
    which = "other" if mixed else which
    built = route.args(ctx, which)
    values, form = built if isinstance(built, tuple) else (built, None)
    if mixed:
        values = {**values, "site_id": ctx.site["own"]}
    if route.form is not None:
        form = route.form(ctx, which)
    with ctx.app.test_request_context():
        target = url_for(route.endpoint, **values)
    if route.query is not None and (qs := route.query(ctx, which)):
        target += "?" + qs
    return target, form


def _values(route: Route, ctx: Ctx) -> dict:
    """The URL values of the route (for the other site), to see which ids it takes."""
    built = route.args(ctx, "other")
    return built[0] if isinstance(built, tuple) else built


def send(client, route: Route, target: str, form: dict | None):
    if route.method == "GET":
        return client.get(target)
    return client.post(target, data=form or {})


def _error(resp) -> str:
    """The error a page shows (its alert), for the report."""
    import re

    text = resp.get_data(as_text=True)
    m = re.search(r"role=\"alert\"[^>]*>(.*?)</(?:div|p)>", text, re.S)
    return (m.group(1) if m else text[:200]).strip()


def unchanged(app, client, route: Route, ctx: Ctx, which: str, anonymous: bool = False
              ) -> tuple[Any, list[str]]:
    """Send a request that must change nothing; returns (status, the tables that changed).
    A redirect elsewhere than the sign-in page is reported with its target."""
    target, form = build(route, ctx, which)
    before = snapshot(app)
    resp = send(client, route, target, form)
    diff = changed(before, snapshot(app))
    status: Any = resp.status_code
    if anonymous and status == 302 and "/admin/login" not in resp.headers["Location"]:
        status = f"302 to {resp.headers['Location']}"
    return status, diff


def test_route_matrix(matrix):
    """Every role on every staff route, own site and other site (see the module docstring)."""
    app, ctx, seen = matrix
    problems: list[str] = []

    def declared(label: str, route: Route) -> None:
        if seen and seen[-1] != route.action:
            problems.append(f"{label}: the view requires {seen[-1]!r}, the table says "
                            f"{route.action!r}")

    people = [(role, f"{role}@own.example") for role in ROLES]
    people.append(("nonmember", "nobody@own.example"))
    for role, email in people:
        client = app.test_client()
        resp = client.post("/admin/login", data={"email": email, "password": PASSWORD})
        assert resp.status_code == 302, (email, resp.get_data(as_text=True))
        for route in ROUTES:
            label = f"{role} {route.method} {route.endpoint}"
            # Another site (a member of no site: the own one): refused, no row changes.
            if route.other or role == "nonmember":
                which = "own" if role == "nonmember" else "other"
                expected = route.nonmember if role == "nonmember" else route.other
                seen.clear()
                status, diff = unchanged(app, client, route, ctx, which)
                if status not in expected:
                    problems.append(f"{label} ({which} site): {status}, expected "
                                    f"{sorted(expected)}")
                if diff:
                    problems.append(f"{label} ({which} site) changed {diff}")
                declared(label, route)
            if role == "nonmember":
                continue
            # The own site's URL with another site's object in it: 404 (403 for a role
            # refused on the own site before any object is looked at); nothing changes.
            if route.other and len(_values(route, ctx)) > 1 and "site_id" in _values(route, ctx):
                seen.clear()
                status, diff = unchanged(app, client, route, ctx, "mixed")
                if status != (404 if role in route.allowed() else 403):
                    problems.append(f"{label} (own site, other site's object): {status}, "
                                    "expected 404")
                if diff:
                    problems.append(f"{label} (own site, other site's object) changed {diff}")
            # Own site: through when the role has the action, else 403 and nothing changed.
            seen.clear()
            if role in route.allowed():
                target, form = build(route, ctx, "own")
                resp = send(client, route, target, form)
                if resp.status_code not in OK:
                    problems.append(f"{label} (own site): {resp.status_code}, expected 2xx, "
                                    f"3xx or 409: {_error(resp)}")
            else:
                status, diff = unchanged(app, client, route, ctx, "own")
                if status != 403:
                    problems.append(f"{label} (own site): {status}, expected 403")
                if diff:
                    problems.append(f"{label} (own site, refused) changed {diff}")
            declared(label, route)
    # Anonymous: every staff route sends to the sign-in page, and changes nothing.
    anonymous = app.test_client()
    for route in [*ROUTES, *(Route(e, m, "cases.view", lambda c, w: {})
                             for e, m in SIGNED_IN_ONLY)]:
        status, diff = unchanged(app, anonymous, route, ctx, "own", anonymous=True)
        if status != 302:
            problems.append(f"anonymous {route.method} {route.endpoint}: {status}, expected "
                            "a redirect to sign in")
        if diff:
            problems.append(f"anonymous {route.method} {route.endpoint} changed {diff}")
    assert not problems, "\n".join(problems)
