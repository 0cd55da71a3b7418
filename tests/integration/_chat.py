"""A small graph shared by the integration tests: count, maybe fail, finish."""

from __future__ import annotations

from burr_async import (
    Application,
    ApplicationBuilder,
    AsyncBaseStatePersister,
    Result,
    State,
    action,
    default,
    expr,
)


@action(reads=["count"], writes=["count"])
async def counter(state: State) -> State:
    return state.increment(count=1)


@action(reads=["count"], writes=["log"])
def check(state: State, fail: bool = False) -> tuple[dict[str, int], State]:
    if fail:
        raise RuntimeError(f"check failed at count={state['count']}")
    return {"count": state["count"]}, state.append(log=state["count"])


async def build(
    persister: AsyncBaseStatePersister,
    app_id: str,
    partition_key: str | None = "tester",
    **initialize: object,
) -> Application:
    """counter -> check -> counter ... until count >= 3, then done; resumed from ``persister``."""
    options: dict[str, object] = {
        "resume_at_next_action": True,
        "default_state": {"count": 0, "log": []},
        "default_entrypoint": "counter",
    }
    options.update(initialize)
    return await (
        ApplicationBuilder()
        .with_actions(counter, check, done=Result("count", "log"))
        .with_transitions(
            ("counter", "check", default),
            ("check", "done", expr("count >= 3")),
            ("check", "counter", default),
        )
        .initialize_from(persister, **options)  # type: ignore[arg-type]
        .with_state_persister(persister)
        .with_identifiers(app_id=app_id, partition_key=partition_key)
        .abuild()
    )
