from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Page:
    items: list[Any]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return (self.total + self.per_page - 1) // self.per_page


def _count(stmt: Select) -> Select:
    return select(func.count()).select_from(stmt.order_by(None).subquery())


def paginate(session: Session, stmt: Select, page: int, per_page: int) -> Page:
    """One page of ``stmt`` and the total count, in one round trip: the total is an
    uncorrelated scalar subquery, which the database evaluates once, while the page
    itself can stop after ``page * per_page`` rows of an index in the list's order
    (a window count would have to read and sort every matching row first). Only a
    page past the end needs a second query for the total."""
    rows = session.execute(
        stmt.add_columns(_count(stmt).scalar_subquery().label("_total")).limit(per_page).offset((page - 1) * per_page)
    ).all()
    total = rows[0][-1] if rows else session.scalar(_count(stmt)) or 0
    return Page(items=[row[0] for row in rows], page=page, per_page=per_page, total=total)
