"""Griffe extension for the docs build: list only public base classes.

A class that takes part of its implementation from a private mixin (``SQLAlchemyPersister``
from ``persistence._saving.Saving``) would otherwise show that mixin under "Bases", a name a
reader can neither import by contract nor find in the API pages. A base is private when a
part of its dotted path starts with an underscore.
"""

from __future__ import annotations

from typing import Any

import griffe


def _is_private(base: str | griffe.Expr) -> bool:
    path = base.canonical_path if isinstance(base, griffe.Expr) else base
    return any(part.startswith("_") for part in path.split("."))


class PublicBases(griffe.Extension):
    """Drop private base classes from every class the docs render."""

    def on_class_instance(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        cls.bases = [base for base in cls.bases if not _is_private(base)]
