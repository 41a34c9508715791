"""Coriolis list paging in SQL: ordered by the requested keys (then id), a keyset marker, a limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from core.errors import NotFound


@dataclass
class Page:
    #: (column name, "asc" | "desc"); empty means Coriolis's default, created_at desc
    sort: list[tuple[str, str]] = field(default_factory=list)
    marker: str | None = None
    limit: int | None = None


def paged(s: Session, q: Select[Any], model: Any, page: Page | None) -> Select[Any]:
    page = page or Page()
    keys = list(page.sort) or [("created_at", "desc")]
    if all(name != "id" for name, _ in keys):
        keys.append(("id", keys[-1][1]))  # a total order, so the marker is unambiguous
    cols = [(getattr(model, name), direction) for name, direction in keys]
    if page.marker:
        marker = s.get(model, page.marker)
        if marker is None:
            raise NotFound(f"Marker '{page.marker}' could not be found")
        # Rows strictly after the marker in this order: equal on the first i keys, past it on key i.
        after = []
        for i, (col, direction) in enumerate(cols):
            value = getattr(marker, col.key)
            equal = [c == getattr(marker, c.key) for c, _ in cols[:i]]
            after.append(and_(*equal, col < value if direction == "desc" else col > value))
        q = q.where(or_(*after))
    q = q.order_by(*[col.desc() if direction == "desc" else col.asc() for col, direction in cols])
    return q.limit(page.limit) if page.limit is not None else q
