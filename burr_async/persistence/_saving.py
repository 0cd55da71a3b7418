"""The row a step is stored as, and the save an application's step store uses.

:class:`Saving` is the part of :class:`~burr_async.persistence.sqlalchemy.SQLAlchemyPersister`
that turns a step into its row (delta or full state, checked for what the table and the serde
take) and that saves it settled: run to its end whatever cancels the caller, and telling how it
ended, ``(error, cancellation)``, instead of raising (``GroupWriter.write_settled``). The step
store of an application calls :meth:`Saving._save_settled` instead of ``save`` when ``save`` is
the persister's own (``_settled_save_of``), so that an idle write needs no task of its own.
Both saves remember the row of a step whose write ended in ``CommitUnknownError``, so that the
step written again is that very row, which the writer then recognises as stored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from burr_async._shield import settle
from burr_async.errors import CommitUnknownError, SchemaOutOfDateError
from burr_async.persistence import _delta, _rows
from burr_async.persistence._dialect import KEY, Key, RowValues
from burr_async.persistence._errors import ErrorContext, translated
from burr_async.persistence._writer import _UNSETTLED_LIMIT, GroupWriter
from burr_async.persistence.base import _ESCAPED_NUL, ParentPointer, Status, _check_ids
from burr_async.serde import Serde
from burr_async.state import State

__all__: list[str] = []


class Saving:
    """The persister's saving half (a mixin of ``SQLAlchemyPersister``, which sets what is
    declared here)."""

    _schema_checked: bool
    _closed: bool
    _writer: GroupWriter
    _encoder: _delta.DeltaEncoder | None
    _errors: ErrorContext
    _serde: Serde
    _deltas: bool  # whether the table takes delta rows
    _trims: bool  # and whether they may have a trim section
    _spawning: bool  # whether the table has the spawn_* columns
    # the rows of steps whose write ended in CommitUnknownError, with the state they stood
    # for: written again, such a step is sent as the very row first sent (see _encode)
    _unsure: dict[Key, tuple[State, _delta.Encoded]]

    if TYPE_CHECKING:
        save: Callable[..., Coroutine[Any, Any, None]]  # SQLAlchemyPersister.save

        def _refuse_spawning_parent(self) -> SchemaOutOfDateError: ...

        def _check_open(self, call: str) -> None: ...

        async def _check_schema(self) -> None: ...

    async def _save(
        self,
        partition_key: str | None,
        app_id: str,
        sequence_id: int,
        position: str,
        state: State,
        status: Status,
        error: str | None,
        parent: ParentPointer | None,
        created_at: dt.datetime | None,
        spawning_parent: ParentPointer | None = None,
    ) -> None:
        """:meth:`save`, stamped ``created_at`` (an aware datetime) instead of now: how
        ``burr-async import-burr`` keeps the time Burr stored a step at."""
        self._check_open("save")
        _check_ids(app_id, partition_key)
        with self._saving(app_id, partition_key, sequence_id, position):
            if not self._schema_checked:
                await self._check_schema()
            values, written = self._row(
                partition_key,
                app_id,
                sequence_id,
                position,
                state,
                status,
                error,
                parent,
                created_at,
                spawning_parent,
            )
            try:
                await self._writer.write(values)
            except Exception as exc:
                self._unsettled(values, state, written, exc)
                raise
            self._committed(values, written)

    async def _save_settled(
        self,
        partition_key: str | None,
        app_id: str,
        sequence_id: int,
        position: str,
        state: State,
        status: Status,
        *,
        error: str | None = None,
        parent: ParentPointer | None = None,
        spawning_parent: ParentPointer | None = None,
    ) -> tuple[Exception | None, asyncio.CancelledError | None]:
        """:meth:`save` for an application's step store, telling how it ended instead of
        raising: ``(error, cancellation)``, the error :meth:`save` would raise (None: the step
        is committed) and the cancellation of the caller that arrived meanwhile, if one did.
        Runs to its end whatever cancels the caller; an idle writer sends the row from the
        calling task (``GroupWriter.write_settled``), with no task of its own."""
        if not self._schema_checked or self._closed:  # the first save: as save() runs
            outcome = await settle(
                self.save(
                    partition_key,
                    app_id,
                    sequence_id,
                    position,
                    state,
                    status,
                    error=error,
                    parent=parent,
                    spawning_parent=spawning_parent,
                )
            )
            return outcome.error, outcome.cancellation
        try:
            _check_ids(app_id, partition_key)
            with self._saving(app_id, partition_key, sequence_id, position):
                values, written = self._row(
                    partition_key,
                    app_id,
                    sequence_id,
                    position,
                    state,
                    status,
                    error,
                    parent,
                    None,
                    spawning_parent,
                )
        except Exception as exc:  # refused before anything was sent
            return exc, None
        failure, cancellation = await self._writer.write_settled(values)
        if failure is None:
            self._committed(values, written)
            return None, cancellation
        self._unsettled(values, state, written, failure)
        try:
            with self._saving(app_id, partition_key, sequence_id, position):
                raise failure
        except Exception as exc:  # the driver's error, translated at the seam
            return exc, cancellation

    def _committed(self, values: RowValues, written: _delta.Encoded | None) -> None:
        """Once the row ``values`` is committed: its delta encoding (``written``, from
        :meth:`_row`) becomes the app's chain, the base of its next delta."""
        if written is not None and self._encoder is not None:
            self._encoder.remember(values[0], values[1], written.chain)
            if self._unsure:
                self._unsure.pop(values[KEY], None)

    def _unsettled(
        self,
        values: RowValues,
        state: State,
        written: _delta.Encoded | None,
        failure: BaseException,
    ) -> None:
        """After the write of ``values`` failed: when whether it committed is unknown, keep
        its delta encoding, so that the step written again is this very row. The encoder's
        choice may differ by then (a load of the app in between makes the loaded step the
        base), and the writer tells that the row stored is this step by comparing the rows."""
        if written is not None and isinstance(failure, CommitUnknownError):
            self._unsure[values[KEY]] = (state, written)
            while len(self._unsure) > _UNSETTLED_LIMIT:
                del self._unsure[next(iter(self._unsure))]

    def _encode(
        self, partition_key: str, app_id: str, sequence_id: int, state: State
    ) -> _delta.Encoded:
        """The delta encoder's row for ``state`` at ``sequence_id``; for a step whose earlier
        write ended in CommitUnknownError, written again with the same state, that write's
        row (:meth:`_unsettled`)."""
        if self._unsure:
            earlier = self._unsure.get((partition_key, app_id, sequence_id))
            if earlier is not None and _same_state(earlier[0], state):
                return earlier[1]
        assert self._encoder is not None
        return self._encoder.encode(partition_key, app_id, sequence_id, state, trims=self._trims)

    def _saving(
        self, app_id: str, partition_key: str | None, sequence_id: int, position: str
    ) -> translated:
        return translated(
            self._errors,
            "Saving the step",
            app_id=app_id,
            partition_key=partition_key,
            sequence_id=sequence_id,
            action=position,
        )

    def _row(
        self,
        partition_key: str | None,
        app_id: str,
        sequence_id: int,
        position: str,
        state: State,
        status: Status,
        error: str | None,
        parent: ParentPointer | None,
        created_at: dt.datetime | None,
        spawning_parent: ParentPointer | None,
    ) -> tuple[RowValues, _delta.Encoded | None]:
        """The step's row, and the delta encoding to remember once it is committed (None for a
        full state). SerializationError for a state the serde does not write, and
        SchemaOutOfDateError for a spawning parent the table has no columns for."""
        if spawning_parent is not None and not self._spawning:
            raise self._refuse_spawning_parent()
        pk = partition_key or ""
        written = (
            self._encode(pk, app_id, sequence_id, state)
            if self._deltas and self._encoder is not None
            else None
        )
        encoded = self._serde.dumps(state) if written is None else written.text
        if _ESCAPED_NUL in encoded:
            _rows.refuse_nul(encoded)
        values = (
            pk,
            app_id,
            sequence_id,
            position,
            status,
            encoded.decode(),
            None if error is None else error.replace("\x00", "\\x00"),
            dt.datetime.now(dt.UTC) if created_at is None else created_at,
            parent.app_id if parent else None,
            (parent.partition_key or "") if parent else None,
            parent.sequence_id if parent else None,
            written is not None and written.delta,
            # every row holds the spawn columns' values; the dialect of a table without
            # them leaves them out (they are None there: refused above otherwise)
            spawning_parent.app_id if spawning_parent else None,
            (spawning_parent.partition_key or "") if spawning_parent else None,
            spawning_parent.sequence_id if spawning_parent else None,
        )
        return values, written


def _same_state(earlier: State, state: State) -> bool:
    """Whether ``state`` is ``earlier`` (an application writing its step again), or holds the
    same values."""
    if earlier is state:
        return True
    try:
        return bool(earlier._data == state._data)
    except Exception:  # values that cannot be compared (say, arrays): not known to be equal
        return False
