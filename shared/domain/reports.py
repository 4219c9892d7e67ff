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

from sqlalchemy import delete, func, select, text
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
    """The JSON list of a person-week's topics, from rows already distinct per topic (the
    inner GROUP BY of ``_summarise``): no DISTINCT aggregate, so the database can hash.
    On PostgreSQL the list is concatenated by ``report_topic_list`` (migration 0012), whose
    state is text: for ``json_agg``'s internal state the planner counts about 8 kB per
    group and split the summary's GROUP BY into batches on disk. Same text as json_agg's."""
    if session.get_bind().dialect.name == "postgresql":
        return "'[' || SUBSTR(report_topic_list(', ' || CAST(to_json(read_topic) AS TEXT)), 3) || ']'"
    return "json_group_array(read_topic) FILTER (WHERE read_topic IS NOT NULL)"


def _count(condition: str) -> str:
    """Events meeting ``condition``, over rows that each stand for ``n`` alike events."""
    return f"SUM(CASE WHEN {condition} THEN n ELSE 0 END)"


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
    table, params = _week_rows(with_events)
    measures = [
        _count("kind = 'digest_delivered'"), _count("kind = 'digest_clicked'"), _count("kind = 'article_read'"),
        _count("kind = 'pulse_answered'"), "SUM(CASE WHEN kind = 'pulse_answered' THEN pulse_score * n ELSE 0 END)",
        *[_count(f"pulse_score = {n}") for n in range(1, 6)],
        _count("kind = 'program_enrolled'"), _count("kind = 'session_attended'"), _count("kind = 'program_completed'"),
    ]
    # Two GROUP BYs: the events counted per person, week, group attributes, kind, pulse score
    # and topic read (one aggregate per event, and a hash table instead of a sort of every
    # event), then those few rows per person-week folded into its measures and its
    # distinct topics (one row per topic already, so no DISTINCT aggregate).
    keys = "org_id, iso_week, pseudonym, department, team, manager"
    pulse_score = "CASE WHEN e.kind = 'pulse_answered' THEN e.score END"
    read_topic = "CASE WHEN e.kind = 'article_read' THEN e.topic END"
    weeks_in = ", ".join(f":w{i}" for i in range(len(with_events)))
    if _is_postgresql(session):
        # its per person-week GROUP BY holds about 600 bytes per group (1 M groups with everyone
        # active every week): hashed in memory instead of in batches spilled to disk
        session.execute(text(f"SET LOCAL hash_mem_multiplier = {SUMMARY_HASH_MEM_MULTIPLIER}"))
    written = session.execute(text(f"""
        INSERT INTO report_person_weeks ({keys}, week_no, {', '.join(SUMMARY_COLUMNS)}, topics)
        SELECT {', '.join(f'k.{c}' for c in keys.split(', '))}, t.week_no, {', '.join(measures)}, {_topics_aggregate(session)}
        FROM (
            SELECT {', '.join(f'e.{c}' for c in keys.split(', '))}, e.kind, {pulse_score} AS pulse_score,
                   {read_topic} AS read_topic, CAST(COUNT(*) AS INTEGER) AS n
            FROM activity_events e
            WHERE e.org_id = :org AND e.iso_week IN ({weeks_in})
            GROUP BY {', '.join(f'e.{c}' for c in keys.split(', '))}, e.kind, {pulse_score}, {read_topic}
        ) k JOIN {table} t ON t.iso_week = k.iso_week
        GROUP BY {', '.join(f'k.{c}' for c in keys.split(', '))}, t.week_no
    """), {"org": org_id, **params}).rowcount
    if _is_postgresql(session):
        session.execute(text("RESET hash_mem_multiplier"))
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
                out.append((week, kind, key, running))
    # the cells take their headcounts from this build's copy (no organisation column, local
    # buffers); indexed, because the planner expects one row from the cells' nested GROUP BYs
    # and joins them with a nested loop
    columns = ("iso_week", "group_kind", "group_key", "headcount")
    _temporary_table(session, BUILD_HEADCOUNTS, "iso_week VARCHAR(8), group_kind VARCHAR(12), group_key VARCHAR(201), headcount INTEGER")
    _bulk_insert(session, BUILD_HEADCOUNTS, columns, out)
    session.execute(text(f"INSERT INTO {HC.name} (org_id, {', '.join(columns)}) SELECT :org, {', '.join(columns)} FROM {BUILD_HEADCOUNTS}"),
                    {"org": org_id})
    session.execute(text(f"CREATE UNIQUE INDEX ix_{BUILD_HEADCOUNTS} ON {BUILD_HEADCOUNTS} (group_kind, iso_week, group_key)"))
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
# replaced by integer keys once per build, so the window folds and the line closure group
# and join on integers instead of 64-character strings:
#   BUILD_HEADCOUNTS  the headcounts of the build's period ends (as written to report_headcounts);
#   BUILD_LINES  every reporting line (a manager's pseudonym) -> lid;
#   BUILD_SPANS  each line's spans of weeks under one parent (first and last week recorded);
#   BUILD_ATTRS  every combination of group attributes (department, team, manager) -> aid,
#                with integer keys of its parts: did (department), tid (team within its
#                department; none for no team) and the manager's lid (mid);
#   BUILD_WEEKS  the weekly summaries of the build's weeks keyed (week, person, did, tid,
#                mid), flags for "did it at all", sums otherwise: the rows of the one-week
#                periods, keyed by period end like the folds. ``moved`` marks the people
#                with more than one combination of group attributes in the build's weeks
#                (they changed team or manager): their rows are folded per group, everybody
#                else's are added up directly.
# Per window: the period ends and the rows each one is folded from; one row per (period end,
# person, did, tid, mid) with what the person did in the period; the period's reporting-line
# tree (each line's latest recorded parent) and its closure (line -> itself and every line
# above it). A window's rows are folded from those of the next smaller window (12 weeks
# from three 4-week folds, not from twelve weeks), kept in WINDOW_FOLDS until the next
# window is built.
BUILD_HEADCOUNTS = "report_build_headcounts"
BUILD_LINES = "report_build_lines"
BUILD_SPANS = "report_build_spans"
BUILD_ATTRS = "report_build_attrs"
BUILD_WEEKS = "report_build_weeks"
WINDOW_ENDS = "report_window_ends"
WINDOW_SPAN = "report_window_span"
WINDOW_PEOPLE = "report_window_people"
WINDOW_FOLDS = "report_window_folds"
WINDOW_TREE = "report_window_tree"
WINDOW_CLOSURE = "report_window_closure"
FLAGS = ("delivered", "clicked", "reads", "pulse_answers", "enrolments", "completions")
SUMS = ("pulse_sum", "attendances")
CELL_MEASURES = {  # report_cells column -> how it comes out of rows with one person each
    "participants": "COUNT(*)", "delivered": "SUM(delivered)", "clicked": "SUM(clicked)",
    "respondents": "SUM(pulse_answers)", "pulse_sum": "SUM(pulse_sum)", "pulse_answers": "SUM(answers)",
    "readers": "SUM(reads)", "enrolments": "SUM(enrolments)", "attendances": "SUM(attendances)",
    "completions": "SUM(completions)",
}
MEASURE_COLUMNS = ", ".join(f"{c} INTEGER" for c in (*FLAGS, *SUMS, "answers"))
PERIOD_ROWS = f"end_no INTEGER, pid INTEGER, did INTEGER, tid INTEGER, mid INTEGER, {MEASURE_COLUMNS}, moved INTEGER"
assert all(larger % smaller == 0 for smaller, larger in zip(WINDOWS, WINDOWS[1:])), "each window folds the smaller one"


