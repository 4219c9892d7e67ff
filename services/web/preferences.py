"""The employee preference centre: a signed link from the digest, no password.

Employees see and change their digest day, hour and topics, pause digests, give or
withdraw consent, download their data and erase it, and enrol in programs."""
from __future__ import annotations

import json

from flask import Blueprint, Response, abort, flash, redirect, render_template, url_for

from services import context
from services.web.employee_forms import EraseForm, PreferencesForm, split_topics
from services.web.forms import EmptyForm
from shared.domain import accounts, employees, programs
from shared.errors import DomainError, NotFound
from shared.models import ConsentSource, EnrolmentStatus, ProgramStatus

bp = Blueprint("preferences", __name__, url_prefix="/p", template_folder="templates")
HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


def _open(token: str):
    """(session context, org id, employee id) of a genuine link, or 404."""
    link = employees.read_preference_token(context.settings().secret_key, token)
    if link is None:
        abort(404)
    return link


def _employee(session, link):  # noqa: ANN001
    try:
        return employees.employee_for_link(session, link[1], link[2])
    except NotFound:
        abort(404)


@bp.route("/<token>", methods=["GET", "POST"])
def centre(token: str):
    link = _open(token)
    with context.database().session(link[0]) as session:
        employee = _employee(session, link)
        form = PreferencesForm(obj=employee)
        if not form.is_submitted():
            form.digest_topics.data = ", ".join(employee.digest_topics or [])
        if form.validate_on_submit():
            changes = {
                "digest_weekday": form.digest_weekday.data,
                "digest_hour": form.digest_hour.data,
                "digest_topics": split_topics(form.digest_topics.data),
                "paused_until": form.paused_until.data,
                "digest_consent": form.digest_consent.data,
                "analytics_consent": form.analytics_consent.data,
            }
            try:
                employees.update_employee(session, None, employee.id, changes, source=ConsentSource.EMPLOYEE_LINK)
            except DomainError as error:
                session.rollback()
                flash(error.detail, "error")
            else:
                flash("Your preferences are saved.", "success")
                return redirect(url_for("preferences.centre", token=token))
        organisation = accounts.get_organisation(session, employee.org_id)
        open_programs = list(session.scalars(programs.programs_query(ProgramStatus.OPEN)))
        mine = {e.program_id: e.status for e in session.scalars(
            programs.select(programs.Enrolment).where(programs.Enrolment.employee_id == employee.id))}
        body = render_template("preferences/centre.html", form=form, employee=employee, organisation=organisation, token=token,
                               programs=open_programs, mine=mine, erase_form=EraseForm(), action_form=EmptyForm(),
                               EnrolmentStatus=EnrolmentStatus)
    return body, 400 if form.errors else 200, HEADERS


@bp.post("/<token>/export")
def export(token: str):
    link = _open(token)
    if not EmptyForm().validate_on_submit():
        abort(400)
    with context.database().session(link[0]) as session:
        employee = _employee(session, link)
        data = employees.export_data(session, employee.id)
    response = Response(json.dumps(data, indent=2, default=str), mimetype="application/json")
    response.headers["Content-Disposition"] = 'attachment; filename="my-wellbeing-data.json"'
    response.headers.update(HEADERS)
    return response


@bp.post("/<token>/erase")
def erase(token: str):
    link = _open(token)
    form = EraseForm()
    if not form.validate_on_submit():
        flash("Tick the box to confirm the erasure.", "error")
        return redirect(url_for("preferences.centre", token=token))
    with context.database().session(link[0]) as session:
        employee = _employee(session, link)
        employees.erase_employee(session, None, employee.id, via="employee_link")
    return render_template("preferences/erased.html"), 200, HEADERS


@bp.route("/<token>/programs/<int:program_id>/enrol", methods=["GET", "POST"])
def enrol(token: str, program_id: int):
    link = _open(token)
    form = EmptyForm()
    with context.database().session(link[0]) as session:
        employee = _employee(session, link)
        try:
            program = programs.get_program(session, program_id)
        except NotFound:
            abort(404)
        if form.validate_on_submit():
            try:
                enrolment = programs.enrol(session, None, program.id, employee.id, source="employee_link")
            except DomainError as error:
                session.rollback()
                flash(error.detail, "error")
            else:
                waiting = enrolment.status == EnrolmentStatus.WAITLISTED
                flash("The program is full: you are on the waitlist." if waiting else f"You are enrolled in {program.name}.", "success")
                return redirect(url_for("preferences.enrol", token=token, program_id=program.id))
        current = session.scalar(programs.select(programs.Enrolment).where(
            programs.Enrolment.program_id == program.id, programs.Enrolment.employee_id == employee.id))
        body = render_template("preferences/enrol.html", program=program, employee=employee, token=token, form=form,
                               current=current, EnrolmentStatus=EnrolmentStatus)
    return body, 200, HEADERS


@bp.post("/<token>/programs/<int:program_id>/withdraw")
def withdraw(token: str, program_id: int):
    link = _open(token)
    if not EmptyForm().validate_on_submit():
        abort(400)
    with context.database().session(link[0]) as session:
        employee = _employee(session, link)
        try:
            programs.get_program(session, program_id)
            programs.withdraw(session, None, program_id, employee.id, source="employee_link")
        except NotFound:
            abort(404)
    flash("You have left the program.", "success")
    return redirect(url_for("preferences.enrol", token=token, program_id=program_id))
