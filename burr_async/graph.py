"""The graph of actions and the transitions between them."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from burr_async.actions import Action
from burr_async.conditions import Condition, default
from burr_async.errors import GraphValidationError
from burr_async.state import State

__all__ = ["Graph", "Transition"]


@dataclass(frozen=True, slots=True)
class Transition:
    """From ``from_``, go to ``to`` when ``condition`` holds. Transitions out of one action are
    tried in the order they were declared; the first that holds wins."""

    from_: str
    to: str
    condition: Condition = default


class Graph:
    """Actions by name plus the ordered transitions between them; validated on construction."""

    __slots__ = ("_actions", "_outgoing", "_transitions")

    def __init__(self, actions: Mapping[str, Action], transitions: Sequence[Transition]) -> None:
        self._actions = dict(actions)
        self._transitions = list(transitions)
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
