"""Employees: CRUD, consents, signed preference links, data export, erasure, CSV import and export."""
from __future__ import annotations

from flask import Response, request, stream_with_context, url_for
from flask.views import MethodView
from flask_smorest import abort

from services import context
from services.api.blueprint import Blueprint
from shared.domain import employees, import_jobs
from shared.models import ConsentSource, ImportMode
from shared.pagination import paginate
from shared.schemas.common import page_of
from shared.schemas.employees import (
    ConsentListSchema,
    ConsentSchema,
    EmployeeQuerySchema,
    EmployeeSchema,
    EmployeeUpdateSchema,
    ImportFileSchema,
    ImportJobSchema,
    ImportQuerySchema,
    PreferenceLinkSchema,
)
from workers.enqueue import enqueue_after_commit

URL_PREFIX = "/employees"
blp = Blueprint("employees", __name__, description="Employees, their consents and preferences, HRIS CSV import and export")


@blp.route("")
class EmployeeListView(MethodView):
    @blp.arguments(EmployeeQuerySchema, location="query")
    @blp.response(200, page_of(EmployeeSchema))
    def get(self, query):
        """List employees (search and filter by status, department, team, manager)"""
        stmt = employees.employees_query(query.get("q"), query.get("status"), query.get("department"), query.get("team"), query.get("manager_id"))
        return paginate(context.get_session(), stmt, query["page"], query["per_page"])

    @blp.arguments(EmployeeSchema)
    @blp.response(201, EmployeeSchema)
    def post(self, body):
        """Add one employee"""
        return employees.create_employee(context.get_session(), context.current_user(), body)


@blp.route("/<int:employee_id>")
class EmployeeItemView(MethodView):
    @blp.response(200, EmployeeSchema)
    def get(self, employee_id):
        """One employee"""
        return employees.get_employee(context.get_session(), employee_id)

    @blp.arguments(EmployeeUpdateSchema)
    @blp.response(200, EmployeeSchema)
    def patch(self, body, employee_id):
        """Change fields, preferences or consents; `status: left` offboards the employee"""
        return employees.update_employee(context.get_session(), context.current_user(), employee_id, body)

    @blp.response(204)
    def delete(self, employee_id):
        """Erase the employee (GDPR art. 17): every personal field and dependent row is deleted"""
        employees.erase_employee(context.get_session(), context.current_user(), employee_id)


@blp.route("/<int:employee_id>/consents")
class ConsentView(MethodView):
    @blp.response(200, ConsentListSchema)
    def get(self, employee_id):
        """Consent history: who gave or withdrew which consent, when and how"""
        return {"items": employees.consents_of(context.get_session(), employee_id)}

    @blp.arguments(ConsentSchema)
    @blp.response(201, ConsentSchema)
    def post(self, body, employee_id):
        """Record a consent given or withdrawn on the employee's behalf (source `admin`)"""
        session = context.get_session()
        employee = employees.get_employee(session, employee_id)
        missing = {k: ["Missing data for required field."] for k in ("kind", "granted") if k not in body}
        if missing:
            abort(422, message="The request has invalid fields; see errors.", errors={"json": missing})
        consent = employees.record_consent(session, employee, body["kind"], body["granted"], ConsentSource.ADMIN, context.current_user())
        if consent is None:
            return employees.consents_of(session, employee_id)[0]
        session.flush()
        return consent


@blp.route("/<int:employee_id>/preference-link")
class PreferenceLinkView(MethodView):
    @blp.response(200, PreferenceLinkSchema)
    def get(self, employee_id):
        """The employee's signed preference-centre link (no password needed to use it)"""
        employee = employees.get_employee(context.get_session(), employee_id)
        token = employees.preference_token(context.settings().secret_key, employee)
        return {"token": token, "url": f"{context.settings().public_url}/p/{token}"}


@blp.route("/<int:employee_id>/revoke-links")
class RevokeLinksView(MethodView):
    @blp.response(200, EmployeeSchema)
    def post(self, employee_id):
        """Invalidate every signed link sent to this employee so far"""
        return employees.revoke_links(context.get_session(), context.current_user(), employee_id)


@blp.route("/<int:employee_id>/export")
class EmployeeDataView(MethodView):
    @blp.response(200)
    def get(self, employee_id):
        """Everything stored about the employee, as JSON (subject access request)"""
        return employees.export_data(context.get_session(), employee_id)


def _csv_response(lines, filename: str) -> Response:  # noqa: ANN001
    response = Response(stream_with_context(lines), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@blp.route("/export.csv")
class EmployeeExportView(MethodView):
    @blp.arguments(EmployeeQuerySchema, location="query")
    @blp.response(200, content_type="text/csv")
    def get(self, query):
        """All (or the filtered) employees as CSV in the import columns; safe against formula injection"""
        org_id = context.current_user().org_id
        database = context.database()
        stmt = employees.employees_query(query.get("q"), query.get("status"), query.get("department"), query.get("team"), query.get("manager_id"))

        def generate():
            # The request's session is closed before the body streams: use our own.
            with database.session(org_id) as session:
                yield from employees.csv_lines(employees.EXPORT_COLUMNS, employees.export_rows(session, stmt))

        return _csv_response(generate(), "employees.csv")


@blp.route("/import")
class ImportView(MethodView):
    @blp.arguments(ImportQuerySchema, location="query")
    @blp.arguments(ImportFileSchema, location="files")
    @blp.response(201, ImportJobSchema, description="Processed at once (small file)")
    @blp.alt_response(202, schema=ImportJobSchema, description="Queued: poll the job (large file)")
    def post(self, query, _files):
        """Import employees from an HRIS CSV export (multipart `file`, or a `text/csv` body).

        Modes: `partial` (default: good rows applied, bad rows reported), `atomic`
        (any error: nothing applied) and `dry_run` (report only). Files of up to
        2,000 lines are processed in the request; larger ones are queued."""
        if request.mimetype == "text/csv":
            stream, filename = request.stream, "upload.csv"
        else:
            upload = request.files.get("file")
            if upload is None:
                abort(422, message="Send the CSV as multipart field `file` or as a text/csv body.", errors={"files": {"file": ["Missing file."]}})
            stream, filename = upload.stream, upload.filename or "upload.csv"
        mode = ImportMode.DRY_RUN if query["dry_run"] else query["mode"]
        session = context.get_session()
        job, lines = import_jobs.create_job(session, context.current_user(), stream, filename, mode, query["mark_missing_as_left"])
        if lines <= import_jobs.SYNC_MAX_LINES and not query["run_async"]:
            import_jobs.run_in_session(session, job)
            return import_jobs.job_report(job)
        from workers.tasks import employee_import as import_tasks

        session.flush()
        enqueue_after_commit(session, import_tasks.run_import.s(job.org_id, job.id))
        location = url_for("employees.ImportJobView", job_id=job.id)
        return import_jobs.job_report(job), 202, {"Location": location}


@blp.route("/import/<int:job_id>")
class ImportJobView(MethodView):
    @blp.response(200, ImportJobSchema)
    def get(self, job_id):
        """Status of an import job: rows done / total, errors so far, and the report when done"""
        return import_jobs.job_report(import_jobs.get_job(context.get_session(), job_id))

