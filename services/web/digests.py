"""Console page for weekly digests: preview an employee's digest, start a run and watch
its counts update live (static JS polling a JSON route), see failed sends and retry
them, pause and resume."""
from __future__ import annotations

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import StringField
from wtforms.validators import Optional, Regexp

from services import context
from services.web.forms import EmptyForm
from services.web.session import console_roles
from services.web.views import bp
from shared.domain import digests
from shared.domain.digest_schedule import iso_week_of
from shared.errors import DomainError
from shared.models import Employee, EmployeeStatus, Role, SendState
from shared.pagination import paginate
from workers.enqueue import enqueue_after_commit

WEEK_PATTERN = r"^\d{4}-W\d{2}$"
PREVIEW_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


class RunForm(FlaskForm):
    week = StringField("ISO week", validators=[Optional(), Regexp(WEEK_PATTERN, message="Use the form 2026-W48.")])


def _enqueue(session, batches: list[list[int]]) -> None:  # noqa: ANN001
    from workers.tasks import digests as digest_tasks

    for batch in batches:
        enqueue_after_commit(session, digest_tasks.send_digest_batch.s(current_user.user.org_id, batch))


def _preview_args() -> tuple[int | None, str | None]:
    employee_id = request.args.get("employee_id", type=int)
    week = (request.args.get("week") or "").strip() or None
    return employee_id, week


@bp.get("/digests")
@console_roles(Role.HR_ADMIN)
def digests_home():
    session = context.get_session()
    config = digests.get_settings(session)
    runs = list(session.scalars(digests.runs_query().limit(10)))
    described = digests.describe_runs(session, runs)
    active = list(session.execute(select(Employee.id, Employee.first_name, Employee.last_name, Employee.email)
                                  .where(Employee.status == EmployeeStatus.ACTIVE).order_by(Employee.last_name, Employee.id).limit(500)))
    employee_id, week = _preview_args()
    preview = None
    if employee_id is not None:
        try:
            preview = digests.preview(session, context.settings(), employee_id, week)
        except DomainError as error:
            flash(error.detail, "error")
    failed = paginate(session, digests.sends_query(state=SendState.FAILED), 1, 20)
    return render_template("console/digests/home.html", config=config, runs=described, employees=active, preview=preview,
                           employee_id=employee_id, week=week or iso_week_of(digests.utcnow().date()),
                           run_form=RunForm(), action_form=EmptyForm(), failed=failed)


@bp.get("/digests/preview.html")
@console_roles(Role.HR_ADMIN)
def digests_preview_html():
    employee_id, week = _preview_args()
    if employee_id is None:
        abort(404)
    data = digests.preview(context.get_session(), context.settings(), employee_id, week)
    return data["html"], 200, {"Content-Security-Policy": PREVIEW_CSP, "Content-Type": "text/html; charset=utf-8"}


@bp.post("/digests/runs")
@console_roles(Role.HR_ADMIN)
def digests_start_run():
    form = RunForm()
    if not form.validate_on_submit():
        flash("; ".join(m for ms in form.errors.values() for m in ms) or "The form expired; try again.", "error")
        return redirect(url_for("console.digests_home"))
    session = context.get_session()
    try:
        run, batches = digests.start_run(session, current_user.user, form.week.data or None)
    except DomainError as error:
        flash(error.detail, "error")
        return redirect(url_for("console.digests_home"))
    _enqueue(session, batches)
    flash(f"Run started for {run.iso_week}: {run.created_count} digest{'' if run.created_count == 1 else 's'} queued.", "success")
    return redirect(url_for("console.digests_run", run_id=run.id))


@bp.get("/digests/runs/<int:run_id>")
@console_roles(Role.HR_ADMIN)
def digests_run(run_id: int):
    session = context.get_session()
    [described] = digests.describe_runs(session, [digests.get_run(session, run_id)])
    sends = paginate(session, digests.sends_query(run_id=run_id), max(request.args.get("page", 1, type=int), 1), 50)
    return render_template("console/digests/run.html", run=described, sends=sends, action_form=EmptyForm())


@bp.get("/digests/runs/<int:run_id>.json")
@console_roles(Role.HR_ADMIN)
def digests_run_status(run_id: int):
    session = context.get_session()
    [described] = digests.describe_runs(session, [digests.get_run(session, run_id)])
    described["created_at"] = described["created_at"].isoformat()
    return jsonify(described)


@bp.post("/digests/sends/<int:send_id>/retry")
@console_roles(Role.HR_ADMIN)
def digests_retry(send_id: int):
    if not EmptyForm().validate_on_submit():
        abort(400)
    session = context.get_session()
    try:
        send, batches = digests.retry_send(session, current_user.user, send_id)
    except DomainError as error:
        if error.status == 404:
            abort(404)
        flash(error.detail, "error")
        return redirect(request.referrer or url_for("console.digests_home"))
    _enqueue(session, batches)
    flash("The digest is queued again.", "success")
    return redirect(url_for("console.digests_run", run_id=send.run_id) if send.run_id else url_for("console.digests_home"))


@bp.post("/digests/pause")
@console_roles(Role.HR_ADMIN)
def digests_pause():
    if not EmptyForm().validate_on_submit():
        abort(400)
    pause = request.form.get("paused") == "1"
    session = context.get_session()
    _, batches = digests.set_paused(session, current_user.user, pause)
    _enqueue(session, batches)
    flash("Digests are paused." if pause else "Digests are resumed.", "success")
    return redirect(url_for("console.digests_home"))
