"""What a stored row becomes and what a row may hold: the spawning-parent pointer of the
``spawn_*`` columns, app summaries of a listing query, history paging arguments, and the NUL
rule for encoded states. Pure functions of the SQLAlchemy persister's rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from burr_async.persistence import _delta
from burr_async.persistence._dialect import as_utc
from burr_async.persistence.base import AppSummary, ParentPointer, _check_page, _refuse_nul

__all__ = ["ALL", "page", "pointer", "refuse_nul", "summaries"]

ALL = 2**31 - 1  # no limit: more steps than a sequence id can number


def pointer(
    app_id: str | None, partition_key: str | None, sequence_id: int | None
) -> ParentPointer | None:
    """The spawning parent stored in a row's ``spawn_*`` columns (NULL: none; a partition key
    of ``''``: none)."""
    if app_id is None or sequence_id is None:
        return None
    return ParentPointer(app_id, partition_key or None, sequence_id)


def summaries(rows: Sequence[sa.Row[Any]]) -> list[AppSummary]:
    """AppSummary of each row of :func:`_retention.apps_page` (the spawning parent from its
    ``spawn_*`` columns, when the table has them)."""
    summaries = []
    for row in rows:
        values = row._mapping
        summaries.append(
            AppSummary(
                row.partition_key or None,
                row.app_uid,
                row.sequence_id,
                row.position,
                row.status,
                as_utc(row.created_at),
                pointer(
                    values.get("spawn_app_uid"),
                    values.get("spawn_partition_key"),
                    values.get("spawn_sequence_id"),
                ),
            )
        )
    return summaries


def page(after_sequence_id: int | None, limit: int | None) -> tuple[int, int]:
    """``(after, limit)`` for a history query (``base._check_page``, no limit as :data:`ALL`);
    ConfigurationError for a bad page."""
    after, most = _check_page(after_sequence_id, limit)
    return after, (ALL if most is None else min(most, ALL))


def refuse_nul(encoded: bytes) -> None:
    """SerializationError naming the state key whose value holds a string (or dict key) with a
    NUL character (``base._refuse_nul``). ``encoded`` (a full state or a delta) merely contains
    the escape, which may be a backslash followed by ``u0000`` in the text."""
    values = _delta.sections(encoded)
    _refuse_nul(orjson.loads(encoded) if values is None else values)
