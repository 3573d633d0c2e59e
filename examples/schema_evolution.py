"""Schema evolution: events and a snapshot written by old code, read by new code.

Two releases of one program, in one file. The old release stored deposits in whole euros; the
new one stores cents and a currency (schema version 3) and keeps the balance in cents (snapshot
schema version 2). Both store their events as "Deposited" in the stream "Account-acc-1": the new
release upcasts what the old one wrote as it reads it, step by step (1 -> 2 -> 3), and never
rewrites it. Run it in any directory: it starts a fresh ``evolution.db`` there each time.
"""

from pathlib import Path
from typing import Any, ClassVar

import anyio
import attrs

from actorsource import (
    Aggregate,
    Runtime,
    SQLiteEventStore,
    apply,
    command,
    event_type,
)

DATABASE = Path("evolution.db")

# -- the old release: whole euros ----------------------------------------------------------------


@attrs.frozen
class Deposit:
    euros: int


@event_type("Deposited")  # version 1: stored as {"amount": euros}
@attrs.frozen
class OldDeposited:
    amount: int


@attrs.define
class OldAccount(Aggregate):
    stream_category = "Account"

    balance: int = 0  # euros
    deposits: int = 0

    @command
    def deposit(self, cmd: Deposit) -> OldDeposited:
        return OldDeposited(cmd.euros)

    @apply
    def deposited(self, event: OldDeposited) -> None:
        self.balance += event.amount
        self.deposits += 1


# -- the new release: cents and a currency -------------------------------------------------------


def cents_from_euros(data: dict[str, Any]) -> dict[str, Any]:
    """Deposited version 1 -> 2: ``{"amount": euros}`` becomes ``{"cents": ...}``."""
    return {"cents": data.pop("amount") * 100, **data}


def euro_currency(data: dict[str, Any]) -> dict[str, Any]:
    """Deposited version 2 -> 3: every deposit before currencies was in euros."""
    return {**data, "currency": "EUR"}


def balance_in_cents(state: dict[str, Any]) -> dict[str, Any]:
    """An OldAccount snapshot (version 1) -> an Account snapshot (version 2)."""
    return {"cents": state["balance"] * 100, "deposits": state["deposits"]}


@attrs.frozen
class DepositCents:
    cents: int
    currency: str = "EUR"


@event_type("Deposited", version=3, upcasters={1: cents_from_euros, 2: euro_currency})
@attrs.frozen
class Deposited:
    """A storage format: stored as "Deposited", ``{"cents", "currency", "memo", "$version"}``."""

    cents: int
    currency: str
    memo: str = ""  # added later with a default: old data simply has none, no new version


@attrs.define
class Account(Aggregate):
    snapshot_version = 2
    snapshot_upcasters: ClassVar = {1: balance_in_cents}

    cents: int = 0
    deposits: int = 0

    @command
    def deposit(self, cmd: DepositCents) -> Deposited:
        return Deposited(cmd.cents, cmd.currency)

    @apply
    def deposited(self, event: Deposited) -> None:
        self.cents += event.cents
        self.deposits += 1


async def show_stored(title: str, from_version: int = 1) -> None:
    """Print what the store holds, as it holds it."""
    print(title)
    async with SQLiteEventStore(DATABASE) as store:
        async for event in store.read_stream("Account-acc-1", from_version):
            print(f"  event {event.version}: {event.type} {event.data}")
        snapshot = await store.load_snapshot("Account-acc-1")
        if snapshot is not None and from_version == 1:
            print(
                f"  snapshot at version {snapshot.version}, schema {snapshot.schema_version}: "
                f"{snapshot.state}"
            )


async def run_old_release() -> None:
    """Last year: the old release runs, snapshotting every 2 events."""
    async with Runtime(SQLiteEventStore(DATABASE), snapshot_every=2) as runtime:
        account = runtime.ref(OldAccount, "acc-1")
        for euros in (5, 7, 3):
            await account.ask(Deposit(euros))


async def run_new_release() -> None:
    """Today: the new release reads the same file, and writes on."""
    async with Runtime(SQLiteEventStore(DATABASE)) as runtime:
        account = runtime.ref(Account, "acc-1")
        state = await account.state()
        replayed = runtime.statistics().events_replayed
        print(f"read by the new release: {state} ({replayed} event replayed after the snapshot)")
        await account.ask(DepositCents(250))
        state = await account.state()
        print(f"balance: {state.cents / 100:.2f} EUR after {state.deposits} deposits")


async def main() -> None:
    # a fresh database, so that every run tells the same story
    for leftover in (DATABASE, Path(f"{DATABASE}-wal"), Path(f"{DATABASE}-shm")):
        leftover.unlink(missing_ok=True)
    await run_old_release()
    await show_stored("stored by the old release:")
    await run_new_release()
    await show_stored("stored by the new release:", from_version=4)


if __name__ == "__main__":
    anyio.run(main)
