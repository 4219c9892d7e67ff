"""Weekly digests for HR admins: settings, preview, test send, runs and their progress,
sends and their errors, retry, pause and resume, suppressed addresses."""
from __future__ import annotations

from flask.views import MethodView

from services import context
from services.api.blueprint import Blueprint
from shared.domain import digests
from shared.pagination import Page, paginate
from shared.schemas.common import PageQuerySchema, page_of
from shared.schemas.digests import (
    AcceptedSchema,
    DigestRunSchema,
    DigestSendSchema,
    DigestSettingsSchema,
    PreviewQuerySchema,
    PreviewSchema,
    RunQuerySchema,
    RunStartSchema,
    SendQuerySchema,
    SuppressionSchema,
    TestSendSchema,
)
from workers.enqueue import enqueue_after_commit
from workers.tasks import digests as digest_tasks

URL_PREFIX = "/digests"
blp = Blueprint("digests", __name__, description="Weekly digests: preview, runs, sends, pause and resume")


def _enqueue(session, batches: list[list[int]]) -> None:  # noqa: ANN001
    org_id = context.current_user().org_id
    for batch in batches:
        enqueue_after_commit(session, digest_tasks.send_digest_batch.s(org_id, batch))


@blp.route("/settings")
class SettingsView(MethodView):
    @blp.response(200, DigestSettingsSchema)
    def get(self):
        """The organisation's send window, quiet days, send rate and pause switch"""
        return digests.get_settings(context.get_session())

    @blp.arguments(DigestSettingsSchema)
    @blp.response(200, DigestSettingsSchema)
    def patch(self, body):
        """Change the send window, quiet days or send rate"""
        return digests.update_settings(context.get_session(), context.current_user(), body)


@blp.route("/pause")
class PauseView(MethodView):
    @blp.response(200, DigestSettingsSchema)
    def post(self):
        """Pause every digest: nothing more is handed to SMTP until resumed"""
        row, _ = digests.set_paused(context.get_session(), context.current_user(), True)
        return row


@blp.route("/resume")
class ResumeView(MethodView):
    @blp.response(200, DigestSettingsSchema)
    def post(self):
        """Resume digests: waiting sends go out; nobody gets a week's digest twice"""
        session = context.get_session()
        row, batches = digests.set_paused(session, context.current_user(), False)
        _enqueue(session, batches)
        return row


@blp.route("/preview")
class PreviewView(MethodView):
    @blp.arguments(PreviewQuerySchema, location="query")
    @blp.response(200, PreviewSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, query):
        """An employee's digest for a week as it would be sent now (HTML and text; links are inert)"""
        return digests.preview(context.get_session(), context.settings(), query["employee_id"], query.get("week"))


@blp.route("/test")
class TestSendView(MethodView):
    @blp.arguments(TestSendSchema)
    @blp.response(202, AcceptedSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, body):
        """Send a copy of an employee's digest to yourself"""
        session = context.get_session()
        user = context.current_user()
        # Rendered now so a bad employee id or week is answered here, not lost in a worker.
        digests.sample_message(session, context.settings(), user, body.get("employee_id"), body.get("week"))
        enqueue_after_commit(session, digest_tasks.send_test_digest.s(user.org_id, user.id, body.get("employee_id"), body.get("week")))
        return {"status": "queued", "to": user.email}


@blp.route("/runs")
class RunListView(MethodView):
    @blp.arguments(RunQuerySchema, location="query")
    @blp.response(200, page_of(DigestRunSchema))
    def get(self, query):
        """Runs, newest first, with their live counts"""
        session = context.get_session()
        page = paginate(session, digests.runs_query(query.get("week")), query["page"], query["per_page"])
        return Page(digests.describe_runs(session, page.items), page.page, page.per_page, page.total)

    @blp.arguments(RunStartSchema)
    @blp.response(201, DigestRunSchema)
    def post(self, body):
        """Start a run now: every eligible employee without this week's digest gets it (local send times are not waited for)"""
        session = context.get_session()
        run, batches = digests.start_run(session, context.current_user(), body.get("week"))
        _enqueue(session, batches)
        return digests.describe_runs(session, [run])[0]


@blp.route("/runs/<int:run_id>")
class RunItemView(MethodView):
    @blp.response(200, DigestRunSchema)
    def get(self, run_id):
        """One run and its counts (queued, sending, sent, failed, skipped)"""
        session = context.get_session()
        return digests.describe_runs(session, [digests.get_run(session, run_id)])[0]


@blp.route("/sends")
class SendListView(MethodView):
    @blp.arguments(SendQuerySchema, location="query")
    @blp.response(200, page_of(DigestSendSchema))
    def get(self, query):
        """Sends, filterable by run, state, employee and week"""
        stmt = digests.sends_query(query.get("run_id"), query.get("state"), query.get("employee_id"), query.get("week"))
        return paginate(context.get_session(), stmt, query["page"], query["per_page"])


@blp.route("/sends/<int:send_id>")
class SendItemView(MethodView):
    @blp.response(200, DigestSendSchema)
    def get(self, send_id):
        """One send: its state, attempts and the server's last answer"""
        return digests.get_send(context.get_session(), send_id)


@blp.route("/sends/<int:send_id>/retry")
class SendRetryView(MethodView):
    @blp.response(200, DigestSendSchema)
    def post(self, send_id):
        """Queue a failed or skipped send again (a sent one never goes twice)"""
        session = context.get_session()
        send, batches = digests.retry_send(session, context.current_user(), send_id)
        _enqueue(session, batches)
        return send


@blp.route("/suppressions")
class SuppressionListView(MethodView):
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, page_of(SuppressionSchema))
    def get(self, query):
        """Addresses suppressed after repeated hard failures (5xx)"""
        return paginate(context.get_session(), digests.suppressions_query(), query["page"], query["per_page"])


@blp.route("/suppressions/<int:suppression_id>")
class SuppressionItemView(MethodView):
    @blp.response(204)
    def delete(self, suppression_id):
        """Clear a suppression: the address gets digests again"""
        digests.clear_suppression(context.get_session(), context.current_user(), suppression_id)
