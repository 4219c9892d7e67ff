"""Forms of the employee and program console pages and of the employee preference centre."""
from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField, DateField, EmailField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional

WEEKDAYS = [(0, "Monday"), (1, "Tuesday"), (2, "Wednesday"), (3, "Thursday"), (4, "Friday"), (5, "Saturday"), (6, "Sunday")]
HOURS = [(h, f"{h:02d}:00") for h in range(24)]


class PreferencesForm(FlaskForm):
    digest_weekday = SelectField("Digest day", choices=WEEKDAYS, coerce=int)
    digest_hour = SelectField("Digest time (your local time)", choices=HOURS, coerce=int)
    digest_topics = StringField("Topics you are interested in (comma separated)", validators=[Length(max=500)])
    paused_until = DateField("Pause digests until", validators=[Optional()])
    digest_consent = BooleanField("Send me the weekly wellbeing digest")
    analytics_consent = BooleanField("Use my activity (anonymised) for wellbeing reports")


class EraseForm(FlaskForm):
    confirm = BooleanField("I understand my data will be deleted for good", validators=[DataRequired(message="Tick the box to confirm.")])


class EmployeeForm(FlaskForm):
    external_id = StringField("External id (HRIS)", validators=[DataRequired(), Length(max=64)])
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=254)])
    first_name = StringField("First name", validators=[DataRequired(), Length(max=100)])
    last_name = StringField("Last name", validators=[DataRequired(), Length(max=100)])
    department = StringField("Department", validators=[Length(max=100)])
    team = StringField("Team", validators=[Length(max=100)])
    manager_external_id = StringField("Manager's external id", validators=[Length(max=64)])
    timezone = StringField("Timezone", validators=[DataRequired(), Length(max=64)], default="UTC")


class ImportForm(FlaskForm):
    file = FileField("HRIS CSV file", validators=[FileRequired()])
    mode = SelectField("Mode", choices=[("partial", "Apply good rows, report bad ones"), ("atomic", "All or nothing"), ("dry_run", "Dry run: report only")])
    mark_missing_as_left = BooleanField("Full sync: mark employees missing from the file as left")


class ProgramForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    description = TextAreaField("Description", validators=[Length(max=20000)])
    topics = StringField("Topics (comma separated)", validators=[Length(max=500)])
    starts_on = DateField("Starts on", validators=[Optional()])
    ends_on = DateField("Ends on", validators=[Optional()])
    capacity = IntegerField("Capacity (empty: unlimited)", validators=[Optional(), NumberRange(min=1, max=1_000_000)])
    status = SelectField("Status", choices=[("draft", "Draft"), ("open", "Open"), ("closed", "Closed"), ("archived", "Archived")])


class EnrolForm(FlaskForm):
    external_ids = StringField("Employees' external ids (comma separated)", validators=[DataRequired(), Length(max=20000)])


def split_topics(value: str | None) -> list[str]:
    return [t.strip().lower() for t in (value or "").split(",") if t.strip()][:30]
