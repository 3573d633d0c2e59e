"""The schema: its migrations (tables, the append function), its names and its statements."""

from __future__ import annotations

import hashlib
import re
from typing import Final

#: the schema version this code writes and reads (the ``actorsource_schema`` table holds it)
SCHEMA_VERSION: Final = 6

#: what a ``schema=`` name may be: a plain lower-case identifier, usable unquoted in SQL
_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: an event's columns as ``stored_event`` reads them: the data as JSON text, or NULL and the
#: compressed JSON in the last column
_COLUMNS: Final = (
    "stream_id, version, position, type, coalesce(data_text, data::text), "
    "coalesce(metadata_text, metadata::text), event_id, recorded_at, data_z"
)

#: the schema version from which rows may be compressed (before: no such columns)
_COMPRESSION_VERSION: Final = 3


def _migrations(schema: str, append_lock: int, channel: str) -> dict[int, list[str]]:
    """The statements that take a schema from version ``n - 1`` to ``n``, by ``n``."""
    s = f'"{schema}"'
    return {
        1: [
            f"""CREATE TABLE {s}.actorsource_schema (
                singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
                version    integer     NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now()
            )""",
            f"""CREATE TABLE {s}.events (
                position      bigint      PRIMARY KEY CHECK (position > 0),
                stream_id     text        NOT NULL,
                version       bigint      NOT NULL CHECK (version > 0),
                type          text        NOT NULL,
                data          jsonb,
                metadata      jsonb,
                event_id      text        NOT NULL UNIQUE,
                recorded_at   timestamptz NOT NULL,
                data_text     text,
                metadata_text text,
                UNIQUE (stream_id, version),
                CHECK (data IS NOT NULL OR data_text IS NOT NULL),
                CHECK (metadata IS NOT NULL OR metadata_text IS NOT NULL)
            )""",
            f"""COMMENT ON COLUMN {s}.events.position IS
                'global, gap-free, in commit order (appends serialize on an advisory lock)'""",
            f"""COMMENT ON COLUMN {s}.events.data_text IS
                'the exact JSON text, only when JSONB would change it (a NUL character, which '
                'JSONB cannot hold and then data is NULL; an exponent; negative zero)'""",
            f"""COMMENT ON COLUMN {s}.events.metadata_text IS
                'the exact JSON text, only when JSONB would change it (see data_text)'""",
            f"""CREATE TABLE {s}.snapshots (
                stream_id      text        NOT NULL,
                version        bigint      NOT NULL,
                schema_version bigint      NOT NULL,
                state          jsonb,
                state_text     text,
                recorded_at    timestamptz NOT NULL,
                PRIMARY KEY (stream_id, version),
                CHECK (state IS NOT NULL OR state_text IS NOT NULL)
            )""",
            f"""CREATE TABLE {s}.checkpoints (
                name       text        PRIMARY KEY,
                position   bigint      NOT NULL,
                updated_at timestamptz NOT NULL
            )""",
            # the whole append of a batch, in one statement (see the module docstring)
            f"""CREATE FUNCTION {s}.actorsource_append(
                p_stream_ids text[], p_versions bigint[], p_types text[],
                p_data text[], p_data_text text[], p_metadata text[], p_metadata_text text[],
                p_event_ids text[], p_check_streams text[], p_check_heads bigint[],
                p_snapshot_streams text[], p_snapshot_versions bigint[],
                p_snapshot_schema_versions bigint[], p_snapshot_states text[],
                p_snapshot_state_texts text[],
                OUT first_position bigint, OUT committed_at timestamptz
            ) LANGUAGE plpgsql VOLATILE AS $fn$
            DECLARE
                v_head  bigint;
                v_stale boolean;
            BEGIN
                IF current_setting('transaction_isolation') <> 'read committed' THEN
                    RAISE EXCEPTION 'actorsource appends need READ COMMITTED, not %',
                        current_setting('transaction_isolation');
                END IF;
                -- appending transactions take turns, each until its commit is visible
                PERFORM pg_advisory_xact_lock({append_lock});
                -- a new statement: a fresh snapshot, holding every append committed before the
                -- lock was granted; is every stream at the version the batch was planned for?
                SELECT (SELECT coalesce(max(e.position), 0) FROM {s}.events e),
                       EXISTS (
                           SELECT 1 FROM unnest(p_check_streams, p_check_heads)
                                AS c(stream_id, head)
                           WHERE EXISTS (
                                   SELECT 1 FROM {s}.events e
                                   WHERE e.stream_id = c.stream_id AND e.version = c.head + 1)
                              OR (c.head > 0 AND NOT EXISTS (
                                   SELECT 1 FROM {s}.events e
                                   WHERE e.stream_id = c.stream_id AND e.version = c.head)))
                  INTO v_head, v_stale;
                IF v_stale THEN
                    RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
                        MESSAGE = 'actorsource: a stream is not at the version the append '
                                  'was planned for';
                END IF;
                first_position := v_head + 1;
                committed_at := clock_timestamp();
                INSERT INTO {s}.events (position, stream_id, version, type, data, data_text,
                                        metadata, metadata_text, event_id, recorded_at)
                SELECT v_head + r.n, r.stream_id, r.version, r.type, r.data::jsonb, r.data_text,
                       r.metadata::jsonb, r.metadata_text, r.event_id, committed_at
                FROM unnest(p_stream_ids, p_versions, p_types, p_data, p_data_text, p_metadata,
                            p_metadata_text, p_event_ids)
                     WITH ORDINALITY AS r(stream_id, version, type, data, data_text, metadata,
                                          metadata_text, event_id, n);
                -- delivered to every listener when (and only if) this transaction commits
                IF cardinality(p_event_ids) > 0 THEN
                    PERFORM pg_notify('{channel}', (v_head + cardinality(p_event_ids))::text);
                END IF;
                IF cardinality(p_snapshot_streams) > 0 THEN
                    INSERT INTO {s}.snapshots (stream_id, version, schema_version, state,
                                               state_text, recorded_at)
                    SELECT r.stream_id, r.version, r.schema_version, r.state::jsonb,
                           r.state_text, committed_at
                    FROM unnest(p_snapshot_streams, p_snapshot_versions,
                                p_snapshot_schema_versions, p_snapshot_states,
                                p_snapshot_state_texts)
                         AS r(stream_id, version, schema_version, state, state_text)
                    ON CONFLICT (stream_id, version) DO UPDATE SET
                        schema_version = excluded.schema_version, state = excluded.state,
                        state_text = excluded.state_text, recorded_at = excluded.recorded_at;
                END IF;
            END
            $fn$""",
        ],
        2: _timers_step(s),
        3: _compression_step(s, append_lock, channel),
        4: _subject_keys_step(s),
        5: _cluster_step(s),
        6: _head_check_step(s, append_lock, channel),
    }


