"""HRIS CSV import of employees: the one implementation behind the API, the CLI and the Celery job.

Set-based. The file is streamed into a staging table on the session's own connection,
then validated and applied by a few SQL statements that run unchanged on PostgreSQL and
SQLite. Only the way rows reach the staging table differs:

* PostgreSQL, well-formed file: the raw bytes go straight to ``COPY ... FROM STDIN
  (FORMAT csv)``; Python only checks the header and counts newlines, so a row's line
  number is its position. Whatever COPY refuses or cannot number (a ragged row, bad
  UTF-8, a blank line, a newline inside a quoted cell) is rolled back to a savepoint and
  staged by the parsed path instead.
* Parsed path (SQLite always, PostgreSQL's fallback): Python's csv reader, one line at a
  time, rows sent in batches (COPY on PostgreSQL, executemany on SQLite).

Then, in SQL: per-row checks (required fields, lengths, email pattern, IANA timezone
against a table of ``zoneinfo`` names, opt-in flag, own manager); duplicates in the file;
emails taken by another employee; the manager graph (staged rows plus existing
employees): managers found nowhere, and cycles (a recursive walk down from the roots;
whatever it cannot reach hangs on a cycle), repeated until stable because a rejected row
falls back to the employee's current manager. Apply (skipped in dry-run, and in atomic
mode when anything was wrong): new employees in one INSERT ... SELECT, changed ones in
one UPDATE ... FROM, unchanged ones not touched at all (re-importing a file is a no-op),
consents and one audit event per created, changed or departed employee with INSERT ...
SELECT. Memory is a 1 MB read buffer (or one batch of parsed rows) and the kept errors.

Error messages never repeat the cell's value: the job row outlives an employee's erasure.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import BinaryIO

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from shared.db import UTCDateTime, utcnow
from shared.models import ImportMode, User

REQUIRED_COLUMNS = ("external_id", "email", "first_name", "last_name", "department", "team", "manager_external_id", "timezone")
OPTIONAL_COLUMNS = ("locale", "digest_opt_in")
REQUIRED_VALUES = ("external_id", "email", "first_name", "last_name")
MAX_LENGTHS = {
    "external_id": 64,
    "email": 254,
    "first_name": 100,
    "last_name": 100,
    "department": 100,
    "team": 100,
    "manager_external_id": 64,
    "timezone": 64,
    "locale": 16,
    "digest_opt_in": 5,
}
MAX_ERRORS_KEPT = 1000
BATCH_SIZE = 5000
TRUE_VALUES = frozenset({"1", "true", "yes", "y"})
FALSE_VALUES = frozenset({"0", "false", "no", "n"})

# Error kinds (stable strings: API clients match on them).
BAD_HEADER = "bad_header"
BAD_ENCODING = "bad_encoding"
BAD_ROW = "bad_row"
MISSING = "missing_required_field"
TOO_LONG = "over_long_field"
BAD_EMAIL = "bad_email"
BAD_TIMEZONE = "unknown_timezone"
BAD_VALUE = "bad_value"
DUPLICATE = "duplicate_in_file"
EMAIL_TAKEN = "email_taken"
MANAGER_NOT_FOUND = "manager_not_found"
MANAGER_CYCLE = "manager_cycle"

# The same pattern serves Python (re) and SQL (PostgreSQL ``~``, SQLite REGEXP).
EMAIL_PATTERN = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
_EMAIL = re.compile(EMAIL_PATTERN)
_EMAIL_SHAPE = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]+$"
# Cells are trimmed of ASCII whitespace (the same set in SQL on both databases).
_WHITESPACE = " \t\r\n\v\f"
_STAGED = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    from zoneinfo import available_timezones

    return frozenset(available_timezones())


def is_valid_email(value: str) -> bool:
    return len(value) <= 254 and _EMAIL.match(value) is not None


@dataclass
class ImportOptions:
    mode: ImportMode = ImportMode.PARTIAL
    mark_missing_as_left: bool = False
    default_timezone: str = "UTC"


@dataclass
class ImportReport:
    mode: ImportMode
    rows_total: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    marked_left: int = 0
    error_rows: int = 0
    error_count: int = 0
    errors: list[dict] = field(default_factory=list)
    applied: bool = False
    fatal: bool = False


class _Fatal(Exception):
    def __init__(self, line: int, column: str | None, kind: str, message: str):
        super().__init__(message)
        self.error = {"line": line, "column": column, "kind": kind, "message": message}


Opener = Callable[[], BinaryIO]
Progress = Callable[[str, int, int | None, int], None]


def _buffered(raw: BinaryIO) -> BinaryIO:
    return raw if isinstance(raw, io.BufferedIOBase) else io.BufferedReader(raw, 1 << 16)


def _decoded_lines(raw: BinaryIO) -> Iterator[str]:
    """The file's lines as text, decoded one line at a time so a bad byte is reported on its line."""
    for number, data in enumerate(_buffered(raw), 1):
        if b"\x00" in data:
            raise _Fatal(number, None, BAD_ENCODING, "This line contains a NUL byte; save the file as UTF-8 text.")
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Fatal(number, None, BAD_ENCODING, "This line is not valid UTF-8; save the file as UTF-8.") from None
        yield line.removeprefix("\ufeff") if number == 1 else line


