"""Embed views. Thin: tokens, answers and routing live in prompts/responses/loop."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from typing import Any

from flask import (
    Response,
    abort,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from limits import parse as parse_limit
from sqlalchemy import select
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import RequestEntityTooLarge, TooManyRequests

from .. import branding, i18n, prompts, responses, safejson
from ..errors import error_response
from ..extensions import client_address, csrf, db, limiter
from ..models import Moment, Site, VoiceNote
from ..models import Response as Answer
from ..responses import FAMILY, SCALES, InvalidAnswer
from ..security import public_url
from . import bp
from .forms import CommentForm, ContactForm, PromptForm

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# widget.js is answered before Flask by WidgetFastPath (app/embed/fastpath.py); these rules
# only name its URLs for url_for.
bp.add_url_rule("/widget.js", "widget", build_only=True)
bp.add_url_rule("/widget.<version>.js", "widget_versioned", build_only=True)


# ---------------------------------------------------------------------------------------------
# prompt issuance for the script tag


def _bounded_body(limit: int | None = None) -> bytes:
    """The raw body, or 413 past `limit` (default EMBED_MAX_BODY) bytes.

    A chunked body has no Content-Length, and werkzeug's limited stream stops quietly AT the
    limit (the view would see it truncated), so one byte more than allowed is read: if it
    arrives, the body is too large."""
    limit = limit or current_app.config["EMBED_MAX_BODY"]
    if request.content_length is not None and request.content_length > limit:
        abort(413)
    request.max_content_length = limit + 1
    data = request.get_data(cache=True)  # request.form parses these cached bytes
    if len(data) > limit:
        abort(413)
    return data


def _json_body() -> dict[str, Any]:
    """The body as a JSON object of valid text (any content type: the widget sends
    text/plain), or a 400 that says what is wrong with it."""
    try:
        return safejson.loads_object(_bounded_body())
    except safejson.BadJSON as exc:
        abort(400, str(exc))


def _cors(resp: Response, origin: str | None) -> Response:
    if origin:  # always, once allows_origin() said yes
        resp.headers["Access-Control-Allow-Origin"] = origin
    resp.headers["Vary"] = "Origin"
    return resp


@bp.post("/e/prompt")
@csrf.exempt
@limiter.limit(lambda: current_app.config["LIMIT_PROMPT_ISSUE"])
def issue_prompt() -> Response:
    """Decide whether to show a prompt to this visitor and, if so, hand out its signed URL.

    Body (JSON, sent as text/plain so browsers need no preflight): either
    {site, moment, channel, skus, order, lang, url, vid} for a public prompt, or
    {token, vid} for a prompt the merchant's backend signed.
    """
    data = _json_body()
    origin = request.headers.get("Origin")
    try:
        if data.get("token"):
            token = data["token"]
            if not isinstance(token, str):
                raise prompts.PromptError("token must be a string")
            prompt = prompts.verify(token)
            site, moment, verified = prompt.site, prompt.moment, prompt.verified
            channel, visitor = prompt.channel, prompt.customer or data.get("vid")
            locale = prompt.locale
        else:
            site, moment = prompts.load_site_moment(data.get("site"), data.get("moment"))
            context = prompts.normalize_context(data, site.default_locale)
            token, verified = None, False
            channel, visitor = context["channel"], data.get("vid")
            locale = context["locale"]
    except prompts.PromptError as exc:
        return error_response(exc.status, exc.message, "expired" if exc.expired else "invalid")
    if not site.allows_origin(origin):
        # Not echoing the Origin: the browser refuses the answer, and nothing is recorded.
        return error_response(403, "This origin may not show this site's prompts.", "origin")
    vhash = prompts.visitor_hash(site, visitor if isinstance(visitor, str) else None)
    decision = prompts.decide(site, moment, vhash, sample=not verified)
    if not decision.show:
        body = {"show": False, "reason": decision.reason, "cooldown": decision.cooldown_seconds}
        return _cors(jsonify(body), origin)
    prompts.record_impression(site, moment, channel, vhash)
    token = token or prompts.issue_public(site, moment, context)
    url = public_url("embed.prompt", token=token)  # PUBLIC_BASE_URL, never the Host header
    i18n.use(locale, site.default_locale)  # the loader's own labels, in the prompt's language
    labels = {"title": gettext("Feedback"), "close": gettext("Close feedback")}
    return _cors(jsonify(show=True, url=url, cooldown=decision.cooldown_seconds,
                         labels=labels), origin)


# ---------------------------------------------------------------------------------------------
# the prompt form


def _replay_allowed(token: str) -> bool:
    """Cap replays of one prompt (it can only ever hold one answer). Checked only when a
    submission turns out to be a repeat, so first answers pay no extra round trip."""
    limit = parse_limit(current_app.config["LIMIT_SUBMIT_PER_TOKEN"])
    key = hashlib.sha256(token.encode()).hexdigest()[:24]
    try:
        return limiter.limiter.hit(limit, "replay", key)
    except Exception:  # noqa: BLE001 - limit storage down: the answer is idempotent anyway
        log.warning("replay limit unavailable", exc_info=True)
        return True


def _parent_origin(site: Site) -> str | None:
    """The embedding page's origin, for postMessage; only one of the site's own."""
    origin = request.args.get("o")
    return origin if site.allows_origin(origin) else None


def _form_data(limit: int | None = None) -> MultiDict[str, str]:
    if request.is_json:
        data = _json_body()
        out: MultiDict[str, str] = MultiDict()
        for key in ("rating", "comment", "website"):
            value = data.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                abort(400, f"{key} has the wrong type.")
            out[key] = str(value)
        return out
    _bounded_body(limit)
    return request.form


def _verify_or_error(token: str) -> prompts.Prompt | Response:
    """The prompt a token carries, the rest of the request in its language; else the error
    (a page in the browser's language, or JSON)."""
    try:
        checked = prompts.verify(token)
        i18n.use(checked.locale, checked.site.default_locale)
        return checked
    except prompts.PromptError as exc:
        i18n.use(None)
        if request.method == "POST" and request.is_json:
            return error_response(exc.status, exc.message, "expired" if exc.expired else "invalid")
        page = render_template("embed/invalid.html", expired=exc.expired, message=exc.message)
        return make_response(page, exc.status)


# The blank prompt page is the same for every token of a moment, locale and parent origin:
# render it once per process with a placeholder where the token goes.
_TOKEN_SLOT = "CLOSELOOP-TOKEN-SLOT"
_PAGE_CACHE_MAX = 512
_URLSAFE = re.compile(r"^[A-Za-z0-9_.-]+$")  # itsdangerous URL-safe tokens: nothing to escape


def _blank_prompt_page(p: prompts.Prompt, token: str, parent: str | None) -> str:
    m = p.moment
    key = (m.id, m.question, tuple(sorted((m.questions or {}).items())), m.scale,
           m.comment_enabled, m.voice_enabled, p.site.name, p.site.logo_key,
           p.site.accent_color, g.get("locale"), parent)
    branding.allow_style(p.site)  # the cached page's <style> still needs this response's CSP
    cache: dict[tuple[Any, ...], str] = current_app.extensions.setdefault(
        "closeloop.prompt_pages", {})
    page = cache.get(key)
    if page is None:
        scale = SCALES[m.scale]
        form = PromptForm.for_scale(scale, current_app.config["COMMENT_MAX_CHARS"])
        page = render_template("embed/prompt.html", p=p, form=form, scale=scale,
                               token=_TOKEN_SLOT, parent=parent, saved=None)
        if len(cache) >= _PAGE_CACHE_MAX:
            cache.clear()
        cache[key] = page
    if not _URLSAFE.match(token):  # never true for a verified token; keep escaping honest
        abort(400)
    return page.replace(_TOKEN_SLOT, token)


@bp.route("/k/<token>", methods=["GET", "POST"])
@csrf.exempt  # no cookie is involved: the kiosk's signed link is the authority
@limiter.limit(lambda: current_app.config["LIMIT_KIOSK"], methods=["POST"])
def kiosk(token: str) -> ResponseReturnValue:
    """An in-store tablet (app/kiosks.py). GET: the full-screen question, its ratings as big
    buttons. POST (JSON from kiosk.js, or the plain form without JavaScript): one answer,
    {submission_id, rating}, stored once per submission id; 404 for a revoked or forged
    link, 400 for a bad answer."""
    from .. import kiosks

    found = kiosks.for_token(token) if len(token) <= 300 else None
    if found is None:
        i18n.use(None)
        if request.method == "POST" and request.is_json:
            return error_response(404, "This kiosk link is not valid or was revoked.",
                                  "invalid")
        return render_template("embed/invalid.html", expired=False), 404
    kiosk_row, site, moment = found
    lang = i18n.use(request.args.get("lang"), site.default_locale)
    scale = SCALES[moment.scale]
    if request.method == "POST":
        data = _json_body() if request.is_json else _form_data()
        sid, rating = data.get("submission_id"), data.get("rating")
        try:
            value = int(rating) if isinstance(rating, (int, str)) and not isinstance(
                rating, bool) else None
        except ValueError:
            value = None
        if not isinstance(sid, str) or not kiosks.valid_submission(sid) or value is None \
                or value not in scale.values:
            return error_response(400, "A submission_id (8-48 letters, digits or -) and one "
                                  "of the moment's ratings are needed.", "invalid")
        try:
            recorded = kiosks.record(kiosk_row, site, moment, sid, value, lang)
        except InvalidAnswer as exc:
            return error_response(400, str(exc), "invalid")
        if request.is_json:
            resp = jsonify(ok=True, created=recorded.created)
            resp.status_code = 201 if recorded.created else 200
            return resp
        return redirect(url_for("embed.kiosk", token=token, done=1, lang=request.args.get(
            "lang")), 303)
    form = PromptForm.for_scale(scale, current_app.config["COMMENT_MAX_CHARS"])
    return render_template("embed/kiosk.html", site=site, moment=moment, scale=scale,
                           form=form, token=token, kiosk=kiosk_row,
                           submission_id=secrets.token_hex(16),
                           done=request.args.get("done") == "1")


@bp.get("/s/<code>")  # and HEAD
def short_link(code: str) -> ResponseReturnValue:
    """An SMS link: a redirect to the verified prompt it stands for (opening it stores
    nothing); a friendly page in the browser's language when unknown or expired."""
    from .. import channels

    token, expired = channels.resolve(code)
    if token is None:
        i18n.use(None)
        return render_template("embed/invalid.html", expired=expired), 410 if expired else 404
    return redirect(url_for("embed.prompt_page", token=token), 302)


@bp.get("/p/<token>")  # and HEAD
@limiter.exempt  # reads nothing but the token and cached rows; ?rating=N is limited below
def prompt_page(token: str) -> ResponseReturnValue:
    """The rating form (works with JS off). With ?rating=N, a one-click rating from an email
    or SMS, the same form with that rating chosen and one button to send it (frame.js sends
    it by itself): opening a link never stores anything, because mail scanners and link
    previews open every link (DESIGN rule 13); only the POST does."""
    checked = _verify_or_error(token)
    if isinstance(checked, Response):
        return checked
    g.frame_ancestors = checked.site.allowed_origins
    parent = _parent_origin(checked.site)
    if "rating" in request.args:
        return _one_click_page(checked, token, parent)
    return _blank_prompt_page(checked, token, parent)


@limiter.limit(lambda: current_app.config["LIMIT_SUBMIT"])
def _one_click_page(p: prompts.Prompt, token: str, parent: str | None) -> tuple[str, int]:
    """The prompt with the link's rating chosen, to be confirmed; 400 for a rating the
    moment's scale does not have. Stores nothing."""
    scale = SCALES[p.moment.scale]
    form = PromptForm.for_scale(scale, current_app.config["COMMENT_MAX_CHARS"],
                                MultiDict({"rating": request.args["rating"]}))
    valid = form.validate()
    page = render_template("embed/prompt.html", p=p, form=form, scale=scale, token=token,
                           parent=parent, confirm=valid)
    return page, 200 if valid else 400


@bp.post("/p/<token>")
@csrf.exempt  # no session cookie is involved: the signed token is the authority
def prompt(token: str) -> ResponseReturnValue:
    """Validate and store an answer, then the thank-you page (or JSON for fetch clients)."""
    return _prompt(token)


@limiter.limit(lambda: current_app.config["LIMIT_SUBMIT"])
def _prompt(token: str) -> ResponseReturnValue:
    """Answer a prompt: POST of the form or JSON; with a voice note, multipart/form-data
    whose `voice` part is the recording (voice.js asks for JSON back)."""
    checked = _verify_or_error(token)
    if isinstance(checked, Response):
        return checked
    p = checked
    g.frame_ancestors = p.site.allowed_origins
    cfg = current_app.config
    scale = SCALES[p.moment.scale]
    parent = _parent_origin(p.site)
    as_json = request.is_json or (request.mimetype == "multipart/form-data"
                                  and _accepts_json())
    # Only a moment that takes voice notes takes a body big enough for one.
    with_voice = p.moment.voice_enabled and request.mimetype == "multipart/form-data"
    limit = cfg["VOICE_MAX_BYTES"] + cfg["EMBED_MAX_BODY"] if with_voice else None
    try:
        formdata = _form_data(limit)
    except RequestEntityTooLarge:
        if not with_voice:
            raise
        return _voice_refused(p, token, parent, as_json, 413, "too_large",
                              str(_VOICE_TOO_LARGE))
    form = PromptForm.for_scale(scale, cfg["COMMENT_MAX_CHARS"], formdata)

    if form.website.data:  # honeypot: look successful, store nothing
        if as_json:
            return jsonify(ok=True)
        return render_template("embed/thanks.html", r=None, site=p.site, parent=parent,
                               family="neutral", form=None)

    if not form.validate():
        errors = {name: [str(e) for e in field.errors]
                  for name, field in form._fields.items() if field.errors}
        if as_json:
            resp = jsonify(error="invalid", message="The answer is not valid.", fields=errors)
            resp.status_code = 400
            return resp
        page = render_template("embed/prompt.html", p=p, form=form, scale=scale, token=token,
                               parent=parent, confirm=False)
        return page, 400
    upload = request.files.get("voice") if request.mimetype == "multipart/form-data" else None
    # An empty part is an empty file field: no voice note, as with no part at all.
    audio_bytes = upload.stream.read() if upload is not None else b""
    note = None
    if audio_bytes and not responses.answered(p):  # a repeat's upload is not judged again
        staged = _stage_voice(p, token, audio_bytes, upload.filename if upload else None)
        if isinstance(staged, tuple):
            return _voice_refused(p, token, parent, as_json, *staged)
        note = staged
    try:
        answer, created, amended = responses.record(p, form.rating.data, form.comment.data,
                                                    voice=note)
    except InvalidAnswer as exc:
        abort(400, str(exc))

    if not created and not _replay_allowed(token):
        raise TooManyRequests("This answer was already received.", retry_after=60)
    if amended in _REFUSED:
        return _comment_refused(answer, p.site, parent, amended, form.comment.data, as_json)
    thanks = url_for("embed.thanks", public_id=answer.public_id, o=parent)
    if as_json:
        resp = jsonify(id=answer.public_id, segment=answer.segment, created=created,
                       thank_you_url=public_url("embed.thanks", public_id=answer.public_id),
                       next=thanks)
        resp.status_code = 201 if created else 200
        return resp
    return redirect(thanks, 303)


def _accepts_json() -> bool:
    """voice.js's multipart POST asks for JSON (the next page, or why not); a plain form
    post gets pages."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


_VOICE_TOO_LARGE = _l("This voice note is too large. Please record a shorter one (up to one "
                      "minute) or send your answer without it.")
_VOICE_OFF = _l("This question does not take voice notes. Please send your answer without "
                "one.")
_VOICE_QUOTA = _l("Too many voice notes were sent from here. Please try again later, or send "
                  "your answer without one.")
_VOICE_BAD_NAME = _l("This voice note could not be taken. Please record it again, or send "
                     "your answer without it.")
_VOICE_UNAVAILABLE = _l("We could not save your voice note just now. Please try again in a "
                        "moment, or send your answer without it.")


def _tampered_name(name: str | None) -> bool:
    """A file name no browser sends for a recording: a path ("../../x", "a/b", "C:\\x"),
    a control character. The name is never used (a random key is); such a request is
    refused as what it is, not taken."""
    if not name:
        return False
    return (any(c in name for c in "/\\") or ".." in name
            or any(ord(c) < 32 or ord(c) == 127 for c in name))


def _stage_voice(p: prompts.Prompt, token: str, data: bytes,
                 name: str | None = None) -> VoiceNote | tuple[int, str, str, int]:
    """The upload judged, stored and recorded unclaimed (app/voice.py), or why not:
    (status, code, customer-facing message, Retry-After). Counts against the voice quotas
    first."""
    from .. import audio, voice

    if not p.moment.voice_enabled:
        return 400, "voice_disabled", str(_VOICE_OFF), 0
    if _tampered_name(name):
        return 400, "bad_name", str(_VOICE_BAD_NAME), 0
    wait = voice.quota_wait(client_address(), token)
    if wait:
        return 429, "too_many", str(_VOICE_QUOTA), wait
    try:
        return voice.stage(p.site.id, data)
    except audio.AudioRejected as exc:
        return 400, getattr(exc, "code", "voice_refused"), str(exc.message), 0
    except voice.StorageUnavailable:
        return 503, "unavailable", str(_VOICE_UNAVAILABLE), 30


def _voice_refused(p: prompts.Prompt, token: str, parent: str | None, as_json: bool,
                   status: int, code: str, message: str, retry_after: int = 0) -> Response:
    """The answer with a voice note that was not taken: JSON for voice.js, else the form again
    with the reason (nothing was stored)."""
    if as_json:
        resp = jsonify(error=code, message=message, fields={"voice": [message]})
    else:
        scale = SCALES[p.moment.scale]
        form = PromptForm.for_scale(scale, current_app.config["COMMENT_MAX_CHARS"],
                                    request.form if status != 413 else None)
        resp = make_response(render_template("embed/prompt.html", p=p, form=form, scale=scale,
                                             token=token, parent=parent, confirm=False,
                                             voice_error=message))
    resp.status_code = status
    if retry_after:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


# Why a comment on an answer that already exists was not stored (responses._amend).
_REFUSED = {
    responses.CLOSED: _l("We could not add this comment: our team has already started working "
                         "on your answer, so it can no longer be changed here."),
    responses.FULL: _l("We could not add this comment: your answer already holds as much text "
                       "as it can take."),
    "disabled": _l("We could not add this comment: this question does not take comments."),
}


def _comment_refused(answer: Answer, site: Site, parent: str | None, reason: str,
                     comment: str | None, as_json: bool) -> Response | tuple[str, int]:
    """409 saying why the comment was not stored, with the text given back to copy."""
    message = str(_REFUSED[reason])
    if as_json:
        resp = jsonify(error="comment_not_added", reason=reason, message=message,
                       id=answer.public_id)
        resp.status_code = 409
        return resp
    page = render_template("embed/thanks.html", r=answer, site=site, parent=parent,
                           family=FAMILY[answer.segment], form=None, refused=message,
                           unsaved=comment)
    return page, 409


# ---------------------------------------------------------------------------------------------
# thank-you page


def _load_answer(public_id: str) -> tuple[Answer, Site, Moment]:
    if len(public_id) > 32:
        abort(404)
    row = db.session.execute(
        select(Answer, Site, Moment)
        .join(Site, Site.id == Answer.site_id)
        .join(Moment, Moment.id == Answer.moment_id)
        .where(Answer.public_id == public_id)
    ).first()
    if row is None:
        abort(404)
    return row[0], row[1], row[2]


@bp.route("/t/<public_id>", methods=["GET", "POST"])
@csrf.exempt  # the unguessable public id is the authority, as the token is for /p
@limiter.limit(lambda: current_app.config["LIMIT_SUBMIT"], methods=["POST"])
def thanks(public_id: str) -> ResponseReturnValue:
    """Segment-specific thank-you; offers "anything to add?" while the answer has no comment
    and its case is new. A comment POSTed here is stored as on the prompt (appended while the
    case is new) or refused with the reason; never thanked for and dropped."""
    answer, site, moment = _load_answer(public_id)
    i18n.use(answer.locale, site.default_locale)
    g.frame_ancestors = site.allowed_origins
    limit = current_app.config["COMMENT_MAX_CHARS"]
    parent = _parent_origin(site)
    here = url_for("embed.thanks", public_id=public_id, o=parent)
    can_add = moment.comment_enabled and not answer.comment and responses.can_amend(answer.id)
    form = CommentForm.build(limit) if can_add else None
    family = FAMILY[answer.segment]
    # An anonymous customer unhappy with us may leave an address to be contacted about it.
    may_contact = (family == "negative" and not answer.customer_email
                   and not answer.customer_ref)
    contact = ContactForm() if may_contact else None
    status = 200
    data = _form_data() if request.method == "POST" else None
    if data is not None and data.get("form") == "contact":
        posted_contact = ContactForm(data)
        if not may_contact:  # an address is there already: nothing to change
            return redirect(here, 303)
        if not posted_contact.validate():
            contact, status = posted_contact, 400
        else:
            responses.add_contact(answer, posted_contact.contact_email.data)
            return redirect(here, 303)
    elif data is not None:
        posted = CommentForm.build(limit, data)
        if not posted.validate():
            form, status = posted, 400
        elif not posted.comment.data or posted.website.data:  # nothing to store
            return redirect(here, 303)
        else:
            amended = (responses.add_comment(answer, posted.comment.data)
                       if moment.comment_enabled else "disabled")
            if amended in _REFUSED:
                return _comment_refused(answer, site, parent, amended, posted.comment.data,
                                        request.is_json)
            return redirect(here, 303)
    page = render_template("embed/thanks.html", r=answer, site=site, parent=parent,
                           family=family, form=form, contact=contact)
    return page, status


@bp.route("/v/<token>", methods=["GET", "POST"])
@csrf.exempt  # no cookie is involved: the signed link is the authority
@limiter.limit(lambda: current_app.config["LIMIT_SUBMIT"])
def verify(token: str) -> tuple[str, int]:
    """The "is it resolved?" link from a resolution or verification email. GET (and HEAD)
    shows the answer the link carries with one button to confirm it, and changes nothing
    (mail scanners open every link); the POST applies it once (frame.js posts by itself, so
    one click in the email is enough), a second POST says the answer is already recorded."""
    from ..loop.cases import TransitionError, customer_verdict, peek_verdict
    from ..signing import TokenExpired, TokenInvalid

    answer = None
    i18n.use(None)  # a broken link: the browser's language
    try:
        if request.method == "POST":
            outcome, case = customer_verdict(token)
        else:
            state, answer, case = peek_verdict(token)
            outcome = "confirm" if state == "pending" else state
    except TokenExpired:
        return render_template("embed/invalid.html", expired=True), 400
    except TokenInvalid:
        return render_template("embed/invalid.html", expired=False), 400
    except TransitionError:  # answered twice at the same moment: the first answer stands
        outcome, case = "already", None
    site = db.session.get(Site, case.site_id) if case is not None else None
    locale = (db.session.scalar(select(Answer.locale).where(Answer.id == case.response_id))
              if case is not None else None) or "en"
    if case is not None:  # the language of the email they clicked in
        i18n.use(locale, site.default_locale if site is not None else None)
    page = render_template("embed/verified.html", outcome=outcome, site=site, answer=answer,
                           token=token)
    return page, 200
