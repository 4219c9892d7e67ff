"""Benchmark: the product's report build against one hand-written GROUP BY, in PostgreSQL.

    .venv/bin/python bench/reports.py [--events 1000000] [--employees 20000] [--weeks 52]
                                      [--pg-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres]
                                      [--everyone-every-week]

The issue's figure is --events 10000000. Creates (and afterwards drops) its own database
(``bench._support.prepare_database``), migrates it, and generates set-based in SQL
(``generate_series``) an organisation with --employees employees (40 departments, 400 teams,
a manager tree with fan-out 8) and --events activity events spread over --weeks ISO weeks,
recorded as the product records them (pseudonyms are the product's HMACs, each event
carries its direct manager, each week its reporting-line tree). Then, in one run:
  1. full rebuild: ``shared.domain.reports.build`` over every week, what
     ``wellbeing reports build`` runs: one pass over the events into per-person weekly
     summaries, then every cell (organisation, departments, teams, every manager's whole
     line; each week and the 4- and 12-week windows ending with it) and the headcounts;
  2. baseline: one hand-written ``GROUP BY iso_week, department, team`` over the same
     table computing the same measures (distinct participants, deliveries, clicks,
     respondents, pulse sum, readers, enrolments, completions);
  3. incremental: one new week of events (events / weeks) is added and ``build()`` run
     with no arguments (only the dirty week and the windows containing it).
Prints the seconds of each and the ratios full/baseline (target within 2x) and
incremental/full (target under 10%).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from bench._support import prepare_database  # noqa: E402

BASELINE = """
SELECT iso_week, department, team,
       COUNT(DISTINCT pseudonym),
       COUNT(DISTINCT CASE WHEN kind = 'digest_delivered' THEN pseudonym END),
       COUNT(DISTINCT CASE WHEN kind = 'digest_clicked' THEN pseudonym END),
       COUNT(DISTINCT CASE WHEN kind = 'pulse_answered' THEN pseudonym END),
       SUM(CASE WHEN kind = 'pulse_answered' THEN score ELSE 0 END),
       COUNT(DISTINCT CASE WHEN kind = 'article_read' THEN pseudonym END),
       COUNT(DISTINCT CASE WHEN kind = 'program_enrolled' THEN pseudonym END),
       COUNT(DISTINCT CASE WHEN kind = 'program_completed' THEN pseudonym END)
FROM activity_events WHERE org_id = :org
GROUP BY iso_week, department, team
"""

# kind by g % 20: mostly deliveries, clicks, reads and pulse answers
KIND_CASE = """CASE
  WHEN g % 20 < 6 THEN 'digest_delivered' WHEN g % 20 < 9 THEN 'digest_clicked'
  WHEN g % 20 < 13 THEN 'article_read' WHEN g % 20 < 17 THEN 'pulse_answered'
  WHEN g % 20 < 18 THEN 'program_enrolled' WHEN g % 20 < 19 THEN 'session_attended'
  ELSE 'program_completed' END"""


def generate_people(connection, org_id: int, employees: int, weeks: int) -> None:  # noqa: ANN001
    """Employees, their manager tree, pseudonyms, the weeks and each week's line tree."""
    from shared.domain.activity import week_number
    from shared.domain.digest_schedule import iso_week_of

    connection.execute(text("""
        INSERT INTO employees (org_id, external_id, email, first_name, last_name, department, team, analytics_consent,
                               digest_topics, created_at)
        SELECT :org, 'E' || i, 'e' || i || '@bench.example', 'F', 'L' || i, 'Dept' || (i % 40), 'Team' || (i % 400), true,
               '[]', now() - interval '2 years'
        FROM generate_series(0, :n - 1) AS i
    """), {"org": org_id, "n": employees})
    connection.execute(text("""
        CREATE TABLE bench_people AS
        SELECT CAST(substr(external_id, 2) AS int) AS idx, id AS emp_id, department, team, CAST('' AS varchar(64)) AS pseudonym
        FROM employees WHERE org_id = :org
    """), {"org": org_id})
    connection.execute(text("ALTER TABLE bench_people ADD PRIMARY KEY (idx)"))
    connection.execute(text("""
        UPDATE employees SET manager_id = m.emp_id
        FROM bench_people p JOIN bench_people m ON m.idx = (p.idx - 1) / 8
        WHERE employees.id = p.emp_id AND p.idx > 0
    """))
    return_key = connection.execute(text("SELECT key FROM analytics_keys WHERE org_id = :org"), {"org": org_id}).scalar()
    import hashlib
    import hmac

    ids = [r[0] for r in connection.execute(text("SELECT emp_id FROM bench_people"))]
    connection.execute(text("CREATE TEMPORARY TABLE bench_pseudonyms (emp_id int PRIMARY KEY, pseudonym varchar(64))"))
    connection.execute(text("INSERT INTO bench_pseudonyms VALUES (:e, :p)"),
                       [{"e": e, "p": hmac.new(return_key, str(e).encode(), hashlib.sha256).hexdigest()} for e in ids])
    connection.execute(text("UPDATE bench_people SET pseudonym = b.pseudonym FROM bench_pseudonyms b WHERE b.emp_id = bench_people.emp_id"))
    connection.execute(text("""
        ALTER TABLE bench_people ADD COLUMN manager varchar(64) NOT NULL DEFAULT '';
        UPDATE bench_people SET manager = m.pseudonym FROM bench_people m WHERE m.idx = (bench_people.idx - 1) / 8 AND bench_people.idx > 0;
        CREATE TABLE bench_weeks (idx int PRIMARY KEY, iso_week varchar(8), week_no int, monday timestamptz);
    """))
    first_monday = date.fromisocalendar(2025, 40, 1)
    connection.execute(text("INSERT INTO bench_weeks VALUES (:i, :w, :n, :m)"), [
        {"i": i, "w": iso_week_of(first_monday + timedelta(weeks=i)), "n": week_number(iso_week_of(first_monday + timedelta(weeks=i))),
         "m": first_monday + timedelta(weeks=i)} for i in range(weeks + 1)])


