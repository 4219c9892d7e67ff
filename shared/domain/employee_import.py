"""HRIS CSV import of employees: the one implementation behind the API, the CLI and the Celery job.

Two streaming passes over the file (it is re-opened for the second), so memory holds a
few machine words per row, never the rows themselves:

1. *validate*: header first, then every row on its own (required fields, lengths, email,
   IANA timezone, duplicates in the file); then, against the organisation's existing
   employees, emails taken by someone else and the whole manager graph (managers that
   exist nowhere, manager cycles through file rows and existing employees alike).
2. *apply* (skipped in dry-run, and in atomic mode when anything was wrong): batches
   of good rows are upserted by ``external_id``; unchanged rows are neither written nor
   audited, so re-importing a file is a no-op.

Error messages never repeat the cell's value: the job row outlives an employee's erasure.
"""
from __future__ import annotations

import csv
import io
from bisect import bisect_left
import json
import re
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import BinaryIO

from sqlalchemy import String, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased

from shared.db import utcnow
from shared.models import AuditEvent, Consent, ConsentKind, ConsentSource, Employee, EmployeeStatus, ImportMode, User

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
BATCH_SIZE = 2000
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

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
# Fields compared to decide whether an existing employee changed.
_COMPARED = ("email", "first_name", "last_name", "department", "team", "manager_external_id", "timezone")


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


