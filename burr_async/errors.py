"""The one exception hierarchy of burr_async.

Every error a user can hit derives from :class:`BurrAsyncError`. Messages say what went wrong,
name the application, action or key involved, and what to do about it::

    BurrAsyncError
    ├── ConfigurationError (also a ValueError)
    │   ├── GraphValidationError
    │   └── InvalidIdentifierError
    ├── ApplicationBusyError
    ├── StateOperationError (also a ValueError and a TypeError)
    ├── ActionError
    │   ├── MissingInputError (also a ValueError)
    │   ├── ReservedInputError (also a ValueError)
    │   ├── UndeclaredWriteError
    │   ├── MissingWriteError
    │   ├── InvalidActionResultError (also a TypeError)
    │   └── ChildApplicationError
    ├── ConditionError
    ├── HookError
    ├── SerializationError (also a TypeError)
    └── PersistenceError
        ├── AppDeletedError
        ├── CommitUnknownError
        ├── ConcurrentStepError
        ├── SchemaOutOfDateError
        │   └── SchemaAheadError
        └── StateNotFoundError
"""

from __future__ import annotations

__all__ = [
    "ActionError",
    "AppDeletedError",
    "ApplicationBusyError",
    "BurrAsyncError",
    "ChildApplicationError",
    "CommitUnknownError",
    "ConcurrentStepError",
    "ConditionError",
    "ConfigurationError",
    "GraphValidationError",
    "HookError",
    "InvalidActionResultError",
    "InvalidIdentifierError",
    "MissingInputError",
    "MissingWriteError",
    "PersistenceError",
    "ReservedInputError",
    "SchemaAheadError",
    "SchemaOutOfDateError",
    "SerializationError",
    "StateNotFoundError",
    "StateOperationError",
    "UndeclaredWriteError",
]


_QUOTE_LIMIT = 80


def quote(value: object, limit: int = _QUOTE_LIMIT) -> str:
    """``repr(value)``, shortened to about ``limit`` characters: ids in messages are user data
    and may be long."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 12]}…({len(str(value))} chars)"


def describe_step(
    app_id: str | None,
    partition_key: str | None = None,
    sequence_id: int | None = None,
    action: str | None = None,
) -> str:
    """``app_id=..., partition_key=..., sequence_id=..., action=...``, ids shortened: how
    messages name a step."""
    parts = [f"app_id={quote(app_id)}", f"partition_key={quote(partition_key)}"]
    if sequence_id is not None:
        parts.append(f"sequence_id={sequence_id}")
    if action is not None:
        parts.append(f"action={quote(action)}")
    return ", ".join(parts)


class BurrAsyncError(Exception):
    """Base class of every error raised by burr_async."""


class ConfigurationError(BurrAsyncError, ValueError):
    """The application, builder or persister was configured in a way that cannot work.

    Raised while building, before anything runs or is stored.
    """


class GraphValidationError(ConfigurationError):
    """The graph of actions and transitions is invalid (unknown or duplicate action names,
    a missing entrypoint, actions that can never be reached)."""


class InvalidIdentifierError(ConfigurationError):
    """A name or id breaks its rule, and is refused before anything is written: a table or
    schema name that is not a plain SQL identifier (never quoted into SQL), or an app id or
    partition key with a NUL character or over the documented length."""

    def __init__(self, kind: str, value: object, rule: str | None = None) -> None:
        self.kind = kind
        self.value = value
        rule = rule or (
            "use 1 to 40 characters of letters, digits and underscores, starting with a letter "
            "or underscore"
        )
        super().__init__(f"Invalid {kind} {quote(value)}: {rule}.")


class ApplicationBusyError(BurrAsyncError):
    """Two calls tried to advance the same Application object at once; the steps of one
    application are sequential. Await the first call, or give each task its own application."""


class StateOperationError(BurrAsyncError, ValueError, TypeError):
    """A :class:`~burr_async.state.State` operation does not fit the value it is applied to:
    ``append``/``extend`` to a key that holds no list, ``increment`` of a key that holds no
    number, ``wipe`` without exactly one of ``delete``/``keep``.

    A ``ValueError``, as Burr raises for these, and a ``TypeError``, as burr_async raised
    before, so ``except ValueError`` and ``except TypeError`` both still catch it. ``key`` names
    the state key (None for ``wipe``).
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class ActionError(BurrAsyncError):
    """An action was called or returned in a way its declaration does not allow."""

    def __init__(self, message: str, *, action: str | None = None, key: str | None = None) -> None:
        self.action = action
        self.key = key
        super().__init__(message)


