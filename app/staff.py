"""Staff accounts: creation, listing, deactivation, new passwords, sign-in checks with a
per-account lockout, session versions ("sign out everywhere") and password-reset links.

Passwords are hashed with argon2id at OWASP's parameters (m=19 MiB, t=2, p=1). Hashes of the
earlier scrypt scheme (werkzeug's `scrypt:…$…` strings) still verify and are replaced with
argon2id on the next successful sign-in."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, session
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash

from . import audit, signing
from .extensions import db, login_manager
from .models import StaffUser, utcnow

MIN_PASSWORD_CHARS = 12
SESSION_VERSION_KEY = "_staff_sv"  # the account's session_version when this session signed in

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32,
                         salt_len=16, type=Type.ID)
# Compared against when the email is unknown, so timing does not reveal which emails exist.
_DUMMY_HASH = _hasher.hash("not-a-password")


def _hash(password: str) -> str:
    """The argon2id hash of a password that meets the policy (ValueError otherwise)."""
    check_policy(password)
    return _hasher.hash(password)


def check_policy(password: str) -> None:
    """ValueError (its message is safe to show) unless the password meets the policy."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"passwords need at least {MIN_PASSWORD_CHARS} characters")


def _verify(stored: str, password: str) -> bool:
    """Whether `password` matches `stored`: argon2 hashes, or werkzeug's older ones."""
    if stored.startswith("$argon2"):
        try:
            return _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
    try:
        return check_password_hash(stored, password)
    except ValueError:  # not a hash werkzeug knows
        return False


def _needs_rehash(stored: str) -> bool:
    return not stored.startswith("$argon2id$") or _hasher.check_needs_rehash(stored)


def find(email: str) -> StaffUser | None:
    """The account with this email (case-insensitive), or None."""
    return db.session.scalar(
        select(StaffUser).where(func.lower(StaffUser.email) == email.strip().lower())
    )


def _get(email: str) -> StaffUser:
    user = find(email)
    if user is None:
        raise LookupError(f"no staff account with email {email.strip().lower()}")
    return user


def add(email: str, password: str, role: str = "agent", name: str | None = None) -> StaffUser:
    """Add a staff account to the session (policy checked, no commit: an invitation creates
    it in the same transaction as the membership); the email is stored lower-cased and must
    be new (ValueError, whose message is safe to show)."""
    email = email.strip().lower()
    if find(email) is not None:
        raise ValueError(f"a staff account with email {email} already exists")
    user = StaffUser(email=email, password_hash=_hash(password), role=role, name=name)
    db.session.add(user)
    return user


def create(email: str, password: str, role: str = "agent") -> StaffUser:
    """Create a staff account; the email is stored lower-cased and must be new."""
    email = email.strip().lower()
    user = add(email, password, role)
    try:
        db.session.commit()
    except IntegrityError:  # created concurrently: the same answer, and no hash in the message
        db.session.rollback()
        raise ValueError(f"a staff account with email {email} already exists") from None
    return user


def all_users() -> list[StaffUser]:
    """Every account, oldest first."""
    return list(db.session.scalars(select(StaffUser).order_by(StaffUser.id)))


def set_active(email: str, active: bool) -> StaffUser:
    """Deactivate (or reactivate) an account: an inactive one cannot sign in, and its open
    sessions stop counting as signed in (flask-login asks `is_active` on every request)."""
    user = _get(email)
    user.active = active
    db.session.commit()
    return user


def _new_password(user: StaffUser, password: str) -> None:
    """Store a new password (policy checked): every session of the account ends, every
    reset link for it dies (they carry a fingerprint of the old hash), the lock is lifted."""
    user.password_hash = _hash(password)
    user.session_version = StaffUser.session_version + 1
    user.failed_logins = 0
    user.locked_until = None


def set_password(email: str, password: str) -> StaffUser:
    """Give an account a new password (same policy as at creation); its open sessions end."""
    user = _get(email)
    _new_password(user, password)
    audit.record("staff.password_set", object_type="staff", object_id=user.id)
    db.session.commit()
    return user


def sign_out(user: StaffUser, everywhere: bool = False) -> None:
    """Record a sign-out; with `everywhere`, end every session of this account (the caller
    ends this one)."""
    if everywhere:
        user.session_version = StaffUser.session_version + 1
    audit.record("staff.logout_everywhere" if everywhere else "staff.logout", actor=user,
                 object_type="staff", object_id=user.id)
    db.session.commit()


# -- sign-in ----------------------------------------------------------------------------------

def _lock_seconds(failures: int) -> int:
    """How long the `failures`-th failure in a row locks the account (0 = not yet)."""
    cfg = current_app.config
    after = cfg["LOGIN_LOCK_AFTER"]
    if after <= 0 or failures < after:
        return 0
    return int(min(cfg["LOGIN_LOCK_SECONDS"] * 2 ** min(failures - after, 30),
                   cfg["LOGIN_LOCK_MAX_SECONDS"]))