def _timers_step(s: str) -> list[str]:
    """The statements of the step to version 2: durable timers.

    Due times and claim expiries are microseconds since the Unix epoch (bigint), as in the
    SQLite store; the command data is the exact JSON text.
    """
    return [
        f"""CREATE TABLE {s}.timers (
            owner         text             NOT NULL,
            key           text             NOT NULL,
            target        text             NOT NULL,
            command_type  text             NOT NULL,
            data          text             NOT NULL,
            due_at        bigint           NOT NULL,
            interval      double precision,
            missed        text             NOT NULL,
            claimed_by    text,
            claim_expires bigint,
            PRIMARY KEY (owner, key)
        )""",
        f"CREATE INDEX timers_due ON {s}.timers (due_at)",
    ]


def _compression_step(s: str, append_lock: int, channel: str) -> list[str]:
    """The statements of the step to version 3: event data and snapshot states may be stored
    zlib-compressed, in a ``bytea`` column beside the JSONB one (which is then NULL), and the
    append function takes them.

    The new checks are added NOT VALID: every row stored before satisfies them (it has no
    compressed value, and the checks they replace held), and validating would scan the tables
    while holding the lock that stops every append.
    """

    def drop_check(table: str, column: str) -> str:
        # the checks step 1 made have the names PostgreSQL chose: found by what they say
        return f"""DO $do$ DECLARE c name; BEGIN
            FOR c IN SELECT conname FROM pg_constraint
                     WHERE conrelid = '{s}.{table}'::regclass AND contype = 'c'
                       AND pg_get_constraintdef(oid)
                           = 'CHECK ((({column} IS NOT NULL) OR ({column}_text IS NOT NULL)))'
            LOOP
                EXECUTE format('ALTER TABLE {s}.{table} DROP CONSTRAINT %I', c);
            END LOOP;
        END $do$"""

    return [
        f"ALTER TABLE {s}.events ADD COLUMN data_z bytea",
        drop_check("events", "data"),
        f"""ALTER TABLE {s}.events ADD CONSTRAINT events_data_stored CHECK (
                CASE WHEN data_z IS NULL THEN data IS NOT NULL OR data_text IS NOT NULL
                     ELSE data IS NULL AND data_text IS NULL END) NOT VALID""",
        f"""COMMENT ON COLUMN {s}.events.data_z IS
            'the JSON text zlib-compressed, for data above the store''s compress_over (data '
            'and data_text are NULL then)'""",
        f"ALTER TABLE {s}.snapshots ADD COLUMN state_z bytea",
        drop_check("snapshots", "state"),
        f"""ALTER TABLE {s}.snapshots ADD CONSTRAINT snapshots_state_stored CHECK (
                CASE WHEN state_z IS NULL THEN state IS NOT NULL OR state_text IS NOT NULL
                     ELSE state IS NULL AND state_text IS NULL END) NOT VALID""",
        f"""DROP FUNCTION {s}.actorsource_append(text[], bigint[], text[], text[], text[],
                text[], text[], text[], text[], bigint[], text[], bigint[], bigint[], text[],
                text[])""",
        _append_function(
            s, append_lock, channel, create="CREATE", stale=_STALE_BY_NEIGHBOURS.format(s=s)
        ),
    ]


