"""What a stored row becomes and what a row may hold: the spawning-parent pointer of the
``spawn_*`` columns, app summaries of a listing query, history paging arguments, and the NUL
rule for encoded states. Pure functions of the SQLAlchemy persister's rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from burr_async.errors import ConfigurationError, SerializationError, quote
from burr_async.persistence import _delta
from burr_async.persistence._dialect import as_utc
from burr_async.persistence.base import AppSummary, ParentPointer, _check_limit

__all__ = ["ALL", "ESCAPED_NUL", "page", "pointer", "refuse_nul", "summaries"]

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
    """``(after, limit)`` for a history query; ConfigurationError for a bad page."""
    if after_sequence_id is not None and (
        isinstance(after_sequence_id, bool) or not isinstance(after_sequence_id, int)
    ):
        raise ConfigurationError(f"after_sequence_id must be an int, not {after_sequence_id!r}.")
    return (-1 if after_sequence_id is None else after_sequence_id), (
        ALL if limit is None else min(_check_limit(limit, "steps"), ALL)
    )


ESCAPED_NUL = b"\\u0000"  # how JSON writes a NUL character inside a string


def refuse_nul(encoded: bytes) -> None:
    """SerializationError naming the state key whose value holds a string (or dict key) with a
    NUL character: Postgres cannot store one in JSONB, so neither backend does. ``encoded``
    merely contains the escape, which may be a backslash followed by ``u0000`` in the text."""

    def has_nul(value: object) -> bool:
        if isinstance(value, str):
            return "\x00" in value
        if isinstance(value, dict):
            return any(has_nul(k) or has_nul(v) for k, v in value.items())
        if isinstance(value, list):
            return any(has_nul(v) for v in value)
        return False

    values = _delta.sections(encoded)
    for key, value in (orjson.loads(encoded) if values is None else values).items():
        if has_nul(key) or has_nul(value):
            raise SerializationError(
                f"State key {quote(key)} holds a string with a NUL character, which the "
                "database cannot store (Postgres refuses it in JSON, and SQLite is held to the "
                "same rule). Remove or replace the NUL characters. Nothing was written.",
                key=key,
            )
