"""Staff accounts: creation and password checks (scrypt at OWASP's cost)."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db, login_manager
from .models import StaffUser

# Compared against when the email is unknown, so timing does not reveal which emails exist.
_DUMMY_HASH: str | None = None


def create(email: str, password: str, role: str = "agent") -> StaffUser:
    """Create a staff account; the email is stored lower-cased."""
    if len(password) < 12:
        raise ValueError("passwords need at least 12 characters")
    user = StaffUser(
        email=email.strip().lower(),
        password_hash=generate_password_hash(
            password, method=current_app.config["PASSWORD_HASH_METHOD"]
        ),
        role=role,
    )
    db.session.add(user)
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
