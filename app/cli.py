"""`flask` commands: sites, staff, demo (the job commands live in app/jobs/cli.py)."""

from __future__ import annotations

import os
import secrets
from typing import Any

import click
from flask import Flask, current_app
from sqlalchemy import select, update

from . import sites as site_ops
from . import staff as staff_ops
from .admin import permissions
from .extensions import db
from .models import Moment, StaffUser, Team


def _snippet(public_key: str, base: str) -> str:
    return (f'<script src="{base}/widget.js" async data-site="{public_key}" '
            'data-moment="checkout" data-sku="SKU-1" data-channel="web"></script>')


def _base_url() -> str:
    return current_app.config.get("PUBLIC_BASE_URL") or "http://127.0.0.1:5000"


class CliError(click.ClickException):
    """A command's failure as one line on stderr, `error: ...`, exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def one_line(exc: BaseException) -> str:
    """What went wrong, in one line without SQL or its parameters (SQLAlchemy puts both in
    str(exc); the driver's own first line says what failed)."""
    orig = getattr(exc, "orig", None)
    shown = orig if isinstance(orig, BaseException) else exc
    text = (str(shown).strip().splitlines() or [""])[0]
    if shown is exc and hasattr(exc, "statement"):  # a StatementError without a driver error
        text = ""
    return f"{type(shown).__name__}: {text}"[:300].rstrip(": ")


def _guarded(cmd: click.Command | None) -> click.Command | None:
    """Wrap a top-level command (a group covers its subcommands) so an unexpected exception
    ends as one `error:` line; `flask --debug` (FLASK_DEBUG) shows the traceback instead."""
    if cmd is None or getattr(cmd, "_closeloop_guarded", False):
        return cmd
    invoke = cmd.invoke

    def guarded_invoke(ctx: click.Context) -> Any:
        try:
            return invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit,
                KeyboardInterrupt):
            raise
        except Exception as exc:
            if os.environ.get("FLASK_DEBUG", "").lower() in ("1", "true", "yes"):
                raise
            raise CliError(f"{one_line(exc)} (flask --debug ... shows the traceback)") from None

    cmd.invoke = guarded_invoke  # type: ignore[method-assign]
    cmd._closeloop_guarded = True  # type: ignore[attr-defined]
    return cmd


def guard(app: Flask) -> None:
    """Every command of this app, and Flask-Migrate's `db`, fails in one line."""
    get_command = app.cli.get_command

    def guarded_get_command(ctx: click.Context, name: str) -> click.Command | None:
        return _guarded(get_command(ctx, name))

    app.cli.get_command = guarded_get_command  # type: ignore[method-assign,assignment]
    from flask_migrate.cli import db as db_group

    _guarded(db_group)