def _append_function(s: str, append_lock: int, channel: str, *, create: str, stale: str) -> str:
    """The append function from schema version 3 on: the whole append of a batch in one
    statement (see the module docstring), with the compressed values (NULL arrays when a
    batch has none).

    :param create: ``CREATE`` or ``CREATE OR REPLACE``
    :param stale: the condition on ``c`` (a stream, and the head the batch was planned for)
        under which the batch is refused
    """
    return f"""{create} FUNCTION {s}.actorsource_append(
            p_stream_ids text[], p_versions bigint[], p_types text[],
            p_data text[], p_data_text text[], p_metadata text[], p_metadata_text text[],
            p_event_ids text[], p_check_streams text[], p_check_heads bigint[],
            p_snapshot_streams text[], p_snapshot_versions bigint[],
            p_snapshot_schema_versions bigint[], p_snapshot_states text[],
            p_snapshot_state_texts text[], p_data_z bytea[], p_snapshot_state_zs bytea[],
            OUT first_position bigint, OUT committed_at timestamptz
        ) LANGUAGE plpgsql VOLATILE AS $fn$
        DECLARE
            v_head  bigint;
            v_stale boolean;
        BEGIN
            IF current_setting('transaction_isolation') <> 'read committed' THEN
                RAISE EXCEPTION 'actorsource appends need READ COMMITTED, not %',
                    current_setting('transaction_isolation');
            END IF;
            -- appending transactions take turns, each until its commit is visible
            PERFORM pg_advisory_xact_lock({append_lock});
            -- a new statement: a fresh snapshot, holding every append committed before the
            -- lock was granted; is every stream at the version the batch was planned for?
            SELECT (SELECT coalesce(max(e.position), 0) FROM {s}.events e),
                   EXISTS (
                       SELECT 1 FROM unnest(p_check_streams, p_check_heads)
                            AS c(stream_id, head)
                       WHERE {stale})
              INTO v_head, v_stale;
            IF v_stale THEN
                RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
                    MESSAGE = 'actorsource: a stream is not at the version the append '
                              'was planned for';
            END IF;
            first_position := v_head + 1;
            committed_at := clock_timestamp();
            IF p_data_z IS NULL THEN  -- nothing compressed: the common case
                INSERT INTO {s}.events (position, stream_id, version, type, data, data_text,
                                        metadata, metadata_text, event_id, recorded_at)
                SELECT v_head + r.n, r.stream_id, r.version, r.type, r.data::jsonb,
                       r.data_text, r.metadata::jsonb, r.metadata_text, r.event_id,
                       committed_at
                FROM unnest(p_stream_ids, p_versions, p_types, p_data, p_data_text,
                            p_metadata, p_metadata_text, p_event_ids)
                     WITH ORDINALITY AS r(stream_id, version, type, data, data_text, metadata,
                                          metadata_text, event_id, n);
            ELSE
                INSERT INTO {s}.events (position, stream_id, version, type, data, data_text,
                                        data_z, metadata, metadata_text, event_id,
                                        recorded_at)
                SELECT v_head + r.n, r.stream_id, r.version, r.type, r.data::jsonb,
                       r.data_text, r.data_z, r.metadata::jsonb, r.metadata_text, r.event_id,
                       committed_at
                FROM unnest(p_stream_ids, p_versions, p_types, p_data, p_data_text, p_data_z,
                            p_metadata, p_metadata_text, p_event_ids)
                     WITH ORDINALITY AS r(stream_id, version, type, data, data_text, data_z,
                                          metadata, metadata_text, event_id, n);
            END IF;
            -- delivered to every listener when (and only if) this transaction commits
            IF cardinality(p_event_ids) > 0 THEN
                PERFORM pg_notify('{channel}', (v_head + cardinality(p_event_ids))::text);
            END IF;
            IF cardinality(p_snapshot_streams) > 0 THEN
                INSERT INTO {s}.snapshots (stream_id, version, schema_version, state,
                                           state_text, state_z, recorded_at)
                SELECT r.stream_id, r.version, r.schema_version, r.state::jsonb,
                       r.state_text, r.state_z, committed_at
                FROM unnest(p_snapshot_streams, p_snapshot_versions,
                            p_snapshot_schema_versions, p_snapshot_states,
                            p_snapshot_state_texts, p_snapshot_state_zs)
                     AS r(stream_id, version, schema_version, state, state_text, state_z)
                ON CONFLICT (stream_id, version) DO UPDATE SET
                    schema_version = excluded.schema_version, state = excluded.state,
                    state_text = excluded.state_text, state_z = excluded.state_z,
                    recorded_at = excluded.recorded_at;
            END IF;
        END
        $fn$"""


