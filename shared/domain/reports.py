"""Anonymised reports: aggregation of activity events into report cells (SQL GROUP BY in
the database, incremental by dirty week) and their release to viewers through the
anonymity engine (``shared.domain.anonymity`` - the only place suppression is decided).

Groups: the organisation, each department, each team (within its department) and each
manager's whole reporting line. Periods: an ISO week (window 1) and the 4 and 12 weeks
ending with it. A cell stores measures plus, in ``report_cell_members``, the
pseudonyms of the people who feed it (never returned by anything)."""
from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone

from sqlalchemy import String, and_, case, cast, delete, func, insert, literal, literal_column, or_, select, text, union_all
from sqlalchemy.orm import Session

from shared.db import utcnow
from shared.domain import activity, anonymity as anon
from shared.domain.digest_schedule import iso_week_of, shift_week, week_start
from shared.errors import Forbidden, InvalidInput, NotFound
from shared.models import (
    ActivityEvent,
    ActivityLine,
    Employee,
    EmployeeStatus,
    Organisation,
    ReleaseLog,
    ReportCell,
    ReportCellMember,
    ReportDirtyWeek,
    Role,
    User,
)

WINDOWS = (1, 4, 12)
GROUP_KINDS = ("org", "department", "team", "line")
# measure -> (member set the engine protects, values shown)
MEASURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "participation": ("all", ("headcount", "participants", "participation_rate")),
    "digest": ("all", ("delivered", "clicked", "click_through_rate")),
    "pulse": ("pulse", ("respondents", "pulse_response_rate", "pulse_mean")),
    "pulse_distribution": ("pulse", ("respondents",)),
    "programs": ("all", ("enrolments", "attendances", "completions")),
    "topic_interest": ("all", ("readers",)),
}
BUCKETS = {"pulse_distribution": "score:", "topic_interest": "topic:"}
LOG_WEEKS = 13  # the release log consulted covers this many weeks of releases

E = ActivityEvent.__table__
L = ActivityLine.__table__
C = ReportCell.__table__
M = ReportCellMember.__table__
EMP = Employee.__table__


# ---- aggregation ----------------------------------------------------------------------------
# The statements below run on Core tables, outside the ORM tenant guard (which cannot scope an
# INSERT ... SELECT), so each one names its organisation explicitly.

def _weeks(window: int, end_week: str) -> list[str]:
    return [shift_week(end_week, -i) for i in range(window)]


SLASH = literal_column("'/'", String)


def _grouping(kind: str):
    """(FROM clause, key expression, parent expression, extra condition, GROUP BY columns) per group kind."""
    if kind == "org":
        return E, literal_column("''", String), literal_column("NULL", String), None, ()
    if kind == "department":
        return E, E.c.department, literal_column("''", String), None, (E.c.department,)
    if kind == "team":
        return E, E.c.department + SLASH + E.c.team, E.c.department, E.c.team != "", (E.c.department, E.c.team)
    return E.join(L, L.c.event_pk == E.c.id), L.c.line, func.max(L.c.parent_line), None, (L.c.line,)


def _is(kind: str):
    return E.c.kind == kind


def _distinct_when(cond):
    return func.count(func.distinct(case((cond, E.c.pseudonym))))


