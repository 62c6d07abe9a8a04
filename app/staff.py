"""Staff accounts: creation, listing, deactivation, new passwords and sign-in checks (scrypt
at OWASP's cost)."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db, login_manager
from .models import StaffUser

# Compared against when the email is unknown, so timing does not reveal which emails exist.
_DUMMY_HASH: str | None = None


MIN_PASSWORD_CHARS = 12


def _hash(password: str) -> str:
    """The scrypt hash of a password that meets the policy (ValueError otherwise)."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"passwords need at least {MIN_PASSWORD_CHARS} characters")
    return generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])


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


def create(email: str, password: str, role: str = "agent") -> StaffUser:
    """Create a staff account; the email is stored lower-cased and must be new."""
    email = email.strip().lower()
    if find(email) is not None:
        raise ValueError(f"a staff account with email {email} already exists")
    user = StaffUser(email=email, password_hash=_hash(password), role=role)
    db.session.add(user)
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


def set_password(email: str, password: str) -> StaffUser:
    """Give an account a new password (same policy as at creation)."""
    user = _get(email)
    user.password_hash = _hash(password)
    db.session.commit()
    return user


def authenticate(email: str, password: str) -> StaffUser | None:
    """The active user with this email and password, or None."""
    global _DUMMY_HASH
    user = db.session.scalar(
        select(StaffUser).where(func.lower(StaffUser.email) == email.strip().lower())
    )
    if user is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = generate_password_hash(
                "not-a-password", method=current_app.config["PASSWORD_HASH_METHOD"]
            )
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not user.active or not check_password_hash(user.password_hash, password):
        return None
    return user


@login_manager.user_loader
def _load(user_id: str) -> StaffUser | None:
    return db.session.get(StaffUser, int(user_id)) if user_id.isdigit() else None
