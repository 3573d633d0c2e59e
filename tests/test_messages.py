"""Mailbox messages: named, slotted, and taken in order."""

from __future__ import annotations

import asyncio

from actorsource._messages import Command, GetState
from actorsource.testing import runtime

from .domain import Account, Deposit


async def test_messages_name_their_parts_and_carry_no_dict() -> None:
    reply: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    told = Command(Deposit(1), None, {"command_id": "c-1"}, "c-1")
    assert (told.command, told.reply, told.metadata, told.command_id) == (
        Deposit(1),
        None,
        {"command_id": "c-1"},
        "c-1",
    )
    assert GetState(reply).reply is reply
    assert not hasattr(told, "__dict__") and not hasattr(GetState(reply), "__dict__")


async def test_a_state_request_is_answered_after_the_commands_queued_before_it() -> None:
    async with runtime() as opened:
        ref = opened.ref(Account, "a")
        for amount in (1, 2, 3):
            ref.tell_nowait(Deposit(amount))
        state = await ref.state()
        ref.tell_nowait(Deposit(4))
    assert state.history == [1, 2, 3]
