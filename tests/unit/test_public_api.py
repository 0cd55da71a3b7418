"""The public API: what ``burr_async`` exports."""

from __future__ import annotations

import importlib
from collections import Counter

import pytest

import burr_async

# Modules whose __all__ is public API and is re-exported by ``burr_async``.
REEXPORTED_MODULES = [
    "burr_async.actions",
    "burr_async.application",
    "burr_async.builder",
    "burr_async.conditions",
    "burr_async.context",
    "burr_async.errors",
    "burr_async.graph",
    "burr_async.hooks",
    "burr_async.persistence.base",
    "burr_async.persistence.burr_names",
    "burr_async.persistence.memory",
    "burr_async.serde",
    "burr_async.state",
    "burr_async.streaming",
]

# Names in a module's __all__ that are not re-exported at the top level, with the reason.
NOT_REEXPORTED = {
    # A Literal type alias for a step's status; importable from burr_async.persistence.
    ("burr_async.persistence.base", "Status"),
}


def test_all_has_no_duplicates() -> None:
    duplicates = [name for name, count in Counter(burr_async.__all__).items() if count > 1]
    assert duplicates == []


@pytest.mark.parametrize("name", sorted(burr_async.__all__))
def test_every_name_in_all_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from burr_async import {name}", namespace)
    assert namespace[name] is getattr(burr_async, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from burr_async import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(burr_async.__all__)


@pytest.mark.parametrize("module_name", REEXPORTED_MODULES)
def test_module_all_is_reexported(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = module.__all__
    assert len(exported) == len(set(exported)), f"duplicates in {module_name}.__all__"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ lists missing {name!r}"
        if (module_name, name) in NOT_REEXPORTED:
            continue
        assert name in burr_async.__all__, f"{module_name}.{name} is not in burr_async.__all__"
        assert getattr(burr_async, name) is getattr(module, name)


def test_exceptions_share_one_root() -> None:
    errors = importlib.import_module("burr_async.errors")
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), burr_async.BurrAsyncError)
    assert issubclass(burr_async.ApplicationBusyError, burr_async.BurrAsyncError)


def test_core_verbs_are_exported() -> None:
    for name in (
        "ApplicationBuilder",
        "State",
        "action",
        "streaming_action",
        "default",
        "expr",
        "when",
        "Result",
        "InMemoryPersister",
    ):
        assert name in burr_async.__all__