class MissingInputError(ActionError, ValueError):
    """An action needs an input that was neither passed to the call nor bound with ``.bind``."""

    def __init__(self, action: str, missing: list[str], app_id: str | None = None) -> None:
        self.missing = missing
        where = f" (app_id={app_id!r})" if app_id is not None else ""
        super().__init__(
            f"Action {action!r}{where} is missing required input(s) {missing}: pass them as "
            f"inputs={{{', '.join(repr(m) + ': ...' for m in missing)}}} or bind them with "
            f"{action}.bind(...).",
            action=action,
            key=missing[0],
        )


class ReservedInputError(ActionError, ValueError):
    """An input passed to a run call starts with ``__``: such names are reserved for what
    burr_async injects (``__context``), as in Burr."""

    def __init__(self, keys: list[str], app_id: str | None = None) -> None:
        self.keys = keys
        where = f" (app_id={app_id!r})" if app_id is not None else ""
        super().__init__(
            f"Inputs {keys}{where} start with a double underscore, which is reserved for "
            "injected inputs (__context); rename them.",
            key=keys[0],
        )


class UndeclaredWriteError(ActionError):
    """An action changed a state key it does not list in ``writes``; the step is not applied."""

    def __init__(self, action: str, keys: list[str], declared: list[str]) -> None:
        self.keys = keys
        super().__init__(
            f"Action {action!r} wrote state key(s) {keys} that it does not declare "
            f"(writes={declared}). Add them to writes=[...] or stop writing them.",
            action=action,
            key=keys[0],
        )


class MissingWriteError(ActionError):
    """After an action ran, a key it declares in ``writes`` is absent from the state."""

    def __init__(self, action: str, keys: list[str]) -> None:
        self.keys = keys
        super().__init__(
            f"Action {action!r} declares writes {keys} but the state has no such key(s) after it "
            "ran. Write them (for example state.update(key=None)) or remove them from "
            "writes=[...].",
            action=action,
            key=keys[0],
        )


class InvalidActionResultError(ActionError, TypeError):
    """An action returned something other than ``(result_dict, State)`` or a ``State``."""


class ChildApplicationError(ActionError):
    """A child of a fan-out (a sub-application run by ``MapStates``, ``MapActions`` or
    ``MapActionsAndStates``) failed, so the parent step failed. The child's own exception is
    the ``__cause__``; ``child_index`` and ``child_app_id`` say which child it was. The child's
    committed steps stay stored (its failed step too): running the parent step again re-runs
    only the children that had not completed, the failed one from its failed step."""

    def __init__(
        self,
        *,
        action: str,
        app_id: str,
        partition_key: str | None,
        child_index: int,
        child_app_id: str,
        child_action: str | None,
        exception: BaseException,
    ) -> None:
        self.app_id = app_id
        self.partition_key = partition_key
        self.child_index = child_index
        self.child_app_id = child_app_id
        self.child_action = child_action
        where = f" in its action {quote(child_action)}" if child_action is not None else ""
        super().__init__(
            f"Child {child_index} (app_id={quote(child_app_id)}) of fan-out {quote(action)} "
            f"({describe_step(app_id, partition_key)}) failed{where}: "
            f"{type(exception).__name__}: {exception}. The other children were cancelled; "
            "their committed steps are stored. Fix the cause and run the parent again: only the "
            "children that had not completed run again.",
            action=action,
        )


class ConditionError(BurrAsyncError):
    """A transition condition is malformed, or could not be evaluated against the state."""

    def __init__(self, message: str, *, condition: str | None = None, key: str | None = None):
        self.condition = condition
        self.key = key
        super().__init__(message)


class HookError(BurrAsyncError):
    """A lifecycle hook raised; the hook and the action are named and the cause is chained."""

    def __init__(self, hook: object, phase: str, action: str | None, app_id: str) -> None:
        self.hook = hook
        self.phase = phase
        self.action = action
        self.app_id = app_id
        name = type(hook).__qualname__
        target = f" for action {action!r}" if action else ""
        super().__init__(
            f"Hook {name}.{phase}{target} failed (app_id={app_id!r}); see the chained exception. "
            "Hooks must not raise: catch and log inside the hook if its failure is not fatal."
        )


