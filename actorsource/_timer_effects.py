"""Turning the timer effects a handler returned into the timer writes its append carries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._aggregate import decider_of
from ._codec import Codec
from ._decider import Decider
from ._errors import DefinitionError
from ._timers import Cancel, Effect, TimerCancel, TimerChange, TimerSchedule


def encode_effects(
    codec: Codec,
    now: datetime,
    decider: Decider[Any, Any, Any],
    stream_id: str,
    effects: Sequence[Effect],
) -> list[TimerChange]:
    """Return the timer writes of ``effects`` decided by the aggregate of ``stream_id``.

    :param now: the runtime clock's time (``after=`` and ``every=`` count from it)
    :raises DefinitionError: if a scheduled command is not of a class its target handles
    :raises CodecError: if a scheduled command cannot be encoded
    """
    changes: list[TimerChange] = []
    for effect in effects:
        if isinstance(effect, Cancel):
            changes.append(TimerCancel(stream_id, effect.key))
            continue
        if effect.to is None:
            target_decider, target = decider, stream_id
        else:
            aggregate, aggregate_id = effect.to
            target_decider = aggregate if isinstance(aggregate, Decider) else decider_of(aggregate)
            target = f"{target_decider.name}-{aggregate_id}"
        command = effect.command
        if not isinstance(command, target_decider.command_types):
            handled = ", ".join(t.__name__ for t in target_decider.command_types) or "none declared"
            msg = (
                f"{stream_id!r} scheduled {type(command).__name__} (timer {effect.key!r}) to "
                f"{target!r}, whose aggregate {target_decider.name} does not handle it (its "
                f"commands: {handled}); a Decider names them with command_types=[...]"
            )
            raise DefinitionError(msg)
        type_name, data = codec.encode_command(command)
        interval = effect.every.total_seconds() if effect.every is not None else None
        changes.append(
            TimerSchedule(
                stream_id,
                effect.key,
                target,
                type_name,
                data,
                effect.due(now),
                interval,
                effect.missed.value,
            )
        )
    return changes