def _headcounts(session: Session, org_id: int, end_week: str) -> dict[tuple[str, str], int]:
    """Active employees (joined by the end of the week, not left before it) per group."""
    start = datetime.combine(week_start(end_week), time(), tzinfo=timezone.utc)
    end = start + timedelta(days=7)
    active = and_(EMP.c.org_id == org_id, EMP.c.created_at < end,
                  or_(EMP.c.status == EmployeeStatus.ACTIVE.value, EMP.c.left_at >= start))
    out: dict[tuple[str, str], int] = {}
    out[("org", "")] = session.execute(select(func.count()).select_from(EMP).where(active)).scalar() or 0
    for dept, n in session.execute(select(EMP.c.department, func.count()).where(active).group_by(EMP.c.department)):
        out[("department", dept)] = n
    for key, n in session.execute(select(EMP.c.department + "/" + EMP.c.team, func.count())
                                  .where(active, EMP.c.team != "").group_by(EMP.c.department, EMP.c.team)):
        out[("team", key)] = n
    # every (manager, report) pair down the tree, by recursive CTE
    pairs = select(EMP.c.manager_id.label("manager"), EMP.c.id.label("member")).where(active, EMP.c.manager_id.is_not(None)).cte("line", recursive=True)
    below = EMP.alias("below")
    pairs = pairs.union(
        select(pairs.c.manager, below.c.id).join(below, below.c.manager_id == pairs.c.member)
        .where(below.c.org_id == org_id, below.c.created_at < end,
               or_(below.c.status == EmployeeStatus.ACTIVE.value, below.c.left_at >= start))
    )
    for manager, n in session.execute(select(pairs.c.manager, func.count(func.distinct(pairs.c.member))).group_by(pairs.c.manager)):
        out[("line", activity.pseudonym(session, manager))] = n
    return out


def build_period(session: Session, window: int, end_week: str) -> int:
    """(Re)build every cell of one period; returns the number of cells."""
    org_id = activity._org_id(session)
    weeks = _weeks(window, end_week)
    this = and_(C.c.org_id == org_id, C.c.window == window, C.c.iso_week == end_week)
    session.execute(delete(M).where(M.c.cell_id.in_(select(C.c.id).where(this))))
    session.execute(delete(C).where(this))
    headcount = _headcounts(session, org_id, end_week)
    now = utcnow()
    cells = 0
    for kind in GROUP_KINDS:
        source, key, parent, extra, group_cols = _grouping(kind)
        where = [E.c.org_id == org_id, E.c.iso_week.in_(weeks)]
        if extra is not None:
            where.append(extra)
        if kind == "line":  # lines carry org and week too, so their index narrows the join
            where += [L.c.org_id == org_id, L.c.iso_week.in_(weeks)]
        pulse = _is("pulse_answered")
        stmt = (
            select(
                key.label("key"), parent.label("parent"),
                func.count(func.distinct(E.c.pseudonym)),
                _distinct_when(_is("digest_delivered")), _distinct_when(_is("digest_clicked")),
                _distinct_when(pulse),
                func.coalesce(func.sum(case((pulse, E.c.score), else_=0)), 0),
                func.coalesce(func.sum(case((pulse, 1), else_=0)), 0),
                _distinct_when(_is("article_read")), _distinct_when(_is("program_enrolled")),
                func.coalesce(func.sum(case((_is("session_attended"), 1), else_=0)), 0),
                _distinct_when(_is("program_completed")),
            )
            .select_from(source).where(*where)
        )
        if group_cols:
            stmt = stmt.group_by(*group_cols)
        rows = [
            {
                "org_id": org_id, "window": window, "iso_week": end_week, "group_kind": kind, "group_key": r[0],
                "parent_key": None if kind == "org" else r[1], "headcount": headcount.get((kind, r[0]), 0),
                "participants": r[2], "delivered": r[3], "clicked": r[4], "respondents": r[5],
                "pulse_sum": int(r[6]), "pulse_answers": int(r[7]), "readers": r[8], "enrolments": r[9],
                "attendances": int(r[10]), "completions": r[11], "built_at": now,
            }
            for r in session.execute(stmt)
            if r[2]
        ]
        if not rows:
            continue
        session.execute(insert(C), rows)
        cells += len(rows)
        if window > 1:
            continue  # a window's member sets are the union of its weeks' sets (see _load)
        # member sets, straight from the events into report_cell_members: the distinct
        # (group, set, pseudonym) tuples once (materialised), then matched to the new cells
        sets = [
            (literal_column("'all'", String), None),
            (literal_column("'pulse'", String), pulse),
            (literal_column("'score:'", String) + cast(E.c.score, String), pulse),
            (literal_column("'topic:'", String) + E.c.topic, and_(_is("article_read"), E.c.topic.is_not(None))),
        ]
        parts = []
        for name, cond in sets:
            conditions = [*where] + ([cond] if cond is not None else [])
            parts.append(
                select(key.label("key"), name.label("member_set"), E.c.pseudonym.label("pseudonym"))
                .select_from(source).where(*conditions).distinct()
            )
        tuples = union_all(*parts).cte(f"member_tuples_{kind}").prefix_with("MATERIALIZED")
        session.execute(insert(M).from_select(
            ["org_id", "cell_id", "member_set", "pseudonym"],
            select(literal(org_id), C.c.id, tuples.c.member_set, tuples.c.pseudonym)
            .select_from(tuples.join(C, C.c.group_key == tuples.c.key))
            .where(C.c.org_id == org_id, C.c.window == window, C.c.iso_week == end_week, C.c.group_kind == kind),
        ))
    return cells


