"""Employee-facing digest links: one-click unsubscribe (RFC 8058) and the weekly pulse.
The signed token is the credential, so these need no login and no CSRF token."""
from __future__ import annotations

from flask import Blueprint, render_template, request

from services import context
from shared.domain import accounts, activity, digests, employees
from shared.domain import digest_render
from shared.errors import NotFound

bp = Blueprint("digest_links", __name__, template_folder="templates")
# No scripts; the confirm form posts back to this site only.
LINK_CSP = "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
HEADERS = {"Content-Security-Policy": LINK_CSP, "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


def _invalid():
    return render_template("digest_links/invalid.html", organisation=None), 404, HEADERS


def _preferences_url(employee, preview: bool) -> str:  # noqa: ANN001
    if preview:
        return "#"
    return f"{context.settings().public_url}/p/{employees.preference_token(context.settings().secret_key, employee)}"


@bp.route("/u/<token>", methods=["GET", "POST"])
def unsubscribe(token: str):
    """GET: a confirm page. POST (the RFC 8058 one-click POST with body
    ``List-Unsubscribe=One-Click``, or the confirm form): unsubscribe at once."""
    link = digest_render.read_unsubscribe_token(context.settings().secret_key, token)
    if link is None:
        return _invalid()
    with context.database().session(link.org_id) as session:
        try:
            if request.method == "POST":
                employee = digests.unsubscribe(session, link)
            else:
                employee = employees.employee_for_link(session, link.employee_id, link.epoch)
        except NotFound:
            return _invalid()
        organisation = accounts.get_organisation(session, link.org_id)
        template = "digest_links/unsubscribed.html" if request.method == "POST" else "digest_links/unsubscribe.html"
        page = render_template(template, organisation=organisation, preview=link.preview, action=request.path,
                               preferences_url=_preferences_url(employee, link.preview))
    return page, 200, HEADERS


@bp.get("/pulse/<token>")
@bp.get("/pulse/<token>/<int:score>")
def pulse(token: str, score: int | None = None):
    """One click from the digest records this week's answer and thanks the employee."""
    link = digest_render.read_pulse_token(context.settings().secret_key, token, score)
    if link is None:
        return _invalid()
    with context.database().session(link.org_id) as session:
        try:
            employee, stored = digests.record_pulse(session, link)
        except NotFound:
            return _invalid()
        if not link.preview:
            activity.record_digest_click(session, employee, link.iso_week)
        organisation = accounts.get_organisation(session, link.org_id)
        page = render_template("digest_links/pulse.html", organisation=organisation, preview=link.preview, stored=stored,
                               score=link.score, preferences_url=_preferences_url(employee, link.preview))
    return page, 200, HEADERS
