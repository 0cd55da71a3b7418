"""Griffe extension for the docs build: render the package's Sphinx-style roles as links.

The package's docstrings use ``:class:`Name```, ``:meth:`~pkg.mod.Cls.meth``` and friends.
mkdocstrings renders docstrings as Markdown, where those roles would show up literally; this
rewrites each one into a Markdown cross-reference that mkdocs-autorefs resolves (bare names
are resolved in the docstring's scope, see ``scoped_crossrefs`` in mkdocs.yml).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|mod|attr|exc|data|obj):`(~?)([\w.]+)`")
_LITERAL_INTRO = re.compile(r"(?<=\S)::$", re.MULTILINE)  # reST "text::" before a literal block


def _to_crossref(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    text = target.rsplit(".", 1)[-1] if short else target
    return f"[`{text}`][{target}]"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring to Markdown cross-references, and reST's
    ``text::`` literal-block marker to ``text:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            text = _ROLE.sub(_to_crossref, obj.docstring.value)
            obj.docstring.value = _LITERAL_INTRO.sub(":", text)