@dataclass
class BuildResult:
    weeks: list[str]
    periods: int
    cells: int


def build(session: Session, weeks: Iterable[str] | None = None) -> BuildResult:
    """Rebuild the periods touched by ``weeks`` (default: the dirty weeks) - each week
    itself and the 4- and 12-week windows that contain it - up to the latest week with events."""
    dirty_rows = session.scalars(select(ReportDirtyWeek)).all()
    target = sorted(set(weeks) if weeks is not None else {d.iso_week for d in dirty_rows})
    if not target:
        return BuildResult([], 0, 0)
    latest = max(session.scalar(select(func.max(ActivityEvent.iso_week))) or target[-1], target[-1])
    if session.get_bind().dialect.name == "postgresql":
        # New weeks were just ingested: without fresh statistics the planner believes they are
        # empty and picks nested loops (a 10x slower incremental build in bench/reports.py).
        session.execute(text("ANALYZE activity_events"))
        session.execute(text("ANALYZE activity_lines"))
    periods: set[tuple[int, str]] = set()
    for week in target:
        for window in WINDOWS:
            for i in range(window):
                end = shift_week(week, i)
                if end > latest:
                    break
                periods.add((window, end))
    cells = 0
    for window, end in sorted(periods, key=lambda p: (p[1], p[0])):
        cells += build_period(session, window, end)
    for row in dirty_rows:
        if row.iso_week in target:
            session.delete(row)
    activity.report_settings(session).last_built_at = utcnow()
    session.flush()
    return BuildResult(target, len(periods), cells)


# ---- release ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Viewer:
    user: User
    line: str | None  # the manager's own reporting line (pseudonym), for managers


def viewer_for(session: Session, user: User) -> Viewer:
    if user.role == Role.HR_ADMIN:
        return Viewer(user, None)
    employee = session.scalar(select(Employee).where(Employee.email == user.email.lower()))
    if employee is None:
        raise Forbidden("Your console account is not linked to an employee who manages a team.")
    return Viewer(user, activity.pseudonym(session, employee.id))


def _label_lines(session: Session, keys: Iterable[str]) -> dict[str, tuple[int, str]]:
    """Manager pseudonym -> (employee id, "Reporting line of <name>") for current managers."""
    wanted = set(keys)
    out = {}
    managers = session.scalars(select(Employee).where(Employee.id.in_(select(Employee.manager_id).where(Employee.manager_id.is_not(None)))))
    for m in managers:
        p = activity.pseudonym(session, m.id)
        if p in wanted:
            out[p] = (m.id, f"Reporting line of {m.full_name}")
    return out


def group_id(kind: str, key: str, lines: dict[str, tuple[int, str]]) -> str:
    if kind == "org":
        return "org"
    if kind == "line":
        return f"line:{lines[key][0]}" if key in lines else f"line:former-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    return f"{kind}:{key}"


