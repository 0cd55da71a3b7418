"""The graph of actions and the transitions between them, and the :class:`GraphBuilder` that
makes one to reuse across applications (``ApplicationBuilder().with_graph(graph)``)."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Self

from burr_async.actions import Action
from burr_async.conditions import Condition, default
from burr_async.errors import ConfigurationError, GraphValidationError
from burr_async.state import State

__all__ = ["ApplicationGraph", "Graph", "GraphBuilder", "Transition"]

TAG_PREFIX = "@tag:"
"""How ``halt_before`` / ``halt_after`` name every action with a tag: ``"@tag:name"``."""

TransitionSpec = tuple[str | Sequence[str], str] | tuple[str | Sequence[str], str, Condition]


@dataclass(frozen=True, slots=True)
class Transition:
    """From ``from_``, go to ``to`` when ``condition`` holds. Transitions out of one action are
    tried in the order they were declared; the first that holds wins."""

    from_: str
    to: str
    condition: Condition = default


class Graph:
    """Actions by name plus the ordered transitions between them; validated on construction.

    Build one with :class:`GraphBuilder` (or let ``ApplicationBuilder`` do it). A graph is
    immutable, so one graph serves any number of applications.
    """

    __slots__ = ("_actions", "_by_tag", "_outgoing", "_transitions")

    def __init__(self, actions: Mapping[str, Action], transitions: Sequence[Transition]) -> None:
        self._actions = dict(actions)
        self._transitions = list(transitions)
        reserved = sorted(name for name in self._actions if name.startswith("@"))
        if reserved:
            raise GraphValidationError(
                f"Action name(s) {reserved} start with '@', which is reserved ('@tag:' in halt "
                "lists, '@entrypoint' in stored positions); rename them."
            )
        unknown = sorted(
            {name for t in self._transitions for name in (t.from_, t.to)} - self._actions.keys()
        )
        if unknown:
            raise GraphValidationError(
                f"Transitions name unknown action(s) {unknown}; known actions are "
                f"{sorted(self._actions)}. Add them with with_actions(...) or fix the names."
            )
        outgoing: dict[str, list[tuple[Condition, Action]]] = {name: [] for name in self._actions}
        for t in self._transitions:
            outgoing[t.from_].append((t.condition, self._actions[t.to]))
        self._outgoing = outgoing
        by_tag: dict[str, list[str]] = {}
        for name, act in self._actions.items():
            for tag in act.tags:
                by_tag.setdefault(tag, []).append(name)
        self._by_tag = by_tag

    @property
    def actions(self) -> dict[str, Action]:
        """Actions by name."""
        return dict(self._actions)

    @property
    def transitions(self) -> list[Transition]:
        """Transitions in declaration order."""
        return list(self._transitions)

    def action(self, name: str) -> Action:
        """The action called ``name``."""
        try:
            return self._actions[name]
        except KeyError:
            raise GraphValidationError(
                f"No action named {name!r}; known actions are {sorted(self._actions)}."
            ) from None

    def get_action(self, name: str) -> Action:
        """The action called ``name`` (Burr's spelling of :meth:`action`)."""
        return self.action(name)

    def get_actions_by_tag(self, tag: str) -> list[Action]:
        """The actions carrying ``tag``, in the order they were added; GraphValidationError
        (a ValueError, as in Burr) when no action has it."""
        return [self._actions[name] for name in self._tagged(tag)]

    def _tagged(self, tag: str) -> list[str]:
        try:
            return self._by_tag[tag]
        except KeyError:
            raise GraphValidationError(
                f"No action has tag {tag!r}; the tags are {sorted(self._by_tag)}."
            ) from None

    def resolve_names(self, names: str | Collection[str] | None) -> frozenset[str]:
        """The action names ``names`` stands for: each an action's name or ``"@tag:name"``
        for every action with that tag (one string counts as one name). GraphValidationError
        for an unknown action or tag."""
        if names is None:
            return frozenset()
        resolved: set[str] = set()
        for name in [names] if isinstance(names, str) else names:
            if name.startswith(TAG_PREFIX):
                resolved.update(self._tagged(name[len(TAG_PREFIX) :]))
            else:
                self.action(name)
                resolved.add(name)
        return frozenset(resolved)

    def next_action(self, current: str, state: State) -> Action | None:
        """The first action whose transition out of ``current`` holds for ``state``, or None."""
        for condition, target in self._outgoing[current]:
            if condition.run(state):
                return target
        return None

    def validate_entrypoint(self, entrypoint: str | None) -> None:
        """Raise unless ``entrypoint`` is an action from which every action can be reached."""
        if entrypoint is None:
            raise GraphValidationError(
                "The application has no entrypoint: call with_entrypoint(name) or "
                "initialize_from(..., default_entrypoint=name)."
            )
        if entrypoint not in self._actions:
            raise GraphValidationError(
                f"Entrypoint {entrypoint!r} is not an action; known actions are "
                f"{sorted(self._actions)}."
            )
        seen = {entrypoint}
        queue = deque([entrypoint])
        while queue:
            for _, target in self._outgoing[queue.popleft()]:
                if target.name not in seen:
                    seen.add(target.name)
                    queue.append(target.name)
        unreachable = sorted(self._actions.keys() - seen)
        if unreachable:
            raise GraphValidationError(
                f"Action(s) {unreachable} can never be reached from the entrypoint "
                f"{entrypoint!r}: add a transition into them or remove them."
            )

    def to_mermaid(self, *, highlight: str | None = None) -> str:
        """The graph as a Mermaid ``flowchart`` (paste into any Mermaid renderer)."""
        ids = {name: f"a{i}_{_mermaid_id(name)}" for i, name in enumerate(self._actions)}
        lines = ["flowchart TD"]
        for name, node in ids.items():
            lines.append(f'    {node}["{_mermaid_text(name)}"]')
        for t in self._transitions:
            arrow = (
                "-->" if t.condition is default else f'-- "{_mermaid_text(t.condition.name)}" -->'
            )
            lines.append(f"    {ids[t.from_]} {arrow} {ids[t.to]}")
        if highlight is not None and highlight in ids:
            lines.append(f"    style {ids[highlight]} stroke-width:3px")
        return "\n".join(lines) + "\n"


def _mermaid_id(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


class ApplicationGraph(Graph):
    """The graph of one application plus its entrypoint: ``app.graph``, and the
    ``application_graph`` that ``post_application_create`` hooks receive."""

    __slots__ = ("_entrypoint",)

    def __init__(self, graph: Graph, entrypoint: str) -> None:
        # ``graph`` was validated when it was made, and neither graph changes afterwards: share
        # its tables instead of building and checking them again
        self._actions = graph._actions
        self._transitions = graph._transitions
        self._outgoing = graph._outgoing
        self._by_tag = graph._by_tag
        self._entrypoint = self.action(entrypoint)

    @property
    def entrypoint(self) -> Action:
        """The action a fresh application starts at."""
        return self._entrypoint


class GraphBuilder:
    """Builds a :class:`Graph` from actions and transitions, apart from any application.

    The same verbs as :class:`~burr_async.builder.ApplicationBuilder`;
    ``ApplicationBuilder().with_graph(graph)`` adds what it built. ``build()`` is synchronous:
    nothing is read or stored.
    """

    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}
        self._transitions: list[Transition] = []

    def with_actions(self, *actions: Action, **named_actions: Action) -> Self:
        """Add actions, positionally (by their own name) or as ``name=action``."""
        items: list[tuple[str, Action]] = []
        for act in actions:
            if not isinstance(act, Action):
                raise ConfigurationError(
                    f"with_actions got {act!r}, which is not an action: decorate it with "
                    "@action(reads=..., writes=...) or subclass Action."
                )
            if act._name is None:
                raise ConfigurationError(
                    f"{act!r} has no name; pass it as with_actions(name=action)."
                )
            items.append((act._name, act))
        for name, act in named_actions.items():
            if not isinstance(act, Action):
                raise ConfigurationError(
                    f"with_actions got {act!r} for {name!r}, which is not an action: decorate it "
                    "with @action(reads=..., writes=...) or subclass Action."
                )
            items.append((name, act.with_name(name)))
        for name, act in items:
            self._add(name, act)
        return self

    def _add(self, name: str, act: Action) -> None:
        if name in self._actions:
            raise GraphValidationError(
                f"Two actions are named {name!r}; action names must be unique (a graph added "
                "with with_graph counts too)."
            )
        self._actions[name] = act

    def with_transitions(self, *transitions: TransitionSpec) -> Self:
        """Add ``(from, to)`` or ``(from, to, condition)`` transitions; ``from`` may be a list.
        Out of one action they are tried in the order given."""
        for spec in transitions:
            if len(spec) == 2:
                sources, target, condition = spec[0], spec[1], default
            elif len(spec) == 3:
                sources, target, condition = spec
            else:
                raise ConfigurationError(
                    f"Transition {spec!r} must be (from, to) or (from, to, condition)."
                )
            if not isinstance(condition, Condition):
                raise ConfigurationError(
                    f"Transition {spec!r}: the condition must be default, expr(...), when(...) "
                    f"or a Condition, got {type(condition).__name__}."
                )
            for source in [sources] if isinstance(sources, str) else sources:
                self._transitions.append(Transition(source, target, condition))
        return self

    def with_graph(self, graph: Graph) -> Self:
        """Add every action and transition of ``graph`` (names must not clash)."""
        if not isinstance(graph, Graph):
            raise ConfigurationError(
                f"with_graph got {graph!r}, which is not a Graph: build one with "
                "GraphBuilder()...build()."
            )
        for name, act in graph._actions.items():
            self._add(name, act)
        self._transitions.extend(graph._transitions)
        return self

    def build(self) -> Graph:
        """The graph, validated (unknown actions in transitions, reserved names); which action
        is the entrypoint is the application's to say."""
        if not self._actions:
            raise GraphValidationError(
                "The graph has no actions: add them with with_actions(...) or with_graph(...)."
            )
        return Graph(self._actions, self._transitions)