class _Errors:
    """Every error counted, the first MAX_ERRORS_KEPT kept."""

    def __init__(self) -> None:
        self.kept: list[dict] = []
        self.count = 0

    def add(self, line: int, column: str | None, kind: str, message: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_ERRORS_KEPT:
            self.kept.append({"line": line, "column": column, "kind": kind, "message": message})


class _Fatal(Exception):
    def __init__(self, line: int, column: str | None, kind: str, message: str):
        super().__init__(message)
        self.error = (line, column, kind, message)


Opener = Callable[[], BinaryIO]
Progress = Callable[[str, int, int | None, int], None]


def _decoded_lines(raw: BinaryIO) -> Iterator[str]:
    """The file's lines as text, decoded one line at a time so a bad byte is reported on its line."""
    buffered = raw if isinstance(raw, io.BufferedIOBase) else io.BufferedReader(raw, 1 << 16)
    for number, data in enumerate(buffered, 1):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Fatal(number, None, BAD_ENCODING, "This line is not valid UTF-8; save the file as UTF-8.") from None
        yield text.removeprefix("\ufeff") if number == 1 else text


def _read_rows(opener: Opener) -> Iterator[tuple[int, list[str], dict[str, int] | None]]:
    """Yield (line, cells, header positions) for every non-blank row; the header comes first."""
    raw = opener()
    reader = csv.reader(_decoded_lines(raw))
    line = 1
    try:
        try:
            header = next(reader)
        except StopIteration:
            raise _Fatal(1, None, BAD_HEADER, "The file is empty; the first line must be the header.") from None
        yield 1, header, _check_header(header)
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            if cells:
                yield line, cells, None
    except csv.Error as error:
        raise _Fatal(line, None, BAD_ROW, f"Unreadable CSV: {error}.") from None
    finally:
        raw.close()


def _check_header(header: list[str]) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    positions: dict[str, int] = {}
    for i, name in enumerate(names):
        if name not in REQUIRED_COLUMNS and name not in OPTIONAL_COLUMNS:
            raise _Fatal(1, name or f"column {i + 1}", BAD_HEADER, f"Unknown column {name!r}; expected {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}.")
        if name in positions:
            raise _Fatal(1, name, BAD_HEADER, f"Column {name!r} appears twice.")
        positions[name] = i
    missing = [c for c in REQUIRED_COLUMNS if c not in positions]
    if missing:
        raise _Fatal(1, missing[0], BAD_HEADER, f"Missing required column(s): {', '.join(missing)}.")
    return positions


# A validated row: (external_id, email, first, last, department, team, manager or None, timezone, locale or None, opt_in or None)
Row = tuple


def _validate(line: int, cells: list[str], cols: dict[str, int], ncols: int, default_tz: str, errors: _Errors) -> Row | None:
    if len(cells) != ncols:
        errors.add(line, None, BAD_ROW, f"Expected {ncols} fields, found {len(cells)}.")
        return None
    values = {name: cells[pos].strip() for name, pos in cols.items()}
    ext, email, first, last = values["external_id"], values["email"].lower(), values["first_name"], values["last_name"]
    tz = values["timezone"] or default_tz
    manager = values["manager_external_id"] or None
    opt_flag = values.get("digest_opt_in")
    # Fast path: the common, valid row.
    if (ext and email and first and last and len(ext) <= 64 and len(email) <= 254 and len(first) <= 100 and len(last) <= 100
            and len(values["department"]) <= 100 and len(values["team"]) <= 100 and (manager is None or (len(manager) <= 64 and manager != ext))
            and len(values["timezone"]) <= 64 and len(values.get("locale") or "") <= 16 and not opt_flag
            and _EMAIL.match(email) is not None and tz in _timezones()):
        return (ext, email, first, last, values["department"], values["team"], manager, tz, values.get("locale"), None)
    ok = True
    for name, value in values.items():
        if len(value) > MAX_LENGTHS[name]:
            errors.add(line, name, TOO_LONG, f"Longer than {MAX_LENGTHS[name]} characters.")
            ok = False
    for name in REQUIRED_VALUES:
        if not values[name]:
            errors.add(line, name, MISSING, "Required; the cell is empty.")
            ok = False
    if email and not is_valid_email(email):
        errors.add(line, "email", BAD_EMAIL, "Not a valid email address.")
        ok = False
    if tz not in _timezones():
        errors.add(line, "timezone", BAD_TIMEZONE, "Unknown IANA timezone (e.g. Europe/London).")
        ok = False
    opt_in = None
    if opt_flag:
        flag = opt_flag.lower()
        if flag in TRUE_VALUES:
            opt_in = True
        elif flag in FALSE_VALUES:
            opt_in = False
        else:
            errors.add(line, "digest_opt_in", BAD_VALUE, "Use true/false, yes/no or 1/0.")
            ok = False
    if manager is not None and manager == ext:
        errors.add(line, "manager_external_id", MANAGER_CYCLE, "An employee cannot be their own manager.")
        ok = False
    if not ok:
        return None
    return (ext, email, first, last, values["department"], values["team"], manager, tz, values.get("locale"), opt_in)


class _SortedIndex:
    """hash -> first row with it, as two sorted parallel arrays: 16 bytes a row where a
    dict would take about 100, which keeps a 1,000,000-row import well under 300 MB."""

    def __init__(self, hashes: array, keep: Callable[[int], bool] | None = None):
        packed = sorted((h << 32) | i for i, h in enumerate(hashes) if h and (keep is None or keep(i)))
        self.keys = array("q", (k >> 32 for k in packed))
        self.rows = array("q", (k & 0xFFFFFFFF for k in packed))

    def get(self, h: int) -> int | None:
        i = bisect_left(self.keys, h)
        if i < len(self.keys) and self.keys[i] == h:
            return self.rows[i]
        return None

    def __contains__(self, h: int) -> bool:
        return self.get(h) is not None

    def duplicates(self) -> Iterator[tuple[int, int]]:
        """(later row, first row) for every repeated hash."""
        keys, rows = self.keys, self.rows
        first = 0
        for j in range(1, len(keys)):
            if keys[j] == keys[first]:
                yield rows[j], rows[first]
            else:
                first = j


class _Graph:
    """Per-row facts from pass 1, kept as compact arrays indexed by row number."""

    def __init__(self) -> None:
        self.lines = array("q")
        self.ext = array("q")  # hash of external_id (0 if the row had none)
        self.email = array("q")  # hash of the email (0 for rows with errors)
        self.mgr = array("q")  # hash of manager_external_id (0: none)
        self.db_mgr = array("q")  # manager hash of the existing employee with this external_id
        self.in_db = bytearray()
        self.bad = bytearray()
        self.ext_index = _SortedIndex(array("q"))
        self.db_only: dict[int, int] = {}  # existing employees absent from the file: ext hash -> manager hash

    def add(self, line: int, ext: int, email: int, mgr: int, bad: bool) -> int:
        idx = len(self.bad)
        self.lines.append(line)
        self.ext.append(ext)
        self.email.append(email)
        self.mgr.append(mgr)
        self.db_mgr.append(0)
        self.in_db.append(0)
        self.bad.append(1 if bad else 0)
        return idx

    def valid_row(self, h: int) -> int | None:
        idx = self.ext_index.get(h)
        return idx if idx is not None and not self.bad[idx] else None

    def exists(self, h: int) -> bool:
        idx = self.ext_index.get(h)
        if idx is not None:
            return not self.bad[idx] or bool(self.in_db[idx])
        return h in self.db_only

    def parent(self, h: int) -> int:
        idx = self.ext_index.get(h)
        if idx is not None:
            if not self.bad[idx]:
                return self.mgr[idx]
            return self.db_mgr[idx] if self.in_db[idx] else 0
        return self.db_only.get(h, 0)


def _h(value: str | None) -> int:
    if not value:
        return 0
    return hash(value) or 1


def _check_graph(graph: _Graph, errors: _Errors) -> None:
    """Reject rows whose manager exists nowhere and rows on a manager cycle, until stable
    (a rejected row reverts to the employee's current manager, which can expose more)."""
    n = len(graph.bad)
    changed = True
    while changed:
        changed = False
        for idx in range(n):
            if graph.bad[idx] or not graph.mgr[idx]:
                continue
            m = graph.mgr[idx]
            if not graph.exists(m):
                midx = graph.ext_index.get(m)
                if midx is not None:
                    message = f"The manager's row (line {graph.lines[midx]}) has errors, and no such employee exists yet."
                else:
                    message = "No employee with this external_id in the file or the organisation."
                errors.add(graph.lines[idx], "manager_external_id", MANAGER_NOT_FOUND, message)
                graph.bad[idx] = 1
                changed = True
        # Functional graph (one manager each): walk up from every row, marking nodes done
        # (a byte per file row; a set only for existing employees absent from the file).
        done_rows = bytearray(n)
        done_db: set[int] = set()

        def is_done(h: int) -> bool:
            idx = graph.ext_index.get(h)
            return bool(done_rows[idx]) if idx is not None else h in done_db

        for idx in range(n):
            if graph.bad[idx] or done_rows[idx]:
                continue
            path: list[int] = []
            on_path: set[int] = set()
            node = graph.ext[idx]
            while node and node not in on_path and not is_done(node):
                path.append(node)
                on_path.add(node)
                node = graph.parent(node)
            if node and node in on_path:
                for member in path[path.index(node):]:
                    midx = graph.valid_row(member)
                    if midx is not None:
                        errors.add(graph.lines[midx], "manager_external_id", MANAGER_CYCLE, "This manager link would make a reporting cycle.")
                        graph.bad[midx] = 1
                        changed = True
            for member in path:
                midx = graph.ext_index.get(member)
                if midx is not None:
                    done_rows[midx] = 1
                else:
                    done_db.add(member)


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
    binary stream of the file each time it is called. ``commit`` (partial mode only) is
    called after each applied batch, so a long import makes durable progress."""
    report = ImportReport(mode=options.mode)
    errors = _Errors()
    graph = _Graph()
    org_id = session.info.get("org_id")

    # ---- pass 1: validate -------------------------------------------------------------
    try:
        rows = _read_rows(opener)
        _, _, cols = next(rows)
        ncols = len(cols)
        for line, cells, _ in rows:
            row = _validate(line, cells, cols, ncols, options.default_timezone, errors)
            if row is None:
                ext_cell = cells[cols["external_id"]].strip() if len(cells) == ncols else ""
                idx = graph.add(line, _h(ext_cell), 0, 0, True)
            else:
                idx = graph.add(line, _h(row[0]), _h(row[1]), _h(row[6]), False)
            if progress and idx % 10000 == 0:
                progress("validating", idx, None, errors.count)
    except _Fatal as fatal:
        errors.add(*fatal.error)
        report.fatal = True
        return _finish(report, errors, graph)
    report.rows_total = len(graph.bad)
    # Duplicates in the file: the first occurrence wins.
    graph.ext_index = _SortedIndex(graph.ext)
    for row, first in graph.ext_index.duplicates():
        if not graph.bad[row]:
            errors.add(graph.lines[row], "external_id", DUPLICATE, f"external_id already on line {graph.lines[first]}.")
            graph.bad[row] = 1
    email_index = _SortedIndex(graph.email, lambda i: not graph.bad[i])
    for row, first in email_index.duplicates():
        errors.add(graph.lines[row], "email", DUPLICATE, f"email already on line {graph.lines[first]}.")
        graph.bad[row] = 1

    # Existing employees: emails taken by someone else, and the graph nodes not in the file.
    existing = select(Employee.external_id, Employee.email, Employee.manager_external_id).execution_options(yield_per=5000)
    for ext, email, manager in session.execute(existing):
        h = _h(ext)
        idx = graph.ext_index.get(h)
        if idx is not None:
            graph.in_db[idx] = 1
            graph.db_mgr[idx] = _h(manager)
        else:
            graph.db_only[h] = _h(manager)
        holder = email_index.get(_h(email))
        if holder is not None and graph.ext[holder] != h and not graph.bad[holder]:
            errors.add(graph.lines[holder], "email", EMAIL_TAKEN, "Another employee of the organisation already has this email.")
            graph.bad[holder] = 1
    _check_graph(graph, errors)
    report.error_rows = sum(graph.bad)
    if progress:
        progress("validating", report.rows_total, report.rows_total, errors.count)

    # ---- pass 2: apply (or, in dry-run, count what would change) ------------------------
    write = options.mode == ImportMode.PARTIAL or (options.mode == ImportMode.ATOMIC and report.error_rows == 0)
    if options.mode == ImportMode.ATOMIC and report.error_rows:
        return _finish(report, errors, graph)
    has_locale = "locale" in cols
    batch: list[Row] = []
    done = 0
    rows = _read_rows(opener)
    next(rows)
    idx = -1
    for _line, cells, _ in rows:
        idx += 1
        if graph.bad[idx]:
            continue
        batch.append(_validate(0, cells, cols, ncols, options.default_timezone, _Errors()))
        if len(batch) >= BATCH_SIZE:
            _apply_batch(session, batch, report, actor, org_id, has_locale, write, options)
            done = idx + 1
            batch = []
            if write and commit and options.mode == ImportMode.PARTIAL:
                commit()
            if progress:
                progress("applying", done, report.rows_total, errors.count)
    if batch:
        _apply_batch(session, batch, report, actor, org_id, has_locale, write, options)
    if write:
        _sync_manager_ids(session)
    if options.mark_missing_as_left and (write or options.mode == ImportMode.DRY_RUN):
        _mark_missing(session, graph, report, actor, org_id, write)
    report.applied = write
    if progress:
        progress("applying", report.rows_total, report.rows_total, errors.count)
    return _finish(report, errors, graph)


def _finish(report: ImportReport, errors: _Errors, graph: _Graph) -> ImportReport:
    report.errors = sorted(errors.kept, key=lambda e: (e["line"], e["column"] or ""))
    report.error_count = errors.count
    report.error_rows = sum(graph.bad) if not report.fatal else max(1, sum(graph.bad))
    return report


def _audit_row(actor: User | None, org_id: int, action: str, target_id: int, details: dict, now) -> dict:  # noqa: ANN001
    return {
        "org_id": org_id,
        "at": now,
        "actor_user_id": actor.id if actor else None,
        "actor_label": f"user:{actor.id}" if actor else "system",
        "action": action,
        "target_type": "employee",
        "target_id": target_id,
        "details": details,
    }


def _apply_batch(session: Session, batch: list[Row], report: ImportReport, actor, org_id, has_locale, write, options) -> None:  # noqa: ANN001
    cols = (Employee.id, Employee.external_id, Employee.email, Employee.first_name, Employee.last_name, Employee.department,
            Employee.team, Employee.manager_external_id, Employee.timezone, Employee.locale, Employee.digest_consent, Employee.status)
    postgres = session.get_bind().dialect.name == "postgresql"
    current = {r.external_id: r for r in session.execute(select(*cols).where(_in(Employee.external_id, [row[0] for row in batch], postgres)))}
    now = utcnow()
    inserts: list[dict] = []
    insert_opt_in: list[bool | None] = []
    updates: list[dict] = []
    consents: list[dict] = []
    audits: list[dict] = []
    for row in batch:
        ext, email, first, last, dept, team, manager, tz, locale, opt_in = row
        new = {"email": email, "first_name": first, "last_name": last, "department": dept, "team": team,
               "manager_external_id": manager, "timezone": tz}
        if has_locale:
            new["locale"] = locale or ""
        old = current.get(ext)
        if old is None:
            report.created += 1
            inserts.append({**new, "org_id": org_id, "external_id": ext, "locale": locale or "", "digest_consent": True if opt_in is None else opt_in,
                            "status": EmployeeStatus.ACTIVE.value, "digest_topics": [], "created_at": now, "updated_at": now})
            insert_opt_in.append(opt_in)
            continue
        changed = {k: v for k, v in new.items() if getattr(old, k) != v}
        if options.mark_missing_as_left and old.status != EmployeeStatus.ACTIVE:
            changed["status"] = EmployeeStatus.ACTIVE
            changed["left_at"] = None
        if opt_in is not None and opt_in != old.digest_consent:
            changed["digest_consent"] = opt_in
            consents.append({"org_id": org_id, "employee_id": old.id, "kind": ConsentKind.DIGEST_EMAILS, "granted": opt_in,
                             "source": ConsentSource.IMPORT, "actor_user_id": actor.id if actor else None, "at": now})
        if not changed:
            report.unchanged += 1
            continue
        report.updated += 1
        audits.append(_audit_row(actor, org_id, "employee.updated", old.id, {"fields": sorted(changed), "via": "import"}, now))
        updates.append({"b_id": old.id, **changed})
    if not write:
        return
    # Managers that already exist get linked now; the rest (later in the file) by _sync_manager_ids.
    wanted = {r["manager_external_id"] for r in inserts if r["manager_external_id"]} | {
        u["manager_external_id"] for u in updates if u.get("manager_external_id")}
    manager_ids = dict(session.execute(select(Employee.external_id, Employee.id).where(_in(Employee.external_id, list(wanted), postgres))).all()) if wanted else {}
    for r in inserts:
        r["manager_id"] = manager_ids.get(r["manager_external_id"])
    for u in updates:
        if "manager_external_id" in u:
            u["manager_id"] = manager_ids.get(u["manager_external_id"])
    if inserts:
        if postgres:
            # COPY is PostgreSQL's bulk path; ids are then read back by external_id.
            _copy(session, "employees", _EMPLOYEE_COPY_COLUMNS, ([r[c] for c in _EMPLOYEE_COPY_COLUMNS] for r in inserts))
            by_ext = dict(session.execute(select(Employee.external_id, Employee.id).where(_in(Employee.external_id, [r["external_id"] for r in inserts], True))).all())
            ids = [by_ext[r["external_id"]] for r in inserts]
        else:
            ids = session.scalars(insert(Employee).returning(Employee.id, sort_by_parameter_order=True), inserts).all()
        for emp_id, opt_in in zip(ids, insert_opt_in):
            audits.append(_audit_row(actor, org_id, "employee.created", emp_id, {"via": "import"}, now))
            if opt_in is not None:
                consents.append({"org_id": org_id, "employee_id": emp_id, "kind": ConsentKind.DIGEST_EMAILS, "granted": opt_in,
                                 "source": ConsentSource.IMPORT, "actor_user_id": actor.id if actor else None, "at": now})
    if updates:
        table = Employee.__table__
        from sqlalchemy import bindparam

        # Group by the set of changed columns: one executemany per shape.
        shapes: dict[tuple, list[dict]] = {}
        for u in updates:
            shapes.setdefault(tuple(sorted(k for k in u if k != "b_id")), []).append(u)
        for keys, params in shapes.items():
            for p in params:
                p["updated_at"] = now
            stmt = table.update().where(table.c.id == bindparam("b_id")).values({k: bindparam(k) for k in (*keys, "updated_at")})
            session.execute(stmt, params)
    if consents:
        if postgres:
            _copy(session, "employee_consents", _CONSENT_COPY_COLUMNS, ([c[k] if k != "kind" and k != "source" else c[k].value for k in _CONSENT_COPY_COLUMNS] for c in consents))
        else:
            session.execute(insert(Consent), consents)
    if audits:
        if postgres:
            _copy(session, "audit_events", _AUDIT_COPY_COLUMNS, ([json.dumps(a[k]) if k == "details" else a[k] for k in _AUDIT_COPY_COLUMNS] for a in audits))
        else:
            session.execute(insert(AuditEvent), audits)


_EMPLOYEE_COPY_COLUMNS = ("org_id", "external_id", "email", "first_name", "last_name", "department", "team", "manager_external_id", "manager_id",
                          "timezone", "locale", "status", "digest_consent", "digest_topics", "created_at", "updated_at")
_CONSENT_COPY_COLUMNS = ("org_id", "employee_id", "kind", "granted", "source", "actor_user_id", "at")
_NULLABLE = frozenset({"manager_external_id", "manager_id", "actor_user_id", "target_id"})
_AUDIT_COPY_COLUMNS = ("org_id", "at", "actor_user_id", "actor_label", "action", "target_type", "target_id", "details")


def _in(column, values: list, postgres: bool):  # noqa: ANN001
    """``column IN values``; on PostgreSQL ``IN (SELECT unnest(array))``: one parameter instead of
    thousands, and a semi-join the planner can hash or drive through the index (``= ANY($1)``
    compares each row with every element when it chooses a sequential scan)."""
    if postgres:
        return column.in_(select(func.unnest(bindparam(None, values, type_=ARRAY(String)))))
    return column.in_(values)


def _copy(session: Session, table: str, columns: tuple[str, ...], rows) -> None:  # noqa: ANN001
    """COPY rows into a table inside the session's transaction (PostgreSQL only). Rows carry
    their org_id explicitly: bulk paths bypass the ORM's stamping."""
    # CSV text built by the csv module (C speed): strings quoted, numbers and booleans
    # bare; None is written as "" and read back as NULL in the nullable columns (which
    # never hold an empty string: blank cells become NULL there).
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n").writerows(
        [v.isoformat() if isinstance(v, datetime) else v for v in row] for row in rows
    )
    nullable = [c for c in columns if c in _NULLABLE]
    force_null = f", FORCE_NULL ({', '.join(nullable)})" if nullable else ""
    cursor = session.connection().connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv{force_null})") as copy:
        copy.write(buffer.getvalue().encode("utf-8"))