def authenticate(email: str, password: str) -> StaffUser | None:
    """The active user with this email and password, or None.

    Every call costs one hash check, whether the email exists, the account is locked or
    not, so neither is visible in the timing. A failure counts against the account (atomic
    UPDATE); from LOGIN_LOCK_AFTER failures in a row it is locked with doubling backoff, and
    while locked even the right password is refused (and not counted). Success clears the
    count and replaces an outdated hash with argon2id."""
    user = find(email)
    tried = {"email": email.strip().lower()[:254]}
    if user is None:
        _verify(_DUMMY_HASH, password)
        audit.record("staff.login_failed", actor="system", details=tried)
        db.session.commit()
        return None
    now = utcnow()
    locked = user.locked_until is not None and user.locked_until > now
    ok = _verify(user.password_hash, password)
    if locked:
        audit.record("staff.login_failed", actor="system", object_type="staff",
                     object_id=user.id, details={**tried, "locked": True})
        db.session.commit()
        return None
    if not ok or not user.active:
        failures = db.session.execute(
            update(StaffUser).where(StaffUser.id == user.id)
            .values(failed_logins=StaffUser.failed_logins + 1)
            .returning(StaffUser.failed_logins)
        ).scalar_one()
        seconds = _lock_seconds(failures)
        audit.record("staff.login_failed", actor="system", object_type="staff",
                     object_id=user.id, details=tried)
        if seconds:
            db.session.execute(update(StaffUser).where(StaffUser.id == user.id)
                               .values(locked_until=now + timedelta(seconds=seconds)))
            audit.record("staff.locked", actor="system", object_type="staff",
                         object_id=user.id, details={"failures": failures, "seconds": seconds})
        db.session.commit()
        return None
    user.failed_logins = 0
    user.locked_until = None
    if _needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    audit.record("staff.login", actor=user, object_type="staff", object_id=user.id)
    db.session.commit()
    return user


def start_session(user: StaffUser) -> None:
    """Call right before login_user: nothing from before sign-in survives in the session
    (a fresh signed cookie), and the session remembers the account's session version."""
    session.clear()
    session[SESSION_VERSION_KEY] = user.session_version


@login_manager.user_loader
def _load(user_id: str) -> StaffUser | None:
    if not user_id.isdigit():
        return None
    user = db.session.get(StaffUser, int(user_id))
    if user is None or session.get(SESSION_VERSION_KEY) != user.session_version:
        return None  # signed out everywhere (or the password changed) since this sign-in
    return user


# -- password reset ---------------------------------------------------------------------------

def _fingerprint(user: StaffUser) -> str:
    """Changes whenever the password hash does; reveals nothing about it (links are readable)."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, user.password_hash.encode(), hashlib.sha256).hexdigest()[:24]


def reset_token(user: StaffUser) -> str:
    """A signed link token for resetting this account's password."""
    return signing.dumps(signing.app_keys(), signing.PASSWORD_RESET,
                         {"u": user.id, "p": _fingerprint(user)})


def user_for_reset(token: str) -> StaffUser | None:
    """The account a reset token is for, while it is genuine, unexpired, the account active
    and its password unchanged since the link was made (so a link works once); else None."""
    try:
        data: dict[str, Any] = signing.loads(signing.app_keys(), signing.PASSWORD_RESET, token,
                                             current_app.config["PASSWORD_RESET_MAX_AGE"])
    except signing.TokenInvalid:
        return None
    uid, fp = data.get("u"), data.get("p")
    if not isinstance(uid, int) or not isinstance(fp, str):
        return None
    user = db.session.get(StaffUser, uid)
    if user is None or not user.active or not hmac.compare_digest(fp, _fingerprint(user)):
        return None
    return user


def request_reset(email: str) -> bool:
    """Queue a reset email for an active account with this email (at most one per account
    per 5 minutes); True if one was queued. The caller answers the same either way."""
    from .loop import notify

    user = find(email)
    if user is None or not user.active:
        return False
    link = notify.external_url("admin.reset_password", token=reset_token(user))
    minutes = current_app.config["PASSWORD_RESET_MAX_AGE"] // 60
    bucket = int(utcnow().timestamp() // 300)
    queued = notify.email(None, "password_reset", f"staff-{user.id}-{bucket}", [user.email],
                          "en", {"link": link, "minutes": minutes, "email": user.email})
    if queued:
        audit.record("staff.password_reset_requested", actor="system", object_type="staff",
                     object_id=user.id)
    db.session.commit()
    return bool(queued)


def reset_password(user: StaffUser, password: str) -> None:
    """Set the new password from a reset link (policy checked): the link and every session
    of the account stop working."""
    _new_password(user, password)
    audit.record("staff.password_reset", actor=user, object_type="staff", object_id=user.id)
    db.session.commit()
