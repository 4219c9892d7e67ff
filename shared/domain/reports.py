"""Anonymised reports: aggregation of activity events into report cells (SQL GROUP BY in
the database, incremental by dirty week) and their release to viewers through the
anonymity engine (``shared.domain.anonymity`` - the only place suppression is decided).

Groups: the organisation, each department, each team (within its department) and each
manager's whole reporting line. Periods: an ISO week (window 1) and the 4 and 12 weeks
ending with it. A build folds the raw events once into per-person weekly summaries
(``report_person_weeks``) and derives the cells from them; the anonymity engine derives
the member set of a cell (pseudonyms, never returned by anything) from the same rows."""
from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone

from sqlalchemy import and_, delete, func, or_, select, text
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
    ReportDirtyWeek,
    ReportHeadcount,
    ReportPersonWeek,
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

C = ReportCell.__table__
HC = ReportHeadcount.__table__
EMP = Employee.__table__


# ---- aggregation ----------------------------------------------------------------------------
# A build makes ONE pass over the raw events of the weeks it rebuilds, into
# ``report_person_weeks`` (one row per person, week and group attributes), and derives every
# cell - every group kind, weekly and rolling windows - from those rows with GROUP BYs.
# The statements run on tables outside the ORM tenant guard (which cannot scope an
# INSERT ... SELECT), so each one names its organisation explicitly.

def _week_rows(weeks: Sequence[str]) -> tuple[str, dict]:
    """A derived table of (iso_week, week_no) rows, written so both dialects accept it."""
    parts, params = [], {}
    for i, week in enumerate(weeks):
        parts.append(f"SELECT CAST(:w{i} AS VARCHAR(8)) AS iso_week, CAST(:n{i} AS INTEGER) AS week_no")
        params[f"w{i}"], params[f"n{i}"] = week, activity.week_number(week)
    return "(" + " UNION ALL ".join(parts) + ")", params


def _topics_aggregate(session: Session) -> str:
    """The JSON list of the distinct topics read in a person-week, aggregated straight over
    its events (no DISTINCT aggregate on PostgreSQL: that would sort every event). There,
    ``report_topic_set`` (migration 0013) merges one-key JSON objects, so a topic read twice
    is kept once, and the keys are listed at the end. Its state is jsonb, which the planner
    sizes as a value (for ``json_agg``'s internal state it counts about 8 kB per group, and
    split the GROUP BY into batches on disk). Same text as json_agg's, in key order."""
    if session.get_bind().dialect.name == "postgresql":
        return ("CAST(jsonb_path_query_array(report_topic_set(CASE WHEN e.kind = 'article_read' AND e.topic IS NOT NULL "
                "THEN jsonb_build_object(e.topic, 1) END), '$.keyvalue().key') AS TEXT)")
    return "json_group_array(DISTINCT e.topic) FILTER (WHERE e.kind = 'article_read' AND e.topic IS NOT NULL)"


SUMMARY_COLUMNS = ("delivered", "clicked", "reads", "pulse_answers", "pulse_sum", "score_1", "score_2", "score_3",
                   "score_4", "score_5", "enrolments", "attendances", "completions")


def _summarise(session: Session, org_id: int, weeks: Sequence[str]) -> None:
    """Replace the weekly summaries of ``weeks`` by one pass over their raw events. Weeks
    whose raw events are gone (retention) keep their summaries: they are all that is left."""
    with_events = [w for w in weeks if session.execute(
        text("SELECT 1 FROM activity_events WHERE org_id = :org AND iso_week = :w LIMIT 1"), {"org": org_id, "w": w}).first()]
    if not with_events:
        return
    summaries = ReportPersonWeek.__table__
    session.execute(delete(summaries).where(  # by week_no: the indexed column
        summaries.c.org_id == org_id, summaries.c.week_no.in_([activity.week_number(w) for w in with_events])))

    def count(condition: str) -> str:
        return f"COUNT(*) FILTER (WHERE {condition})"

    measures = [
        count("e.kind = 'digest_delivered'"), count("e.kind = 'digest_clicked'"), count("e.kind = 'article_read'"),
        count("e.kind = 'pulse_answered'"), "COALESCE(SUM(e.score) FILTER (WHERE e.kind = 'pulse_answered'), 0)",
        *[count(f"e.kind = 'pulse_answered' AND e.score = {n}") for n in range(1, 6)],
        count("e.kind = 'program_enrolled'"), count("e.kind = 'session_attended'"), count("e.kind = 'program_completed'"),
    ]
    keys = ("iso_week", "pseudonym", "department", "team", "manager")
    table, params = _week_rows(with_events)
    weeks_in = ", ".join(f":w{i}" for i in range(len(with_events)))
    if _is_postgresql(session):
        # Its GROUP BY holds about 600 bytes per person-week (a million with everyone active
        # every week) and its sort by week a third of that: both in memory. Hashed, not sorted,
        # also when the planner takes a week just recorded for a few rows (its statistics predate
        # them: sorting 190,000 events by their keys cost twice the hashing).
        session.execute(text(f"SET LOCAL work_mem = '{SUMMARY_WORK_MEM}'"))
        session.execute(text("SET LOCAL enable_sort = off"))
    # One GROUP BY per person-week straight over the events (most of its cost is hashing each
    # event's key); the week numbers are joined to the groups, not to every event. Written in
    # week order, so a week's summaries lie together and the builds that read a few weeks of
    # them (every incremental one) read a few weeks' pages, not the whole table.
    written = session.execute(text(f"""
        INSERT INTO report_person_weeks (org_id, {', '.join(keys)}, week_no, {', '.join(SUMMARY_COLUMNS)}, topics)
        SELECT :org, {', '.join(f'k.{c}' for c in keys)}, t.week_no, {', '.join(f'k.{c}' for c in SUMMARY_COLUMNS)}, k.topics
        FROM (
            SELECT {', '.join(f'e.{c}' for c in keys)}, {', '.join(f'{m} AS {c}' for m, c in zip(measures, SUMMARY_COLUMNS))},
                   {_topics_aggregate(session)} AS topics
            FROM activity_events e
            WHERE e.org_id = :org AND e.iso_week IN ({weeks_in})
            GROUP BY {', '.join(f'e.{c}' for c in keys)}
        ) k JOIN {table} t ON t.iso_week = k.iso_week
        ORDER BY t.week_no
    """), {"org": org_id, **params}).rowcount
    if _is_postgresql(session):
        session.execute(text(f"SET LOCAL work_mem = '{BUILD_WORK_MEM}'"))
        session.execute(text("RESET enable_sort"))
    _analyze_if_grown(session, "report_person_weeks", written)


