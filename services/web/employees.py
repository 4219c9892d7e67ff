"""Console pages for employees (list, detail with consents and audit history, HRIS import
with a live progress bar) and programs (enrolments, waitlist, history)."""
from __future__ import annotations

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from services import context
from services.web.employee_forms import EnrolForm, EraseForm, ImportForm, ProgramForm, split_topics
from services.web.forms import EmptyForm
from services.web.program_session_pages import sessions_panel
from services.web.session import console_roles
from services.web.views import bp
from shared.domain import employees, import_jobs, programs
from shared.errors import DomainError
from shared.models import Employee, EmployeeStatus, Enrolment, EnrolmentStatus, ImportMode, ProgramStatus, Role
from shared.pagination import paginate
from workers.enqueue import enqueue_after_commit

PER_PAGE = 50


def _page_arg() -> int:
    return max(request.args.get("page", 1, type=int), 1)


@bp.get("/employees")
@console_roles(Role.HR_ADMIN)
def employees_list():
    session = context.get_session()
    status = request.args.get("status") or None
    status = EmployeeStatus(status) if status in {s.value for s in EmployeeStatus} else None
    stmt = employees.employees_query(request.args.get("q") or None, status, request.args.get("department") or None, request.args.get("team") or None)
    page = paginate(session, stmt, _page_arg(), PER_PAGE)
    return render_template("console/employees/list.html", page=page, departments=employees.departments(session),
                           statuses=[s.value for s in EmployeeStatus], args=request.args)


@bp.get("/employees/<int:employee_id>")
@console_roles(Role.HR_ADMIN)
def employee_detail(employee_id: int):
    session = context.get_session()
    employee = employees.get_employee(session, employee_id)
    manager = session.get(Employee, employee.manager_id) if employee.manager_id else None
    enrolments = session.execute(
        select(Enrolment, programs.Program).join(programs.Program, programs.Program.id == Enrolment.program_id)
        .where(Enrolment.employee_id == employee.id).order_by(Enrolment.id)
    ).all()
    link = f"{context.settings().public_url}/p/{employees.preference_token(context.settings().secret_key, employee)}"
    return render_template("console/employees/detail.html", employee=employee, manager=manager,
                           consents=employees.consents_of(session, employee.id), history=employees.audit_history(session, employee.id),
                           enrolments=enrolments, link=link, action_form=EmptyForm(), erase_form=EraseForm())


@bp.post("/employees/<int:employee_id>/status")
@console_roles(Role.HR_ADMIN)
def employee_status(employee_id: int):
    if not EmptyForm().validate_on_submit():
        abort(400)
    status = EmployeeStatus.LEFT if request.form.get("status") == "left" else EmployeeStatus.ACTIVE
    employees.update_employee(context.get_session(), current_user.user, employee_id, {"status": status})
    flash("Employee marked as left: no more mail." if status == EmployeeStatus.LEFT else "Employee reactivated.", "success")
    return redirect(url_for("console.employee_detail", employee_id=employee_id))


@bp.post("/employees/<int:employee_id>/erase")
@console_roles(Role.HR_ADMIN)
def employee_erase(employee_id: int):
    form = EraseForm()
    if not form.validate_on_submit():
        flash("Tick the box to confirm the erasure.", "error")
        return redirect(url_for("console.employee_detail", employee_id=employee_id))
    employees.erase_employee(context.get_session(), current_user.user, employee_id)
    flash("The employee's personal data has been erased.", "success")
    return redirect(url_for("console.employees_list"))


@bp.route("/employees/import", methods=["GET", "POST"])
@console_roles(Role.HR_ADMIN)
def employees_import():
    session = context.get_session()
    form = ImportForm()
    if form.validate_on_submit():
        upload = form.file.data
        job, _lines = import_jobs.create_job(session, current_user.user, upload.stream, upload.filename or "upload.csv",
                                             ImportMode(form.mode.data), form.mark_missing_as_left.data)
        from workers.tasks import employee_import as import_tasks

        enqueue_after_commit(session, import_tasks.run_import.s(job.org_id, job.id))
        return redirect(url_for("console.employees_import_job", job_id=job.id))
    jobs = list(session.scalars(import_jobs.jobs_query().limit(20)))
    return render_template("console/employees/import.html", form=form, jobs=jobs), 400 if form.errors else 200


def _job_or_404(job_id: int):
    return import_jobs.get_job(context.get_session(), job_id)


@bp.get("/employees/import/<int:job_id>")
@console_roles(Role.HR_ADMIN)
def employees_import_job(job_id: int):
    job = _job_or_404(job_id)
    return render_template("console/employees/import_job.html", job=job, report=import_jobs.job_report(job), terminal=job.status in import_jobs.TERMINAL)


