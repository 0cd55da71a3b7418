"""The one place where database and driver errors become burr_async's errors.

Every public entry point of the persister and of :mod:`burr_async.persistence.migrate` runs its
work inside :func:`translated`: a driver, SQLAlchemy, Alembic or OS error raised there leaves as
a :class:`~burr_async.errors.PersistenceError` (or :class:`~burr_async.errors.SchemaOutOfDateError`
when the table is missing) naming what was being done, the table and the step's ids, with the
original chained as ``__cause__``. An error that already is burr_async's keeps its type and
message; the ids are attached to it. Anything else (a bug) passes through untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from burr_async.errors import (
    BurrAsyncError,
    PersistenceError,
    SchemaOutOfDateError,
    describe_step,
)

__all__: list[str] = []

# what drivers raise for values they cannot encode, besides their own exception classes
# (text with lone surrogates, integers out of range); a TypeError is a bug, left alone
_ENCODING_ERRORS: tuple[type[Exception], ...] = (ValueError, OverflowError)
_DETAIL_LIMIT = 300


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """What an error message needs to know about where it happened."""

    table: str
    """The table, schema-qualified when it has one."""
    upgrade_command: Callable[[], str]
    """The command that provisions the table, for SchemaOutOfDateError."""
    expected_revision: str
    driver_errors: tuple[type[Exception], ...] = ()
    is_missing_table: Callable[[BaseException], bool] = field(default=lambda exc: False)


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``, shortened: what a one-line error says of its
    cause (SQLAlchemy's wrapper is unwrapped to the driver's error)."""
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    detail = lines[0] if lines else ""
    if len(detail) > _DETAIL_LIMIT:
        detail = detail[: _DETAIL_LIMIT - 1] + "…"
    return f"{type(inner).__name__}: {detail}" if detail else type(inner).__name__


class translated:
    # lower case: it reads as a verb, ``with translated(...):``
    """Context manager translating what its body raises (see the module docstring)."""

    __slots__ = ("_context", "_extra", "_ids", "_what")

    def __init__(
        self,
        context: ErrorContext,
        what: str,
        *,
        extra: tuple[type[Exception], ...] = (),
        **ids: Any,
    ) -> None:
        self._context = context
        self._what = what
        self._extra = extra
        self._ids = ids

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, Exception):
            return  # success, or a cancellation: not ours to translate
        context = self._context
        if isinstance(exc, BurrAsyncError):
            if isinstance(exc, PersistenceError):
                exc.add_ids(**self._ids)
            elif self._ids.get("app_id") is not None:  # a state that cannot be (de)coded
                exc.add_note(f"[{describe_step(**self._ids)}]")
            return
        if not isinstance(
            exc, (SQLAlchemyError, OSError, *_ENCODING_ERRORS, *context.driver_errors, *self._extra)
        ):
            return
        if context.is_missing_table(exc):
            missing = SchemaOutOfDateError(
                context.table, None, context.expected_revision, context.upgrade_command()
            )
            missing.add_ids(**self._ids)
            raise missing from exc
        raise PersistenceError(
            f"{self._what} failed on table {context.table!r}: {describe(exc)}", **self._ids
        ) from exc
