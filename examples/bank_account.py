"""The README quickstart: a bank account aggregate on the embedded SQLite store."""

import anyio
import attrs

from actorsource import Aggregate, Rejected, Runtime, SQLiteEventStore, apply, command


@attrs.frozen
class Deposit:  # a command: imperative
    amount: int


@attrs.frozen
class Deposited:  # an event: past tense, a storage format
    amount: int


@attrs.define
class Account(Aggregate):
    balance: int = 0

    @command
    def deposit(self, cmd: Deposit) -> Deposited:
        if cmd.amount <= 0:
            raise Rejected(f"deposit must be positive, got {cmd.amount}")
        return Deposited(cmd.amount)

    @apply
    def deposited(self, event: Deposited) -> None:
        self.balance += event.amount


async def main() -> None:
    store = SQLiteEventStore("bank.db")
    async with Runtime(store, snapshot_every=100, passivate_after=30.0) as runtime:
        account = runtime.ref(Account, "acc-1")
        recorded = await account.ask(Deposit(100))  # waits until the event is durable
        print(recorded[0].version, recorded[0].event)
        await account.tell(Deposit(5))  # enqueue; don't wait for the outcome
        state = await account.state()  # a copy, after all sent before it
        print(state.balance)


if __name__ == "__main__":
    anyio.run(main)
