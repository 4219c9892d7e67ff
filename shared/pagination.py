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


def paginate(session: Session, stmt: Select, page: int, per_page: int) -> Page:
    """One page of ``stmt`` and the total count, in one query: the total rides along
    as a window count on each row, so only a page past the end needs a second query."""
    rows = session.execute(stmt.add_columns(func.count().over().label("_total")).limit(per_page).offset((page - 1) * per_page)).all()
    if rows:
        total = rows[0][-1]
    else:
        total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    return Page(items=[row[0] for row in rows], page=page, per_page=per_page, total=total)
