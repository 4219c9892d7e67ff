"""Import jobs: the uploaded CSV stored in the database in chunks (so the API and the worker
may run on different machines), processed synchronously when small or by a Celery task,
with progress and a capped error list on the job row."""
from __future__ import annotations

import io
from typing import BinaryIO

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from shared.db import Database, utcnow
from shared.domain import accounts
from shared.domain.employee_import import ImportOptions, ImportReport, import_employees
from shared.errors import NotFound
from shared.models import ImportChunk, ImportJob, ImportMode, ImportStatus, User
from shared.pagination import list_query

CHUNK_BYTES = 1024 * 1024
# Files with at most this many lines are imported inside the request.
SYNC_MAX_LINES = 2000
TERMINAL = (ImportStatus.DONE, ImportStatus.FAILED)


class ChunkReader(io.RawIOBase):
    """The stored file, read back one chunk at a time."""

    def __init__(self, session: Session, job_id: int):
        self._session = session
        self._job_id = job_id
        self._seq = 0
        self._buffer = b""
        self._pos = 0
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:  # noqa: ANN001
        while self._pos >= len(self._buffer):
            if self._eof:
                return 0
            data = self._session.scalar(select(ImportChunk.data).where(ImportChunk.job_id == self._job_id, ImportChunk.seq == self._seq))
            if data is None:
                self._eof = True
                return 0
            self._buffer, self._pos, self._seq = bytes(data), 0, self._seq + 1
        n = min(len(target), len(self._buffer) - self._pos)
        target[:n] = self._buffer[self._pos:self._pos + n]
        self._pos += n
        return n


def create_job(session: Session, actor: User, stream: BinaryIO, filename: str, mode: ImportMode, mark_missing_as_left: bool) -> tuple[ImportJob, int]:
    """Store the upload; returns the job and the number of lines in the file."""
    job = ImportJob(org_id=actor.org_id, mode=mode, mark_missing_as_left=mark_missing_as_left, filename=(filename or "")[:255],
                    created_by_user_id=actor.id, status=ImportStatus.QUEUED, errors=[])
    session.add(job)
    session.flush()
    seq = size = lines = 0
    last = b""
    while True:
        data = stream.read(CHUNK_BYTES)
        if not data:
            break
        chunk = ImportChunk(org_id=actor.org_id, job_id=job.id, seq=seq, data=data)
        session.add(chunk)
        session.flush()
        session.expunge(chunk)  # keep memory flat: the chunk is in the database now
        seq += 1
        size += len(data)
        lines += data.count(b"\n")
        last = data[-1:]
    if size and last != b"\n":
        lines += 1
    job.size_bytes = size
    return job, lines


def get_job(session: Session, job_id: int) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None:
        raise NotFound(f"Import job {job_id} not found")
    return job


@list_query
def jobs_query():
    return select(ImportJob).order_by(ImportJob.id.desc())


def _store_report(job: ImportJob, report: ImportReport) -> None:
    job.rows_total = report.rows_total
    job.rows_done = report.rows_total
    job.created_count, job.updated_count, job.unchanged_count = report.created, report.updated, report.unchanged
    job.left_count, job.error_count, job.error_rows = report.marked_left, report.error_count, report.error_rows
    job.errors, job.applied = report.errors, report.applied
    job.status, job.finished_at = ImportStatus.DONE, utcnow()


def run_in_session(session: Session, job: ImportJob) -> ImportJob:
    """Process a (small) job inside the caller's unit of work."""
    options = _options(session, job)
    job.status, job.started_at = ImportStatus.VALIDATING, utcnow()
    actor = session.get(User, job.created_by_user_id) if job.created_by_user_id else None
    report = import_employees(session, lambda: ChunkReader(session, job.id), options, actor)
    _store_report(job, report)
    session.execute(delete(ImportChunk).where(ImportChunk.job_id == job.id))
    return job


def _options(session: Session, job: ImportJob) -> ImportOptions:
    org = accounts.get_organisation(session, job.org_id)
    return ImportOptions(mode=job.mode, mark_missing_as_left=job.mark_missing_as_left, default_timezone=org.default_timezone)


def run_job(database: Database, org_id: int, job_id: int) -> None:
    """The Celery task's body: idempotent (a finished job is left alone; a job interrupted
    by a crash is re-run from the start, which the upsert makes harmless)."""
    with database.session(org_id) as session:
        job = session.get(ImportJob, job_id)
        if job is None or job.status in TERMINAL:
            return
        job.status, job.started_at = ImportStatus.VALIDATING, utcnow()
        job.rows_done = 0

    def progress(phase: str, done: int, total: int | None, errors: int) -> None:
        values = {"status": ImportStatus.VALIDATING if phase == "validating" else ImportStatus.APPLYING, "rows_done": done, "error_count": errors}
        if total is not None:
            values["rows_total"] = total
        stmt = update(ImportJob).where(ImportJob.id == job_id).values(**values).execution_options(synchronize_session=False)
        if database.is_sqlite:
            # One writer at a time: a second connection would wait on our own write lock.
            # Progress rides in the import's transaction (committed with each batch).
            work.execute(stmt)
            return
        with database.session(org_id) as s:
            s.execute(stmt)

    work = database.open(org_id)
    try:
        job = work.get(ImportJob, job_id)
        options = _options(work, job)
        actor = work.get(User, job.created_by_user_id) if job.created_by_user_id else None
        report = import_employees(work, lambda: ChunkReader(work, job_id), options, actor, progress=progress, commit=work.commit)
        job = work.get(ImportJob, job_id, populate_existing=True)
        _store_report(job, report)
        work.execute(delete(ImportChunk).where(ImportChunk.job_id == job_id))
        work.commit()
    except Exception as error:
        work.rollback()
        with database.session(org_id) as session:
            job = session.get(ImportJob, job_id)
            if job is not None:
                job.status, job.finished_at = ImportStatus.FAILED, utcnow()
                job.failure = f"{type(error).__name__}: {str(error)[:400]}"
        raise
    finally:
        work.close()


def job_report(job: ImportJob) -> dict:
    return {
        "id": job.id,
        "status": job.status.value,
        "mode": job.mode.value,
        "mark_missing_as_left": job.mark_missing_as_left,
        "filename": job.filename,
        "rows_total": job.rows_total,
        "rows_done": job.rows_done,
        "created": job.created_count,
        "updated": job.updated_count,
        "unchanged": job.unchanged_count,
        "marked_left": job.left_count,
        "error_rows": job.error_rows,
        "error_count": job.error_count,
        "errors": job.errors or [],
        "applied": job.applied,
        "failure": job.failure,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }
