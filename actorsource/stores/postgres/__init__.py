"""The PostgreSQL event store: several machines, one database.

Design (the SQLite store's, carried over to a server):

- **Group commit.** One writer task per store owns a write connection. Every append pending at
  the same moment goes into one transaction, sent as one statement: the rows of all of them as
  arrays, inserted by one ``INSERT ... SELECT FROM unnest(...)`` in the schema's
  ``actorsource_append`` function. A batch costs one round trip and one WAL flush however many
  appends it holds.
- **Gap-free positions in commit order.** Sequences cannot give them: a sequence value is taken
  before commit, so position 10 can become visible before 9, and a reader that has seen 10 would
  skip 9 for good. Instead every appending transaction first takes a transaction-level advisory
  lock (``pg_advisory_xact_lock``, one key per schema), and only then reads ``max(position)`` and
  inserts after it. The lock is held until the transaction has committed and become visible, so
  appending transactions commit one after another, each numbering its events after everything
  committed before it; a rolled-back transaction takes no position. A reader therefore always
  sees a prefix ``1..n`` of positions, never a hole that fills later. With group commit one
  transaction per batch takes the lock: the cost is one lock per batch, not per event.
  (The lock and the ``max`` are separate statements under READ COMMITTED, so the ``max`` sees
  every commit that came before the lock; the store forces READ COMMITTED on its connections.)
- **Per-append outcomes.** The writer plans a batch from what it knows: the version each append
  expects, or the stream's head it wrote last. The function checks that plan under the lock (each
  stream of the batch is exactly at the planned version), and the unique constraints check the
  event ids. If anything was stale the statement fails as a whole, nothing is stored, and the
  writer decides the batch again with the facts read under the lock in one transaction (each
  stream's head, which event ids exist): a conflict then fails only its append
  (``ConcurrencyError`` with the actual version), a duplicate event id only its append. A batch
  that the server still refuses for another reason is retried one append per transaction, so that
  one bad append fails alone.
- **JSONB.** ``data`` and ``metadata`` are JSONB, so that they can be queried in SQL. JSONB does
  not keep every JSON text as it was: its numbers are ``numeric`` (``1e+16`` comes back as the
  integer ``10000000000000000``, ``-0.0`` as ``0.0``) and it cannot hold a NUL character. For the
  rare event whose JSON would change, the exact text is also kept in ``data_text`` /
  ``metadata_text`` (and ``data`` is NULL if it holds a NUL), and reads prefer it. What is read
  is always equal to what was appended, value for value and type for type (only the order of an
  object's keys is JSONB's, which JSON gives no meaning).
- **Compression** (``compress_over``): event data and snapshot states longer than the threshold
  are stored zlib-compressed in a ``bytea`` column of their own (``data_z``, ``state_z``; the
  JSONB column of that row is NULL). The writer compresses a batch's large rows before its
  statement, on a worker thread when there is much of it; a batch without any passes NULL for
  the column, and the function inserts as before.
- **Reads** use a connection pool, in pages by key (version or position), so a slow consumer of
  ``read_all`` never holds a connection. Every statement is prepared once per connection
  (asyncpg's statement cache).
- **LISTEN/NOTIFY.** The append function calls ``pg_notify`` with the new head position; Postgres
  delivers it at commit. Each store keeps one listening connection, so ``wait_for_events`` wakes
  in every process as soon as any process commits. Polling (the timeout) remains the fallback,
  for instance while the listening connection reconnects.

Only :mod:`.connection` imports the driver (asyncpg), and only when a store is made: ``import
actorsource`` works without it.
"""

from .connection import drop_schema as drop_schema
from .connection import server_facts as server_facts
from .dsn import redact_dsn as redact_dsn
from .schema import SCHEMA_VERSION as SCHEMA_VERSION
from .store import PostgresEventStore as PostgresEventStore