def _read_rows(opener: Opener) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) for every non-blank row after the header."""
    raw = opener()
    reader = csv.reader(_decoded_lines(raw))
    line = 1
    try:
        next(reader, None)
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            if cells:
                yield line, cells
    except csv.Error as error:
        raise _Fatal(line, None, BAD_ROW, f"Unreadable CSV: {error}.") from None
    finally:
        raw.close()


def _read_header(first_line: bytes) -> list[str]:
    """The header's columns, in file order (checked: known, unique, all required present)."""
    if not first_line.strip():
        raise _Fatal(1, None, BAD_HEADER, "The file is empty; the first line must be the header.")
    try:
        decoded = first_line.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise _Fatal(1, None, BAD_ENCODING, "This line is not valid UTF-8; save the file as UTF-8.") from None
    names = [h.strip().lower() for h in next(csv.reader([decoded]))]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name not in _STAGED:
            raise _Fatal(1, name or f"column {i + 1}", BAD_HEADER, f"Unknown column {name!r}; expected {', '.join(_STAGED)}.")
        if name in seen:
            raise _Fatal(1, name, BAD_HEADER, f"Column {name!r} appears twice.")
        seen.add(name)
    missing = [c for c in REQUIRED_COLUMNS if c not in seen]
    if missing:
        raise _Fatal(1, missing[0], BAD_HEADER, f"Missing required column(s): {', '.join(missing)}.")
    return names


def _lit(value: str) -> str:
    """A SQL string literal for one of this module's own constants."""
    return "'" + value.replace("'", "''") + "'"


