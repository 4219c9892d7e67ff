"""Activity ingestion (HR admins) and anonymised reports (HR admins: the organisation;
managers: their own reporting line). Every report cell goes through the anonymity engine."""
from __future__ import annotations

from flask import Response, stream_with_context
from flask.views import MethodView
from marshmallow import ValidationError

from services import context
from services.api.blueprint import Blueprint
from services.auth import allow_roles
from shared.domain import activity, reports
from shared.domain.employees import csv_lines
from shared.models import Role
from shared.schemas.reports import (
    ActivityBatchSchema,
    ActivityItemSchema,
    BuildSchema,
    IngestResultSchema,
    ReportQuerySchema,
    ReportSchema,
    ReportSettingsSchema,
)
from workers.enqueue import enqueue_after_commit
from workers.tasks import reports as report_tasks

URL_PREFIX = ""
blp = Blueprint("reports", __name__, description="Activity events and anonymised reports")
_item = ActivityItemSchema()


@blp.route("/activity")
class ActivityView(MethodView):
    @blp.arguments(ActivityBatchSchema)
    @blp.response(200, IngestResultSchema)
    def post(self, body):
        """Record up to 1,000 activity events; idempotent by `event_id`. Events of employees
        without analytics consent are ignored; invalid items are reported by index."""
        items, errors = [], []
        for index, raw in enumerate(body["events"]):
            try:
                items.append((index, _item.load(raw if isinstance(raw, dict) else {"": raw})))
            except ValidationError as error:
                event_id = raw.get("event_id") if isinstance(raw, dict) and isinstance(raw.get("event_id"), str) else None
                errors.append({"index": index, "event_id": event_id,
                               "errors": {k: v if isinstance(v, list) else [str(v)] for k, v in error.messages.items()}})
        result = activity.ingest(context.get_session(), [item for _, item in items])
        positions = [index for index, _ in items]
        for error in result.errors:
            error["index"] = positions[error["index"]]
        errors.extend(result.errors)
        errors.sort(key=lambda e: e["index"])
        return {"accepted": result.accepted, "duplicate": result.duplicate,
                "ignored_no_consent": result.ignored_no_consent, "errors": errors}


def _report(query: dict) -> reports.Report:
    session = context.get_session()
    viewer = reports.viewer_for(session, context.current_user())
    return reports.report(session, viewer, week=query["period"], window=query["window"],
                          measure=query["measure"], group=query["group"])


@blp.route("/reports")
class ReportView(MethodView):
    @allow_roles(Role.HR_ADMIN, Role.MANAGER)
    @blp.arguments(ReportQuerySchema, location="query")
    @blp.response(200, ReportSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, query):
        """One measure for one period: every cell says whether it is suppressed and why"""
        return _report(query)


@blp.route("/reports/export.csv")
class ReportExportView(MethodView):
    @allow_roles(Role.HR_ADMIN, Role.MANAGER)
    @blp.arguments(ReportQuerySchema, location="query")
    @blp.response(200, content_type="text/csv")
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, query):
        """The same report as CSV (cells starting with = + - @ are defused)"""
        rep = _report(query)
        response = Response(stream_with_context(csv_lines(reports.CSV_HEADER, reports.report_csv_rows(rep))), mimetype="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="report-{rep.measure}-{rep.period.replace(":", "-")}.csv"'
        return response


@blp.route("/reports/settings")
class ReportSettingsView(MethodView):
    @blp.response(200, ReportSettingsSchema)
    def get(self):
        """Retention of raw events and differential privacy settings"""
        return activity.report_settings(context.get_session())

    @blp.arguments(ReportSettingsSchema)
    @blp.response(200, ReportSettingsSchema)
    def patch(self, body):
        """Change retention or differential privacy"""
        row = activity.report_settings(context.get_session())
        for key, value in body.items():
            setattr(row, key, value)
        return row


@blp.route("/reports/build")
class ReportBuildView(MethodView):
    @blp.arguments(BuildSchema)
    @blp.response(202, BuildSchema)
    def post(self, body):
        """Rebuild report cells now (default: the weeks with new events) on a worker"""
        session = context.get_session()
        enqueue_after_commit(session, report_tasks.build_reports.s(context.current_user().org_id, body.get("weeks")))
        return {"weeks": body.get("weeks")}
