"""The employee privacy page: what activity is recorded, the k in force and how to
withdraw, reached from the preference centre with the same signed link."""
from __future__ import annotations

from flask import Blueprint, abort, make_response, render_template

from services import context
from shared.domain import accounts, activity, employees
from shared.errors import NotFound

bp = Blueprint("privacy", __name__, url_prefix="/p", template_folder="templates")
HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


@bp.get("/<token>/privacy")
def page(token: str):
    link = employees.read_preference_token(context.settings().secret_key, token)
    if link is None:
        abort(404)
    with context.database().session(link[0]) as session:
        try:
            employee = employees.employee_for_link(session, link[1], link[2])
        except NotFound:
            abort(404)
        org = accounts.get_organisation(session, link[0])
        retention = activity.report_settings(session).activity_retention_months
        html = render_template("privacy/page.html", token=token, org=org, employee=employee, retention=retention)
    response = make_response(html)
    response.headers.update(HEADERS)
    return response