class SerializationError(BurrAsyncError, TypeError):
    """A state value cannot be encoded (or a stored state cannot be decoded); nothing was
    written."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class PersistenceError(BurrAsyncError):
    """Reading or writing a step failed. When raised by ``astep`` the application did not advance:
    its state, ``sequence_id`` and ``position`` are unchanged and the step can be retried."""

    def __init__(
        self,
        message: str,
        *,
        app_id: str | None = None,
        partition_key: str | None = None,
        sequence_id: int | None = None,
        action: str | None = None,
    ) -> None:
        self.app_id = app_id
        self.partition_key = partition_key
        self.sequence_id = sequence_id
        self.action = action
        if app_id is not None:
            message = f"{message} [{describe_step(app_id, partition_key, sequence_id, action)}]"
        super().__init__(message)

    def add_ids(
        self,
        *,
        app_id: str | None = None,
        partition_key: str | None = None,
        sequence_id: int | None = None,
        action: str | None = None,
    ) -> None:
        """Attach the step's ids that the raiser did not know, keeping the type and message of
        the error (the ids then show as a note under it)."""
        if self.app_id is not None or app_id is None:
            return
        self.app_id, self.partition_key = app_id, partition_key
        if self.sequence_id is None:
            self.sequence_id = sequence_id
        if self.action is None:
            self.action = action
        self.add_note(f"[{describe_step(app_id, partition_key, self.sequence_id, self.action)}]")


class AppDeletedError(PersistenceError):
    """A step was written after the one before it, which is not stored: its app was deleted
    (``delete_app``, ``delete_partition``, ``expire``) after this application loaded it.

    Nothing was written: a deleted app is not re-created by an application still holding it.
    To go on, build a new application (``initialize_from`` then starts it afresh).
    """

    def __init__(
        self, *, app_id: str, partition_key: str | None, sequence_id: int, action: str
    ) -> None:
        super().__init__(
            f"The step before this one (sequence_id={sequence_id - 1}) is not stored: the app "
            "was deleted after this application loaded it. Nothing was written; build a new "
            "application to start it afresh",
            app_id=app_id,
            partition_key=partition_key,
            sequence_id=sequence_id,
            action=action,
        )


class CommitUnknownError(PersistenceError):
    """A step's write was sent, the connection failed (or the database did not answer within
    the statement timeout) before the database answered, and the persister could not read back
    whether the row committed.

    The application did not advance. Its next call settles the step: it writes the very same
    step again, which succeeds whether or not the first write had landed; no action runs
    twice for it.
    """


class ConcurrentStepError(PersistenceError):
    """Another writer already committed this ``sequence_id`` of this application.

    Nothing was overwritten. Reload the application (``initialize_from``) to continue from the
    step that won, or drop this request.
    """

    def __init__(
        self, *, app_id: str, partition_key: str | None, sequence_id: int, action: str
    ) -> None:
        super().__init__(
            "Another writer already committed this step of the application; nothing was "
            "overwritten. Reload the application with initialize_from(...) and retry",
            app_id=app_id,
            partition_key=partition_key,
            sequence_id=sequence_id,
            action=action,
        )


class SchemaOutOfDateError(PersistenceError):
    """The persister's table is missing or its migration revision is behind the package's."""

    def __init__(
        self,
        table: str,
        found: str | None,
        expected: str,
        command: str,
        *,
        purpose: str | None = None,
    ) -> None:
        self.table = table
        self.found = found
        self.expected = expected
        state = "is not provisioned" if found is None else f"is at revision {found!r}"
        needs = f"needs revision {expected!r}" + (f" {purpose}" if purpose else "")
        super().__init__(
            f"Table {table!r} {state}; this version of burr_async {needs}. Run: {command}"
        )


class SchemaAheadError(SchemaOutOfDateError):
    """The table was migrated by a newer burr_async, to a revision this package does not know.

    Nothing is changed (no downgrade is attempted). Upgrade burr_async in this process, or, to
    go back to this version, run its ``db downgrade`` from the newer version.
    """

    def __init__(self, table: str, found: str, expected: str) -> None:
        self.table = table
        self.found = found
        self.expected = expected
        PersistenceError.__init__(
            self,
            f"Table {table!r} is at revision {found!r}, which this version of burr_async (revision "
            f"{expected!r}) does not know: a newer burr_async migrated it. Upgrade burr_async "
            "here (pip install -U burr_async); do not run db upgrade from this version.",
        )


class StateNotFoundError(PersistenceError):
    """A specific stored step was asked for (for example a fork source) and does not exist."""