def _headcounts(session: Session, org_id: int, weeks: Sequence[str]) -> None:
    """Active employees (joined by the end of the week, not left before it) per group, for
    every week in ``weeks`` at once: each employee adds +1/-1 at the ends of their active
    range of weeks to each group they belong to (their department, team and every manager's
    line above them), and a running sum gives each week's count."""
    weeks = sorted(weeks)
    starts = [datetime.combine(week_start(w), time(), tzinfo=timezone.utc) for w in weeks]
    ends = [s + timedelta(days=7) for s in starts]
    rows = session.execute(select(EMP.c.id, EMP.c.department, EMP.c.team, EMP.c.manager_id, EMP.c.created_at,
                                  EMP.c.status, EMP.c.left_at).where(EMP.c.org_id == org_id)).all()
    manager_of = {r.id: r.manager_id for r in rows}
    line_key: dict[int, str] = {}
    diff: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * (len(weeks) + 1))
    for r in rows:
        created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=timezone.utc)
        first = bisect_right(ends, created)  # first week whose end is after joining
        if r.status == EmployeeStatus.ACTIVE.value:
            last = len(weeks)
        elif r.left_at is None:
            continue
        else:
            left = r.left_at if r.left_at.tzinfo else r.left_at.replace(tzinfo=timezone.utc)
            last = bisect_right(starts, left)  # weeks starting at or before leaving
        if first >= last:
            continue
        groups = [("org", ""), ("department", r.department)]
        if r.team:
            groups.append(("team", f"{r.department}/{r.team}"))
        seen, current = {r.id}, r.manager_id
        while current is not None and current not in seen and len(seen) <= activity.MAX_CHAIN:
            if current not in line_key:
                line_key[current] = activity.pseudonym(session, current)
            groups.append(("line", line_key[current]))
            seen.add(current)
            current = manager_of.get(current)
        for group in groups:
            diff[group][first] += 1
            diff[group][last] -= 1
    session.execute(delete(HC).where(HC.c.org_id == org_id, HC.c.iso_week.in_(weeks)))
    out = []
    for (kind, key), steps in diff.items():
        running = 0
        for i, week in enumerate(weeks):
            running += steps[i]
            if running:
                out.append((week, activity.week_number(week), kind, key, running))
    # the cells take their headcounts from this build's copy (no organisation column, local
    # buffers, keyed by week number like the cells); indexed, because the planner expects
    # few rows from the cells' nested GROUP BYs and joins them with a nested loop
    columns = ("iso_week", "group_kind", "group_key", "headcount")
    _temporary_table(session, BUILD_HEADCOUNTS, "iso_week VARCHAR(8), end_no INTEGER, group_kind VARCHAR(12), "
                     "group_key VARCHAR(201), headcount INTEGER")
    _bulk_insert(session, BUILD_HEADCOUNTS, ("iso_week", "end_no", "group_kind", "group_key", "headcount"), out)
    session.execute(text(f"INSERT INTO {HC.name} (org_id, {', '.join(columns)}) SELECT :org, {', '.join(columns)} FROM {BUILD_HEADCOUNTS}"),
                    {"org": org_id})
    session.execute(text(f"CREATE UNIQUE INDEX ix_{BUILD_HEADCOUNTS} ON {BUILD_HEADCOUNTS} (group_kind, end_no, group_key)"))
    _analyze(session, BUILD_HEADCOUNTS)


