"""Rebuilding a durable read model: its ``reset``, with its checkpoint's reset.

A rebuild clears what it rebuilds. Used by the runtime's ``rebuild_projection`` and by the
command line's ``projections DB rebuild NAME --app ...``.
"""

from __future__ import annotations

from typing import Any

from ._errors import DefinitionError
from ._projection import (
    CompiledProjection,
    Projection,
    compile_projection,
    transactional_refusal,
)
from ._projection_context import ResetContext
from .stores._base import EventStore


def rebuild_refusal(compiled: CompiledProjection) -> str:
    """Why a durable projection without ``reset`` cannot be rebuilt in place."""
    return (
        f"projection {compiled.name!r} is durable (its read model outlives the process) and "
        "has no reset(self, ctx): rebuilt in place, every event would be delivered again into "
        "a read model that already holds it. Add reset(self, ctx) clearing the read model, or "
        "rebuild with factory= making an instance that writes to new tables"
    )


async def reset_read_model(
    store: EventStore,
    projection: Projection,
    *,
    name: str,
    from_position: int,
) -> None:
    """Clear a durable read model with its ``reset`` and move checkpoint ``name`` before
    ``from_position``: in one transaction for exactly-once and inline projections; for
    at-least-once ones the checkpoint first, so that a crash between the two redelivers into a
    read model not yet cleared (as at-least-once handlers expect) rather than resume past it.

    :raises DefinitionError: if the projection is durable and has no ``reset``
    """
    compiled = compile_projection(type(projection))
    reset = compiled.reset
    if reset is None:
        raise DefinitionError(rebuild_refusal(compiled))
    if compiled.mode != "at_least_once":
        capabilities = store.capabilities()
        refusal = transactional_refusal(compiled, store, capabilities)
        if refusal is not None:
            raise DefinitionError(refusal)
        transactions = capabilities.transactional
        assert transactions is not None

        def work(transaction: Any) -> Any:
            # an async reset's coroutine is awaited inside the transaction (PostgreSQL)
            return reset.function(projection, ResetContext(name, from_position, transaction))

        await transactions.commit_with_checkpoint(name, from_position - 1, work)
        return
    await store.save_checkpoint(name, from_position - 1)
    result = reset.function(projection, ResetContext(name, from_position, None))
    if reset.is_async:
        await result
