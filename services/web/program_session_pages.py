"""Console pages for program sessions: the sessions panel of a program's page (list, add,
delete) and a session's page, where HR admins mark enrolled employees as attended."""
from __future__ import annotations

import marshmallow
from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DateTimeLocalField, IntegerField, StringField, URLField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp, ValidationError

from services import context
from services.web.forms import EmptyForm
from services.web.session import console_roles
from services.web.views import bp
from shared.db import utcnow
from shared.domain import accounts, program_sessions, programs
from shared.domain.digest_schedule import zone
from shared.errors import Conflict, DomainError, InvalidInput
from shared.models import Employee, Enrolment, EnrolmentStatus, Program, Role
from shared.schemas.common import validate_timezone


class SessionForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=200)])
    starts_at = DateTimeLocalField("Starts at", format="%Y-%m-%dT%H:%M", validators=[DataRequired()])
    timezone = StringField("Timezone of that time", validators=[DataRequired(), Length(max=64)])
    duration_minutes = IntegerField("Duration (minutes)", validators=[DataRequired(), NumberRange(min=1, max=24 * 60)], default=60)
    location = StringField("Location (room or address)", validators=[Length(max=200)])
    join_url = URLField("Join link (online sessions)", validators=[Optional(), Length(max=500),
                                                                   Regexp(r"^https?://\S+$", message="Give an http:// or https:// address.")])
    capacity = IntegerField("Places (empty: no limit)", validators=[Optional(), NumberRange(min=1, max=1_000_000)])

    def validate_timezone(self, field) -> None:  # noqa: ANN001
        try:
            validate_timezone(field.data.strip())
        except marshmallow.ValidationError as error:
            raise ValidationError(" ".join(error.messages)) from None


def sessions_panel(session, program: Program) -> dict:  # noqa: ANN001
    """What the program page shows about its sessions (template context)."""
    rows = list(session.scalars(program_sessions.sessions_query(program.id)))
    form = SessionForm(prefix="session", formdata=None)
    form.timezone.data = accounts.get_organisation(session, program.org_id).default_timezone
    return {"sessions": rows, "attended": program_sessions.attendance_counts(session, [s.id for s in rows]), "session_form": form}


def _values(form: SessionForm) -> dict:
    return {
        "title": form.title.data.strip(),
        "starts_at": form.starts_at.data.replace(tzinfo=zone(form.timezone.data.strip())),
        "duration_minutes": form.duration_minutes.data,
        "location": (form.location.data or "").strip(),
        "join_url": (form.join_url.data or "").strip(),
        "capacity": form.capacity.data,
    }


@bp.post("/programs/<int:program_id>/sessions")
@console_roles(Role.HR_ADMIN)
def program_session_add(program_id: int):
    programs.get_program(context.get_session(), program_id)  # another organisation's program: 404 before the form
    form = SessionForm(prefix="session")
    if form.validate_on_submit():
        try:
            created = program_sessions.create_session(context.get_session(), current_user.user, program_id, _values(form))
        except DomainError as error:
            form.title.errors = [f"{name}: {' '.join(messages)}" for name, messages in error.errors.items()] or [error.detail]
        else:
            flash(f"Session {created.title} added.", "success")
            return redirect(url_for("console.program_detail", program_id=program_id))
    for field in form:
        for message in field.errors:
            flash(f"Session not added. {field.label.text}: {message}", "error")
    return redirect(url_for("console.program_detail", program_id=program_id))


@bp.post("/programs/<int:program_id>/sessions/<int:session_id>/delete")
@console_roles(Role.HR_ADMIN)
def program_session_delete(program_id: int, session_id: int):
    if not EmptyForm().validate_on_submit():
        abort(400)
    program_sessions.delete_session(context.get_session(), current_user.user, program_id, session_id)
    flash("Session deleted.", "success")
    return redirect(url_for("console.program_detail", program_id=program_id))


@bp.get("/programs/<int:program_id>/sessions/<int:session_id>")
@console_roles(Role.HR_ADMIN)
def program_session_detail(program_id: int, session_id: int):
    session = context.get_session()
    row = program_sessions.get_session(session, program_id, session_id)
    program = session.get(Program, program_id)
    enrolled = session.scalars(select(Employee).join(Enrolment, Enrolment.employee_id == Employee.id).where(
        Enrolment.program_id == program_id, Enrolment.status == EnrolmentStatus.ENROLLED).order_by(Employee.last_name, Employee.id)).all()
    attended = {a.employee_id for a in session.scalars(program_sessions.attendances_query(row.id))}
    organisation = accounts.get_organisation(session, program.org_id)
    local = row.starts_at.astimezone(zone(organisation.default_timezone))
    return render_template("console/programs/session.html", program=program, row=row, enrolled=enrolled, attended=attended,
                           local=local, organisation=organisation, action_form=EmptyForm(), now=utcnow())


@bp.post("/programs/<int:program_id>/sessions/<int:session_id>/attendance/<int:employee_id>")
@console_roles(Role.HR_ADMIN)
def program_session_mark(program_id: int, session_id: int, employee_id: int):
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        program_sessions.mark_attended(context.get_session(), current_user.user, program_id, session_id, employee_id)
    except (Conflict, InvalidInput) as error:  # NotFound (e.g. another organisation's ids) stays a 404
        context.get_session().rollback()
        flash(error.detail, "error")
    else:
        flash("Marked as attended.", "success")
    return redirect(url_for("console.program_session_detail", program_id=program_id, session_id=session_id))


@bp.post("/programs/<int:program_id>/sessions/<int:session_id>/attendance/<int:employee_id>/remove")
@console_roles(Role.HR_ADMIN)
def program_session_unmark(program_id: int, session_id: int, employee_id: int):
    if not EmptyForm().validate_on_submit():
        abort(400)
    program_sessions.unmark_attended(context.get_session(), current_user.user, program_id, session_id, employee_id)
    flash("Attendance removed.", "success")
    return redirect(url_for("console.program_session_detail", program_id=program_id, session_id=session_id))
