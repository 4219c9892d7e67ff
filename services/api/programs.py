"""Wellbeing programs, enrolments (single and bulk), withdrawals, the waitlist and its history,
program sessions and attendance."""
from __future__ import annotations

import functools

from flask.views import MethodView
from flask_smorest import abort

from services import context
from services.api.blueprint import Blueprint
from services.api.employees import _csv_response
from shared.db import utcnow
from shared.domain import employees, program_sessions, programs
from shared.pagination import paginate
from shared.schemas.common import PageQuerySchema, page_of
from shared.schemas.employees import (
    BulkWithdrawSchema,
    EnrolmentEventSchema,
    EnrolmentQuerySchema,
    EnrolmentRequestSchema,
    EnrolmentResultSchema,
    EnrolmentSchema,
    ProgramQuerySchema,
    ProgramSchema,
    ProgramUpdateSchema,
)
from shared.schemas.program_sessions import (
    AttendanceRequestSchema,
    AttendanceSchema,
    ProgramSessionQuerySchema,
    ProgramSessionSchema,
    ProgramSessionUpdateSchema,
)

URL_PREFIX = "/programs"
blp = Blueprint("programs", __name__, description="Wellbeing programs, enrolment, waitlist, sessions and attendance")


def _with_counts(session, program):  # noqa: ANN001
    program.counts = programs.counts(session, program.id)
    return program


def _with_positions(session, program_id: int, items):  # noqa: ANN001
    positions = programs.waitlist_positions(session, program_id)
    for enrolment in items:
        enrolment.waitlist_position = positions.get(enrolment.id)
        enrolment.employee = session.get(programs.Employee, enrolment.employee_id)
    return items


@blp.route("")
class ProgramListView(MethodView):
    @blp.arguments(ProgramQuerySchema, location="query")
    @blp.response(200, page_of(ProgramSchema))
    def get(self, query):
        """List programs"""
        session = context.get_session()
        page = paginate(session, programs.programs_query(query.get("status"), query.get("q")), query["page"], query["per_page"])
        for program in page.items:
            _with_counts(session, program)
        return page

    @blp.arguments(ProgramSchema)
    @blp.response(201, ProgramSchema)
    def post(self, body):
        """Create a program"""
        session = context.get_session()
        return _with_counts(session, programs.create_program(session, context.current_user(), body))


@blp.route("/<int:program_id>")
class ProgramItemView(MethodView):
    @blp.response(200, ProgramSchema)
    def get(self, program_id):
        """One program with its enrolment counts"""
        session = context.get_session()
        return _with_counts(session, programs.get_program(session, program_id))

    @blp.arguments(ProgramUpdateSchema)
    @blp.response(200, ProgramSchema)
    def patch(self, body, program_id):
        """Change a program; raising the capacity promotes from the waitlist"""
        session = context.get_session()
        return _with_counts(session, programs.update_program(session, context.current_user(), program_id, body))

    @blp.response(204)
    def delete(self, program_id):
        """Delete a program and its enrolments"""
        programs.delete_program(context.get_session(), context.current_user(), program_id)


@blp.route("/<int:program_id>/enrolments")
class EnrolmentListView(MethodView):
    @blp.arguments(EnrolmentQuerySchema, location="query")
    @blp.response(200, page_of(EnrolmentSchema))
    def get(self, query, program_id):
        """Enrolments of a program (filter by status; the waitlist in order)"""
        session = context.get_session()
        programs.get_program(session, program_id)
        page = paginate(session, programs.enrolments_query(program_id, query.get("status")), query["page"], query["per_page"])
        _with_positions(session, program_id, page.items)
        return page

    @blp.arguments(EnrolmentRequestSchema)
    @blp.response(201, EnrolmentResultSchema)
    def post(self, body, program_id):
        """Enrol one (`employee_id`) or many (`employee_ids`) employees; past capacity they join the waitlist"""
        session = context.get_session()
        programs.get_program(session, program_id)
        ids = body.get("employee_ids") or ([body["employee_id"]] if "employee_id" in body else [])
        if not ids:
            abort(422, message="The request has invalid fields; see errors.", errors={"json": {"employee_id": ["Give employee_id or employee_ids."]}})
        actor = context.current_user()
        items = [programs.enrol(session, actor, program_id, employee_id) for employee_id in dict.fromkeys(ids)]
        return {"items": _with_positions(session, program_id, items)}


@blp.route("/<int:program_id>/enrolments/withdraw")
class BulkWithdrawView(MethodView):
    @blp.arguments(BulkWithdrawSchema)
    @blp.response(200, EnrolmentResultSchema)
    def post(self, body, program_id):
        """Withdraw many employees at once; freed places go to the waitlist in order"""
        session = context.get_session()
        programs.get_program(session, program_id)
        if not body.get("employee_ids"):
            abort(422, message="The request has invalid fields; see errors.", errors={"json": {"employee_ids": ["Missing data for required field."]}})
        actor = context.current_user()
        items = [programs.withdraw(session, actor, program_id, employee_id) for employee_id in dict.fromkeys(body["employee_ids"])]
        return {"items": _with_positions(session, program_id, items)}


