"""`flask` commands of the loop: rules, teams, webhooks, cases, site settings, SLA report and
the scheduled jobs run by hand (for a system cron, or to see what they do)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from typing import TextIO

import click
from flask import Flask
from sqlalchemy import select

from .. import sites as site_ops
from ..extensions import db
from ..models import CaseEvent, DeliveryAttempt, Site, StaffUser, Team, WebhookDelivery, utcnow


def _site(public_key: str) -> Site:
    site = site_ops.by_key(public_key)
    if site is None:
        raise click.BadParameter(f"no site with public key {public_key}")
    return site


def _team(site: Site, key: str) -> Team:
    team = db.session.scalar(select(Team).where(Team.site_id == site.id, Team.key == key))
    if team is None:
        raise click.BadParameter(f"no team {key!r} on {site.public_key}")
    return team


def register(app: Flask) -> None:  # noqa: C901 - one nested function per command
    """Attach the loop's command groups."""
    from . import cases, notify, rules, sla, webhooks

    # -- rules ----------------------------------------------------------------------------
    @app.cli.group("rules")
    def rules_group() -> None:
        """Routing rules: export, import (JSON or YAML), reset to the defaults."""

    @rules_group.command("export")
    @click.argument("public_key")
    @click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
    def rules_export(public_key: str, fmt: str) -> None:
        """Print a site's rules in import format."""
        click.echo(rules.dump(rules.for_site(_site(public_key).id), fmt), nl=False)

    @rules_group.command("import")
    @click.argument("public_key")
    @click.argument("path", type=click.File("r", encoding="utf-8"))
    def rules_import(public_key: str, path: TextIO) -> None:
        """Replace a site's rules with a file's (validated first; all or nothing)."""
        site = _site(public_key)
        fmt = "json" if str(getattr(path, "name", "")).endswith(".json") else None
        try:
            n = rules.replace(site.id, rules.parse(path.read(), fmt))
        except rules.RuleError as exc:
            db.session.rollback()
            raise click.ClickException(str(exc)) from None
        for name, team in rules.missing_teams(site.id, rules.for_site(site.id)):
            click.echo(f"warning: rule {name!r} routes to unknown team {team!r}", err=True)
        click.echo(f"imported {n} rule(s)")

    @rules_group.command("defaults")
    @click.argument("public_key")
    def rules_defaults(public_key: str) -> None:
        """Replace a site's rules with the playbook defaults."""
        click.echo(f"{rules.replace(_site(public_key).id, rules.DEFAULT_RULES)} rule(s) set")

    # -- teams ----------------------------------------------------------------------------
    @app.cli.group("teams")
    def teams_group() -> None:
        """Owning teams and who hears from them."""

    @teams_group.command("create")
    @click.argument("public_key")
    @click.argument("key")
    @click.option("--name", default=None)
    @click.option("--email", "emails", multiple=True, help="Extra address (repeatable).")
    @click.option("--locale", default="en")
    def teams_create(public_key: str, key: str, name: str | None, emails: tuple[str, ...],
                     locale: str) -> None:
        """Create a team (or update its addresses)."""
        from .mail import valid_address

        site = _site(public_key)
        bad = [e for e in emails if not valid_address(e)]
        if bad or not rules.valid_key(key):
            raise click.BadParameter(f"bad team key or addresses: {key} {bad}")
        team = db.session.scalar(select(Team).where(Team.site_id == site.id, Team.key == key))
        if team is None:
            team = Team(site_id=site.id, key=key, name=name or key, locale=locale)
            db.session.add(team)
        team.emails = sorted(set(team.emails or []) | set(emails))
        if name:
            team.name = name
        db.session.commit()
        click.echo(f"team {key}: {', '.join(team.recipients()) or 'no recipients yet'}")

    @teams_group.command("add-member")
    @click.argument("public_key")
    @click.argument("key")
    @click.argument("email")
    def teams_add_member(public_key: str, key: str, email: str) -> None:
        """Add a staff account to a team."""
        team = _team(_site(public_key), key)
        user = db.session.scalar(select(StaffUser).where(StaffUser.email == email.lower()))
        if user is None:
            raise click.BadParameter(f"no staff account {email}")
        if user not in team.members:
            team.members.append(user)
        db.session.commit()
        click.echo(f"team {key}: {', '.join(team.recipients())}")

    @teams_group.command("list")
    @click.argument("public_key")
    def teams_list(public_key: str) -> None:
        """List a site's teams and their recipients."""
        for t in db.session.scalars(select(Team).where(Team.site_id == _site(public_key).id)
                                    .order_by(Team.key)):
            click.echo(f"{t.key}\t{t.name}\t{', '.join(t.recipients())}")

    # -- webhooks -------------------------------------------------------------------------
    @app.cli.group("webhooks")
    def webhooks_group() -> None:
        """Webhook endpoints, their delivery log and manual redelivery."""

    @webhooks_group.command("add")
    @click.argument("public_key")
    @click.argument("url")
    @click.option("--event", "events", multiple=True, type=click.Choice(webhooks.EVENTS))
    @click.option("--team", default=None, help="Only this team's cases.")
    def webhooks_add(public_key: str, url: str, events: tuple[str, ...],
                     team: str | None) -> None:
        """Add an endpoint; prints its signing secret."""
        site = _site(public_key)
        team_id = _team(site, team).id if team else None
        try:
            ep = webhooks.create_endpoint(site, url, list(events), team_id)
        except webhooks.EndpointError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"endpoint {ep.id}: {ep.url} ({', '.join(ep.events)})")
        click.echo(f"signing secret: {ep.secret}")

    @webhooks_group.command("deliveries")
    @click.argument("public_key")
    @click.option("--limit", default=20)
    def webhooks_deliveries(public_key: str, limit: int) -> None:
        """The delivery log: status, attempts and last response code of recent deliveries."""
        rows = db.session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.site_id == _site(public_key).id)
            .order_by(WebhookDelivery.id.desc()).limit(limit))
        for d in rows:
            tries = db.session.scalars(select(DeliveryAttempt)
                                       .where(DeliveryAttempt.delivery_id == d.id)
                                       .order_by(DeliveryAttempt.id)).all()
            codes = ",".join(str(a.status_code or a.error) for a in tries)
            click.echo(f"{d.id}\t{d.msg_id}\t{d.event}\t{d.status}\t{d.attempts}\t{codes}")

    @webhooks_group.command("redeliver")
    @click.argument("delivery_id", type=int)
    def webhooks_redeliver(delivery_id: int) -> None:
        """Send a delivery again with the same webhook-id and body."""
        try:
            notify.redeliver(delivery_id)  # commits: handed over
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"delivery {delivery_id} queued again")

    @webhooks_group.command("list")
    @click.argument("public_key")
    def webhooks_list(public_key: str) -> None:
        """A site's endpoints: id, state, URL, events, team and pending deliveries."""
        for ep, team_key, pending in webhooks.endpoints_of(_site(public_key)):
            state = "active" if ep.active else "disabled"
            click.echo(f"{ep.id}\t{state}\t{ep.url}\t{','.join(ep.events)}\t"
                       f"team={team_key or '-'}\tpending={pending}")

    @webhooks_group.command("disable")
    @click.argument("endpoint_id", type=int)
    def webhooks_disable(endpoint_id: int) -> None:
        """Stop sending to an endpoint: new events skip it, pending deliveries wait."""
        try:
            ep, pending = webhooks.set_active(endpoint_id, False)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"endpoint {ep.id} disabled ({pending} pending deliveries wait)")

    @webhooks_group.command("enable")
    @click.argument("endpoint_id", type=int)
    def webhooks_enable(endpoint_id: int) -> None:
        """Send to an endpoint again, starting with the deliveries that waited."""
        try:
            ep, pending = webhooks.set_active(endpoint_id, True)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"endpoint {ep.id} enabled ({pending} pending deliveries handed over)")

    @webhooks_group.command("remove")
    @click.argument("endpoint_id", type=int)
    @click.confirmation_option(prompt="Delete the endpoint with its delivery log?")
    def webhooks_remove(endpoint_id: int) -> None:
        """Delete an endpoint with its pending deliveries and delivery log (to keep the log,
        disable it instead)."""
        try:
            ep, deleted = webhooks.remove_endpoint(endpoint_id)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"endpoint {ep.id} ({ep.url}) removed with {deleted} deliveries")

    # -- cases ----------------------------------------------------------------------------
    @app.cli.group("cases")
    def cases_group() -> None:
        """Work a case from the command line (the admin UI comes later)."""

    @cases_group.command("transition")
    @click.argument("case_id", type=int)
    @click.argument("status", type=click.Choice(sorted(cases.TRANSITIONS)))
    @click.option("--actor", required=True)
    @click.option("--note", default=None)
    @click.option("--resolution", default=None, help="What was done (needed to resolve).")
    @click.option("--root-cause", default=None)
    @click.option("--why", "whys", multiple=True,
                  help="A 'why' line of the root cause (repeat, up to 5; resolve only).")
    @click.option("--category", "root_cause_category", default=None,
                  help="Root-cause category key from the site's list (resolve only).")
    @click.option("--message", "customer_message", default=None,
                  help="Tell the customer what was done (sent by email with the "
                       "verification links).")
    def cases_transition(case_id: int, status: str, actor: str, note: str | None,
                         resolution: str | None, root_cause: str | None,
                         whys: tuple[str, ...], root_cause_category: str | None,
                         customer_message: str | None) -> None:
        """Move a case along its lifecycle."""
        try:
            case = cases.transition(case_id, status, actor, note, resolution=resolution,
                                    root_cause=root_cause, customer_message=customer_message,
                                    whys=list(whys) or None,
                                    root_cause_category=root_cause_category)
        except (LookupError, cases.TransitionError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"case {case.id}: {case.status}")

    @cases_group.command("show")
    @click.argument("case_id", type=int)
    def cases_show(case_id: int) -> None:
        """A case's timeline."""
        loaded = cases.load(case_id)
        if loaded is None:
            raise click.ClickException(f"no case {case_id}")
        c = loaded.case
        click.echo(f"case {c.id} {c.status} {c.priority} team={c.team} tags={c.tags}")
        for e in db.session.scalars(select(CaseEvent).where(CaseEvent.case_id == c.id)
                                    .order_by(CaseEvent.id)):
            click.echo(f"{e.created_at.isoformat()}\t{e.kind}\t{e.actor}\t{e.note or ''}")
        db.session.rollback()

    # -- doctor -----------------------------------------------------------------------------
    @app.cli.command("doctor")
    @click.argument("public_key", required=False)
    def doctor(public_key: str | None) -> None:
        """Check that the teams each site's rules route to hear their critical alerts: lists
        teams that are missing, have no addresses or have alerts off (alerts then fall back to
        the support contact or the site's owners); exits 1 when an alert would reach nobody."""
        from . import alerts

        found = ([_site(public_key)] if public_key
                 else db.session.scalars(select(Site).order_by(Site.id)).all())
        unheard = fallbacks = 0
        for site in found:
            label = f"{site.public_key} ({site.name})"
            findings = alerts.check_site(site)
            if not findings:
                click.echo(f"{label}: ok, every team its rules route to has addresses")
            for finding in findings:
                click.echo(f"{label}: {alerts.describe(finding)}")
                unheard += finding.unheard
                fallbacks += not finding.unheard
        click.echo(f"{len(found)} site(s): {unheard} team(s) unheard, {fallbacks} falling back")
        db.session.rollback()
        if unheard:
            raise SystemExit(1)

    # -- site settings, SLA report ----------------------------------------------------------
    @app.cli.command("sla")
    @click.argument("public_key")
    @click.option("--days", default=28, show_default=True)
    @click.option("--by", "group_by", type=click.Choice(sorted(sla.SLICES)), default=None)
    def sla_report(public_key: str, days: int, group_by: str | None) -> None:
        """SLA attainment vs targets over the last --days, optionally by a slice."""
        site = _site(public_key)
        now = utcnow()
        report = sla.attainment(site, now - timedelta(days=days), now, group_by=group_by)
        out = {str(k): {s: {"met": a.met, "eligible": a.eligible, "rate": a.rate,
                            "target": a.target} for s, a in v.items()}
               for k, v in report.items()}
        json.dump(out, sys.stdout, indent=2)
        click.echo()

    @app.cli.command("run-job")
    @click.argument("name", type=click.Choice(["retry_due", "sla_scan", "weekly_digest",
                                               "purge", "voice_sweep"]))
    @click.option("--now", default=None, help="ISO time to run as (default: now).")
    def run_job(name: str, now: str | None) -> None:
        """Run one scheduled job here and now (what `flask cron` schedules)."""
        from ..jobs import tasks

        if now:
            datetime.fromisoformat(now)
        click.echo(f"{name}: {tasks()[name].func(now)}")  # type: ignore[call-arg]

    @app.cli.command("site-settings")
    @click.argument("public_key")
    @click.option("--webhooks-allow-private/--webhooks-public-only", default=None,
                  help="Allow webhooks to private networks, RFC 1918 and IPv6 ULA (an "
                       "on-premise helpdesk); loopback, link-local and cloud metadata "
                       "addresses stay refused.")
    @click.option("--sla-ack-hours", type=int, default=None)
    @click.option("--sla-close-hours", type=int, default=None)
    @click.option("--sla-reminder-minutes", type=int, default=None)
    def site_settings(public_key: str, webhooks_allow_private: bool | None,
                      sla_ack_hours: int | None, sla_close_hours: int | None,
                      sla_reminder_minutes: int | None) -> None:
        """Change a site's loop settings."""
        site = _site(public_key)
        values = {attr: value for attr, value in (
            ("webhooks_allow_private", webhooks_allow_private), ("sla_ack_hours", sla_ack_hours),
            ("sla_close_hours", sla_close_hours), ("sla_reminder_minutes", sla_reminder_minutes),
        ) if value is not None}
        try:  # the same checks as the settings page (app/sites.py)
            site_ops.update_settings(site, values)
        except site_ops.SettingsError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"{site.public_key}: webhooks_allow_private={site.webhooks_allow_private} "
                   f"ack={site.sla_ack_hours}h close={site.sla_close_hours}h "
                   f"reminder={site.sla_reminder_minutes}min")
