"""Benchmark: the product's employee CSV import against PostgreSQL COPY of the same rows.

    .venv/bin/python bench/import_employees.py [--rows 100000] [--pg-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres]

Creates (and afterwards drops) its own database on the server, generates an HRIS CSV
(managers included), then in one run:
  1. the product path: ``shared.domain.employee_import.import_employees`` in partial mode,
     streaming the file (validation, manager graph and cycle check, upsert, consents,
     audit events), exactly what ``wellbeing employees import`` runs;
  2. the baseline: ``COPY ... FROM STDIN (FORMAT csv)`` of the same file into a bare
     table with the same columns and no constraints;
  3. a re-import of the same file through the product (the idempotent no-op path);
  4. for reference, COPY into a table with employees' shape and indexes, and the
     import's own INSERT ... SELECT into employees alone (indexes and foreign keys, no
     validation, no audit): the floor of any import that writes the real table.
Prints rows/s of each, the ratio product/COPY and the peak memory of the product import
(the process's peak RSS during the import; with --tracemalloc also the peak of Python
allocations, at a large cost in speed).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


HEADER = "external_id,email,first_name,last_name,department,team,manager_external_id,timezone"
TIMEZONES = ["Europe/London", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER + "\r\n")
        for i in range(rows):
            manager = f"EMP{(i - 1) // 8:07d}" if i else ""
            out.write(f"EMP{i:07d},employee{i}@example.com,First{i},Last{i},Dept{i % 40},Team{i % 400},{manager},{TIMEZONES[i % 5]}\r\n")


def peak_rss_mb() -> float:
    """The process's peak resident memory (VmHWM) since the last reset_peak_rss()."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so the peak measured is the import's own
    (not, say, the argon2 hash of creating the organisation, which takes 64 MB)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class StatementTimer:
    """Time spent in each kind of SQL statement (its first words), to break the import down by phase."""

    def __init__(self, engine) -> None:  # noqa: ANN001
        from sqlalchemy import event

        self.totals: dict[str, float] = {}
        self._started: list[float] = []
        self.first_at: float | None = None
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *_args) -> None:  # noqa: ANN002
        now = time.perf_counter()
        self.first_at = self.first_at or now
        self._started.append(now)

    def _after(self, _conn, _cursor, statement: str, *_args) -> None:  # noqa: ANN001, ANN002
        words = " ".join(statement.split()[:6])
        for table in ("import_checked", "import_graph", "import_errors", "import_apply", "import_loop", "employees", "audit_events",
                      "employee_consents", "import_timezones", "import_rows"):
            if table in words:
                words = words[: words.index(table) + len(table)]
                break
        label = words if words.startswith(("CREATE", "INSERT", "UPDATE", "DELETE", "DROP")) else words.split(" ")[0] + " (queries)"
        self.totals[label] = self.totals.get(label, 0.0) + time.perf_counter() - self._started.pop()

    def reset(self) -> None:
        self.totals, self.first_at = {}, None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:55432/postgres"))
    parser.add_argument("--tracemalloc", action="store_true", help="Also trace Python allocations (slows the import several times)")
    args = parser.parse_args()

    from bench._support import prepare_database
    from shared.db import Database
    from shared.domain import accounts
    from shared.domain.employee_import import ImportOptions, import_employees
    from shared.models import ImportMode

    with tempfile.TemporaryDirectory() as tmp:
        url, drop = prepare_database(args.pg_url, Path(tmp))
        try:
            database = Database(url)
            with database.session(unscoped=True) as session:
                org_id = accounts.create_organisation(session, "Bench Ltd", "bench@example.com", "correct-horse-battery").id
                other_org_id = accounts.create_organisation(session, "Other Ltd", "other@example.com", "correct-horse-battery").id
            path = Path(tmp) / "hris.csv"
            write_csv(path, args.rows)
            size_mb = path.stat().st_size / 1e6
            print(f"rows: {args.rows:,}  file: {size_mb:.1f} MB  database: {url.rsplit('/', 1)[-1]}")
            timer = StatementTimer(database.engine)

            def run_import() -> tuple[float, float, object]:
                session = database.open(org_id)
                timer.reset()
                started = time.perf_counter()
                report = import_employees(session, lambda: path.open("rb"), ImportOptions(mode=ImportMode.PARTIAL), None, commit=session.commit)
                session.commit()
                elapsed = time.perf_counter() - started
                session.close()
                return elapsed, (timer.first_at or started) - started, report

            # ---- product import --------------------------------------------------------
            reset_peak_rss()
            rss_before = peak_rss_mb()
            if args.tracemalloc:
                tracemalloc.start()
            product_s, _, report = run_import()
            phases = dict(timer.totals)
            traced_peak = tracemalloc.get_traced_memory()[1] / 1e6 if args.tracemalloc else float("nan")
            if args.tracemalloc:
                tracemalloc.stop()
            rss_peak = peak_rss_mb()
            assert report.created == args.rows and report.error_rows == 0, report

            # ---- re-import (no-op) ----------------------------------------------------
            reimport_s, _, again = run_import()
            reimport_phases = dict(timer.totals)
            assert again.unchanged == args.rows and again.updated == 0, again
            timer.reset()

            # ---- baseline: COPY into a bare table ---------------------------------------
            raw = database.engine.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute(
                    "CREATE TABLE bare_employees (external_id text, email text, first_name text, last_name text,"
                    " department text, team text, manager_external_id text, timezone text)"
                )
                raw.commit()
                started = time.perf_counter()
                with cursor.copy("COPY bare_employees FROM STDIN WITH (FORMAT csv, HEADER true)") as copy, path.open("rb") as source:
                    while block := source.read(1 << 20):
                        copy.write(block)
                raw.commit()
                copy_s = time.perf_counter() - started
                cursor.execute("SELECT count(*) FROM bare_employees")
                assert cursor.fetchone()[0] == args.rows
                # Reference: COPY into a table shaped like employees, with its indexes and
                # unique constraints (no FK, no validation, no audit): where the time goes.
                cursor.execute("CREATE TABLE indexed_employees (LIKE employees INCLUDING DEFAULTS INCLUDING INDEXES INCLUDING CONSTRAINTS)")
                cursor.execute(f"ALTER TABLE indexed_employees ALTER COLUMN org_id SET DEFAULT {org_id}, ALTER COLUMN digest_topics SET DEFAULT '[]'")
                raw.commit()
                started = time.perf_counter()
                columns = "external_id, email, first_name, last_name, department, team, manager_external_id, timezone"
                with cursor.copy(f"COPY indexed_employees ({columns}) FROM STDIN WITH (FORMAT csv, HEADER true)") as copy, path.open("rb") as source:
                    while block := source.read(1 << 20):
                        copy.write(block)
                raw.commit()
                indexed_s = time.perf_counter() - started
                # Reference: the import's write into employees alone, the same INSERT ... SELECT
                # from already checked rows (ids drawn, managers joined) into another
                # organisation: indexes and foreign-key triggers, no validation, no audit.
                cursor.execute("CREATE TEMP TABLE written AS SELECT nextval(pg_get_serial_sequence('employees', 'id')) AS id, b.*"
                               " FROM bare_employees b")
                cursor.execute("ANALYZE written")
                raw.commit()
                started = time.perf_counter()
                cursor.execute("SET LOCAL jit = off")  # the import's own settings
                cursor.execute("SET LOCAL work_mem = '64MB'")
                cursor.execute(
                    "INSERT INTO employees (id, org_id, external_id, email, first_name, last_name, department, team, manager_external_id,"
                    " manager_id, timezone, locale, status, digest_consent, digest_topics, created_at, updated_at)"
                    " SELECT w.id, %s, w.external_id, w.email, w.first_name, w.last_name, w.department, w.team, w.manager_external_id,"
                    " m.id, w.timezone, '', 'active', TRUE, '[]', now(), now() FROM written w LEFT JOIN written m ON m.external_id = w.manager_external_id",
                    (other_org_id,),
                )
                raw.commit()
                employees_s = time.perf_counter() - started
            finally:
                raw.close()
            database.dispose()
        finally:
            drop()

    product_rate, copy_rate, reimport_rate = args.rows / product_s, args.rows / copy_s, args.rows / reimport_s
    print(f"product import : {product_s:8.2f} s  {product_rate:10,.0f} rows/s  (validate + upsert + consents + audit + managers)")
    print(f"re-import no-op: {reimport_s:8.2f} s  {reimport_rate:10,.0f} rows/s")
    print(f"COPY baseline  : {copy_s:8.2f} s  {copy_rate:10,.0f} rows/s  (bare table, no constraints)")
    print(f"COPY, indexed  : {indexed_s:8.2f} s  {args.rows / indexed_s:10,.0f} rows/s  (employees' shape and indexes, nothing else)")
    print(f"INSERT employees: {employees_s:8.2f} s  {args.rows / employees_s:10,.0f} rows/s  (the import's write into employees alone:"
          f" {copy_s / employees_s:.1%} of COPY's rate)")
    print(f"ratio product/COPY: {product_rate / copy_rate:.1%}  (target >= 25%)")
    for title, total_s, by_statement in (("product import", product_s, phases), ("re-import", reimport_s, reimport_phases)):
        print(f"{title} by phase (SQL statements as timed by the driver):")
        for label, seconds in sorted(by_statement.items(), key=lambda item: -item[1]):
            if seconds >= 0.005:
                print(f"  {seconds:7.3f} s  {label}")
        print(f"  {total_s - sum(by_statement.values()):7.3f} s  staging (COPY of the raw file, header, newline count) and Python between statements")
    print(f"peak memory of the product import: process peak RSS {rss_peak:.1f} MB (at its start {rss_before:.1f} MB); "
          f"tracemalloc peak {traced_peak:.1f} MB  (target < 300 MB for 1,000,000 rows)")


if __name__ == "__main__":
    main()