#: version 3's check: the version after the planned head is taken, or the head is not stored
#: (blind to a stale head whose next versions were archived or deleted, and to head 0 once
#: version 1 was archived)
_STALE_BY_NEIGHBOURS: Final = """EXISTS (
        SELECT 1 FROM {s}.events e
        WHERE e.stream_id = c.stream_id AND e.version = c.head + 1)
   OR (c.head > 0 AND NOT EXISTS (
        SELECT 1 FROM {s}.events e
        WHERE e.stream_id = c.stream_id AND e.version = c.head))"""

#: version 6's check: the stream's last version is not the planned head (one index probe)
_STALE_BY_HEAD: Final = """coalesce((SELECT max(e.version) FROM {s}.events e
    WHERE e.stream_id = c.stream_id), 0) <> c.head"""


def _subject_keys_step(s: str) -> list[str]:
    """The statements of the step to version 4: subject keys (crypto-shredding).

    A forgotten subject keeps its row with a NULL key; ``subject_streams`` links a subject to
    the streams holding its sealed data (whose snapshots a forget deletes).
    """
    return [
        f"""CREATE TABLE {s}.subject_keys (
            subject      text        PRIMARY KEY,
            key          bytea,
            created_at   timestamptz NOT NULL DEFAULT now(),
            forgotten_at timestamptz
        )""",
        f"""CREATE TABLE {s}.subject_streams (
            subject   text NOT NULL,
            stream_id text NOT NULL,
            PRIMARY KEY (subject, stream_id)
        )""",
    ]


