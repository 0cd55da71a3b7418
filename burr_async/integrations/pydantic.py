"""Typed state with pydantic v2 models, as Burr's ``burr.integrations.pydantic``.

``ApplicationBuilder().with_typing(PydanticTypingSystem(Model))`` makes ``state.data`` the state
as a ``Model``; ``@action.pydantic(reads=[...], writes=[...])`` (or :func:`pydantic_action`)
declares an action that takes the state as a model and returns one.

The state itself stays a mapping of JSON values: a model's fields are stored as
``model_dump(mode="json")`` gives them (a nested model as its dict, a datetime as its ISO text),
and the model is validated again from them when an action or ``state.data`` asks for it. So a
typed state round-trips through every persister, and loading it never imports a class by a
stored name: the class comes from the code (the typing system, the action's annotations).

Needs ``pydantic`` (``pip install 'burr_async[pydantic]'``).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import pydantic

from burr_async.errors import ConfigurationError
from burr_async.state import State

__all__ = ["PydanticTypingSystem", "pydantic_action"]

Model = TypeVar("Model", bound=pydantic.BaseModel)


def _fields(model: type[pydantic.BaseModel], state: State) -> dict[str, Any]:
    return {name: state[name] for name in model.model_fields if name in state}


def _stored(model: pydantic.BaseModel, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The model's fields (``keys`` of them) as state values: their JSON form."""
    include = None if keys is None else set(keys)
    dumped: dict[str, Any] = model.model_dump(mode="json", include=include)
    return dumped


class PydanticTypingSystem(Generic[Model]):
    """State typed by ``model_type``: what ``ApplicationBuilder.with_typing`` takes."""

    def __init__(self, model_type: type[Model]) -> None:
        if not (isinstance(model_type, type) and issubclass(model_type, pydantic.BaseModel)):
            raise ConfigurationError(
                f"PydanticTypingSystem takes a pydantic model class, not {model_type!r}."
            )
        self.model_type = model_type

    def state_type(self) -> type[Model]:
        """The model class."""
        return self.model_type

    def construct_data(self, state: State) -> Model:
        """The state as a model, validated from the state's keys that are its fields."""
        return self.model_type.model_validate(_fields(self.model_type, state))

    def construct_state(self, data: Model) -> State:
        """A state holding the model's fields (as JSON values)."""
        return State(_stored(data))


def _subset(
    model: type[pydantic.BaseModel], keep: list[str], optional: list[str], suffix: str
) -> type[pydantic.BaseModel]:
    """A model of ``keep`` fields of ``model`` (as they are) and ``optional`` ones (None when
    absent): what an action reads of the state, or writes."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name in keep:
            fields[name] = (info.annotation, info)
        elif name in optional:
            annotation = Any if info.annotation is None else info.annotation
            fields[name] = (annotation | None, None)
    created: type[pydantic.BaseModel] = pydantic.create_model(
        f"{model.__name__}{suffix}", __config__=model.model_config, **fields
    )
    return created


def _signature_models(
    fn: Callable[..., Any],
) -> tuple[type[pydantic.BaseModel], type[pydantic.BaseModel]]:
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters)
    found = [hints.get(params[0]) if params else None, hints.get("return")]
    models: list[type[pydantic.BaseModel]] = []
    for what, hint in zip(("state parameter", "return"), found, strict=True):
        if not (isinstance(hint, type) and issubclass(hint, pydantic.BaseModel)):
            raise ConfigurationError(
                f"Pydantic action {fn.__qualname__}: its {what} must be annotated with a "
                f"pydantic model class, not {hint!r} (or pass state_input_type and "
                "state_output_type)."
            )
        models.append(hint)
    return models[0], models[1]


def pydantic_action(
    reads: Iterable[str],
    writes: Iterable[str],
    state_input_type: type[pydantic.BaseModel] | None = None,
    state_output_type: type[pydantic.BaseModel] | None = None,
    tags: Iterable[str] | None = None,
) -> Callable[[Callable[..., Any]], Any]:
    """``@action.pydantic``: an action ``fn(state: InModel, **inputs) -> OutModel`` (sync or
    async). It is given the ``reads`` of the state (and the ``writes``, None when absent) as
    ``InModel``, and the ``writes`` fields of the model it returns are written to the state.
    The models come from ``fn``'s annotations unless both types are given.
    ConfigurationError for a key that is not a field of its model."""
    reads, writes = list(reads), list(writes)
    if (state_input_type is None) != (state_output_type is None):
        raise ConfigurationError(
            "Pass both state_input_type and state_output_type, or neither (then the action's "
            "annotations give them)."
        )

    def decorate(fn: Callable[..., Any]) -> Any:
        from burr_async.actions import FunctionAction

        if state_input_type is not None and state_output_type is not None:
            given, returned = state_input_type, state_output_type
        else:
            given, returned = _signature_models(fn)
        for model, keys in ((given, reads), (returned, writes)):
            unknown = [key for key in keys if key not in model.model_fields]
            if unknown:
                raise ConfigurationError(
                    f"Pydantic action {fn.__qualname__}: {unknown} are not fields of "
                    f"{model.__qualname__} (its fields: {sorted(model.model_fields)})."
                )
        read_model = _subset(given, reads, [k for k in writes if k not in reads], "Reads")
        write_model = _subset(returned, writes, [], "Writes")

        def written(result: Any, state: State) -> State:
            if not isinstance(result, pydantic.BaseModel):
                raise TypeError(
                    f"Pydantic action {fn.__qualname__} must return a pydantic model, got "
                    f"{type(result).__name__}."
                )
            checked = write_model.model_validate(_stored(result, writes))
            return state.update(**_stored(checked))

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(state: State, /, **inputs: Any) -> State:
                result = await fn(read_model.model_validate(_fields(read_model, state)), **inputs)
                return written(result, state)

            wrapper: Callable[..., Any] = run_async
        else:

            @functools.wraps(fn)
            def run(state: State, /, **inputs: Any) -> State:
                result = fn(read_model.model_validate(_fields(read_model, state)), **inputs)
                return written(result, state)

            wrapper = run
        return FunctionAction(wrapper, reads, writes, tags=tags)

    return decorate
