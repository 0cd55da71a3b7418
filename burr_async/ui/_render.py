"""The HTML fragments the templates cannot express well: the state as a collapsible JSON tree,
the diff between two states, and the display forms of times, errors and JSON text.

Everything stored is user data. Strings are first passed through the CLI's ``_printable``
(control characters, bidi overrides and other non-printable characters shown as escapes, so
that no text can reorder or hide the page's text) and then HTML-escaped by ``markupsafe``, the
same escaping Jinja's autoescape applies; the only markup in the result is written here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from burr_async.cli import _diff_lines, _display, _first_line, _printable, _when

__all__ = ["DiffLine", "diff", "first_line", "json_text", "json_tree", "printable", "when"]

TREE_BUDGET = 5000
"""The most values a JSON tree shows; the rest is summarised (the raw JSON shows everything)."""

_OPEN_DEPTH = 2  # containers this shallow are expanded, if small
_OPEN_SIZE = 25
_MAX_DEPTH = 200


def when(value: dt.datetime) -> str:
    """A step's time, as the CLI shows it: UTC, to the second."""
    return _when(value)


def first_line(text: str) -> str:
    """The first non-blank line of an error, as the CLI's history shows it."""
    return _printable(_first_line(text))


def printable(text: str) -> str:
    """``text`` with its non-printable characters shown as escapes (newlines kept)."""
    return _printable(text, multiline=True)


def json_text(value: Any) -> str:
    """``value`` as indented JSON, non-JSON values shown as the CLI's ``show`` shows them."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=_display)
    return _printable(text, as_json=True, multiline=True)


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a diff: ``op`` is ``+`` (added), ``-`` (removed) or ``~`` (changed)."""

    op: str
    text: str

    @property
    def kind(self) -> str:
        """The CSS class of the line."""
        return {"+": "added", "-": "removed"}.get(self.op, "changed")


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[DiffLine]:
    """The state keys added, removed and changed from ``old`` to ``new``: the lines of
    ``burr-async diff`` (values as JSON), split into their operation and text."""
    return [DiffLine(line[0], line[2:]) for line in _diff_lines(old, new)]


def json_tree(value: Any, *, title: str = "state") -> Markup:
    """``value`` as nested ``<details>``/``<summary>`` elements (collapsible without
    JavaScript): small shallow containers open, deeper or larger ones closed; at most
    :data:`TREE_BUDGET` values are shown."""
    tree = _Tree()
    body = tree.node(Markup('<span class="j-title">{}</span>').format(title), value, 0)
    return Markup('<div class="json-tree">{}</div>').format(body)


class _Tree:
    """One rendering of a JSON tree, counting the values shown against the budget."""

    def __init__(self) -> None:
        self.shown = 0

    def node(self, head: Markup, value: Any, depth: int) -> Markup:
        """``head`` followed by ``value``: inline for a scalar or an empty container, else as
        a ``<details>`` element listing its items."""
        self.shown += 1
        value = _plain(value)
        if not isinstance(value, dict | list) or not value:
            return Markup("{} {}").format(head, _scalar(value))
        items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        brackets = ("{", "}") if isinstance(value, dict) else ("[", "]")
        noun = "key" if isinstance(value, dict) else "item"
        count = f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"
        summary = Markup('{} <span class="j-count">{}{}{}</span>').format(
            head, brackets[0], count, brackets[1]
        )
        if depth >= _MAX_DEPTH:
            return summary
        rows = []
        for index, (key, child) in enumerate(items):
            if self.shown >= TREE_BUDGET:
                left = len(items) - index
                rows.append(
                    Markup('<li class="j-more">… {} more not shown (see the raw JSON)</li>').format(
                        left
                    )
                )
                break
            if isinstance(value, dict):
                text = _printable(json.dumps(str(key), ensure_ascii=False), as_json=True)
                key_head = Markup('<span class="j-key">{}</span>:').format(text)
            else:
                key_head = Markup('<span class="j-index">{}</span>:').format(key)
            rows.append(Markup("<li>{}</li>").format(self.node(key_head, child, depth + 1)))
        is_open = depth < _OPEN_DEPTH and len(items) <= _OPEN_SIZE
        return Markup('<details{}><summary>{}</summary><ul class="j">{}</ul></details>').format(
            Markup(" open") if is_open else "", summary, Markup("").join(rows)
        )


def _plain(value: Any) -> Any:
    """``value`` as JSON data: tuples as lists, other non-JSON values as ``show`` shows
    them (ISO times, sorted sets, model data, else ``str``)."""
    if value is None or isinstance(value, str | bool | int | float | dict | list):
        return value
    if isinstance(value, tuple):
        return list(value)
    return _display(value)


def _scalar(value: Any) -> Markup:
    """A JSON scalar (or an empty container), typed by its CSS class."""
    if isinstance(value, str):
        text = _printable(json.dumps(value, ensure_ascii=False), as_json=True)
        return Markup('<span class="j-str">{}</span>').format(text)
    if value is None:
        return Markup('<span class="j-null">null</span>')
    if isinstance(value, bool):
        return Markup('<span class="j-bool">{}</span>').format("true" if value else "false")
    if isinstance(value, int | float):
        return Markup('<span class="j-num">{}</span>').format(json.dumps(value))
    if isinstance(value, dict):
        return Markup('<span class="j-count">{}</span>')
    return Markup('<span class="j-count">[]</span>')
