"""The SQLite event store: embedded, zero set-up, the default.

Modules: :mod:`.store` (the store: the contract's door), :mod:`.writer` (the queue and the
writer's thread), :mod:`.commit` (commit strategies, on that thread), :mod:`.reads` and
:mod:`.latest` (reads and activation loads, on the reader's thread), :mod:`.schema` (the file's
schema and its opening), :mod:`.ops` (the queued writes), :mod:`._thread` (a connection and the
thread that owns it).

Design (the measurements behind it are in the repository's ``docs/performance.md``):

- **Group commit.** One writer owns the write connection. Appends and snapshot saves that are
  pending at the same moment are committed in one transaction by one call on the connection's
  thread, so a batch costs a constant number of thread hops and one fsync however many appends
  it holds. The writer is callback-driven, not a task: a batch goes straight onto the thread's
  queue, and the thread calls back on the loop when it is done (two task switches fewer per
  batch, which a sequential caller feels). Under load the thread takes the writes queued during
  its commit itself, as the next batch, so only an idle writer is handed a batch by the loop
  (a handover costs a wait for the GIL: see :meth:`.writer.SQLiteWriter._write_on_thread`).
  A conflict fails only its append, never the batch:
  rows go in with few multi-row statements, and when a constraint refuses one, its appends are
  redone one at a time (each in a savepoint when it has several rows) to find the one at fault.
- **Known heads.** The writer remembers the head version of the streams it wrote or checked.
  A batch whose appends all expect known heads (or streams it does not know) is one autocommit
  INSERT statement that checks each stream's head as it inserts: one release of the GIL and
  one fsync for the whole batch (see :func:`.commit._all_at_once`). The check is not left to
  the ``UNIQUE(stream_id, version)`` constraint: a head another process moved on is stale, and
  the version after it may have been archived or deleted since, which that constraint cannot
  see. Other batches read their streams' heads inside their transaction.
- **Reads off the write path.** Reads use their own connection (a WAL reader), so activating
  actors never queues behind the writer. Activation loads coalesce like appends: the loads
  waiting at one moment go to the reader's thread as one job.
- **Durability.** WAL with ``synchronous=FULL`` by default: an append is on disk when it returns.
- **Gap-free positions in commit order.** The writer gives positions (``max + 1``) inside its
  write transaction, which SQLite serializes across connections and processes: a transaction
  that takes position 10 starts after the one holding 9 committed, and a rolled-back append
  takes none. So a reader never sees position 10 before 9, and never a hole.
- **Idempotent appends.** An append whose events are already stored, by id, at the versions it
  would give them is the same append committed before (a retry after a lost reply): it returns
  that append's result. Only the failure paths (a version conflict, a constraint violation) look
  for it, so an ordinary append pays nothing.
- **Read models in the same file.** Exactly-once and inline projections run their handlers on
  the writer's thread, inside the writer's transaction (see
  :meth:`SQLiteEventStore.commit_with_checkpoint` and
  :meth:`SQLiteEventStore.add_inline_projection`).
"""

from .schema import APPLICATION_ID as APPLICATION_ID
from .schema import SCHEMA_VERSION as SCHEMA_VERSION
from .schema import Synchronous as Synchronous
from .store import SQLiteEventStore as SQLiteEventStore