def _bulk_insert(session: Session, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
    """Insert many rows: COPY on PostgreSQL (in the session's transaction), executemany elsewhere."""
    if not rows:
        return
    if _is_postgresql(session):
        with session.connection().connection.driver_connection.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return
    names = ", ".join(f":{c}" for c in columns)
    session.execute(text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({names})"), [dict(zip(columns, r)) for r in rows])


# Working tables of a build (temporary, per connection). Pseudonyms and group attributes are
# replaced by integer keys once per build, so grouping and the line closure work on integers
# instead of 64-character strings:
#   BUILD_HEADCOUNTS  the headcounts of the build's period ends (as written to report_headcounts),
#                and BUILD_LINE_HEADCOUNTS the lines' keyed by (end_no, lid);
#   BUILD_ENDS   the periods to build (window length and last week) and BUILD_PERIOD_WEEKS
#                the weeks of each;
#   BUILD_ATTRS  every combination of group attributes (department, team, manager) with
#                integer keys of its parts: did (department), tid (team within its department;
#                none for no team) and the manager's lid (mid);
#   BUILD_PEOPLE  every person's combinations of group attributes in the build's weeks, with
#                the person's key (pid) and ``moved`` for people with more than one (they
#                changed team or manager);
#   BUILD_LINES  every reporting line (a manager's pseudonym) -> lid; BUILD_SPANS each line's
#                spans of weeks under one parent (first and last week recorded);
#   BUILD_WEEKS  the weekly summaries of the build's weeks keyed (week, pid, did, tid, mid,
#                moved), with a bit for each of INDICATORS the person did that week (flags)
#                and the ADDITIVE sums;
#   BUILD_RUNS   where the runs (below) of the people who did not move start and end: the
#                weeks with any, and a bit per indicator for each window and edge (RUNS),
#                worked out over BUILD_BLOCK_WEEKS (the weeks a person's bitmask holds);
#   PERIOD_MANAGERS / PERIOD_TEAMS  the cells' measures of every window side by side, per
#                period end and manager (mid) or team (did, tid), over the people who did not
#                move: running sums of their weekly counts, runs and sums;
#   MOVED_PERIODS  one row per period, person who moved and (did, tid, mid), with what they
#                did in the period there: they are counted per group, once in each group;
#   BUILD_TREE   each period end's reporting-line tree (each line's latest recorded parent in
#                the longest window ending there) and BUILD_CLOSURE its closure (line -> itself
#                and every line above it). A shorter window's tree holds the lines recorded
#                within it, with the same parents, so each row carries the shortest window it
#                belongs to (for the closure: the shortest holding every recording followed).
#
# Runs. A person counts in a period of W weeks ending with week E for an indicator when they
# did it in one of the weeks E-W+1..E. Each such week t covers the ends t..t+W-1, and a
# person's covered ends fall into runs: a run starts at a week with no week of the
# indicator in the W-1 weeks before it, and ends (is no longer covered) W weeks after a
# week with no week of the indicator in the W-1 weeks after it. The people counted at E are
# the runs started by E less the runs ended by E: running sums per manager or team
# over weeks, so each person's week is looked at once instead of once per period it falls
# in (a one-week period's runs are its weeks). A person's weeks of an indicator, as bits
# of one integer, give their starts and ends by shifting it W-1 times: no sort or window
# function over person-weeks. Sums over a period are running sums too (up to E less up to E-W).
BUILD_HEADCOUNTS = "report_build_headcounts"
BUILD_LINES = "report_build_lines"
BUILD_SPANS = "report_build_spans"
BUILD_ATTRS = "report_build_attrs"
BUILD_ENDS = "report_build_ends"
BUILD_PERIOD_WEEKS = "report_build_period_weeks"
BUILD_WEEKS = "report_build_weeks"
BUILD_TREE = "report_build_tree"
BUILD_CLOSURE = "report_build_closure"
BUILD_LINE_HEADCOUNTS = "report_build_line_headcounts"
MOVED_PERIODS = "report_moved_periods"
BUILD_PEOPLE = "report_build_people"
BUILD_BLOCK_WEEKS = "report_build_block_weeks"
BUILD_RUNS = "report_build_runs"
WEEK_BITS = 63  # weeks a person's bitmask holds: bits 0-62 of a 64-bit integer, the sign bit unused
# unit -> (its working table, integer key columns): the steady people's cells add up per unit
UNITS = {"managers": ("report_period_managers", ("mid",)), "teams": ("report_period_teams", ("did", "tid"))}
INDICATORS = {  # report_cells column -> what a weekly summary shows of a person counted in it
    "participants": "1 = 1", "delivered": "s.delivered > 0", "clicked": "s.clicked > 0",
    "respondents": "s.pulse_answers > 0", "readers": "s.reads > 0", "enrolments": "s.enrolments > 0",
    "completions": "s.completions > 0",
}
ADDITIVE = {"pulse_sum": "s.pulse_sum", "pulse_answers": "s.pulse_answers", "attendances": "s.attendances"}
CELL_MEASURES = (*INDICATORS, *ADDITIVE)
MEASURE_COLUMNS = ", ".join(f"{c} INTEGER" for c in CELL_MEASURES)
RUNS = [f"{edge}_{w}" for w in WINDOWS[1:] for edge in ("starts", "ends")]  # bit i: INDICATORS[i]


def _added(prefix: str = "") -> str:
    """Rows of measures added up (as INTEGER: a sum of sums would be NUMERIC, several times
    slower to add and larger in memory)."""
    return ", ".join(f"CAST(SUM({prefix}{m}) AS INTEGER) AS {m}" for m in CELL_MEASURES)


def _added_by_window(prefix: str = "") -> str:
    """Rows of side-by-side measures (``<measure>_<window>``) added up for the period's window
    (``e.window_len``)."""
    return ", ".join(f"CAST(SUM(CASE e.window_len {' '.join(f'WHEN {w} THEN {prefix}{m}_{w}' for w in WINDOWS)} END) AS INTEGER) AS {m}"
                     for m in CELL_MEASURES)


def _fold(prefix: str = "") -> str:
    """One person's rows folded into one: counted if any row counts them, sums added."""
    return ", ".join([*(f"MAX({prefix}{m}) AS {m}" for m in INDICATORS), *(f"SUM({prefix}{m}) AS {m}" for m in ADDITIVE)])


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _temporary_table(session: Session, name: str, columns: str) -> None:
    session.execute(text(f"DROP TABLE IF EXISTS {name}"))
    session.execute(text(f"CREATE TEMPORARY TABLE {name} ({columns})"))


def _drop(session: Session, *tables: str) -> None:
    for table in tables:
        session.execute(text(f"DROP TABLE {table}"))


def _analyze(session: Session, *tables: str) -> None:
    """Fresh planner statistics (PostgreSQL): without them it takes new rows for none and
    picks nested loops over them."""
    if _is_postgresql(session):
        for table in tables:
            session.execute(text(f"ANALYZE {table}"))


def _analyze_if_grown(session: Session, table: str, written: int) -> None:
    """ANALYZE ``table`` after writing ``written`` rows into it, unless they are few against
    what its statistics already count (a week added to a year of summaries: the statistics
    stay good, and sampling the table cost a fifth of an incremental build)."""
    if not _is_postgresql(session):
        return
    counted = session.execute(text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": table}).scalar()
    if counted is None or counted < 0 or written > counted / 10:
        _analyze(session, table)


def _prepare_keys(session: Session, org_id: int, ends_by_window: dict[int, set[str]]) -> None:
    """BUILD_ENDS, BUILD_PERIOD_WEEKS, BUILD_PEOPLE, BUILD_ATTRS, BUILD_LINES, BUILD_SPANS,
    BUILD_WEEKS and BUILD_RUNS for the periods of ``ends_by_window``, from the summaries of
    the weeks they span."""
    periods = [(window, activity.week_number(end), end) for window, ends in ends_by_window.items() for end in ends]
    _temporary_table(session, BUILD_ENDS, "window_len INTEGER, end_no INTEGER, end_week VARCHAR(8), PRIMARY KEY (window_len, end_no)")
    _bulk_insert(session, BUILD_ENDS, ("window_len", "end_no", "end_week"), periods)
    _temporary_table(session, BUILD_PERIOD_WEEKS, "window_len INTEGER, end_no INTEGER, week_no INTEGER")
    _bulk_insert(session, BUILD_PERIOD_WEEKS, ("window_len", "end_no", "week_no"),
                 [(window, end_no, end_no - i) for window, end_no, _ in periods for i in range(window)])
    first, last = min(end_no - window + 1 for window, end_no, _ in periods), max(end_no for _, end_no, _ in periods)
    params = {"org": org_id, "first": first, "last": last}
    in_range = "s.org_id = :org AND s.week_no BETWEEN :first AND :last"
    # the line trees of the build's weeks only: a period's tree comes from its own weeks, and
    # every period the build makes lies within them (spans are clipped to them, which keeps
    # each week's latest parent)
    lines_in_range = "a.org_id = :org AND a.week_no BETWEEN :first AND :last"
    # everybody's combinations of group attributes in these weeks (one pass over the
    # summaries gives the people, the combinations and who moved)
    groups = "report_build_person_groups"
    _temporary_table(session, groups, "pseudonym VARCHAR(64), department VARCHAR(100), team VARCHAR(100), manager VARCHAR(64)")
    session.execute(text(f"""
        INSERT INTO {groups}
        SELECT s.pseudonym, s.department, s.team, s.manager FROM report_person_weeks s WHERE {in_range}
        GROUP BY s.pseudonym, s.department, s.team, s.manager
    """), params)
    _temporary_table(session, BUILD_ATTRS, "department VARCHAR(100), team VARCHAR(100), manager VARCHAR(64), did INTEGER, "
                     "tid INTEGER, mid INTEGER")
    session.execute(text(f"""
        INSERT INTO {BUILD_ATTRS}
        SELECT a.department, a.team, a.manager, DENSE_RANK() OVER (ORDER BY a.department),
               CASE WHEN a.team <> '' THEN DENSE_RANK() OVER (ORDER BY a.department, a.team) END, NULL
        FROM (SELECT DISTINCT department, team, manager FROM {groups}) a
    """))
    _temporary_table(session, BUILD_LINES, "lid INTEGER PRIMARY KEY, line VARCHAR(64)")
    session.execute(text(f"""
        INSERT INTO {BUILD_LINES}
        SELECT ROW_NUMBER() OVER (ORDER BY line), line FROM (
            SELECT a.line FROM activity_lines a WHERE {lines_in_range}
            UNION SELECT a.parent_line FROM activity_lines a WHERE {lines_in_range} AND a.parent_line IS NOT NULL
            UNION SELECT manager FROM {BUILD_ATTRS} WHERE manager <> ''  -- a few rows, not the summaries again
        ) lines
    """), params)
    session.execute(text(f"CREATE UNIQUE INDEX ix_{BUILD_LINES}_line ON {BUILD_LINES} (line)"))
    session.execute(text(f"UPDATE {BUILD_ATTRS} SET mid = (SELECT l.lid FROM {BUILD_LINES} l WHERE l.line = {BUILD_ATTRS}.manager)"))
    _temporary_table(session, BUILD_SPANS, "lid INTEGER, parent_lid INTEGER, first_week INTEGER, last_week INTEGER")
    session.execute(text(f"""
        INSERT INTO {BUILD_SPANS}
        SELECT l.lid, p.lid, MIN(a.week_no), MAX(a.week_no)
        FROM activity_lines a JOIN {BUILD_LINES} l ON l.line = a.line LEFT JOIN {BUILD_LINES} p ON p.line = a.parent_line
        WHERE {lines_in_range} GROUP BY l.lid, p.lid
    """), params)
    _temporary_table(session, BUILD_PEOPLE, "pseudonym VARCHAR(64), department VARCHAR(100), team VARCHAR(100), "
                     "manager VARCHAR(64), pid INTEGER, did INTEGER, tid INTEGER, mid INTEGER, moved INTEGER")
    session.execute(text(f"""
        INSERT INTO {BUILD_PEOPLE}
        SELECT g.pseudonym, g.department, g.team, g.manager, DENSE_RANK() OVER (ORDER BY g.pseudonym), a.did, a.tid, a.mid,
               CASE WHEN COUNT(*) OVER (PARTITION BY g.pseudonym) > 1 THEN 1 ELSE 0 END
        FROM {groups} g JOIN {BUILD_ATTRS} a ON a.department = g.department AND a.team = g.team AND a.manager = g.manager
    """))
    _drop(session, groups)
    _analyze(session, BUILD_ENDS, BUILD_PERIOD_WEEKS, BUILD_LINES, BUILD_SPANS, BUILD_ATTRS, BUILD_PEOPLE)
    _temporary_table(session, BUILD_WEEKS, f"week_no INTEGER, pid INTEGER, did INTEGER, tid INTEGER, mid INTEGER, moved INTEGER, "
                     f"flags INTEGER, {', '.join(f'{m} INTEGER' for m in ADDITIVE)}")
    flags = " + ".join(f"CASE WHEN {c} THEN {1 << i} ELSE 0 END" for i, c in enumerate(INDICATORS.values()))
    session.execute(text(f"""
        INSERT INTO {BUILD_WEEKS}
        SELECT s.week_no, p.pid, p.did, p.tid, p.mid, p.moved, {flags}, {', '.join(ADDITIVE.values())}
        FROM report_person_weeks s
        JOIN {BUILD_PEOPLE} p ON p.pseudonym = s.pseudonym AND p.department = s.department AND p.team = s.team
                             AND p.manager = s.manager
        WHERE {in_range}
    """), params)
    _analyze(session, BUILD_WEEKS)
    _runs(session, first, last)


def _runs(session: Session, first: int, last: int) -> None:
    """BUILD_RUNS: where the runs of the people who did not move start and end (weeks
    ``first`` to ``last``), from a bitmask of each one's weeks per indicator."""
    # Blocks of weeks a bitmask holds, each writing the runs of the weeks it owns: it also
    # holds the W-1 weeks before and after them that decide whether a run starts or ends.
    margin, block_weeks, lo = max(WINDOWS) - 1, [], first
    while lo <= last:
        base = max(first, lo - margin)
        hi = last if last - base < WEEK_BITS else base + WEEK_BITS - 1 - margin
        block_weeks += [(lo, week, week - base, int(week >= lo and week <= hi)) for week in range(base, min(last, hi + margin) + 1)]
        lo = hi + 1
    _temporary_table(session, BUILD_BLOCK_WEEKS, "block INTEGER, week_no INTEGER, bit_no INTEGER, owned INTEGER")
    _bulk_insert(session, BUILD_BLOCK_WEEKS, ("block", "week_no", "bit_no", "owned"), block_weeks)
    _analyze(session, BUILD_BLOCK_WEEKS)
    masks = ", ".join(f"CAST(SUM(CASE WHEN (b.flags & {1 << i}) <> 0 THEN CAST(1 AS BIGINT) << k.bit_no ELSE 0 END) AS BIGINT) AS {m}"
                      for i, m in enumerate(INDICATORS))  # one row a week and indicator: the sum sets bits
    runs = []
    for w in WINDOWS[1:]:  # a run starts at a week with none in the W-1 before it, and ends W weeks after one with none in the W-1 after it
        runs += [f"{m} & ~({' | '.join(f'({m} << {k})' for k in range(1, w))}) AS starts_{w}_{m}" for m in INDICATORS]
        runs += [f"{m} & ~({' | '.join(f'({m} >> {k})' for k in range(1, w))}) AS ends_{w}_{m}" for m in INDICATORS]
    per_week = [" + ".join(f"((r.{r}_{m} >> k.bit_no) & 1) * {1 << i}" for i, m in enumerate(INDICATORS)) + f" AS {r}" for r in RUNS]
    any_run = " | ".join(f"{r}_{m}" for r in RUNS for m in INDICATORS)
    _temporary_table(session, BUILD_RUNS, f"week_no INTEGER, did INTEGER, tid INTEGER, mid INTEGER, {', '.join(f'{r} INTEGER' for r in RUNS)}")
    # (materialised: each person's runs are worked out once, not again for every week they are looked up in)
    session.execute(text(f"""
        WITH person_runs AS MATERIALIZED (
            SELECT block, did, tid, mid, {', '.join(runs)} FROM (
                SELECT k.block, b.pid, b.did, b.tid, b.mid, {masks}
                FROM {BUILD_WEEKS} b JOIN {BUILD_BLOCK_WEEKS} k ON k.week_no = b.week_no
                WHERE b.moved = 0
                GROUP BY k.block, b.pid, b.did, b.tid, b.mid
            ) p
        ), flagged AS MATERIALIZED (
            SELECT person_runs.*, {any_run} AS any_run FROM person_runs
        )
        INSERT INTO {BUILD_RUNS}
        SELECT k.week_no, r.did, r.tid, r.mid, {', '.join(per_week)}
        FROM flagged r JOIN {BUILD_BLOCK_WEEKS} k ON k.block = r.block AND k.owned = 1 AND ((r.any_run >> k.bit_no) & 1) = 1
    """))


def _side_by_side(column: Callable[[str, int], str]) -> str:
    """Every window's measures added up as columns of one row (``<measure>_<window>``)."""
    return ", ".join(f"CAST(SUM({column(m, w)}) AS INTEGER) AS {m}_{w}" for w in WINDOWS for m in CELL_MEASURES)


def _of_window(prefix: str) -> str:
    """The measures of the period's window (``e.window_len``) out of side-by-side columns."""
    return ", ".join(f"CASE e.window_len {' '.join(f'WHEN {w} THEN {prefix}{m}_{w}' for w in WINDOWS)} END AS {m}"
                     for m in CELL_MEASURES)


def _periods(session: Session) -> None:
    """PERIOD_MANAGERS and PERIOD_TEAMS (every window side by side, per period end of
    BUILD_ENDS) and MOVED_PERIODS."""
    for table, keys in UNITS.values():
        by = ", ".join(keys)
        weeks = f"{table}_weeks"
        # a unit's measures, runs and sums per week ...
        data_columns = [*INDICATORS, *(f"{r}_{m}" for r in RUNS for m in INDICATORS), *ADDITIVE]
        counted = [*(f"CAST(SUM((flags >> {i}) & 1) AS INTEGER) AS {m}" for i, m in enumerate(INDICATORS)),
                   *(f"0 AS {r}_{m}" for r in RUNS for m in INDICATORS), *(f"CAST(SUM({m}) AS INTEGER) AS {m}" for m in ADDITIVE)]
        runs = [*(f"0 AS {m}" for m in INDICATORS), *(f"CAST(SUM(({r} >> {i}) & 1) AS INTEGER) AS {r}_{m}" for r in RUNS
                                                       for i, m in enumerate(INDICATORS)), *(f"0 AS {m}" for m in ADDITIVE)]
        with_unit = "".join(f" AND {k} IS NOT NULL" for k in keys if k == "mid")
        _temporary_table(session, weeks, f"week_no INTEGER, {', '.join(f'{k} INTEGER' for k in keys)}, "
                         f"{', '.join(f'{c} INTEGER' for c in data_columns)}")
        session.execute(text(f"""
            INSERT INTO {weeks}
            SELECT week_no, {by}, {', '.join(f'CAST(SUM({c}) AS INTEGER)' for c in data_columns)} FROM (
                SELECT week_no, {by}, {', '.join(counted)} FROM {BUILD_WEEKS} WHERE moved = 0 {with_unit} GROUP BY week_no, {by}
                UNION ALL
                SELECT week_no, {by}, {', '.join(runs)} FROM {BUILD_RUNS} WHERE 1 = 1 {with_unit} GROUP BY week_no, {by}
            ) x GROUP BY week_no, {by}
        """))
        # ... and per period end: a one-week period's are the week's; a longer one's are
        # running sums over the unit's weeks. Every period end needs a row to carry them: a
        # row of zeros where the unit has none.
        frames = ", ".join(f"upto_{w} AS (PARTITION BY {by} ORDER BY week_no RANGE BETWEEN UNBOUNDED PRECEDING AND {w} PRECEDING)"
                           for w in WINDOWS[1:])
        measures = []
        for w in WINDOWS:
            for m in CELL_MEASURES:
                if w == 1:
                    measures.append(f"{m} AS {m}_1")
                elif m in INDICATORS:  # runs started, less runs ended
                    measures.append(f"SUM(starts_{w}_{m}) OVER upto - COALESCE(SUM(ends_{w}_{m}) OVER upto_{w}, 0) AS {m}_{w}")
                else:
                    measures.append(f"SUM({m}) OVER upto - COALESCE(SUM({m}) OVER upto_{w}, 0) AS {m}_{w}")
        same_unit = " AND ".join(f"COALESCE(d.{k}, 0) = COALESCE(k.{k}, 0)" for k in keys)  # keys count from 1; no team is NULL
        _temporary_table(session, table, f"end_no INTEGER, {', '.join(f'{k} INTEGER' for k in keys)}, "
                         f"{', '.join(f'{m}_{w} INTEGER' for w in WINDOWS for m in CELL_MEASURES)}")
        session.execute(text(f"""
            INSERT INTO {table}
            SELECT * FROM (
                SELECT week_no, {by}, {', '.join(measures)}
                FROM (
                    SELECT * FROM {weeks}
                    UNION ALL
                    SELECT e.end_no, {', '.join(f'k.{k}' for k in keys)}, {', '.join('0' for _ in data_columns)}
                    FROM (SELECT DISTINCT end_no FROM {BUILD_ENDS}) e CROSS JOIN (SELECT DISTINCT {by} FROM {weeks}) k
                    WHERE NOT EXISTS (SELECT 1 FROM {weeks} d WHERE d.week_no = e.end_no AND {same_unit})
                ) x
                WINDOW upto AS (PARTITION BY {by} ORDER BY week_no RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), {frames}
            ) p
            WHERE week_no IN (SELECT end_no FROM {BUILD_ENDS}) AND ({' OR '.join(f'participants_{w} > 0' for w in WINDOWS)})
        """))
        _drop(session, weeks)
    _temporary_table(session, MOVED_PERIODS, f"window_len INTEGER, end_no INTEGER, pid INTEGER, did INTEGER, tid INTEGER, "
                     f"mid INTEGER, {MEASURE_COLUMNS}")
    session.execute(text(f"""
        INSERT INTO {MOVED_PERIODS}
        SELECT p.window_len, p.end_no, b.pid, b.did, b.tid, b.mid,
               {', '.join(f'MAX((b.flags >> {i}) & 1)' for i, _ in enumerate(INDICATORS))}, {', '.join(f'SUM(b.{m})' for m in ADDITIVE)}
        FROM {BUILD_WEEKS} b JOIN {BUILD_PERIOD_WEEKS} p ON p.week_no = b.week_no
        WHERE b.moved = 1
        GROUP BY p.window_len, p.end_no, b.pid, b.did, b.tid, b.mid
    """))
    _analyze(session, *(table for table, _ in UNITS.values()), MOVED_PERIODS)


def _lines(session: Session) -> None:
    """BUILD_TREE, BUILD_CLOSURE and BUILD_LINE_HEADCOUNTS for the period ends of BUILD_ENDS."""
    # the tree from each line's spans of weeks under one parent (a few rows per line)
    _temporary_table(session, BUILD_TREE, "end_no INTEGER, lid INTEGER, parent_lid INTEGER, shortest INTEGER")
    recorded = "CASE WHEN s.last_week < t.end_no THEN s.last_week ELSE t.end_no END"
    shortest = " ".join(f"WHEN end_no - recorded < {w} THEN {w}" for w in WINDOWS[:-1])
    session.execute(text(f"""
        INSERT INTO {BUILD_TREE}
        SELECT end_no, lid, parent_lid, CASE {shortest} ELSE {max(WINDOWS)} END FROM (
            SELECT t.end_no, s.lid, s.parent_lid, {recorded} AS recorded,
                   ROW_NUMBER() OVER (PARTITION BY t.end_no, s.lid ORDER BY {recorded} DESC) AS latest
            FROM {BUILD_SPANS} s JOIN (SELECT DISTINCT end_no FROM {BUILD_ENDS}) t
                 ON s.first_week <= t.end_no AND s.last_week >= t.end_no - :span
        ) ranked WHERE latest = 1
    """), {"span": max(WINDOWS) - 1})
    session.execute(text(f"CREATE INDEX ix_{BUILD_TREE} ON {BUILD_TREE} (end_no, lid)"))
    _analyze(session, BUILD_TREE)
    _temporary_table(session, BUILD_CLOSURE, "end_no INTEGER, lid INTEGER, ancestor INTEGER, shortest INTEGER")
    session.execute(text(f"""
        WITH RECURSIVE closure (end_no, lid, ancestor, shortest, depth) AS (
            SELECT end_no, lid, lid, shortest, 0 FROM {BUILD_TREE}
            UNION ALL
            SELECT c.end_no, c.lid, t.parent_lid, CASE WHEN t.shortest > c.shortest THEN t.shortest ELSE c.shortest END, c.depth + 1
            FROM closure c JOIN {BUILD_TREE} t ON t.end_no = c.end_no AND t.lid = c.ancestor
            WHERE t.parent_lid IS NOT NULL AND c.depth < :max_depth
        )
        INSERT INTO {BUILD_CLOSURE} SELECT end_no, lid, ancestor, shortest FROM closure
    """), {"max_depth": activity.MAX_CHAIN})
    _temporary_table(session, BUILD_LINE_HEADCOUNTS, "end_no INTEGER, lid INTEGER, headcount INTEGER, PRIMARY KEY (end_no, lid)")
    session.execute(text(f"""
        INSERT INTO {BUILD_LINE_HEADCOUNTS}
        SELECT h.end_no, l.lid, h.headcount FROM {BUILD_HEADCOUNTS} h JOIN {BUILD_LINES} l ON l.line = h.group_key
        WHERE h.group_kind = 'line'
    """))
    _analyze(session, BUILD_CLOSURE, BUILD_LINE_HEADCOUNTS)


# Cells are written in two steps: the people who stayed in one group (from the per-unit
# measures), then the people who moved, folded once per group they were in and added to
# the same cells (or making new ones) by ON CONFLICT.
CELL_INSERT = f"""
    INSERT INTO report_cells (org_id, "window", iso_week, group_kind, group_key, parent_key, headcount,
                              {', '.join(CELL_MEASURES)}, built_at)
    SELECT :org, e.window_len, e.end_week, :kind, g.group_key, g.parent_key, g.headcount, {', '.join(f'g.{m}' for m in CELL_MEASURES)}, :now
    FROM ({{groups}}) g
    JOIN {BUILD_ENDS} e ON e.window_len = g.window_len AND e.end_no = g.end_no
    WHERE g.participants > 0
"""
MOVED_CELLS = f"""
    ON CONFLICT (org_id, "window", iso_week, group_kind, group_key) DO UPDATE SET
    {', '.join(f'{m} = report_cells.{m} + excluded.{m}' for m in CELL_MEASURES)}
"""

# group kind -> (integer keys of its groups, their names, key, parent key)
TREE_GROUPS = {
    "org": ((), "", "''", "NULL"),
    "department": (("did",), f"JOIN (SELECT DISTINCT did, department FROM {BUILD_ATTRS}) n ON n.did = g.did",
                   "n.department", "''"),
    "team": (("tid",), f"JOIN (SELECT DISTINCT tid, department, team FROM {BUILD_ATTRS}) n ON n.tid = g.tid",
             "n.department || '/' || n.team", "n.department"),
}
TREE_GROUP = f"""
SELECT g.window_len, g.end_no, {{key}} AS group_key, {{parent}} AS parent_key, COALESCE(h.headcount, 0) AS headcount,
       {', '.join(f'g.{m}' for m in CELL_MEASURES)}
FROM ({{measures}}) g {{join_names}}
LEFT JOIN {BUILD_HEADCOUNTS} h ON h.end_no = g.end_no AND h.group_kind = :kind AND h.group_key = {{key}}
"""
TREE_STEADY = f"""
SELECT e.window_len, p.end_no{{by_p}}, {_added_by_window("p.")}
FROM {UNITS["teams"][0]} p JOIN {BUILD_ENDS} e ON e.end_no = p.end_no
WHERE 1 = 1 {{where}}
GROUP BY e.window_len, p.end_no{{by_p}}
"""
TREE_MOVED = f"""
SELECT window_len, end_no{{by}}, {_added()} FROM (
    SELECT p.window_len, p.end_no, p.pid{{by_p}}, {_fold("p.")}
    FROM {MOVED_PERIODS} p
    WHERE 1 = 1 {{where}}
    GROUP BY p.window_len, p.end_no, p.pid{{by_p}}
) x GROUP BY window_len, end_no{{by}}
"""

# A manager's line adds up the lines below it: the per-manager measures joined to the closure
# once for every window (side by side; a closure row counts in the windows it belongs to),
# named once per line and period end (materialised: else the planner names each window's row).
LINE_NAMED = f"""
WITH named AS MATERIALIZED (
    SELECT g.*, l.line AS group_key, pl.line AS parent_key, t.shortest AS parent_shortest, COALESCE(h.headcount, 0) AS headcount
    FROM (
        SELECT p.end_no, c.ancestor, {_side_by_side(lambda m, w: f"CASE WHEN c.shortest <= {w} THEN p.{m}_{w} ELSE 0 END")}
        FROM {UNITS["managers"][0]} p JOIN {BUILD_CLOSURE} c ON c.end_no = p.end_no AND c.lid = p.mid
        GROUP BY p.end_no, c.ancestor
    ) g
    JOIN {BUILD_LINES} l ON l.lid = g.ancestor
    LEFT JOIN {BUILD_TREE} t ON t.end_no = g.end_no AND t.lid = g.ancestor
    LEFT JOIN {BUILD_LINES} pl ON pl.lid = t.parent_lid
    LEFT JOIN {BUILD_LINE_HEADCOUNTS} h ON h.end_no = g.end_no AND h.lid = g.ancestor
)
"""
LINE_STEADY = f"""
SELECT e.window_len, n.end_no, n.group_key, CASE WHEN n.parent_shortest <= e.window_len THEN n.parent_key END AS parent_key,
       n.headcount, {_of_window("n.")}
FROM named n JOIN {BUILD_ENDS} e ON e.end_no = n.end_no
"""
LINE_MOVED = f"""
SELECT g.window_len, g.end_no, l.line AS group_key, pl.line AS parent_key, COALESCE(h.headcount, 0) AS headcount,
       {', '.join(f'g.{m}' for m in CELL_MEASURES)}
FROM (
    SELECT window_len, end_no, ancestor, {_added()} FROM (
        SELECT p.window_len, p.end_no, c.ancestor, p.pid, {_fold("p.")}
        FROM {MOVED_PERIODS} p JOIN {BUILD_CLOSURE} c ON c.end_no = p.end_no AND c.lid = p.mid
        WHERE c.shortest <= p.window_len
        GROUP BY p.window_len, p.end_no, c.ancestor, p.pid
    ) x GROUP BY window_len, end_no, ancestor
) g
JOIN {BUILD_LINES} l ON l.lid = g.ancestor
LEFT JOIN {BUILD_TREE} t ON t.end_no = g.end_no AND t.lid = g.ancestor AND t.shortest <= g.window_len
LEFT JOIN {BUILD_LINES} pl ON pl.lid = t.parent_lid
LEFT JOIN {BUILD_LINE_HEADCOUNTS} h ON h.end_no = g.end_no AND h.lid = g.ancestor
"""


def _insert_cells(session: Session, org_id: int, now: datetime) -> int:
    """Every cell of the periods of BUILD_ENDS (returns how many). People who moved are
    folded per group, so each person counts once in every group they belonged to."""
    _periods(session)
    _lines(session)
    params = {"org": org_id, "now": now}
    for kind, (columns, join_names, key, parent) in TREE_GROUPS.items():
        parts = {"by": "".join(f", {c}" for c in columns), "by_p": "".join(f", p.{c}" for c in columns),
                 "where": "".join(f"AND p.{c} IS NOT NULL" for c in columns)}
        for measures, upsert in ((TREE_STEADY, ""), (TREE_MOVED, MOVED_CELLS)):
            groups = TREE_GROUP.format(key=key, parent=parent, join_names=join_names, measures=measures.format(**parts))
            session.execute(text(CELL_INSERT.format(groups=groups) + upsert), {**params, "kind": kind})
    # the CTE goes first: "WITH ... INSERT ... SELECT" is the form both dialects accept
    session.execute(text(LINE_NAMED + CELL_INSERT.format(groups=LINE_STEADY)), {**params, "kind": "line"})
    session.execute(text(CELL_INSERT.format(groups=LINE_MOVED) + MOVED_CELLS), {**params, "kind": "line"})
    # (counted through the cells' unique index: moved people's cells were partly updates)
    periods = session.execute(text(f"SELECT window_len, end_week FROM {BUILD_ENDS}")).all()
    return session.scalar(select(func.count()).select_from(C).where(C.c.org_id == org_id, or_(*(
        and_(C.c.window == window, C.c.iso_week.in_([end for w, end in periods if w == window])) for window in WINDOWS))))


BUILD_WORK_MEM = "256MB"
SUMMARY_WORK_MEM = "512MB"  # for the summary pass only


@dataclass
class BuildResult:
    weeks: list[str]
    periods: int
    cells: int


def build(session: Session, weeks: Iterable[str] | None = None) -> BuildResult:
    """Rebuild the periods touched by ``weeks`` (default: the dirty weeks) - each week
    itself and the 4- and 12-week windows that contain it - up to the latest week with events."""
    org_id = activity._org_id(session)
    dirty_rows = session.scalars(select(ReportDirtyWeek)).all()
    target = sorted(set(weeks) if weeks is not None else {d.iso_week for d in dirty_rows})
    if not target:
        return BuildResult([], 0, 0)
    latest = max(session.scalar(select(func.max(ActivityEvent.iso_week))) or target[-1],
                 session.scalar(select(ReportPersonWeek.iso_week).order_by(ReportPersonWeek.week_no.desc()).limit(1))
                 or target[-1], target[-1])
    if _is_postgresql(session):
        # the build's sorts and hashes span the whole organisation: let them stay in memory
        session.execute(text(f"SET LOCAL work_mem = '{BUILD_WORK_MEM}'"))
    _summarise(session, org_id, target)
    ends_by_window: dict[int, set[str]] = defaultdict(set)
    for week in target:
        for window in WINDOWS:
            for i in range(window):
                end = shift_week(week, i)
                if end > latest:
                    break
                ends_by_window[window].add(end)
    _headcounts(session, org_id, sorted(set().union(*ends_by_window.values())))
    _prepare_keys(session, org_id, ends_by_window)
    for window, ends in ends_by_window.items():
        session.execute(delete(C).where(C.c.org_id == org_id, C.c.window == window, C.c.iso_week.in_(sorted(ends))))
    now = utcnow()
    cells = _insert_cells(session, org_id, now)
    _drop(session, BUILD_HEADCOUNTS, BUILD_LINES, BUILD_SPANS, BUILD_ATTRS, BUILD_ENDS, BUILD_PERIOD_WEEKS, BUILD_WEEKS,
          BUILD_PEOPLE, BUILD_BLOCK_WEEKS, BUILD_RUNS,
          BUILD_TREE, BUILD_CLOSURE, BUILD_LINE_HEADCOUNTS, MOVED_PERIODS, *(table for table, _ in UNITS.values()))
    for row in dirty_rows:
        if row.iso_week in target:
            session.delete(row)
    activity.report_settings(session).last_built_at = now
    session.flush()
    return BuildResult(target, sum(len(e) for e in ends_by_window.values()), cells)


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


def _line_ancestors(session: Session, window: int, week: str) -> Callable[[str], list[str]]:
    """Manager -> the lines that contain their reports in the period: their own and every
    line above it, through the period's tree (each line's latest recorded parent), as the
    build's closure does."""
    end = activity.week_number(week)
    parent: dict[str, str | None] = {}
    for line, parent_line in session.execute(
        select(ActivityLine.line, ActivityLine.parent_line)
        .where(ActivityLine.week_no.between(end - window + 1, end)).order_by(ActivityLine.week_no)
    ):
        parent[line] = parent_line
    cache: dict[str, list[str]] = {}

    def ancestors(manager: str) -> list[str]:
        if manager not in cache:
            chain, current = [], manager
            while current is not None and current not in chain and len(chain) <= activity.MAX_CHAIN:
                chain.append(current)
                current = parent.get(current)
            cache[manager] = chain
        return cache[manager]

    return ancestors


def member_sets(session: Session, window: int, week: str, wanted: Callable[[str], bool]) -> dict[tuple[str, str, str], set[str]]:
    """(group kind, group key, member set) -> pseudonyms, for the period's cells, derived from
    the weekly summaries: ``all`` (participants), ``pulse`` (respondents), ``score:N``,
    ``topic:<name>``; only the sets ``wanted`` accepts. For the anonymity engine only."""
    end = activity.week_number(week)
    ancestors = _line_ancestors(session, window, week)
    out: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    R = ReportPersonWeek
    rows = session.execute(
        select(R.pseudonym, R.department, R.team, R.manager, R.pulse_answers, R.score_1, R.score_2, R.score_3,
               R.score_4, R.score_5, R.topics)
        .where(R.week_no.between(end - window + 1, end))
    )
    for who, dept, team, manager, answers, *scores, topics in rows:
        names = ["all"]
        if answers:
            names.append("pulse")
        names += [f"score:{n}" for n, count in enumerate(scores, start=1) if count]
        names += [f"topic:{t}" for t in json.loads(topics or "[]") if t is not None]
        names = [n for n in names if wanted(n)]
        if not names:
            continue
        groups = [("org", ""), ("department", dept)]
        if team:
            groups.append(("team", f"{dept}/{team}"))
        if manager:
            groups += [("line", line) for line in ancestors(manager)]
        for kind, key in groups:
            for name in names:
                out[(kind, key, name)].add(who)
    return out


def _load(session: Session, window: int, week: str, member_set: str, bucket_prefix: str | None):
    """The period's cells and, per (cell id, member set), its members."""
    cells = session.scalars(select(ReportCell).where(ReportCell.window == window, ReportCell.iso_week == week)).all()
    members: dict[tuple[int, str], set[str]] = {}
    if not cells:
        return cells, members
    sets = member_sets(session, window, week, lambda n: n == member_set or bool(bucket_prefix and n.startswith(bucket_prefix)))
    by_group = {(c.group_kind, c.group_key): c.id for c in cells}
    for (kind, key, name), who in sets.items():
        cell_id = by_group.get((kind, key))
        if cell_id is not None:
            members[(cell_id, name)] = who
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
    cur_cells, cur_members = _load(session, window, week, member_set, bucket_prefix)
    prev_cells, prev_members = _load(session, window, prev_week, member_set, bucket_prefix)
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