@blp.route("/<int:program_id>/enrolments/<int:enrolment_id>")
class EnrolmentItemView(MethodView):
    @blp.response(200, EnrolmentSchema)
    def get(self, program_id, enrolment_id):
        """One enrolment"""
        session = context.get_session()
        return _with_positions(session, program_id, [programs.get_enrolment(session, program_id, enrolment_id)])[0]

    @blp.response(200, EnrolmentSchema)
    def delete(self, program_id, enrolment_id):
        """Withdraw the employee (the enrolment stays in the history as `withdrawn`)"""
        session = context.get_session()
        enrolment = programs.get_enrolment(session, program_id, enrolment_id)
        enrolment = programs.withdraw(session, context.current_user(), program_id, enrolment.employee_id)
        return _with_positions(session, program_id, [enrolment])[0]


@blp.route("/<int:program_id>/enrolment-events")
class EnrolmentEventsView(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, page_of(EnrolmentEventSchema))
    def get(self, query, program_id):
        """Enrolment history: enrolled, waitlisted, promoted, withdrawn (newest first)"""
        session = context.get_session()
        programs.get_program(session, program_id)
        return paginate(session, programs.events_query(program_id), query["page"], query["per_page"])


@blp.route("/<int:program_id>/enrolments/export.csv")
class EnrolmentExportView(MethodView):
    @blp.response(200, content_type="text/csv")
    def get(self, program_id):
        """Enrolments and waitlist as CSV; safe against formula injection"""
        programs.get_program(context.get_session(), program_id)
        org_id = context.current_user().org_id
        database = context.database()

        def generate():
            with database.session(org_id) as session:
                yield from employees.csv_lines(programs.EXPORT_HEADER, programs.export_rows(session, program_id))

        return _csv_response(generate(), f"program-{program_id}-enrolments.csv")


# ---- sessions and attendance ---------------------------------------------------------------

def _path_ids_first(view):  # noqa: ANN001, ANN202
    """Resolve the program (and session) in the path before the body is validated, so
    another organisation's ids answer 404 whatever the body holds. Outermost decorator."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        session = context.get_session()
        if "session_id" in kwargs:
            program_sessions.get_session(session, kwargs["program_id"], kwargs["session_id"])
        else:
            programs.get_program(session, kwargs["program_id"])
        return view(*args, **kwargs)

    return wrapped


def _with_attended(session, items):  # noqa: ANN001
    counts = program_sessions.attendance_counts(session, [s.id for s in items])
    for item in items:
        item.attended_count = counts[item.id]
    return items


@blp.route("/<int:program_id>/sessions")
class ProgramSessionListView(MethodView):
    @blp.arguments(ProgramSessionQuerySchema, location="query")
    @blp.response(200, page_of(ProgramSessionSchema))
    def get(self, query, program_id):
        """Sessions of a program, earliest first (`upcoming=true`: only those not started yet)"""
        session = context.get_session()
        programs.get_program(session, program_id)
        stmt = program_sessions.sessions_query(program_id, utcnow() if query["upcoming"] else None)
        page = paginate(session, stmt, query["page"], query["per_page"])
        _with_attended(session, page.items)
        return page

    @_path_ids_first
    @blp.arguments(ProgramSessionSchema)
    @blp.response(201, ProgramSessionSchema)
    def post(self, body, program_id):
        """Add a session (shown in enrolled employees' digests in the 14 days before it starts)"""
        session = context.get_session()
        return _with_attended(session, [program_sessions.create_session(session, context.current_user(), program_id, body)])[0]


@blp.route("/<int:program_id>/sessions/<int:session_id>")
class ProgramSessionItemView(MethodView):
    @blp.response(200, ProgramSessionSchema)
    def get(self, program_id, session_id):
        """One session with its attendance count"""
        session = context.get_session()
        return _with_attended(session, [program_sessions.get_session(session, program_id, session_id)])[0]

    @_path_ids_first
    @blp.arguments(ProgramSessionUpdateSchema)
    @blp.response(200, ProgramSessionSchema)
    def patch(self, body, program_id, session_id):
        """Change a session"""
        session = context.get_session()
        row = program_sessions.update_session(session, context.current_user(), program_id, session_id, body)
        return _with_attended(session, [row])[0]

    @blp.response(204)
    def delete(self, program_id, session_id):
        """Delete a session and its attendance records"""
        program_sessions.delete_session(context.get_session(), context.current_user(), program_id, session_id)


@blp.route("/<int:program_id>/sessions/<int:session_id>/attendance")
class AttendanceListView(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, page_of(AttendanceSchema))
    def get(self, query, program_id, session_id):
        """Employees marked as attended"""
        session = context.get_session()
        program_sessions.get_session(session, program_id, session_id)
        page = paginate(session, program_sessions.attendances_query(session_id), query["page"], query["per_page"])
        for item in page.items:
            item.employee = session.get(programs.Employee, item.employee_id)
        return page

    @_path_ids_first
    @blp.arguments(AttendanceRequestSchema)
    @blp.response(201, AttendanceSchema)
    def post(self, body, program_id, session_id):
        """Mark an enrolled employee as attended (recorded as activity only with their analytics consent)"""
        session = context.get_session()
        attendance, _ = program_sessions.mark_attended(session, context.current_user(), program_id, session_id, body["employee_id"])
        attendance.employee = session.get(programs.Employee, attendance.employee_id)
        return attendance


@blp.route("/<int:program_id>/sessions/<int:session_id>/attendance/<int:employee_id>")
class AttendanceItemView(MethodView):
    @blp.response(204)
    def delete(self, program_id, session_id, employee_id):
        """Undo an attendance mark (and the activity event it recorded)"""
        program_sessions.unmark_attended(context.get_session(), context.current_user(), program_id, session_id, employee_id)