# who and when event g is: by default person (g * 7919) % employees in week g % weeks, so
# each person is active in only 13 of 52 weeks; with --everyone-every-week, person
# g % employees in week (g / employees) % weeks, so everyone is active every week.
SPREADS = {
    False: ("(g * 7919) % :employees", "g % :weeks"),
    True: ("g % :employees", "(g / :employees) % :weeks"),
}


def generate_events(connection, org_id: int, first: int, count: int, week_offset: int, weeks: int, employees: int,  # noqa: ANN001
                    everyone_every_week: bool = False) -> None:
    person, week = SPREADS[everyone_every_week]
    connection.execute(text(f"""
        INSERT INTO activity_events (org_id, event_id, kind, occurred_at, iso_week, pseudonym, department, team, manager,
                                     score, article_id, program_id, topic, created_at)
        SELECT :org, 'b' || g, k.kind, w.monday + interval '10 hours', w.iso_week, p.pseudonym, p.department, p.team, p.manager,
               CASE WHEN k.kind = 'pulse_answered' THEN 1 + (g / 7) % 5 END, NULL,
               CASE WHEN k.kind LIKE 'program%' OR k.kind = 'session_attended' THEN 1 + g % 5 END,
               CASE WHEN k.kind = 'article_read' THEN 'topic' || (g % 12) END, now()
        FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
        CROSS JOIN LATERAL (SELECT {KIND_CASE} AS kind) k
        JOIN bench_weeks w ON w.idx = :week_offset + {week}
        JOIN bench_people p ON p.idx = {person}
    """), {"org": org_id, "first": first, "last": first + count - 1, "week_offset": week_offset, "weeks": weeks, "employees": employees})
    # each week's reporting-line tree, as recording those events leaves it
    connection.execute(text("""
        INSERT INTO activity_lines (org_id, iso_week, week_no, line, parent_line)
        SELECT :org, w.iso_week, w.week_no, m.pseudonym, NULLIF(m.manager, '')
        FROM bench_weeks w CROSS JOIN bench_people m
        WHERE w.idx BETWEEN :week_offset AND :week_offset + :weeks - 1
          AND EXISTS (SELECT 1 FROM bench_people r WHERE r.manager = m.pseudonym)
    """), {"org": org_id, "week_offset": week_offset, "weeks": weeks})