@bp.get("/employees/import/<int:job_id>/status.json")
@console_roles(Role.HR_ADMIN)
def employees_import_status(job_id: int):
    report = import_jobs.job_report(_job_or_404(job_id))
    report.pop("errors")
    for key in ("created_at", "finished_at"):
        report[key] = report[key].isoformat() if report[key] else None
    report["terminal"] = report["status"] in ("done", "failed")
    return jsonify(report)


# ---- programs ---------------------------------------------------------------------------

def _program_values(form: ProgramForm) -> dict:
    return {
        "name": form.name.data.strip(),
        "description": form.description.data or "",
        "topics": split_topics(form.topics.data),
        "starts_on": form.starts_on.data,
        "ends_on": form.ends_on.data,
        "capacity": form.capacity.data,
        "status": ProgramStatus(form.status.data),
    }


def _form_errors(form, error: DomainError) -> None:  # noqa: ANN001
    for name, messages in error.errors.items():
        if hasattr(form, name):
            getattr(form, name).errors = list(messages)
        else:
            flash(" ".join(messages), "error")
    if not error.errors:
        flash(error.detail, "error")


@bp.route("/programs", methods=["GET", "POST"])
@console_roles(Role.HR_ADMIN)
def programs_list():
    session = context.get_session()
    form = ProgramForm()
    if form.validate_on_submit():
        try:
            program = programs.create_program(session, current_user.user, _program_values(form))
        except DomainError as error:
            _form_errors(form, error)
        else:
            flash(f"Program {program.name} created.", "success")
            return redirect(url_for("console.program_detail", program_id=program.id))
    page = paginate(session, programs.programs_query(), _page_arg(), PER_PAGE)
    counts = {p.id: programs.counts(session, p.id) for p in page.items}
    return render_template("console/programs/list.html", page=page, counts=counts, form=form), 400 if form.errors else 200


@bp.route("/programs/<int:program_id>", methods=["GET", "POST"])
@console_roles(Role.HR_ADMIN)
def program_detail(program_id: int):
    session = context.get_session()
    program = programs.get_program(session, program_id)
    form = ProgramForm(obj=program, prefix="program")
    if not form.is_submitted():
        form.topics.data = ", ".join(program.topics or [])
        form.status.data = program.status.value
    if form.validate_on_submit():
        try:
            programs.update_program(session, current_user.user, program.id, _program_values(form))
        except DomainError as error:
            _form_errors(form, error)
        else:
            flash("Program saved.", "success")
            return redirect(url_for("console.program_detail", program_id=program.id))
    rows = session.execute(
        select(Enrolment, Employee).join(Employee, Employee.id == Enrolment.employee_id)
        .where(Enrolment.program_id == program.id).order_by(Enrolment.waitlist_seq, Enrolment.id)
    ).all()
    enrolled = [r for r in rows if r[0].status == EnrolmentStatus.ENROLLED]
    waitlist = [r for r in rows if r[0].status == EnrolmentStatus.WAITLISTED]
    history = list(session.scalars(programs.events_query(program.id).limit(100)))
    names = {e.id: e.full_name for _, e in rows}
    return render_template("console/programs/detail.html", program=program, form=form, enrolled=enrolled, waitlist=waitlist,
                           history=history, names=names, enrol_form=EnrolForm(prefix="enrol"), action_form=EmptyForm(),
                           **sessions_panel(session, program)), 400 if form.errors else 200


@bp.post("/programs/<int:program_id>/enrol")
@console_roles(Role.HR_ADMIN)
def program_enrol(program_id: int):
    session = context.get_session()
    programs.get_program(session, program_id)  # another organisation's program: 404, even for a bad form
    form = EnrolForm(prefix="enrol")
    if not form.validate_on_submit():
        flash("Give at least one external id.", "error")
        return redirect(url_for("console.program_detail", program_id=program_id))
    wanted = [x.strip() for x in form.external_ids.data.replace("\n", ",").split(",") if x.strip()]
    found = dict(session.execute(select(Employee.external_id, Employee.id).where(Employee.external_id.in_(wanted))).all())
    missing = [x for x in wanted if x not in found]
    done = 0
    try:
        for ext in wanted:
            if ext in found:
                programs.enrol(session, current_user.user, program_id, found[ext])
                done += 1
    except DomainError as error:
        session.rollback()
        flash(error.detail, "error")
        return redirect(url_for("console.program_detail", program_id=program_id))
    flash(f"{done} employee(s) enrolled or waitlisted." + (f" Unknown external ids: {', '.join(missing)}." if missing else ""),
          "success" if not missing else "error")
    return redirect(url_for("console.program_detail", program_id=program_id))


@bp.post("/programs/<int:program_id>/withdraw/<int:employee_id>")
@console_roles(Role.HR_ADMIN)
def program_withdraw(program_id: int, employee_id: int):
    if not EmptyForm().validate_on_submit():
        abort(400)
    programs.withdraw(context.get_session(), current_user.user, program_id, employee_id)
    flash("Withdrawn; the waitlist moved up.", "success")
    return redirect(url_for("console.program_detail", program_id=program_id))
