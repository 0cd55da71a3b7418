"""The graph pictures of the web UI, as Mermaid ``flowchart`` text.

The state table does not store the graph, so a picture is drawn from one of two sources:

* the graph the user gave (``create_app(persister, graph=...)`` or ``burr-async ui --graph
  MODULE:OBJECT``): a :class:`~burr_async.graph.Graph`, an
  :class:`~burr_async.graph.ApplicationGraph`, an :class:`~burr_async.application.Application`
  or an (``Application``/``Graph``) builder, see :func:`resolve_graph`;
* else the *observed* graph of one app: the positions its stored steps were at, and an edge
  from each position to the next one seen (:class:`Observed`).

Action names, condition names and positions are user data: every label is written with
:func:`label`, which keeps letters, digits and a few punctuation marks and writes every other
character as a Mermaid entity code (``#60;`` for ``<``), so that no text can end a label, add
a statement or inject markup; node ids come from :func:`burr_async.graph._mermaid_id` plus a
counter, so they are unique and plain.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from burr_async._step_store import AT_ENTRYPOINT
from burr_async.application import Application
from burr_async.builder import ApplicationBuilder
from burr_async.conditions import default
from burr_async.errors import ConfigurationError
from burr_async.graph import ApplicationGraph, Graph, GraphBuilder, _mermaid_id

__all__ = [
    "MAX_EDGES",
    "MAX_NODES",
    "GivenGraph",
    "Observed",
    "flowchart",
    "label",
    "resolve_graph",
]

MAX_NODES = 300
"""The most nodes a picture shows (Mermaid's layout gets slow beyond); more are left out, and
the page says so."""

MAX_EDGES = 1000
"""The most edges a picture shows."""

_PLAIN = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,:/()'!?=+*@$%^~"
)
_HIGHLIGHT = "fill:#fde68a,stroke:#b45309,stroke-width:3px,color:#1f2937"


def _ascii_id(name: str) -> str:
    """A readable, plain suffix for a node id: graph.py's id with only ASCII word characters."""
    return re.sub(r"[^A-Za-z0-9_]", "_", _mermaid_id(name))[:40]


def label(text: str) -> str:
    """``text`` as the inside of a double-quoted Mermaid label: letters, digits, spaces and
    ``_-.,:/()'!?=+*@$%^~`` as they are, every other character (quotes, ``<>&#;``,
    ``[]{}|``, newlines, controls, non-ASCII) as the entity code ``#<code point>;``, which
    Mermaid decodes back into that character, drawn as text."""
    return "".join(ch if ch in _PLAIN else f"#{ord(ch)};" for ch in text)


@dataclass(frozen=True, slots=True)
class GivenGraph:
    """A graph the user gave, with the action a fresh application starts at (when known)."""

    graph: Graph
    entrypoint: str | None = None

    def has(self, position: str) -> bool:
        """Whether a stored position is drawn by this graph (``@entrypoint``, the position of
        an application's initial step, counts when the entrypoint is known)."""
        if position == AT_ENTRYPOINT:
            return self.entrypoint is not None
        return position in self.graph.actions

    def mermaid(self, highlight: str | None) -> str:
        """The flowchart, with ``highlight`` (a stored position) marked."""
        if highlight == AT_ENTRYPOINT:
            highlight = self.entrypoint
        edges = [
            (t.from_, t.to, None if t.condition is default else t.condition.name)
            for t in self.graph.transitions
        ]
        return flowchart(list(self.graph.actions), edges, highlight)


def resolve_graph(obj: object) -> GivenGraph:
    """The graph of ``obj``: a Graph (an ApplicationGraph knows its entrypoint), an
    Application, an ApplicationBuilder (its entrypoint, if set) or a GraphBuilder (built
    here). ConfigurationError for anything else, or for a builder whose graph is invalid."""
    if isinstance(obj, GivenGraph):
        return obj
    if isinstance(obj, ApplicationGraph):
        return GivenGraph(obj, obj.entrypoint.name)
    if isinstance(obj, Graph):
        return GivenGraph(obj)
    if isinstance(obj, Application):
        return GivenGraph(obj.graph, obj.graph.entrypoint.name)
    if isinstance(obj, ApplicationBuilder):
        built = obj._graph
        return GivenGraph(Graph(built._actions, built._transitions), obj._entrypoint)
    if isinstance(obj, GraphBuilder):
        return GivenGraph(obj.build())
    raise ConfigurationError(
        f"graph= must be a Graph, ApplicationGraph, Application, ApplicationBuilder or "
        f"GraphBuilder, not {type(obj).__name__}."
    )


@dataclass(frozen=True, slots=True)
class Observed:
    """The graph observed in one app's stored steps: its positions in order of first
    appearance, and the distinct (previous position, position) pairs of consecutive steps.
    ``truncated`` when the app has more than :data:`MAX_NODES` positions or
    :data:`MAX_EDGES` distinct pairs (the first ones are kept)."""

    nodes: Sequence[str]
    edges: Sequence[tuple[str, str]]
    truncated: bool = False

    @classmethod
    def of(cls, pairs: Iterable[tuple[str | None, str]]) -> Observed:
        """From ``(previous position or None, position)`` pairs in order of first appearance."""
        nodes: dict[str, None] = {}
        edges: dict[tuple[str, str], None] = {}
        truncated = False
        for previous, position in pairs:
            for name in (previous, position):
                if name is not None and name not in nodes:
                    if len(nodes) >= MAX_NODES:
                        truncated = True
                        continue
                    nodes[name] = None
            if previous is None or previous not in nodes or position not in nodes:
                continue
            if (previous, position) not in edges:
                if len(edges) >= MAX_EDGES:
                    truncated = True
                    continue
                edges[(previous, position)] = None
        return cls(list(nodes), list(edges), truncated)

    def mermaid(self, highlight: str | None) -> str:
        """The flowchart, with ``highlight`` (a stored position) marked."""
        return flowchart(self.nodes, [(a, b, None) for a, b in self.edges], highlight)


def flowchart(
    nodes: Sequence[str],
    edges: Sequence[tuple[str, str, str | None]],
    highlight: str | None,
) -> str:
    """A Mermaid ``flowchart TD``: one node per name in ``nodes``, one arrow per ``(from, to,
    condition label or None)`` between listed nodes, and the ``highlight`` node (if listed)
    filled. Every label is escaped by :func:`label`."""
    ids = {name: f"n{i}_{_ascii_id(name)}" for i, name in enumerate(nodes)}
    lines = ["flowchart TD"]
    lines += [f'    {node}["{label(name)}"]' for name, node in ids.items()]
    for source, target, condition in edges:
        if source not in ids or target not in ids:
            continue
        arrow = "-->" if condition is None else f'-- "{label(condition)}" -->'
        lines.append(f"    {ids[source]} {arrow} {ids[target]}")
    if highlight is not None and highlight in ids:
        lines.append(f"    style {ids[highlight]} {_HIGHLIGHT}")
    return "\n".join(lines) + "\n"