def without_indexes(connection, table: str):  # noqa: ANN001, ANN201
    """Drop ``table``'s secondary indexes and unique constraints for a bulk load; returns the
    statements that put them back (built in bulk afterwards, much faster than row by row)."""
    constraints = connection.execute(text("""
        SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid = CAST(:t AS regclass) AND contype = 'u'"""), {"t": table}).all()
    for name, _ in constraints:
        connection.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
    indexes = connection.execute(text("""
        SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t AND indexname NOT LIKE 'pk_%'"""), {"t": table}).all()
    for name, _ in indexes:
        connection.execute(text(f'DROP INDEX "{name}"'))
    return [*(d for _, d in indexes), *(f'ALTER TABLE {table} ADD CONSTRAINT "{n}" {d}' for n, d in constraints)]


def timed(label: str, run):  # noqa: ANN001, ANN201
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    print(f"{label}: {seconds:8.2f} s", flush=True)
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--employees", type=int, default=20_000)
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:55432/postgres")
    parser.add_argument("--everyone-every-week", action="store_true",
                        help="every person active every week (about 1 M weekly summaries instead of 280 k)")
    args = parser.parse_args(sys.argv[1:])

    from shared.db import Database
    from shared.domain import accounts, activity, reports

    with tempfile.TemporaryDirectory() as workdir:
        url, drop = prepare_database(args.pg_url, Path(workdir))
        try:
            db = Database(url)
            with db.session(unscoped=True) as s:
                org_id = accounts.create_organisation(s, "Bench Ltd", "hr@bench.example", "correct-horse-battery").id
            with db.session(org_id) as s:
                activity.analytics_key(s)
            print(f"setting up {args.employees} employees and {args.events:,} events over {args.weeks} weeks ...", flush=True)
            started = time.perf_counter()
            with db.engine.begin() as c:
                generate_people(c, org_id, args.employees, args.weeks)
                restore = without_indexes(c, "activity_events")
                generate_events(c, org_id, 1, args.events, 0, args.weeks, args.employees, args.everyone_every_week)
                for statement in restore:
                    c.execute(text(statement))
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("VACUUM ANALYZE"))
            print(f"  setup {time.perf_counter() - started:.1f} s", flush=True)

            with db.engine.connect() as c:
                weeks = [r[0] for r in c.execute(text("SELECT iso_week FROM bench_weeks WHERE idx < :n ORDER BY idx"), {"n": args.weeks})]

            def full_build():  # noqa: ANN202
                with db.session(org_id) as s:
                    return reports.build(s, weeks)

            def baseline():  # noqa: ANN202
                with db.engine.begin() as c:  # the same memory for sorts as the product's build
                    c.execute(text(f"SET LOCAL work_mem = '{reports.BUILD_WORK_MEM}'"))
                    return len(c.execute(text(BASELINE), {"org": org_id}).all())

            base_s, groups = timed("hand-written GROUP BY", baseline)
            print(f"  {groups} (week, team) groups")
            full_s, full = timed("full rebuild (product)", full_build)
            print(f"  {len(full.weeks)} weeks, {full.periods} periods, {full.cells} cells")
            base2_s, _ = timed("hand-written GROUP BY again", baseline)

            per_week = args.events // args.weeks
            with db.engine.begin() as c:
                generate_events(c, org_id, args.events + 1, per_week, args.weeks, 1, args.employees, args.everyone_every_week)
                new_week = c.execute(text("SELECT iso_week FROM bench_weeks WHERE idx = :i"), {"i": args.weeks}).scalar()
            with db.session(org_id) as s:
                activity.mark_dirty(s, [new_week])

            def incremental():  # noqa: ANN202
                with db.session(org_id) as s:
                    return reports.build(s)

            inc_s, inc = timed(f"incremental (1 new week, {per_week:,} events)", incremental)
            print(f"  {inc.periods} periods, {inc.cells} cells")
            with db.engine.connect() as c:
                summary = c.execute(text("SELECT count(*) FROM report_person_weeks")).scalar()
            print(f"report_person_weeks rows: {summary:,}")
            base_best = min(base_s, base2_s)
            print(f"ratio full/GROUP BY: {full_s / base_best:.2f}x (best of two baseline runs; target <= 2x)")
            print(f"ratio incremental/full: {inc_s / full_s * 100:.1f}% (target < 10%)")
            db.dispose()
        finally:
            drop()


if __name__ == "__main__":
    main()