def _sync_manager_ids(session: Session) -> None:
    """manager_id follows manager_external_id: two set-based statements once all rows exist."""
    manager = aliased(Employee)
    session.execute(
        update(Employee)
        .where(manager.org_id == Employee.org_id, manager.external_id == Employee.manager_external_id)
        .where(Employee.manager_id.is_distinct_from(manager.id))
        .values(manager_id=manager.id)
        .execution_options(synchronize_session=False)
    )
    still_linked = select(manager.id).where(manager.id == Employee.manager_id, manager.external_id == Employee.manager_external_id)
    session.execute(
        update(Employee)
        .where(Employee.manager_id.is_not(None), ~still_linked.exists())
        .values(manager_id=None)
        .execution_options(synchronize_session=False)
    )


def _mark_missing(session: Session, graph: _Graph, report: ImportReport, actor, org_id, write: bool) -> None:  # noqa: ANN001
    active = select(Employee.id, Employee.external_id).where(Employee.status == EmployeeStatus.ACTIVE).execution_options(yield_per=5000)
    missing = [emp_id for emp_id, ext in session.execute(active) if _h(ext) not in graph.ext_index]
    report.marked_left = len(missing)
    if not write or not missing:
        return
    now = utcnow()
    for start in range(0, len(missing), BATCH_SIZE):
        ids = missing[start:start + BATCH_SIZE]
        session.execute(
            update(Employee).where(Employee.id.in_(ids)).values(status=EmployeeStatus.LEFT, left_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        session.execute(insert(AuditEvent), [_audit_row(actor, org_id, "employee.left", i, {"fields": ["status"], "via": "import"}, now) for i in ids])
