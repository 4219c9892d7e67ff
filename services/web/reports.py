"""Console dashboard of anonymised reports (HR admins: the organisation; managers: their
reporting line). Charts are SVG rendered on the server from released cells only; every
chart has a data table beside it and suppressed cells say why."""
from __future__ import annotations

from flask import abort, render_template, request
from flask_login import current_user

from services import context
from services.web.session import console_roles
from services.web.views import bp
from shared.domain import reports
from shared.domain.digest_schedule import ISO_WEEK_RE, shift_week
from shared.errors import DomainError
from shared.models import ReportCell, Role
from sqlalchemy import func, select

TREND_WEEKS = 8
HEAT_MEASURES = (
    ("participation", "participation_rate", "Participation rate"),
    ("digest", "click_through_rate", "Digest click-through"),
    ("pulse", "pulse_response_rate", "Pulse response rate"),
    ("pulse", "pulse_mean", "Pulse mean (1-5)"),
)
CHART_W, CHART_H, PAD = 560, 220, 40


def _fmt(measure: str, value: float | None) -> str:
    if value is None:
        return "-"
    if measure.endswith("_rate"):
        return f"{value * 100:.0f}%"
    return f"{value:.2f}" if isinstance(value, float) and not value.is_integer() else f"{value:.0f}"


def _chart(points: list[dict], top: float, measure: str) -> dict:
    """Coordinates for a line chart; suppressed weeks are gaps marked with a hatched bar."""
    n = max(len(points), 1)
    step = (CHART_W - 2 * PAD) / max(n - 1, 1)
    segments, current, marks = [], [], []
    for i, p in enumerate(points):
        x = PAD + i * step
        if p["value"] is None:
            if current:
                segments.append(current)
            current = []
            marks.append({"x": x, "y": PAD, "label": p["week"], "suppressed": p["suppressed"], "text": p["reason"] or "no data"})
            continue
        y = CHART_H - PAD - (p["value"] / top) * (CHART_H - 2 * PAD) if top else CHART_H - PAD
        current.append(f"{x:.1f},{y:.1f}")
        marks.append({"x": x, "y": y, "label": p["week"], "suppressed": False, "text": _fmt(measure, p["value"])})
    if current:
        segments.append(current)
    return {"w": CHART_W, "h": CHART_H, "pad": PAD, "segments": [" ".join(s) for s in segments], "marks": marks,
            "top_label": _fmt(measure, top), "base": CHART_H - PAD}


def _top_group(viewer: reports.Viewer, session) -> str | None:  # noqa: ANN001
    if viewer.line is None:
        return "org"
    lines = reports._label_lines(session, [viewer.line])
    return f"line:{lines[viewer.line][0]}" if viewer.line in lines else None


def _trend(session, viewer, top_group, week, measure, value_key):  # noqa: ANN001
    points = []
    for i in range(TREND_WEEKS - 1, -1, -1):
        w = shift_week(week, -i)
        try:
            rep = reports.report(session, viewer, week=w, measure=measure, group=top_group)
        except DomainError:
            points.append({"week": w, "value": None, "reason": None, "suppressed": False})
            continue
        cell = next((c for c in rep.cells if c["group"] == top_group and c["bucket"] is None), None)
        if cell is None:
            points.append({"week": w, "value": None, "reason": None, "suppressed": False})
        elif cell["suppressed"]:
            points.append({"week": w, "value": None, "reason": cell["reason"], "suppressed": True})
        else:
            points.append({"week": w, "value": (cell["values"] or {}).get(value_key), "reason": None, "suppressed": False})
    return points


def _level(measure: str, value: float | None) -> int:
    if value is None:
        return 0
    scale = value / 5 if measure == "pulse_mean" else value
    return max(1, min(4, int(scale * 4) + 1))


@bp.get("/reports")
@console_roles(Role.HR_ADMIN, Role.MANAGER)
def reports_dashboard():
    session = context.get_session()
    try:
        viewer = reports.viewer_for(session, current_user.user)
    except DomainError as error:  # a manager with no employee record: nothing to show, not an error page
        return render_template("console/reports/dashboard.html", error=error.detail, week=None)
    week = (request.args.get("week") or "").strip()
    if week and not ISO_WEEK_RE.match(week):
        abort(400)
    window = request.args.get("window", 1, type=int)
    if window not in reports.WINDOWS:
        abort(400)
    week = week or session.scalar(select(func.max(ReportCell.iso_week)).where(ReportCell.window == 1))
    if week is None:
        return render_template("console/reports/dashboard.html", error=None, week=None)
    top_group = _top_group(viewer, session)
    group = (request.args.get("group") or "").strip()
    if group:
        try:  # the same scoping as the API: a manager asking for another group gets 403 or 404
            reports.report(session, viewer, week=week, window=window, measure="participation", group=group)
        except DomainError as error:
            return render_template("console/reports/dashboard.html", error=error.detail, week=week), error.status
        top_group = group
    participation = _trend(session, viewer, top_group, week, "participation", "participation_rate") if top_group else []
    pulse = _trend(session, viewer, top_group, week, "pulse", "pulse_mean") if top_group else []
    heat_kind = "team" if viewer.line is None else "line"
    rows: dict[str, dict] = {}
    k = None
    dp = None
    for measure, key, label in HEAT_MEASURES:
        try:
            rep = reports.report(session, viewer, week=week, window=window, measure=measure,
                                 group=heat_kind if viewer.line is None else None)
        except DomainError as error:
            return render_template("console/reports/dashboard.html", error=error.detail, week=week), error.status
        k, dp = rep.k, rep.dp
        for cell in rep.cells:
            if cell["bucket"] is not None or cell["group_kind"] != heat_kind:
                continue
            row = rows.setdefault(cell["group"], {"label": cell["label"], "cells": {}})
            value = None if cell["suppressed"] else (cell["values"] or {}).get(key)
            row["cells"][key] = {"suppressed": cell["suppressed"], "reason": cell["reason"], "text": _fmt(key, value),
                                 "level": _level(key, value)}
    programs = reports.report(session, viewer, week=week, window=window, measure="programs", group=top_group) if top_group else None
    return render_template(
        "console/reports/dashboard.html", error=None, week=week, window=window, k=k, dp=dp,
        is_hr=viewer.line is None, heat_measures=HEAT_MEASURES, heat_rows=sorted(rows.values(), key=lambda r: r["label"]),
        participation=participation, participation_chart=_chart(participation, 1.0, "participation_rate"),
        pulse=pulse, pulse_chart=_chart(pulse, 5.0, "pulse_mean"), programs=programs, fmt=_fmt,
        prev_week=shift_week(week, -1), next_week=shift_week(week, 1),
    )
