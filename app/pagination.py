"""Pages of a list a person may have hundreds of (the account page's)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select

from .db import db

T = TypeVar("T")

#: Rows on one page of a list.
PER_PAGE = 20


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its rows, its number (from 1) and how many there are."""

    items: list[T]
    number: int
    count: int
    total: int


def page_number(values: Mapping[str, Any], name: str) -> int:
    """The page ``name`` asks for, 1 unless it is a positive number."""
    raw = values.get(name, "")
    if not isinstance(raw, str) or not raw.isdigit() or len(raw) > 6:
        return 1
    return max(1, int(raw))


def paginate(
    rows: Select[Any], where: list[Any], number: int, per_page: int = PER_PAGE
) -> Page[Any]:
    """Page ``number`` of ``rows`` (already filtered by ``where`` and ordered).

    Two statements: the count, then at most ``per_page`` rows. A number past
    the end shows the last page, so a list that shrank (its last row
    revoked) never comes back empty.
    """
    entity = rows.column_descriptions[0]["entity"]
    total = db.session.scalar(select(func.count()).select_from(entity).where(*where))
    count = max(1, -(-(total or 0) // per_page))
    number = min(number, count)
    items = list(
        db.session.scalars(rows.limit(per_page).offset((number - 1) * per_page))
    )
    return Page(items, number, count, total or 0)