def _cluster_step(s: str) -> list[str]:
    """The statements of the step to version 5: a cluster's tables (members' heartbeats, the
    shard count, shard leases with their epochs).

    Times are seconds since the Unix epoch, as the members' clocks give them.
    """
    return [
        f"""CREATE TABLE {s}.clusters (
            name   text    PRIMARY KEY,
            shards integer NOT NULL CHECK (shards > 0)
        )""",
        f"""CREATE TABLE {s}.cluster_members (
            cluster    text             NOT NULL,
            member_id  text             NOT NULL,
            address    text             NOT NULL,
            expires_at double precision NOT NULL,
            PRIMARY KEY (cluster, member_id)
        )""",
        f"""CREATE TABLE {s}.shard_leases (
            cluster    text             NOT NULL,
            shard      integer          NOT NULL,
            owner      text,
            epoch      bigint           NOT NULL CHECK (epoch > 0),
            expires_at double precision NOT NULL,
            PRIMARY KEY (cluster, shard)
        )""",
        f"""COMMENT ON COLUMN {s}.shard_leases.epoch IS
            'raised by one at every acquisition: a fenced append commits only while the '
            'shard''s lease is at the epoch it was made under'""",
    ]


def _head_check_step(s: str, append_lock: int, channel: str) -> list[str]:
    """The statement of the step to version 6: the append function checks the head of every
    stream a batch appends to against its last stored version.

    Version 3's check looked for the version after the planned head, and the unique index
    stood guard behind it; once archiving or a hard delete has removed versions, a stale head
    finds them free. The writer now sends every stream of a batch to be checked.
    """
    return [
        _append_function(
            s, append_lock, channel, create="CREATE OR REPLACE", stale=_STALE_BY_HEAD.format(s=s)
        )
    ]


