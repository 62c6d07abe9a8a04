"""Admin forms (Flask-WTF: CSRF on)."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from ..staff import MIN_PASSWORD_CHARS


class LoginForm(FlaskForm):
    """Staff sign-in."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class LogoutForm(FlaskForm):
    """Sign out; `everywhere` ends every session of the account."""

    everywhere = BooleanField("Sign out everywhere")


class ResetRequestForm(FlaskForm):
    """Ask for a password-reset link."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])


class NewPasswordForm(FlaskForm):
    """Choose a new password from a reset link."""

    password = PasswordField("New password", validators=[
        DataRequired(), Length(min=MIN_PASSWORD_CHARS, max=200,
                               message=f"At least {MIN_PASSWORD_CHARS} characters.")])
    confirm = PasswordField("Repeat the new password", validators=[
        DataRequired(), EqualTo("password", message="The two passwords differ.")])


class InviteAcceptForm(FlaskForm):
    """Accept an invitation with a new account: a name and a password (the reset policy)."""

    name = StringField("Your name", validators=[DataRequired(), Length(max=200)])
    password = PasswordField("Password", validators=[
        DataRequired(), Length(min=MIN_PASSWORD_CHARS, max=200,
                               message=f"At least {MIN_PASSWORD_CHARS} characters.")])
    confirm = PasswordField("Repeat the password", validators=[
        DataRequired(), EqualTo("password", message="The two passwords differ.")])


class InviteJoinForm(FlaskForm):
    """Accept an invitation with the signed-in account (a button: CSRF only)."""