def register(app: Flask) -> None:
    """Attach the command groups to the app's CLI."""
    from .loop.cli import register as register_loop

    guard(app)
    register_loop(app)

    @app.cli.group("sites")
    def sites_group() -> None:
        """Manage sites (shops that embed the widget)."""

    @sites_group.command("create")
    @click.option("--name", required=True)
    @click.option("--origin", "origins", multiple=True, required=True,
                  help="Allowed embedding origin, e.g. https://shop.example (repeatable).")
    @click.option("--review-url", default=None, help="Public review page offered to everyone.")
    @click.option("--referral-url", default=None)
    @click.option("--support-contact", default=None, help="Email address or URL for help.")
    @click.option("--locale", default="en")
    def sites_create(name: str, origins: tuple[str, ...], review_url: str | None,
                     referral_url: str | None, support_contact: str | None, locale: str) -> None:
        """Create a site; prints its public key, signing secret and script tag."""
        try:
            site = site_ops.create(name, list(origins), review_url, support_contact, locale,
                                   referral_url=referral_url)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        click.echo(f"public key:     {site.public_key}")
        click.echo(f"signing secret: {site.signing_secrets[-1]}   (keep it on your server)")
        click.echo(f"script tag:     {_snippet(site.public_key, _base_url())}")
        from .loop.alerts import setup_notes

        for line in setup_notes(site):  # which default teams still need an address
            click.echo(line)

    @sites_group.command("rotate-secret")
    @click.argument("public_key")
    @click.option("--drop-old", is_flag=True, help="Stop accepting tokens signed before now.")
    def sites_rotate(public_key: str, drop_old: bool) -> None:
        """Add a new signing secret; older ones keep verifying unless --drop-old."""
        site = site_ops.by_key(public_key)
        if site is None:
            raise click.BadParameter(f"no site with public key {public_key}")
        secret = site_ops.rotate_secret(site, drop_old=drop_old)
        click.echo(f"new signing secret: {secret}")
        click.echo(f"secrets accepted:   {len(site.signing_secrets)}")

    @sites_group.command("branding")
    @click.argument("public_key")
    @click.option("--logo", "logo_path", type=click.Path(exists=True, dir_okay=False),
                  help="A PNG, JPEG or WebP file: checked and re-encoded like an upload.")
    @click.option("--remove-logo", is_flag=True, help="Remove the site's logo.")
    @click.option("--accent", default=None,
                  help='An accent colour #rrggbb (contrast checked), or "" for the default.')
    def sites_branding(public_key: str, logo_path: str | None, remove_logo: bool,
                       accent: str | None) -> None:
        """Set a site's logo and accent colour (the checks of Settings → Branding)."""
        from . import branding

        site = site_ops.by_key(public_key)
        if site is None:
            raise click.BadParameter(f"no site with public key {public_key}")
        if logo_path and remove_logo:
            raise click.UsageError("--logo and --remove-logo exclude each other")
        try:
            if accent is not None:
                branding.set_accent(site, accent, actor="cli")
            if logo_path:
                with open(logo_path, "rb") as fh:
                    data = fh.read(branding.LOGO_MAX_BYTES + 1)
                logo = branding.set_logo(site, data, actor="cli")
                click.echo(f"logo: {logo.content_type}, {logo.width} x {logo.height} px")
            elif remove_logo:
                branding.remove_logo(site, actor="cli")
        except branding.BrandingRejected as exc:
            db.session.rollback()
            raise click.ClickException(str(exc)) from None
        click.echo(f"{site.public_key}: logo={'yes' if site.logo_key else 'none'} "
                   f"accent={site.accent_color or 'default'}")

    @sites_group.command("list")
    def sites_list() -> None:
        """List sites with their keys and origins."""
        for site in db.session.scalars(select(site_ops.Site).order_by(site_ops.Site.id)):
            click.echo(f"{site.public_key}\t{site.name}\t{' '.join(site.allowed_origins)}")

    @app.cli.group("staff")
    def staff_group() -> None:
        """Manage staff accounts."""

    @staff_group.command("create")
    @click.argument("email")
    @click.option("--role", type=click.Choice(["agent", "lead", "admin"]), default="agent")
    @click.password_option(envvar="CLOSELOOP_STAFF_PASSWORD")
    def staff_create(email: str, role: str, password: str) -> None:
        """Create a staff account (password prompted, or CLOSELOOP_STAFF_PASSWORD)."""
        try:
            staff_ops.create(email, password, role)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        click.echo(f"created {role} {email.strip().lower()}")

    @staff_group.command("list")
    def staff_list() -> None:
        """List staff accounts: email, role, active or deactivated, created, site roles."""
        sites_of = permissions.memberships()
        for user in staff_ops.all_users():
            state = "active" if user.active else "deactivated"
            member = " ".join(f"{key}:{role}" for key, role in sites_of.get(user.id, [])) or "-"
            click.echo(f"{user.email}\t{user.role}\t{state}\t{user.created_at:%Y-%m-%d}"
                       f"\t{member}")

    def _staff_and_site(email: str, public_key: str) -> tuple[StaffUser, site_ops.Site]:
        user = staff_ops.find(email)
        if user is None:
            raise CliError(f"no staff account with email {email.strip().lower()}")
        site = site_ops.by_key(public_key)
        if site is None:
            raise CliError(f"no site with public key {public_key}")
        return user, site

    @staff_group.command("grant")
    @click.argument("email")
    @click.argument("public_key")
    @click.option("--role", type=click.Choice(permissions.ROLES), required=True)
    def staff_grant(email: str, public_key: str, role: str) -> None:
        """Make an account a member of a site with a role (or change its role there)."""
        user, site = _staff_and_site(email, public_key)
        _membership, previous = permissions.grant(user, site, role, actor="cli")
        if previous is None:
            click.echo(f"{user.email} is now {role} of {site.public_key}")
        else:
            click.echo(f"{user.email} is now {role} of {site.public_key} (was {previous})")

    @staff_group.command("revoke")
    @click.argument("email")
    @click.argument("public_key")
    def staff_revoke(email: str, public_key: str) -> None:
        """Remove an account's membership of a site (its access there ends at once)."""
        user, site = _staff_and_site(email, public_key)
        try:
            role = permissions.revoke(user, site, actor="cli")
        except LookupError as exc:
            raise CliError(str(exc.args[0])) from None
        click.echo(f"{user.email} is no longer {role} of {site.public_key}")

    @staff_group.command("invite")
    @click.argument("site_ref")
    @click.argument("email")
    @click.option("--role", type=click.Choice(permissions.ROLES), default="agent",
                  show_default=True)
    def staff_invite(site_ref: str, email: str, role: str) -> None:
        """Email an invitation to join a site (public key or id) with a role; inviting the
        same address again re-sends its invitation with a new link."""
        from . import invitations

        site = site_ops.by_key(site_ref)
        if site is None and site_ref.isdigit():
            site = db.session.get(site_ops.Site, int(site_ref))
        if site is None:
            raise CliError(f"no site with public key or id {site_ref}")
        try:
            inv, created = invitations.invite(site, email, role, actor="cli")
        except invitations.InviteError as exc:
            raise CliError(str(exc)) from None
        click.echo(f"{'invited' if created else 'invited again'} {inv.email} as {inv.role} "
                   f"of {site.public_key} (the link works until {inv.expires_at:%Y-%m-%d %H:%M} "
                   "UTC)")

    @staff_group.command("deactivate")
    @click.argument("email")
    def staff_deactivate(email: str) -> None:
        """Stop an account from signing in; its open sessions end at their next request."""
        try:
            user = staff_ops.set_active(email, False)
        except LookupError as exc:
            raise CliError(str(exc.args[0])) from None
        click.echo(f"deactivated {user.email}")

    @staff_group.command("activate")
    @click.argument("email")
    def staff_activate(email: str) -> None:
        """Let a deactivated account sign in again."""
        try:
            user = staff_ops.set_active(email, True)
        except LookupError as exc:
            raise CliError(str(exc.args[0])) from None
        click.echo(f"activated {user.email}")

    @staff_group.command("set-password")
    @click.argument("email")
    @click.password_option(envvar="CLOSELOOP_STAFF_PASSWORD")
    def staff_set_password(email: str, password: str) -> None:
        """Give an account a new password (prompted, or CLOSELOOP_STAFF_PASSWORD)."""
        try:
            user = staff_ops.set_password(email, password)
        except LookupError as exc:
            raise CliError(str(exc.args[0])) from None
        except ValueError as exc:
            raise CliError(str(exc)) from None
        click.echo(f"new password set for {user.email}")

    @app.cli.command("links")
    @click.argument("site_ref")
    @click.option("--moment", required=True, help="the moment asked, e.g. delivery")
    @click.option("--order", help="the order this is about")
    @click.option("--customer", help="your customer id (opaque)")
    @click.option("--email", help="the customer's address, for the loop's emails")
    @click.option("--locale", help="the customer's language, e.g. tr (default: the site's)")
    @click.option("--sku", "skus", multiple=True, help="a product of the order (repeatable)")
    @click.option("--detail", help="which store, till, agent or campaign sends it")
    @click.option("--channel", type=click.Choice(["email", "sms"]), default="email",
                  show_default=True)
    def links(site_ref: str, moment: str, order: str | None, customer: str | None,
              email: str | None, locale: str | None, skus: tuple[str, ...],
              detail: str | None, channel: str) -> None:
        """Print the verified links for one order: for --channel email the HTML snippet with
        one-click ratings and its plain-text form; for --channel sms a short link."""
        from . import channels
        from .prompts import PromptError

        site = site_ops.by_key(site_ref)
        if site is None and site_ref.isdigit():
            site = db.session.get(site_ops.Site, int(site_ref))
        if site is None:
            raise CliError(f"no site with public key or id {site_ref}")
        try:
            out = channels.links(site, moment, channel=channel, order=order, customer=customer,
                                 email=email, locale=locale, skus=list(skus), detail=detail,
                                 sms=channel == "sms")
        except PromptError as exc:
            raise CliError(exc.message) from None
        if channel == "sms":
            click.echo(out.sms_url)
            return
        click.echo(out.email_html)
        click.echo()
        click.echo(out.email_text)

    @app.cli.command("demo")
    @click.option("--origin", "origins", multiple=True,
                  default=["http://127.0.0.1:5000", "http://localhost:5000"])
    def demo(origins: tuple[str, ...]) -> None:
        """Seed the demo site and a demo staff account (prints the login)."""
        key = current_app.config["DEMO_SITE_KEY"]
        site = site_ops.by_key(key)
        if site is None:
            site = site_ops.create("Nordic Gear (demo)", list(origins),
                                   review_url="https://example.com/reviews/nordic-gear",
                                   support_contact="help@nordicgear.example", public_key=key)
            # The tracking page's prompt offers a voice note, so the demo shows the recorder.
            db.session.execute(update(Moment).where(Moment.site_id == site.id,
                                                    Moment.key == "delivery")
                               .values(voice_enabled=True))
            db.session.commit()
        else:
            site.allowed_origins = sorted(set(site.allowed_origins) | set(origins))
            db.session.commit()
        email = "demo@closeloop.example"
        password = secrets.token_urlsafe(12)
        user = db.session.scalar(select(StaffUser).where(StaffUser.email == email))
        if user is not None:
            db.session.delete(user)
            db.session.commit()
        user = staff_ops.create(email, password, "admin")
        for team in db.session.scalars(select(Team).where(Team.site_id == site.id)):
            team.members.append(user)  # so the demo's alerts and digests have a reader
        db.session.commit()
        permissions.grant(user, site, "owner", actor="cli")  # access comes from membership
        # This service's own address (the demo pages are served here); paths from the URL map,
        # so no request context (whose host TRUSTED_HOSTS might refuse) is needed.
        base = (current_app.config.get("PUBLIC_BASE_URL") or origins[0]).rstrip("/")
        paths = current_app.url_map.bind("localhost")
        click.echo(f"demo shop:   {base}{paths.build('demo.index')}")
        click.echo(f"staff login: {base}{paths.build('admin.login')}  {email} / {password}")