def _lock_key(purpose: str, schema: str) -> int:
    """A signed 64-bit advisory lock key for ``purpose`` on ``schema``."""
    digest = hashlib.sha256(f"actorsource {purpose} {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _channel(schema: str) -> str:
    """The NOTIFY channel of a schema (a channel name has at most 63 bytes)."""
    channel = f"actorsource_{schema}"
    if len(channel) > 63:
        channel = f"actorsource_{hashlib.sha256(schema.encode()).hexdigest()[:40]}"
    return channel


class _Statements:
    """The SQL of one schema (its name is checked to be a plain identifier, then quoted)."""

    def __init__(self, schema: str, version: int = SCHEMA_VERSION) -> None:
        """:param version: the schema's version (a read-only store reads older ones as they
        are: before compression, the compressed columns read as NULL)"""
        s = f'"{schema}"'
        compressed = version >= _COMPRESSION_VERSION
        data_z = "data_z" if compressed else "NULL::bytea"
        state_z = "state_z" if compressed else "NULL::bytea"
        #: an event's columns (see ``_COLUMNS``) and its compressed data column
        self.columns = _COLUMNS if compressed else _COLUMNS.replace("data_z", data_z)
        self.data_z = data_z
        self.events = f"{s}.events"
        self.lock = "SELECT pg_advisory_xact_lock($1)"
        self.append = (
            "SELECT first_position, committed_at FROM "
            f"{s}.actorsource_append($1::text[], $2::bigint[], $3::text[], $4::text[], "
            "$5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], "
            "$11::text[], $12::bigint[], $13::bigint[], $14::text[], $15::text[], $16::bytea[], "
            "$17::bytea[])"
        )
        # the heads of a batch's streams, and which of its event ids are stored (kind 0 / 1)
        self.facts = (
            "SELECT 0, s.stream_id, (SELECT coalesce(max(e.version), 0) FROM "
            f"{s}.events e WHERE e.stream_id = s.stream_id) "
            "FROM unnest($1::text[]) AS s(stream_id) "
            f"UNION ALL SELECT 1, e.event_id, 0 FROM {s}.events e "
            "WHERE e.event_id = ANY($2::text[])"
        )
        self.stream_head = f"SELECT coalesce(max(version), 0) FROM {s}.events WHERE stream_id = $1"
        self.stream_head_at = (
            f"SELECT coalesce(max(version), 0) FROM {s}.events "
            "WHERE stream_id = $1 AND recorded_at <= $2"
        )
        self.head = f"SELECT coalesce(max(position), 0) FROM {s}.events"
        self.load_snapshot = (
            "SELECT version, schema_version, coalesce(state_text, state::text), recorded_at, "
            f"{state_z} "
            f"FROM {s}.snapshots WHERE stream_id = $1 AND version <= $2 "
            "ORDER BY version DESC LIMIT 1"
        )
        # kind 0: the latest snapshot (version, -, state, schema version, compressed state,
        # time); kind 1: the events after it (version, type, data, position, compressed data)
        self.latest = (
            "WITH snap AS (SELECT version, schema_version, coalesce(state_text, state::text) "
            f"AS state, {state_z} AS state_z, recorded_at FROM {s}.snapshots WHERE stream_id = $1 "
            "ORDER BY version DESC LIMIT 1) "
            "SELECT * FROM ("
            "SELECT 0 AS kind, version, NULL::text AS type, state, schema_version, state_z, "
            "recorded_at FROM snap "
            "UNION ALL ("
            "SELECT 1, e.version, e.type, coalesce(e.data_text, e.data::text), e.position, "
            f"{data_z}, NULL "
            f"FROM {s}.events e WHERE e.stream_id = $1 "
            "AND e.version > coalesce((SELECT version FROM snap), 0) "
            "ORDER BY e.version LIMIT $2)) AS found ORDER BY kind, version"
        )
        # a snapshot saved with the stream's older ones pruned, in one transaction
        self.save_snapshot = (
            f"INSERT INTO {s}.snapshots (stream_id, version, schema_version, state, state_text, "
            "state_z, recorded_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6, clock_timestamp()) "
            "ON CONFLICT (stream_id, version) DO UPDATE SET "
            "schema_version = excluded.schema_version, state = excluded.state, "
            "state_text = excluded.state_text, state_z = excluded.state_z, "
            "recorded_at = excluded.recorded_at"
        )
        self.prune_snapshots = (
            f"DELETE FROM {s}.snapshots WHERE stream_id = $1 AND version NOT IN "
            f"(SELECT version FROM {s}.snapshots WHERE stream_id = $1 "
            "ORDER BY version DESC LIMIT $2)"
        )
        self.list_snapshots = (
            "SELECT version, schema_version, recorded_at "
            f"FROM {s}.snapshots WHERE stream_id = $1 ORDER BY version"
        )
        self.version_of = f"SELECT version FROM {s}.events WHERE event_id = $1 AND stream_id = $2"
        self.stored_range = (
            f"SELECT event_id, position, recorded_at FROM {s}.events "
            "WHERE stream_id = $1 AND version > $2 AND version <= $3 ORDER BY version"
        )
        # metadata IS NULL: the JSONB could not hold it (a NUL), the caller compares the text
        self.command_events = (
            f"SELECT {self.columns} FROM {s}.events WHERE stream_id = $1 "
            "AND (metadata->>'command_id' = ANY($2::text[]) OR metadata IS NULL) ORDER BY version"
        )
        self.list_streams = (
            f"SELECT stream_id, max(version), max(recorded_at) FROM {s}.events "
            "WHERE $1::text IS NULL OR left(stream_id, length($1)) = $1 "
            'GROUP BY stream_id ORDER BY stream_id COLLATE "C"'
        )
        self.list_checkpoints = (
            f'SELECT name, position FROM {s}.checkpoints ORDER BY name COLLATE "C"'
        )
        self.load_checkpoint = f"SELECT position FROM {s}.checkpoints WHERE name = $1"
        self.delete_checkpoint = f"DELETE FROM {s}.checkpoints WHERE name = $1 RETURNING 1"
        self.save_checkpoint = (
            f"INSERT INTO {s}.checkpoints (name, position, updated_at) "
            "VALUES ($1, $2, clock_timestamp()) ON CONFLICT (name) DO UPDATE SET "
            "position = excluded.position, updated_at = excluded.updated_at"
        )