def _label(kind: str, key: str, lines) -> str:  # noqa: ANN001
    if kind == "org":
        return "Whole organisation"
    if kind == "department":
        return key or "(no department)"
    if kind == "team":
        return key
    return lines[key][1] if key in lines else "Reporting line of a former manager"


def values_of(cell: ReportCell, measure: str) -> dict[str, float | None]:
    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    all_values = {
        "headcount": cell.headcount,
        "participants": cell.participants,
        "participation_rate": ratio(cell.participants, cell.headcount),
        "delivered": cell.delivered,
        "clicked": cell.clicked,
        "click_through_rate": ratio(cell.clicked, cell.delivered),
        "respondents": cell.respondents,
        "pulse_response_rate": ratio(cell.respondents, cell.delivered),
        "pulse_mean": round(cell.pulse_sum / cell.pulse_answers, 3) if cell.pulse_answers else None,
        "readers": cell.readers,
        "enrolments": cell.enrolments,
        "attendances": cell.attendances,
        "completions": cell.completions,
    }
    return {k: all_values[k] for k in MEASURES[measure][1] if all_values[k] is not None}


SENSITIVITY = {
    "headcount": 1.0, "participants": 1.0, "delivered": 1.0, "clicked": 1.0, "respondents": 1.0, "readers": 1.0,
    "enrolments": 1.0, "completions": 1.0, "attendances": 7.0, "count": 1.0,
    "participation_rate": lambda n: 1.0 / max(n, 1), "click_through_rate": lambda n: 1.0 / max(n, 1),
    "pulse_response_rate": lambda n: 1.0 / max(n, 1), "pulse_mean": lambda n: anon.mean_sensitivity(1, 5, max(n, 1)),
}


@dataclass
class Report:
    period: str
    window: int
    measure: str
    k: int
    cells: list[dict]
    dp: dict


def _period_label(window: int, week: str) -> str:
    return week if window == 1 else f"{window}w:{week}"


def _load(session: Session, window: int, week: str, member_sets: Sequence[str], bucket_prefix: str | None):
    """The period's cells and their member sets: stored for weeks; for a 4- or 12-week window
    the union of the sets of the same group in its weeks (the same people, stored once)."""
    cells = session.scalars(select(ReportCell).where(ReportCell.window == window, ReportCell.iso_week == week)).all()
    members: dict[tuple[int, str], set[str]] = defaultdict(set)
    if not cells:
        return cells, members
    cond = ReportCellMember.member_set.in_(member_sets)
    if bucket_prefix:
        cond = or_(cond, ReportCellMember.member_set.like(bucket_prefix + "%"))
    by_group = {(c.group_kind, c.group_key): c.id for c in cells}
    stmt = (
        select(ReportCell.group_kind, ReportCell.group_key, ReportCellMember.member_set, ReportCellMember.pseudonym)
        .join(ReportCellMember, ReportCellMember.cell_id == ReportCell.id)
        .where(ReportCell.window == 1, ReportCell.iso_week.in_(_weeks(window, week)), cond)
    )
    for kind, key, name, who in session.execute(stmt):
        cell_id = by_group.get((kind, key))
        if cell_id is not None:
            members[(cell_id, name)].add(who)
    return cells, members


def _scope(cells: Sequence[ReportCell], viewer: Viewer) -> list[ReportCell]:
    if viewer.line is None:
        return list(cells)
    lines = {c.group_key: c for c in cells if c.group_kind == "line"}
    keep = []
    for key, cell in lines.items():
        seen, current = set(), key
        while current is not None and current not in seen:
            if current == viewer.line:
                keep.append(cell)
                break
            seen.add(current)
            current = lines[current].parent_key if current in lines else None
    return keep