def _fold(prefix: str = "") -> str:
    """One person's rows folded into one: any flag set, sums added."""
    return ", ".join([*(f"MAX({prefix}{f}) AS {f}" for f in FLAGS), *(f"SUM({prefix}{s}) AS {s}" for s in SUMS),
                      f"SUM({prefix}answers) AS answers"])


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


def _prepare_keys(session: Session, org_id: int, first_week: int, last_week: int) -> None:
    """BUILD_LINES, BUILD_SPANS, BUILD_ATTRS and BUILD_WEEKS for the summaries of weeks ``first_week`` to
    ``last_week`` (week numbers)."""
    params = {"org": org_id, "first": first_week, "last": last_week}
    in_range = "s.org_id = :org AND s.week_no BETWEEN :first AND :last"
    # the line trees of the build's weeks only: a period's tree comes from its own weeks, and
    # every period the build makes lies within them (spans are clipped to them, which keeps
    # each week's latest parent)
    lines_in_range = "a.org_id = :org AND a.week_no BETWEEN :first AND :last"
    _temporary_table(session, BUILD_ATTRS, "aid INTEGER PRIMARY KEY, department VARCHAR(100), team VARCHAR(100), "
                     "manager VARCHAR(64), did INTEGER, tid INTEGER, mid INTEGER")
    session.execute(text(f"""
        INSERT INTO {BUILD_ATTRS}
        SELECT ROW_NUMBER() OVER (ORDER BY a.department, a.team, a.manager), a.department, a.team, a.manager,
               DENSE_RANK() OVER (ORDER BY a.department),
               CASE WHEN a.team <> '' THEN DENSE_RANK() OVER (ORDER BY a.department, a.team) END, NULL
        FROM (SELECT DISTINCT s.department, s.team, s.manager FROM report_person_weeks s WHERE {in_range}) a
    """), params)
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
    _analyze(session, BUILD_LINES, BUILD_SPANS, BUILD_ATTRS)
    _temporary_table(session, BUILD_WEEKS, PERIOD_ROWS)
    flags = ", ".join(f"CASE WHEN s.{f} > 0 THEN 1 ELSE 0 END" for f in FLAGS)
    person = "PARTITION BY s.pseudonym"
    session.execute(text(f"""
        INSERT INTO {BUILD_WEEKS}
        SELECT s.week_no, DENSE_RANK() OVER (ORDER BY s.pseudonym), a.did, a.tid, a.mid, {flags}, s.pulse_sum, s.attendances,
               s.pulse_answers,
               CASE WHEN MIN(a.aid) OVER ({person}) = MAX(a.aid) OVER ({person}) THEN 0 ELSE 1 END
        FROM report_person_weeks s
        JOIN {BUILD_ATTRS} a ON a.department = s.department AND a.team = s.team AND a.manager = s.manager
        WHERE {in_range}
    """), params)
    _analyze(session, BUILD_WEEKS)


