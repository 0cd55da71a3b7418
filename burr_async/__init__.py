"""burr_async: async-first state machines with durable, per-step persistence.

The SQLAlchemy persisters are imported on first use: ``import burr_async`` loads neither
SQLAlchemy nor Alembic.
"""

from typing import TYPE_CHECKING

from burr_async._lazy import lazy_exports
from burr_async.actions import (
    Action,
    AsyncStreamingAction,
    FunctionAction,
    Input,
    Result,
    StreamingAction,
    StreamingFunctionAction,
    action,
    streaming_action,
)
from burr_async.application import Application
from burr_async.builder import ApplicationBuilder
from burr_async.conditions import Condition, default, expr, safe_expr, when
from burr_async.context import ApplicationContext
from burr_async.errors import (
    ActionError,
    AppDeletedError,
    ApplicationBusyError,
    BurrAsyncError,
    ChildApplicationError,
    CommitUnknownError,
    ConcurrentStepError,
    ConditionError,
    ConfigurationError,
    GraphValidationError,
    HookError,
    InvalidActionResultError,
    InvalidIdentifierError,
    MissingInputError,
    MissingWriteError,
    PersistenceError,
    ReservedInputError,
    SchemaAheadError,
    SchemaOutOfDateError,
    SerializationError,
    StateNotFoundError,
    StateOperationError,
    UndeclaredWriteError,
)
from burr_async.graph import ApplicationGraph, Graph, GraphBuilder, Transition
from burr_async.hooks import (
    ExecuteMethod,
    PostApplicationCreateHook,
    PostApplicationExecuteCallHook,
    PostApplicationExecuteCallHookAsync,
    PostRunStepHook,
    PostRunStepHookAsync,
    PreApplicationExecuteCallHook,
    PreApplicationExecuteCallHookAsync,
    PreRunStepHook,
    PreRunStepHookAsync,
)
from burr_async.parallelism import MapActions, MapActionsAndStates, MapStates, RunnableGraph
from burr_async.persistence.base import (
    AppSummary,
    AsyncBaseStateLoader,
    AsyncBaseStatePersister,
    AsyncBaseStateSaver,
    ParentPointer,
    PersistedStateData,
)
from burr_async.persistence.memory import (
    AsyncDevNullPersister,
    AsyncInMemoryPersister,
    InMemoryPersister,
)
from burr_async.serde import OrjsonSerde, Serde
from burr_async.state import State
from burr_async.streaming import AsyncStreamingResultContainer, StreamingResultContainer

if TYPE_CHECKING:
    from burr_async.persistence.burr_names import (
        AsyncPostgreSQLPersister,
        AsyncSQLitePersister,
        PostgreSQLPersister,
        SQLitePersister,
    )
    from burr_async.persistence.sqlalchemy import SQLAlchemyPersister

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "SQLAlchemyPersister": "burr_async.persistence.sqlalchemy",
        **dict.fromkeys(
            (
                "AsyncPostgreSQLPersister",
                "AsyncSQLitePersister",
                "PostgreSQLPersister",
                "SQLitePersister",
            ),
            "burr_async.persistence.burr_names",
        ),
    },
)

__all__ = [
    "Action",
    "ActionError",
    "AppDeletedError",
    "AppSummary",
    "Application",
    "ApplicationBuilder",
    "ApplicationBusyError",
    "ApplicationContext",
    "ApplicationGraph",
    "AsyncBaseStateLoader",
    "AsyncBaseStatePersister",
    "AsyncBaseStateSaver",
    "AsyncDevNullPersister",
    "AsyncInMemoryPersister",
    "AsyncPostgreSQLPersister",
    "AsyncSQLitePersister",
    "AsyncStreamingAction",
    "AsyncStreamingResultContainer",
    "BurrAsyncError",
    "ChildApplicationError",
    "CommitUnknownError",
    "ConcurrentStepError",
    "Condition",
    "ConditionError",
    "ConfigurationError",
    "ExecuteMethod",
    "FunctionAction",
    "Graph",
    "GraphBuilder",
    "GraphValidationError",
    "HookError",
    "InMemoryPersister",
    "Input",
    "InvalidActionResultError",
    "InvalidIdentifierError",
    "MapActions",
    "MapActionsAndStates",
    "MapStates",
    "MissingInputError",
    "MissingWriteError",
    "OrjsonSerde",
    "ParentPointer",
    "PersistedStateData",
    "PersistenceError",
    "PostApplicationCreateHook",
    "PostApplicationExecuteCallHook",
    "PostApplicationExecuteCallHookAsync",
    "PostRunStepHook",
    "PostRunStepHookAsync",
    "PostgreSQLPersister",
    "PreApplicationExecuteCallHook",
    "PreApplicationExecuteCallHookAsync",
    "PreRunStepHook",
    "PreRunStepHookAsync",
    "ReservedInputError",
    "Result",
    "RunnableGraph",
    "SQLAlchemyPersister",
    "SQLitePersister",
    "SchemaAheadError",
    "SchemaOutOfDateError",
    "Serde",
    "SerializationError",
    "State",
    "StateNotFoundError",
    "StateOperationError",
    "StreamingAction",
    "StreamingFunctionAction",
    "StreamingResultContainer",
    "Transition",
    "UndeclaredWriteError",
    "action",
    "default",
    "expr",
    "safe_expr",
    "streaming_action",
    "when",
]
