from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, IntegerField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Email, Length, NumberRange, Regexp

from shared.models import Role
from shared.security import MIN_PASSWORD_LENGTH


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class InviteForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=254)])
    full_name = StringField("Full name", validators=[Length(max=200)])
    role = SelectField("Role", choices=[(Role.HR_ADMIN.value, "HR admin"), (Role.MANAGER.value, "Manager")])


class SetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=1024)])


class OrganisationForm(FlaskForm):
    name = StringField("Organisation name", validators=[DataRequired(), Length(max=200)])
    anonymity_k = IntegerField(
        "Smallest group shown in reports (k)", validators=[DataRequired(), NumberRange(min=3, max=100)]
    )
    brand_colour = StringField("Brand colour", validators=[DataRequired(), Regexp(r"^#[0-9a-fA-F]{6}$", message="Use a colour like #2f6f4f.")])
    default_timezone = StringField("Default timezone", validators=[DataRequired(), Length(max=64)])


class EmptyForm(FlaskForm):
    """A form with only the CSRF token, for buttons that change state."""