def _engine_cells(scoped, members, member_set, bucket_prefix, measure, lines, prefix, is_hr):  # noqa: ANN001
    """anonymity.Cell tree + overlays for one period; returns (cells, overlays, meta)."""
    tree, overlays, meta = [], [], {}
    by_key = {(c.group_kind, c.group_key): c for c in scoped}
    line_people = {c.group_key: frozenset(members.get((c.id, member_set), ())) for c in scoped if c.group_kind == "line"}
    for cell in scoped:
        gid = prefix + group_id(cell.group_kind, cell.group_key, lines)
        people = frozenset(members.get((cell.id, member_set), ()))
        if cell.group_kind == "org":
            parent = None
        elif cell.group_kind == "department":
            parent = prefix + "org" if ("org", "") in by_key else None
        elif cell.group_kind == "team":
            parent = prefix + group_id("department", cell.parent_key, lines) if ("department", cell.parent_key) in by_key else None
        else:
            pk = cell.parent_key
            parent = prefix + group_id("line", pk, lines) if pk in line_people and people <= line_people[pk] else None
        target = overlays if (cell.group_kind == "line" and is_hr) else tree
        target.append(anon.Cell(gid, parent, people, values_of(cell, measure)))
        meta[gid] = (cell, None)
        if bucket_prefix:
            for (cell_id, name), who in members.items():
                if cell_id == cell.id and name.startswith(bucket_prefix):
                    bid = f"{gid}|{name}"
                    target.append(anon.Cell(bid, gid, frozenset(who) & people, {"count": len(frozenset(who) & people)}))
                    meta[bid] = (cell, name[len(bucket_prefix):])
    return tree, overlays, meta


def _log_family(measure: str) -> str:
    return MEASURES[measure][0]