def _fill_window(session: Session, window: int, ends: Sequence[str], fold_ends: Iterable[int]) -> None:
    """WINDOW_ENDS (``ends``) and WINDOW_PEOPLE: the rows of the periods ending with
    ``fold_ends`` (week numbers, ``ends`` among them), one per person and groups, folded from
    the rows of the next smaller window (weekly rows for a one-week window)."""
    _temporary_table(session, WINDOW_ENDS, "end_no INTEGER PRIMARY KEY, end_week VARCHAR(8)")
    _bulk_insert(session, WINDOW_ENDS, ("end_no", "end_week"), [(activity.week_number(end), end) for end in ends])
    _temporary_table(session, WINDOW_PEOPLE, PERIOD_ROWS)
    if window == WINDOWS[0]:
        session.execute(text(f"""
            INSERT INTO {WINDOW_PEOPLE} SELECT * FROM {BUILD_WEEKS} WHERE end_no IN (SELECT end_no FROM {WINDOW_ENDS})
        """))
        return
    smaller = WINDOWS[WINDOWS.index(window) - 1]
    # each end with the ends of the smaller periods it is made of: the fold is an equi-join
    _temporary_table(session, WINDOW_SPAN, "end_no INTEGER, part_no INTEGER")
    _bulk_insert(session, WINDOW_SPAN, ("end_no", "part_no"),
                 [(n, n - i * smaller) for n in sorted(set(fold_ends)) for i in range(window // smaller)])
    _analyze(session, WINDOW_ENDS, WINDOW_SPAN)
    source = BUILD_WEEKS if smaller == 1 else WINDOW_FOLDS
    # a person who stayed in one group has one row per period: grouped by person alone (a
    # narrower key, and the planner's estimate of the groups is right, so it hashes)
    session.execute(text(f"""
        INSERT INTO {WINDOW_PEOPLE}
        SELECT w.end_no, b.pid, MAX(b.did), MAX(b.tid), MAX(b.mid), {_fold("b.")}, 0
        FROM {source} b JOIN {WINDOW_SPAN} w ON w.part_no = b.end_no
        WHERE b.moved = 0
        GROUP BY w.end_no, b.pid
        UNION ALL
        SELECT w.end_no, b.pid, b.did, b.tid, b.mid, {_fold("b.")}, 1
        FROM {source} b JOIN {WINDOW_SPAN} w ON w.part_no = b.end_no
        WHERE b.moved = 1
        GROUP BY w.end_no, b.pid, b.did, b.tid, b.mid
    """))
    _drop(session, WINDOW_SPAN)


def _window_lines(session: Session, window: int) -> None:
    """WINDOW_TREE and WINDOW_CLOSURE for the periods of WINDOW_ENDS."""
    # the tree from each line's spans of weeks under one parent (a few rows per line)
    _temporary_table(session, WINDOW_TREE, "end_no INTEGER, lid INTEGER, parent_lid INTEGER")
    session.execute(text(f"""
        INSERT INTO {WINDOW_TREE}
        SELECT end_no, lid, parent_lid FROM (
            SELECT t.end_no, s.lid, s.parent_lid,
                   ROW_NUMBER() OVER (PARTITION BY t.end_no, s.lid
                                      ORDER BY CASE WHEN s.last_week < t.end_no THEN s.last_week ELSE t.end_no END DESC) AS latest
            FROM {BUILD_SPANS} s JOIN {WINDOW_ENDS} t ON s.first_week <= t.end_no AND s.last_week >= t.end_no - :span
        ) ranked WHERE latest = 1
    """), {"span": window - 1})
    session.execute(text(f"CREATE INDEX ix_{WINDOW_TREE} ON {WINDOW_TREE} (end_no, lid)"))
    _analyze(session, WINDOW_ENDS, WINDOW_PEOPLE, WINDOW_TREE)
    _temporary_table(session, WINDOW_CLOSURE, "end_no INTEGER, lid INTEGER, ancestor INTEGER")
    session.execute(text(f"""
        WITH RECURSIVE closure (end_no, lid, ancestor, depth) AS (
            SELECT end_no, lid, lid, 0 FROM {WINDOW_TREE}
            UNION ALL
            SELECT c.end_no, c.lid, t.parent_lid, c.depth + 1
            FROM closure c JOIN {WINDOW_TREE} t ON t.end_no = c.end_no AND t.lid = c.ancestor
            WHERE t.parent_lid IS NOT NULL AND c.depth < :max_depth
        )
        INSERT INTO {WINDOW_CLOSURE} SELECT end_no, lid, ancestor FROM closure
    """), {"max_depth": activity.MAX_CHAIN})
    session.execute(text(f"CREATE INDEX ix_{WINDOW_CLOSURE} ON {WINDOW_CLOSURE} (end_no, lid)"))
    _analyze(session, WINDOW_CLOSURE)


CELL_INSERT = f"""
    INSERT INTO report_cells (org_id, "window", iso_week, group_kind, group_key, parent_key, headcount,
                              {{measures}}, built_at)
    SELECT :org, :window, e.end_week, :kind, g.group_key, g.parent_key, COALESCE(h.headcount, 0), {{measures}}, :now
    FROM ({{groups}}) g
    JOIN {WINDOW_ENDS} e ON e.end_no = g.end_no
    LEFT JOIN {BUILD_HEADCOUNTS} h ON h.iso_week = e.end_week AND h.group_kind = :kind AND h.group_key = g.group_key
    ORDER BY e.end_week, g.group_key
"""

# group kind -> (integer key a person is grouped by, its names, key, parent key)
TREE_GROUPS = {
    "org": ((), "", "''", "NULL"),
    "department": (("did",), f"JOIN (SELECT DISTINCT did, department FROM {BUILD_ATTRS}) n ON n.did = g.did",
                   "n.department", "''"),
    "team": (("tid",), f"JOIN (SELECT DISTINCT tid, department, team FROM {BUILD_ATTRS}) n ON n.tid = g.tid",
             "n.department || '/' || n.team", "n.department"),
}

# A manager's line adds up the lines below it (closure join on per-manager sums); people who
# changed manager or team (``moved``) are folded once per line they fall in.
LINE_CTES = f"""
WITH steady AS (
    SELECT p.end_no, p.mid, {{measures}}
    FROM {WINDOW_PEOPLE} p
    WHERE p.moved = 0 AND p.mid IS NOT NULL
    GROUP BY p.end_no, p.mid
), moved AS (
    SELECT end_no, ancestor, {{measures}} FROM (
        SELECT p.end_no, c.ancestor, p.pid, {{fold_p}}
        FROM {WINDOW_PEOPLE} p JOIN {WINDOW_CLOSURE} c ON c.end_no = p.end_no AND c.lid = p.mid
        WHERE p.moved = 1
        GROUP BY p.end_no, c.ancestor, p.pid
    ) x GROUP BY end_no, ancestor
), rolled AS (
    SELECT c.end_no, c.ancestor, {{rolled}}
    FROM steady s JOIN {WINDOW_CLOSURE} c ON c.end_no = s.end_no AND c.lid = s.mid
    GROUP BY c.end_no, c.ancestor
    UNION ALL
    SELECT * FROM moved
)
"""
LINE_GROUPS = f"""
SELECT lg.end_no, l.line AS group_key, pl.line AS parent_key, {{names}} FROM (
    SELECT r.end_no, r.ancestor, MAX(tr.parent_lid) AS parent_lid, {{rolled}}
    FROM rolled r LEFT JOIN {WINDOW_TREE} tr ON tr.end_no = r.end_no AND tr.lid = r.ancestor
    GROUP BY r.end_no, r.ancestor
) lg
JOIN {BUILD_LINES} l ON l.lid = lg.ancestor
LEFT JOIN {BUILD_LINES} pl ON pl.lid = lg.parent_lid
"""
TREE_GROUP = f"""
SELECT g.end_no, {{key}} AS group_key, {{parent}} AS parent_key, {{names}} FROM (
    SELECT end_no{{by}}, {{rolled}} FROM (
        SELECT p.end_no{{by_p}}, {{measures}}
        FROM {WINDOW_PEOPLE} p
        WHERE p.moved = 0 {{where}} GROUP BY p.end_no{{by_p}}
        UNION ALL
        SELECT end_no{{by}}, {{measures}} FROM (
            SELECT p.end_no, p.pid{{by_p}}, {{fold_p}}
            FROM {WINDOW_PEOPLE} p
            WHERE p.moved = 1 {{where}}
            GROUP BY p.end_no, p.pid{{by_p}}
        ) x GROUP BY end_no{{by}}
    ) u GROUP BY end_no{{by}}
) g {{join_names}}
"""


def _insert_cells(session: Session, org_id: int, window: int, ends: Sequence[str], fold_ends: Iterable[int],
                  now: datetime) -> int:
    """Every cell of ``window`` ending with each week of ``ends``, from the weekly summaries
    (BUILD_WEEKS); leaves the window's folds (ending with ``fold_ends``) in WINDOW_FOLDS.
    Rows of people who changed group are folded per group first, so each person counts once
    in every group they belonged to."""
    _fill_window(session, window, ends, fold_ends)
    _window_lines(session, window)
    measures = ", ".join(CELL_MEASURES)
    # every level casts its sums back to INTEGER: a sum of BIGINT sums is NUMERIC, whose
    # aggregation is several times slower and larger in memory
    per_group = ", ".join(f"CAST({expr} AS INTEGER) AS {name}" for name, expr in CELL_MEASURES.items())
    rolled = ", ".join(f"CAST(SUM({name}) AS INTEGER) AS {name}" for name in CELL_MEASURES)
    params = {"org": org_id, "window": window, "now": now}
    cells = 0
    names = ", ".join(f"g.{name}" for name in CELL_MEASURES)
    for kind, (columns, join_names, key, parent) in TREE_GROUPS.items():
        groups = TREE_GROUP.format(key=key, parent=parent, rolled=rolled, names=names, join_names=join_names,
                                   by="".join(f", {c}" for c in columns), by_p="".join(f", p.{c}" for c in columns),
                                   where="".join(f"AND p.{c} IS NOT NULL" for c in columns), measures=per_group,
                                   fold_p=_fold("p."))
        cells += session.execute(text(CELL_INSERT.format(measures=measures, groups=groups)), {**params, "kind": kind}).rowcount
    ctes = LINE_CTES.format(fold_p=_fold("p."), measures=per_group, rolled=rolled)
    # the CTEs go first: "WITH ... INSERT ... SELECT" is the form both dialects accept
    groups = LINE_GROUPS.format(rolled=rolled, names=", ".join(f"lg.{name}" for name in CELL_MEASURES))
    cells += session.execute(text(ctes + CELL_INSERT.format(measures=measures, groups=groups)), {**params, "kind": "line"}).rowcount
    _drop(session, WINDOW_ENDS, WINDOW_TREE, WINDOW_CLOSURE)
    session.execute(text(f"DROP TABLE IF EXISTS {WINDOW_FOLDS}"))
    session.execute(text(f"ALTER TABLE {WINDOW_PEOPLE} RENAME TO {WINDOW_FOLDS}"))
    return cells


def _fold_ends(ends_by_window: dict[int, set[str]]) -> dict[int, set[int]]:
    """Window -> the ends (week numbers) of its periods to fold: its own, and those the
    next larger window's periods are made of."""
    out: dict[int, set[int]] = {}
    parts: set[int] = set()
    for i in reversed(range(len(WINDOWS))):
        window, smaller = WINDOWS[i], WINDOWS[i - 1] if i else 1
        out[window] = {activity.week_number(end) for end in ends_by_window[window]} | parts
        parts = {n - j * smaller for n in out[window] for j in range(window // smaller)}
    return out


BUILD_WORK_MEM = "256MB"
SUMMARY_HASH_MEM_MULTIPLIER = 4  # of BUILD_WORK_MEM, for the summary pass only


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
    all_ends = set().union(*ends_by_window.values())
    _headcounts(session, org_id, sorted(all_ends))
    _prepare_keys(session, org_id, activity.week_number(min(all_ends)) - max(WINDOWS) + 1, activity.week_number(max(all_ends)))
    now = utcnow()
    cells = 0
    fold_ends = _fold_ends(ends_by_window)
    for window in WINDOWS:
        ends = sorted(ends_by_window[window])
        session.execute(delete(C).where(C.c.org_id == org_id, C.c.window == window, C.c.iso_week.in_(ends)))
        cells += _insert_cells(session, org_id, window, ends, fold_ends[window], now)
    _drop(session, BUILD_HEADCOUNTS, BUILD_LINES, BUILD_SPANS, BUILD_ATTRS, BUILD_WEEKS, WINDOW_FOLDS)
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
