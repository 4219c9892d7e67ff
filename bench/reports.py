"""Benchmark: the product's report build against one hand-written GROUP BY, in PostgreSQL.

    .venv/bin/python bench/reports.py [--events 1000000] [--employees 20000] [--weeks 52]
                                      [--pg-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres]

The issue's figure is --events 10000000. Creates (and afterwards drops) its own database,
migrates it, adds an organisation with --employees employees (40 departments, 400 teams, a
manager tree with fan-out 8), and generates --events activity events spread over --weeks
ISO weeks in SQL (pseudonyms are the product's HMACs, manager chains as the product
records them). Then, in one run:
  1. full rebuild: ``shared.domain.reports.build`` over every week (each week, and the 4-
     and 12-week windows ending with it; org, departments, teams and every manager's whole
     line; measures and member sets), what ``wellbeing reports build`` runs;
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
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, insert, text  # noqa: E402

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


def generate_events(connection, org_id: int, first: int, count: int, week_offset: int, weeks: int, employees: int) -> None:  # noqa: ANN001
    connection.execute(text(f"""
        INSERT INTO activity_events (org_id, event_id, kind, occurred_at, iso_week, pseudonym, department, team,
                                     score, article_id, program_id, topic, created_at)
        SELECT :org, 'b' || g, k.kind, w.monday + interval '10 hours', w.iso_week, p.pseudonym, p.department, p.team,
               CASE WHEN k.kind = 'pulse_answered' THEN 1 + (g / 7) % 5 END, NULL,
               CASE WHEN k.kind LIKE 'program%' OR k.kind = 'session_attended' THEN 1 + g % 5 END,
               CASE WHEN k.kind = 'article_read' THEN 'topic' || (g % 12) END, now()
        FROM generate_series(:first, :last) AS g
        CROSS JOIN LATERAL (SELECT {KIND_CASE} AS kind) k
        JOIN bench_weeks w ON w.idx = :week_offset + (g % :weeks)
        JOIN bench_people p ON p.idx = (g * 7919) % :employees
    """), {"org": org_id, "first": first, "last": first + count - 1, "week_offset": week_offset, "weeks": weeks, "employees": employees})
    connection.execute(text("""
        INSERT INTO activity_lines (org_id, event_pk, line, depth, iso_week, parent_line)
        SELECT e.org_id, e.id, c.line, c.depth, e.iso_week, c.parent_line
        FROM activity_events e JOIN bench_people p ON p.pseudonym = e.pseudonym JOIN bench_chain c ON c.emp_id = p.emp_id
        WHERE e.org_id = :org AND e.event_id IN (SELECT 'b' || g FROM generate_series(:first, :last) g)
    """), {"org": org_id, "first": first, "last": first + count - 1})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--employees", type=int, default=20_000)
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:55432/postgres")
    args = parser.parse_args(sys.argv[1:])

    from shared.db import Database
    from shared.domain import accounts, activity, reports
    from shared.domain.digest_schedule import iso_week_of
    from shared.migrate import upgrade
    from shared.models import Employee

    name = f"wellbeing_bench_reports_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.pg_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        db = Database(url)
        with db.session(unscoped=True) as s:
            org = accounts.create_organisation(s, "Bench Ltd", "hr@bench.example", "correct-horse-battery")
            org_id = org.id
        print(f"setting up {args.employees} employees and {args.events:,} events over {args.weeks} weeks ...", flush=True)
        started = time.perf_counter()
        n = args.employees
        with db.session(org_id) as s:
            rows = [{"org_id": org_id, "external_id": f"E{i}", "email": f"e{i}@bench.example", "first_name": "F", "last_name": f"L{i}",
                     "department": f"Dept{i % 40}", "team": f"Team{i % 400}", "analytics_consent": True} for i in range(n)]
            s.execute(insert(Employee), rows)
            ids = [r[0] for r in s.execute(text("SELECT id FROM employees WHERE org_id = :o ORDER BY id"), {"o": org_id})]
            manager = {ids[i]: (ids[(i - 1) // 8] if i else None) for i in range(n)}
            s.execute(text("CREATE TABLE bench_people (idx int primary key, emp_id int, pseudonym varchar(64), department varchar(100), team varchar(100))"))
            s.execute(text("CREATE TABLE bench_chain (emp_id int, line varchar(64), depth int, parent_line varchar(64))"))
            s.execute(text("CREATE TABLE bench_weeks (idx int primary key, iso_week varchar(8), monday timestamptz)"))
            s.execute(text("UPDATE employees SET manager_id = m.manager FROM (SELECT unnest(CAST(:e AS int[])) AS id, unnest(CAST(:m AS int[])) AS manager) m WHERE employees.id = m.id"),
                      {"e": list(manager), "m": [manager[e] for e in manager]})
            pseudo = {e: activity.pseudonym(s, e) for e in ids}
            s.execute(text("INSERT INTO bench_people VALUES (:idx, :emp_id, :p, :d, :t)"),
                      [{"idx": i, "emp_id": e, "p": pseudo[e], "d": f"Dept{i % 40}", "t": f"Team{i % 400}"} for i, e in enumerate(ids)])
            chain_rows = []
            for e in ids:
                chain, current = [], manager[e]
                while current is not None:
                    chain.append(pseudo[current])
                    current = manager[current]
                for depth, line in enumerate(chain, start=1):
                    chain_rows.append({"e": e, "l": line, "d": depth, "p": chain[depth] if depth < len(chain) else None})
            s.execute(text("INSERT INTO bench_chain VALUES (:e, :l, :d, :p)"), chain_rows)
            first_monday = date.fromisocalendar(2025, 40, 1)
            s.execute(text("INSERT INTO bench_weeks VALUES (:i, :w, :m)"),
                      [{"i": i, "w": iso_week_of(first_monday + timedelta(weeks=i)), "m": first_monday + timedelta(weeks=i)} for i in range(args.weeks + 1)])
        with db.engine.begin() as c:
            generate_events(c, org_id, 1, args.events, 0, args.weeks, n)
        with db.engine.begin() as c:
            c.execute(text("ANALYZE"))
        print(f"  setup {time.perf_counter() - started:.1f} s", flush=True)

        with db.session(org_id) as s:
            weeks = [r[0] for r in s.execute(text("SELECT DISTINCT iso_week FROM activity_events ORDER BY 1"))]
            s.execute(text("DELETE FROM report_dirty_weeks"))
        started = time.perf_counter()
        with db.session(org_id) as s:
            full = reports.build(s, weeks)
        full_s = time.perf_counter() - started
        print(f"full rebuild (product): {full_s:8.2f} s  {len(full.weeks)} weeks, {full.periods} periods, {full.cells} cells", flush=True)

        started = time.perf_counter()
        with db.engine.connect() as c:
            groups = len(c.execute(text(BASELINE), {"org": org_id}).all())
        base_s = time.perf_counter() - started
        print(f"hand-written GROUP BY:  {base_s:8.2f} s  {groups} (week, team) groups", flush=True)

        per_week = args.events // args.weeks
        with db.engine.begin() as c:
            generate_events(c, org_id, args.events + 1, per_week, args.weeks, 1, n)
            new_week = c.execute(text("SELECT iso_week FROM bench_weeks WHERE idx = :i"), {"i": args.weeks}).scalar()
        with db.session(org_id) as s:
            activity.mark_dirty(s, [new_week])
        started = time.perf_counter()
        with db.session(org_id) as s:
            inc = reports.build(s)
        inc_s = time.perf_counter() - started
        print(f"incremental (1 new week, {per_week:,} events): {inc_s:8.2f} s  {inc.periods} periods, {inc.cells} cells", flush=True)
        print(f"ratio full/GROUP BY: {full_s / base_s:.2f}x (target <= 2x)")
        print(f"ratio incremental/full: {inc_s / full_s * 100:.1f}% (target < 10%)")
        with db.engine.connect() as c:
            members = c.execute(text("SELECT count(*) FROM report_cell_members")).scalar()
        print(f"report_cell_members rows: {members:,}")
        db.dispose()
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