def report(session: Session, viewer: Viewer, *, week: str | None = None, window: int = 1,
           measure: str = "participation", group: str | None = None) -> Report:
    """What ``viewer`` may see of one measure for one period, every cell through the
    anonymity engine against the organisation-wide release log; shown sets are logged."""
    if measure not in MEASURES:
        raise InvalidInput("Unknown measure.", errors={"measure": [f"One of: {', '.join(MEASURES)}."]})
    if window not in WINDOWS:
        raise InvalidInput("Unknown window.", errors={"window": ["One of 1, 4, 12."]})
    is_hr = viewer.line is None
    if not is_hr and group and not group.startswith("line:"):
        raise Forbidden("Managers see only their own reporting line.")
    org_id = activity._org_id(session)
    # serialise releases per organisation, so two viewers cannot race past each other's log
    settings = activity.report_settings(session)
    session.refresh(settings, with_for_update=True)
    org = session.get(Organisation, org_id)
    if week is None:
        week = session.scalar(select(func.max(ReportCell.iso_week)).where(ReportCell.window == window)) or iso_week_of(utcnow().date())
    prev_week = shift_week(week, -window)
    member_set, _ = MEASURES[measure]
    bucket_prefix = BUCKETS.get(measure)
    cur_cells, cur_members = _load(session, window, week, [member_set], bucket_prefix)
    prev_cells, prev_members = _load(session, window, prev_week, [member_set], bucket_prefix)
    cur_scoped, prev_scoped = _scope(cur_cells, viewer), _scope(prev_cells, viewer)
    lines = _label_lines(session, {c.group_key for c in (*cur_scoped, *prev_scoped) if c.group_kind == "line"})
    if not is_hr:
        if group and not any(group_id("line", c.group_key, lines) == group for c in cur_scoped):
            raise NotFound(f"No report for {group} in your reporting line.")
    elif group and group not in GROUP_KINDS and not any(group_id(c.group_kind, c.group_key, lines) == group for c in cur_scoped):
        raise NotFound(f"No report for {group} in {week}.")
    t1, o1, meta = _engine_cells(cur_scoped, cur_members, member_set, bucket_prefix, measure, lines, "", is_hr)
    t2, o2, meta_prev = _engine_cells(prev_scoped, prev_members, member_set, bucket_prefix, measure, lines, "prev|", is_hr)
    cells, overlays = [*t1, *t2], [*o1, *o2]
    family = _log_family(measure)
    since = utcnow() - timedelta(weeks=LOG_WEEKS)
    log_rows = session.scalars(select(ReleaseLog).where(ReleaseLog.released_at >= since, ReleaseLog.period.like(family + "|%"))).all()
    log = [anon.ReleaseLogEntry(r.period, frozenset(r.members), r.group_id) for r in log_rows]
    released = anon.release(cells, org.anonymity_k, log, overlays=overlays)
    dp = {"enabled": settings.dp_enabled}
    if settings.dp_enabled:
        budget = anon.PrivacyBudget(settings.epsilon_per_period,
                                    spent={p: tuple(v) for p, v in (settings.budget_spent or {}).items()})
        try:
            released, budget = anon.apply_noise(cells, released, sensitivity=SENSITIVITY, epsilon_per_value=settings.epsilon_per_value,
                                                budget=budget, period=week, mechanism=settings.dp_mechanism, overlays=overlays)
        except anon.BudgetExhausted as error:
            from shared.errors import Conflict

            raise Conflict(str(error)) from None
        settings.budget_spent = {p: list(v) for p, v in budget.spent.items()}
        dp.update(mechanism=settings.dp_mechanism, epsilon_per_period=settings.epsilon_per_period,
                  epsilon_remaining=round(budget.remaining(week), 6), period=week)
    # log what was shown (pseudonym sets, server-side only)
    known = {(r.period, r.group_id, r.set_hash) for r in log_rows}
    for entry in anon.log_entries(cells, released, period=f"{family}|{_period_label(window, week)}", overlays=overlays):
        period = entry.period if not entry.group_id.startswith("prev|") else f"{family}|{_period_label(window, prev_week)}"
        gid = entry.group_id.removeprefix("prev|")
        digest = hashlib.sha256("\n".join(sorted(entry.people)).encode()).hexdigest()
        if (period, gid, digest) in known:
            continue
        known.add((period, gid, digest))
        session.add(ReleaseLog(period=period, group_id=gid, set_hash=digest, members=sorted(entry.people)))
    session.flush()
    shown_prev = {r.group_id.removeprefix("prev|"): r for r in released if r.group_id.startswith("prev|")}
    out = []
    for r in released:
        if r.group_id.startswith("prev|"):
            continue
        cell, bucket = meta[r.group_id]
        if group and group not in GROUP_KINDS and not (r.group_id == group or r.group_id.startswith(group + "|")):
            continue
        if group in GROUP_KINDS and cell.group_kind != group:
            continue
        item = {
            "group": r.group_id.split("|")[0], "group_kind": cell.group_kind, "label": _label(cell.group_kind, cell.group_key, lines),
            "parent": r.parent_id, "bucket": bucket, "suppressed": r.suppressed,
            "reason": r.explanation, "people_count": r.people_count,
            "values": dict(r.values) if r.values is not None else None, "change": None,
        }
        before = shown_prev.get(r.group_id)
        if r.values is not None and before is not None and before.values is not None:
            item["change"] = {m: round(v - before.values[m], 4) for m, v in r.values.items() if m in before.values}
        out.append(item)
    return Report(period=_period_label(window, week), window=window, measure=measure, k=org.anonymity_k, cells=out, dp=dp)


def report_csv_rows(rep: Report) -> Iterable[list]:
    for c in rep.cells:
        values = c["values"] or {}
        yield [rep.period, rep.measure, c["group"], c["label"], c["bucket"] or "", "yes" if c["suppressed"] else "no",
               c["reason"] or "", "" if c["people_count"] is None else c["people_count"],
               "; ".join(f"{k}={v}" for k, v in values.items())]


CSV_HEADER = ["period", "measure", "group", "label", "bucket", "suppressed", "reason", "people", "values"]