class _Sql:
    """The few places where PostgreSQL and SQLite spell the same thing differently."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.postgres = connection.dialect.name == "postgresql"
        self.temp = "pg_temp." if self.postgres else "temp."

    def trim(self, expr: str) -> str:
        return f"btrim({expr}, :ws)" if self.postgres else f"trim({expr}, :ws)"

    def regexp(self, expr: str, pattern_param: str) -> str:
        return f"{expr} ~ {pattern_param}" if self.postgres else f"{expr} REGEXP {pattern_param}"

    def json(self, expr: str) -> str:
        # PostgreSQL's json column takes text only through an explicit cast; SQLite stores the text.
        return f"CAST({expr} AS json)" if self.postgres else expr

    def create(self, name: str, body: str, params: dict | None = None) -> None:
        """A temporary table from column definitions ``(...)`` or a query."""
        self.drop(name)
        on_commit = " ON COMMIT DROP" if self.postgres else ""
        if body.lstrip().startswith("("):
            self.run(f"CREATE TEMP TABLE {name} {body}{on_commit}")
        else:
            self.run(f"CREATE TEMP TABLE {name}{on_commit} AS {body}", params)

    def index(self, table: str, column: str) -> None:
        name = f"{table}_{column}_idx"
        if self.postgres:
            self.run(f"CREATE INDEX {name} ON pg_temp.{table} ({column})")
        else:
            self.run(f"CREATE INDEX temp.{name} ON {table} ({column})")

    def analyze(self, table: str, columns: str) -> None:
        """PostgreSQL: statistics for a temporary table (autovacuum never sees them). Without
        them the planner guesses a few hundred rows and probes an index once per row
        where one hash join over the whole file is far cheaper. Only the join columns, from
        a small sample (the statistics target is lowered for the import's transaction):
        a full ANALYZE took 0.17 s per 100,000 rows."""
        if self.postgres:
            self.run(f"ANALYZE pg_temp.{table} ({columns})")

    def drop(self, name: str) -> None:
        self.run(f"DROP TABLE IF EXISTS {self.temp}{name}")

    def run(self, sql: str, params: dict | None = None):  # noqa: ANN201
        return self.connection.execute(text(sql), params or {})

    def scalar(self, sql: str, params: dict | None = None):  # noqa: ANN201
        return self.connection.execute(text(sql), params or {}).scalar()


_TEMP_TABLES = ("import_rows", "import_timezones", "import_checked", "import_errors", "import_graph", "import_loop", "import_apply")


def import_employees(
    session: Session,
    opener: Opener,
    options: ImportOptions,
    actor: User | None = None,
    *,
    progress: Progress | None = None,
    commit: Callable[[], None] | None = None,
) -> ImportReport:
    """Validate and (depending on the mode) apply one CSV file. ``opener`` returns a fresh
    binary stream of the file each time it is called (the parsed path re-reads it).
    ``commit`` (partial mode only) is called once the changes are applied, so the caller's
    unit of work becomes durable before the report is built."""
    report = ImportReport(mode=options.mode)
    session.flush()
    sql = _Sql(session.connection())
    org_id = session.info.get("org_id")
    report_progress = progress or (lambda *_: None)
    try:
        columns = _stage(sql, opener, report_progress)
    except _Fatal as fatal:
        for name in _TEMP_TABLES:
            sql.drop(name)
        report.errors, report.error_count, report.error_rows, report.fatal = [fatal.error], 1, 1, True
        return report
    params = {"org": org_id, "ws": _WHITESPACE}
    _validate(sql, params, options, len(columns))
    report.rows_total, report.error_rows = sql.run("SELECT count(*), coalesce(sum(bad), 0) FROM import_checked").one()
    errors_so_far = sql.scalar("SELECT count(*) FROM import_errors")
    report_progress("validating", report.rows_total, report.rows_total, errors_so_far)
    atomic_failed = options.mode == ImportMode.ATOMIC and report.error_rows > 0
    write = options.mode == ImportMode.PARTIAL or (options.mode == ImportMode.ATOMIC and not atomic_failed)
    if not atomic_failed:
        report_progress("applying", 0, report.rows_total, errors_so_far)
        _apply(sql, params, options, actor, report, write, has_locale="locale" in columns)
        report.applied = write
    report.error_count = errors_so_far
    report.errors = [
        {"line": line, "column": column, "kind": kind, "message": message}
        for line, column, kind, message in sql.run(
            "SELECT line, col, kind, message FROM import_errors ORDER BY line, coalesce(col, ''), seq LIMIT :n", {"n": MAX_ERRORS_KEPT}
        )
    ]
    for name in _TEMP_TABLES:
        sql.drop(name)
    if write and commit and options.mode == ImportMode.PARTIAL:
        commit()
    report_progress("applying", report.rows_total, report.rows_total, errors_so_far)
    return report


# ---- 1. staging ---------------------------------------------------------------------------

def _stage(sql: _Sql, opener: Opener, progress: Progress) -> list[str]:
    """The header's columns; every data row of the file in ``import_rows`` (line, ncells when the row has the
    wrong number of fields, and the raw cells), the header checked first."""
    raw = _buffered(opener())
    try:
        columns = _read_header(raw.readline())
        cell_types = ", ".join(f"{c} text" for c in _STAGED)
        if sql.postgres:
            sql.create("import_rows", f"(line integer GENERATED BY DEFAULT AS IDENTITY (START WITH 2), ncells integer, {cell_types})")
            if _copy_raw(sql, raw, columns, progress):
                return columns
        else:
            sql.create("import_rows", f"(line INTEGER PRIMARY KEY, ncells INTEGER, {cell_types})")
    finally:
        raw.close()
    _stage_parsed(sql, opener, columns, progress)
    return columns


def _copy_raw(sql: _Sql, raw: BinaryIO, columns: list[str], progress: Progress) -> bool:
    """PostgreSQL: COPY the bytes after the header as they are, one COPY per block (the
    file may be read from the same connection between blocks). False, with nothing
    staged, when COPY refuses the data or the rows cannot be numbered by position."""
    import psycopg

    statement = f"COPY pg_temp.import_rows ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
    cursor = sql.connection.connection.driver_connection.cursor()
    savepoint = sql.connection.begin_nested()
    expected = 0
    pending = b""
    try:
        while True:
            block = raw.read(1 << 20)
            data = pending + block
            cut = len(data) if not block else data.rfind(b"\n") + 1
            if cut:
                with cursor.copy(statement) as copy:
                    copy.write(data[:cut] if cut < len(data) else data)
                expected += data.count(b"\n", 0, cut) + (0 if data[cut - 1:cut] == b"\n" else 1)
                progress("validating", expected, None, 0)
            pending = data[cut:]
            if not block:
                break
    except psycopg.Error:
        savepoint.rollback()
        return False
    if sql.scalar("SELECT count(*) FROM pg_temp.import_rows") != expected:
        # A newline inside a quoted cell (or COPY's end marker): positions are not lines.
        savepoint.rollback()
        return False
    savepoint.commit()
    return True


def _stage_parsed(sql: _Sql, opener: Opener, columns: list[str], progress: Progress) -> None:
    positions = [columns.index(c) if c in columns else None for c in _STAGED]
    ncols = len(columns)
    names = ", ".join(("line", "ncells", *_STAGED))
    empty = (None,) * len(_STAGED)
    batch: list[tuple] = []
    staged = 0
    for line, cells in _read_rows(opener):
        if len(cells) == ncols:
            batch.append((line, None, *(cells[p] if p is not None else None for p in positions)))
        else:
            batch.append((line, len(cells), *empty))
        if len(batch) >= BATCH_SIZE:
            _write_batch(sql, names, batch)
            staged += len(batch)
            batch = []
            progress("validating", staged, None, 0)
    if batch:
        _write_batch(sql, names, batch)


def _write_batch(sql: _Sql, names: str, batch: list[tuple]) -> None:
    # The batch is complete before it is written: the file may be read from this connection.
    if sql.postgres:
        cursor = sql.connection.connection.driver_connection.cursor()
        with cursor.copy(f"COPY pg_temp.import_rows ({names}) FROM STDIN") as copy:
            for row in batch:
                copy.write_row(row)
    else:
        placeholders = ", ".join("?" * len(batch[0]))
        sql.connection.exec_driver_sql(f"INSERT INTO temp.import_rows ({names}) VALUES ({placeholders})", batch)


# ---- 2. validation ------------------------------------------------------------------------

def _row_checks(sql: _Sql) -> list[tuple[str | None, str, str, str]]:
    """(column, kind, message, condition on the normalised row ``t``) for every per-row
    check, in the order the errors of one cell are listed."""
    cell = {"external_id": "t.ext", "manager_external_id": "coalesce(t.mgr, '')", "timezone": "t.tz_cell", "digest_opt_in": "t.opt_cell"}
    checks: list[tuple[str | None, str, str, str]] = [
        (name, TOO_LONG, f"Longer than {limit} characters.", f"length({cell.get(name, 't.' + name)}) > {limit}")
        for name, limit in MAX_LENGTHS.items()
    ]
    checks += [(name, MISSING, "Required; the cell is empty.", f"{cell.get(name, 't.' + name)} = ''") for name in REQUIRED_VALUES]
    flags = ", ".join(_lit(v) for v in sorted(TRUE_VALUES | FALSE_VALUES))
    checks += [
        ("email", BAD_EMAIL, "Not a valid email address.", f"t.email <> '' AND NOT ({_email_ok(sql, 't.email')})"),
        ("timezone", BAD_TIMEZONE, "Unknown IANA timezone (e.g. Europe/London).",
         "(CASE WHEN t.tz_cell = '' THEN :default_tz ELSE t.tz_cell END) NOT IN (SELECT name FROM import_timezones)"),
        ("digest_opt_in", BAD_VALUE, "Use true/false, yes/no or 1/0.", f"t.opt_cell <> '' AND t.opt_cell NOT IN ({flags})"),
        ("manager_external_id", MANAGER_CYCLE, "An employee cannot be their own manager.", "t.mgr = t.ext"),
    ]
    return checks


def _email_ok(sql: _Sql, email: str) -> str:
    """EMAIL_PATTERN in SQL, split in parts PostgreSQL's regex engine runs fast (its bounded
    repetitions such as ``{0,61}`` cost ~20 us a row): the shape with unbounded labels, then
    no domain label over 63 characters (only possible in a long address) and a top-level
    domain of at least 2 letters."""
    long_label = sql.regexp(email, "'@[^@]*[^.@]{64}'")
    return (f"length({email}) <= 254 AND {sql.regexp(email, ':email_shape')}"
            f" AND NOT (CASE WHEN length({email}) > 66 THEN {long_label} ELSE FALSE END)"
            f" AND substr({email}, length({email}) - 1, 1) <> '.'")


def _validate(sql: _Sql, params: dict, options: ImportOptions, ncols: int) -> None:
    """``import_checked``: the normalised rows, ``bad`` = 1 for each row with an error;
    ``import_errors``: every error (line, column, kind, message)."""
    sql.create("import_timezones", "(name text PRIMARY KEY)")
    sql.connection.execute(text("INSERT INTO import_timezones (name) VALUES (:name)"), [{"name": z} for z in sorted(_timezones())])
    if sql.postgres:
        # Hash joins over a file's rows should not spill to disk (this transaction only).
        sql.run("SET LOCAL work_mem = '64MB'")
        # The recursive manager walk's estimate is huge, so JIT compiled it: 0.5 s of a 1 s
        # statement for 100,000 rows. The import's statements are simple scans and joins.
        sql.run("SET LOCAL jit = off")
        sql.run("SET LOCAL default_statistics_target = 10")
    params = {**params, "default_tz": options.default_timezone, "email_shape": _EMAIL_SHAPE}
    checks = _row_checks(sql)
    trim = sql.trim
    true_flags = ", ".join(_lit(v) for v in sorted(TRUE_VALUES))
    false_flags = ", ".join(_lit(v) for v in sorted(FALSE_VALUES))
    any_error = " OR ".join(f"({cond})" for *_, cond in checks)
    # The normalised cells are materialised first: each is referenced by several checks.
    sql.create("import_checked", f"""
        WITH t AS MATERIALIZED (
            SELECT r.line, r.ncells, coalesce({trim('r.external_id')}, '') AS ext, lower(coalesce({trim('r.email')}, '')) AS email,
                   coalesce({trim('r.first_name')}, '') AS first_name, coalesce({trim('r.last_name')}, '') AS last_name,
                   coalesce({trim('r.department')}, '') AS department, coalesce({trim('r.team')}, '') AS team,
                   nullif({trim('r.manager_external_id')}, '') AS mgr, coalesce({trim('r.timezone')}, '') AS tz_cell,
                   coalesce({trim('r.locale')}, '') AS locale, lower(coalesce({trim('r.digest_opt_in')}, '')) AS opt_cell
            FROM import_rows r)
        SELECT t.*, CASE WHEN t.tz_cell = '' THEN :default_tz ELSE t.tz_cell END AS tz,
               CASE WHEN t.opt_cell IN ({true_flags}) THEN TRUE WHEN t.opt_cell IN ({false_flags}) THEN FALSE END AS opt_in,
               e.id AS emp_id, e.manager_external_id AS old_mgr,
               CASE WHEN t.ncells IS NOT NULL OR {any_error} THEN 1 ELSE 0 END AS bad
        FROM t LEFT JOIN employees e ON e.org_id = :org AND e.external_id = t.ext
    """, params)
    sql.drop("import_rows")
    sql.index("import_checked", "ext")
    sql.analyze("import_checked", "ext, email, mgr, bad, emp_id")
    sql.create("import_errors", "(line integer, col text, kind text, message text, seq integer)")

    # Rows with the wrong number of fields, then every other per-row check, evaluated only
    # on the rows the combined condition above found wrong.
    sql.run(f"""INSERT INTO import_errors (line, col, kind, message, seq)
                SELECT line, NULL, {_lit(BAD_ROW)}, 'Expected {ncols} fields, found ' || ncells || '.', 0
                FROM import_checked WHERE ncells IS NOT NULL""")
    values = ", ".join(f"({i}, {_lit(col)}, {_lit(kind)}, {_lit(message)})" for i, (col, kind, message, _) in enumerate(checks))
    which = " ".join(f"WHEN {i} THEN ({cond})" for i, (*_, cond) in enumerate(checks))
    sql.run(f"""WITH k (seq, col, kind, message) AS (VALUES {values})
                INSERT INTO import_errors (line, col, kind, message, seq)
                SELECT t.line, k.col, k.kind, k.message, k.seq FROM import_checked t JOIN k ON CASE k.seq {which} END
                WHERE t.bad = 1 AND t.ncells IS NULL""", params)

    # Duplicates in the file: the first occurrence wins (even when that row has errors).
    _reject(sql, f"""SELECT t.line, 'external_id', {_lit(DUPLICATE)}, 'external_id already on line ' || d.first_line || '.', 100
                     FROM import_checked t JOIN (SELECT ext, min(line) AS first_line FROM import_checked WHERE ext <> ''
                                                 GROUP BY ext HAVING count(*) > 1) d ON d.ext = t.ext
                     WHERE t.bad = 0 AND t.line <> d.first_line""", params)
    _reject(sql, f"""SELECT t.line, 'email', {_lit(DUPLICATE)}, 'email already on line ' || d.first_line || '.', 101
                     FROM import_checked t JOIN (SELECT email, min(line) AS first_line FROM import_checked WHERE bad = 0
                                                 GROUP BY email HAVING count(*) > 1) d ON d.email = t.email
                     WHERE t.bad = 0 AND t.line <> d.first_line""", params)
    _reject(sql, f"""SELECT t.line, 'email', {_lit(EMAIL_TAKEN)}, 'Another employee of the organisation already has this email.', 102
                     FROM import_checked t JOIN employees e ON e.org_id = :org AND e.email = t.email
                     WHERE t.bad = 0 AND e.external_id <> t.ext""", params)
    _check_managers(sql, params)


def _reject(sql: _Sql, select: str, params: dict) -> int:
    """Record the errors ``select`` finds and mark their rows bad; how many it found.
    (The statement must start with INSERT: sqlite3 reports no row count after a WITH.)"""
    found = sql.run(f"INSERT INTO import_errors (line, col, kind, message, seq) {select}", params).rowcount
    if found:
        sql.run("UPDATE import_checked SET bad = 1 WHERE bad = 0 AND line IN (SELECT line FROM import_errors)")
    return found


# Good rows whose manager is in neither the file's good rows nor the organisation.
_MISSING_MANAGERS = """(SELECT t.line, t.mgr FROM import_checked t
    WHERE t.bad = 0 AND t.mgr IS NOT NULL AND NOT EXISTS (SELECT 1 FROM import_graph g WHERE g.ext = t.mgr))"""
# The graph from the roots down (no manager, or one outside the graph). Each node has one
# manager, so a node is reached at most once; the depth bound is only a safeguard.
_REACHED = """WITH RECURSIVE reached (ext, depth) AS (
    SELECT g.ext, 1 FROM import_graph g LEFT JOIN import_graph p ON p.ext = g.mgr WHERE p.ext IS NULL
    UNION ALL
    SELECT g.ext, r.depth + 1 FROM import_graph g JOIN reached r ON g.mgr = r.ext WHERE r.depth <= :total)"""


# Whether the manager graph needs the walk. Existing links are acyclic, so only a new or
# changed link can close a cycle; and none can when every good row's manager is a good
# row on an earlier line: along the links, lines then only decrease until they leave the
# file, and outside it only existing links remain. HRIS exports that list managers first
# skip the walk; any other order takes it.
# (A count rather than EXISTS: PostgreSQL plans an EXISTS for its first row, i.e. one index
# probe per row, 0.1-0.5 s per 100,000 rows, where the count is one hash anti-join.)
_MAY_CYCLE = """SELECT CASE WHEN EXISTS (SELECT 1 FROM import_checked WHERE bad = 0 AND mgr IS NOT NULL
                                           AND (emp_id IS NULL OR coalesce(old_mgr, '') <> mgr))
                    THEN (SELECT count(*) FROM import_checked t LEFT JOIN import_checked m ON m.ext = t.mgr AND m.bad = 0 AND m.line < t.line
                          WHERE t.bad = 0 AND t.mgr IS NOT NULL AND m.ext IS NULL)
                    ELSE 0 END"""


def _check_managers(sql: _Sql, params: dict) -> None:
    """Managers found nowhere, then manager cycles, in the graph the import would leave
    (good rows' links, and the current links of everyone else). A rejected row falls back
    to the employee's current manager, which can expose more: repeat until stable."""
    while True:
        sql.create("import_graph", """
            SELECT ext, mgr, line FROM import_checked WHERE bad = 0
            UNION ALL
            SELECT e.external_id, e.manager_external_id, NULL FROM employees e
            WHERE e.org_id = :org AND NOT EXISTS (SELECT 1 FROM import_checked t WHERE t.ext = e.external_id AND t.bad = 0)
        """, params)
        sql.index("import_graph", "ext")
        sql.analyze("import_graph", "ext, mgr")
        not_found = _reject(sql, f"""
            SELECT m.line, 'manager_external_id', {_lit(MANAGER_NOT_FOUND)},
                   CASE WHEN f.first_line IS NULL THEN 'No employee with this external_id in the file or the organisation.'
                        ELSE 'The manager''s row (line ' || f.first_line || ') has errors, and no such employee exists yet.' END, 200
            FROM {_MISSING_MANAGERS} m LEFT JOIN (SELECT ext, min(line) AS first_line FROM import_checked
                                                  WHERE ext IN (SELECT mgr FROM {_MISSING_MANAGERS} mm) GROUP BY ext) f ON f.ext = m.mgr""",
                            params)
        if not not_found and not (sql.scalar(_MAY_CYCLE) and _reject_cycles(sql, params)):
            return


def _reject_cycles(sql: _Sql, params: dict) -> int:
    sql.index("import_graph", "mgr")
    total = {"total": sql.scalar("SELECT count(*) FROM import_graph")}
    if sql.scalar(f"{_REACHED} SELECT count(*) FROM reached", total) == total["total"]:
        return 0
    # Every node the walk missed leads up into a cycle; strip the chains hanging below the
    # cycles (nodes nobody left in the set reports to) until only the cycles remain.
    sql.create("import_loop", f"{_REACHED} SELECT g.ext, g.mgr, g.line FROM import_graph g WHERE g.ext NOT IN (SELECT ext FROM reached)", total)
    while sql.run("DELETE FROM import_loop WHERE ext NOT IN (SELECT mgr FROM import_loop WHERE mgr IS NOT NULL)").rowcount:
        pass
    return _reject(sql, f"""SELECT line, 'manager_external_id', {_lit(MANAGER_CYCLE)}, 'This manager link would make a reporting cycle.', 300
                            FROM import_loop WHERE line IS NOT NULL""", params)


# ---- 3. apply -----------------------------------------------------------------------------

def _apply(sql: _Sql, params: dict, options: ImportOptions, actor: User | None, report: ImportReport, write: bool, *,
           has_locale: bool) -> None:
    compared = [
        ("department", "e.department <> t.department"),
        ("digest_consent", "t.opt_in IS NOT NULL AND e.digest_consent <> t.opt_in"),
        ("email", "e.email <> t.email"),
        ("first_name", "e.first_name <> t.first_name"),
        ("last_name", "e.last_name <> t.last_name"),
        ("left_at", "e.status <> 'active'" if options.mark_missing_as_left else None),
        ("locale", "e.locale <> t.locale" if has_locale else None),
        ("manager_external_id", "coalesce(e.manager_external_id, '') <> coalesce(t.mgr, '')"),
        ("status", "e.status <> 'active'" if options.mark_missing_as_left else None),
        ("team", "e.team <> t.team"),
        ("timezone", "e.timezone <> t.tz"),
    ]
    fields = " || ".join(f"CASE WHEN {cond} THEN {_lit(',' + chr(34) + name + chr(34))} ELSE '' END" for name, cond in compared if cond)
    new_id = "CASE WHEN t.emp_id IS NULL THEN nextval(CAST(:seq AS regclass)) ELSE t.emp_id END" if write and sql.postgres else "t.emp_id"
    if write and sql.postgres:
        params = {**params, "seq": sql.scalar("SELECT pg_get_serial_sequence('employees', 'id')")}
    # Good rows only; ``fields`` lists what changes for an existing employee ('' : nothing).
    sql.create("import_apply", f"""
        SELECT t.line, t.ext, t.emp_id, {new_id} AS id, t.email, t.first_name, t.last_name, t.department, t.team, t.mgr, t.tz,
               t.locale, t.opt_in, CASE WHEN t.emp_id IS NULL THEN NULL ELSE {fields} END AS fields
        FROM import_checked t LEFT JOIN employees e ON e.org_id = :org AND e.id = t.emp_id
        WHERE t.bad = 0""", params)
    # (Statistics: with none, the planner sorted both sides of the manager join to disk at 1,000,000 rows.)
    sql.analyze("import_apply", "ext, mgr, emp_id")
    created, updated, unchanged = sql.run("""SELECT coalesce(sum(CASE WHEN emp_id IS NULL THEN 1 ELSE 0 END), 0),
                                                    coalesce(sum(CASE WHEN fields <> '' THEN 1 ELSE 0 END), 0),
                                                    coalesce(sum(CASE WHEN fields = '' THEN 1 ELSE 0 END), 0) FROM import_apply""").one()
    report.created, report.updated, report.unchanged = created, updated, unchanged
    missing = "e.org_id = :org AND e.status = 'active' AND NOT EXISTS (SELECT 1 FROM import_checked t WHERE t.ext = e.external_id)"
    if options.mark_missing_as_left:
        report.marked_left = sql.scalar(f"SELECT count(*) FROM employees e WHERE {missing}", params)
    if not write:
        return
    now = bindparam("now", utcnow(), type_=UTCDateTime())
    params = {**params, "actor": actor.id if actor else None, "actor_label": f"user:{actor.id}" if actor else "system"}

    def run(statement: str) -> None:
        sql.connection.execute(text(statement).bindparams(now) if ":now" in statement else text(statement), params)

    # New employees. On PostgreSQL their ids were drawn from the sequence above, so a link
    # to a manager created by the same file is set here, in the same write; on SQLite the
    # INSERT assigns the ids and such links are filled in by the UPDATE after it.
    lookup = "(SELECT x.id FROM employees x WHERE x.org_id = :org AND x.external_id = {})"
    if created:
        run(f"""INSERT INTO employees (id, org_id, external_id, email, first_name, last_name, department, team, manager_external_id,
                                       manager_id, timezone, locale, status, digest_consent, digest_topics, created_at, updated_at)
                SELECT a.id, :org, a.ext, a.email, a.first_name, a.last_name, a.department, a.team, a.mgr,
                       CASE WHEN a.mgr IS NULL THEN NULL ELSE coalesce(m.id, {lookup.format('a.mgr')}) END,
                       a.tz, a.locale, 'active', coalesce(a.opt_in, TRUE), {sql.json("'[]'")}, :now, :now
                FROM import_apply a LEFT JOIN import_apply m ON m.ext = a.mgr
                WHERE a.emp_id IS NULL""")
        run("""UPDATE employees SET manager_id = (SELECT x.id FROM employees x WHERE x.org_id = employees.org_id
                                                  AND x.external_id = employees.manager_external_id)
               WHERE org_id = :org AND manager_id IS NULL AND manager_external_id IS NOT NULL""")
    if updated:
        extra = (", locale = a.locale" if has_locale else "") + (", status = 'active', left_at = NULL" if options.mark_missing_as_left else "")
        run(f"""UPDATE employees SET email = a.email, first_name = a.first_name, last_name = a.last_name, department = a.department,
                       team = a.team, timezone = a.tz, manager_external_id = a.mgr,
                       manager_id = CASE WHEN a.mgr IS NULL THEN NULL ELSE {lookup.format('a.mgr')} END,
                       digest_consent = coalesce(a.opt_in, employees.digest_consent), updated_at = :now{extra}
                FROM import_apply a WHERE employees.id = a.emp_id AND a.fields <> ''""")
    target = f"coalesce(a.id, {lookup.format('a.ext')})"
    if created or updated:
        run(f"""INSERT INTO employee_consents (org_id, employee_id, kind, granted, source, actor_user_id, at)
                SELECT :org, {target}, 'digest_emails', a.opt_in, 'import', :actor, :now FROM import_apply a
                WHERE a.opt_in IS NOT NULL AND (a.emp_id IS NULL OR a.fields LIKE '%"digest_consent"%')""")
        # One audit event per created or changed employee: ids and field names, never values.
        details = sql.json("""CASE WHEN a.emp_id IS NULL THEN '{"via": "import"}'
                                   ELSE '{"fields": [' || substr(a.fields, 2) || '], "via": "import"}' END""")
        run(f"""INSERT INTO audit_events (org_id, at, actor_user_id, actor_label, action, target_type, target_id, details)
                SELECT :org, :now, :actor, :actor_label, CASE WHEN a.emp_id IS NULL THEN 'employee.created' ELSE 'employee.updated' END,
                       'employee', {target}, {details}
                FROM import_apply a WHERE a.emp_id IS NULL OR a.fields <> ''""")
    if report.marked_left:
        details = sql.json("""'{"fields": ["status"], "via": "import"}'""")
        run(f"""INSERT INTO audit_events (org_id, at, actor_user_id, actor_label, action, target_type, target_id, details)
                SELECT :org, :now, :actor, :actor_label, 'employee.left', 'employee', e.id, {details}
                FROM employees e WHERE {missing}""")
        run(f"UPDATE employees SET status = 'left', left_at = :now, updated_at = :now WHERE id IN (SELECT e.id FROM employees e WHERE {missing})")
