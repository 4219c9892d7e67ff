from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ParamSpec
from weakref import WeakKeyDictionary

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session

P = ParamSpec("P")


@dataclass(frozen=True)
class Page:
    items: list[Any]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return (self.total + self.per_page - 1) // self.per_page


def list_query(builder: Callable[P, Select]) -> Callable[P, Select]:
    """For the functions that build a list's statement from its filters: the same filters
    give back the same statement object. What is derived from a statement (the page
    statement below, the tenant guard's scoped copy in ``shared.db``) is then built, and
    its SQLAlchemy cache key computed, once per combination of filters instead of on
    every request; building them costs more than running the query. Statements are
    immutable, so one object serves every request and thread."""
    return lru_cache(maxsize=256)(builder)


def _count(stmt: Select) -> Select:
    return select(func.count()).select_from(stmt.order_by(None).subquery())


# statement -> (page statement, count statement), for as long as the statement lives.
_PAGE_STATEMENTS: WeakKeyDictionary[Select, tuple[Select, Select]] = WeakKeyDictionary()


def _page_statements(stmt: Select) -> tuple[Select, Select]:
    derived = _PAGE_STATEMENTS.get(stmt)
    if derived is None:
        count = _count(stmt)
        page = stmt.add_columns(count.scalar_subquery().label("_total")).limit(bindparam("page_limit")).offset(bindparam("page_offset"))
        derived = _PAGE_STATEMENTS[stmt] = (page, count)
    return derived


def paginate(session: Session, stmt: Select, page: int, per_page: int) -> Page:
    """One page of ``stmt`` and the total count, in one round trip: the total is an
    uncorrelated scalar subquery, which the database evaluates once, while the page
    itself can stop after ``page * per_page`` rows of an index in the list's order
    (a window count would have to read and sort every matching row first). Only a
    page past the end needs a second query for the total. The page statement is made
    once per ``stmt`` (see ``list_query``), with the limit and offset as parameters."""
    page_stmt, count = _page_statements(stmt)
    rows = session.execute(page_stmt, {"page_limit": per_page, "page_offset": (page - 1) * per_page}).all()
    total = rows[0][-1] if rows else session.scalar(count) or 0
    return Page(items=[row[0] for row in rows], page=page, per_page=per_page, total=total)
