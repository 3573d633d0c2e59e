"""The error tree of actorsource.

Every error the library raises on purpose derives from :class:`ActorsourceError`::

    ActorsourceError
    ├── Rejected                  a command handler refused the command (domain rule)
    ├── UnknownCommandError       the aggregate has no @command for this command type
    ├── InvalidEventError         a handler returned something that is not an event
    ├── EventApplyError           an @apply handler raised; nothing was stored
    ├── CodecError                an event or snapshot could not be encoded or decoded
    ├── DefinitionError           an aggregate class, Decider or @event_type is malformed
    ├── ConcurrencyError          the stream moved on (expected vs. actual version)
    ├── VersionNotReachedError    state_at asked for a version the stream has not reached
    │                             (also a ValueError)
    ├── NaiveDatetimeError        a time without a time zone was given (also a ValueError)
    ├── StoreError                the event store failed (I/O, disk full, locked, closed)
    │   └── IncompatibleStoreError  the database is not (or a newer) actorsource database
    ├── RuntimeClosedError        the runtime is not open
    ├── MailboxFullError          tell_nowait() on a full mailbox
    ├── AskTimeoutError           ask() got no outcome in time (also a TimeoutError)
    ├── WaitTimeoutError          a wait (for a projection, for events) passed its deadline
    │                             (also a TimeoutError)
    ├── CheckpointConflictError   another runner moved a projection's checkpoint first
    ├── ActorFailedError          the actor could not load its aggregate from the store
    ├── StreamNotFoundError       an operation on a stream that has no events (also a
    │                             LookupError)
    ├── StreamArchivedError       a read before a stream's first kept (not archived) version
    ├── StreamDeletedError        a command to (or a change of) a deleted stream
    ├── SnapshotError             ref.snapshot() found nothing to snapshot
    ├── UnknownSubjectError       forget() of a subject the store has no key for (also a
    │                             LookupError)
    ├── ProjectionError           a projection's handler failed on an event
    └── ClusterError              a cluster member could not do what was asked
        ├── FencedError           an append refused: the shard's lease moved on (also a
        │                         StoreError; nothing was stored)
        ├── NotOwnerError         a member was sent a message for a shard it does not own
        ├── PeerUnavailableError  no member could be reached for a message (not sent, or its
        │                         outcome is unknown)
        ├── ClusterAuthError      a connection failed the cluster's handshake
        ├── ClusterProtocolError  a peer sent a malformed frame or message
        └── RemoteError           another member raised an error that is not rebuilt here

Failure semantics (as in Akka Persistence's ``onPersistFailure``): an error raised while
*deciding* reaches the caller and the actor goes on with its state unchanged; an error while
*applying, encoding or storing* events stops the actor's in-memory state, which is reloaded from the
store on the next message, because the actor can no longer trust what it holds.
"""

from __future__ import annotations


class ActorsourceError(Exception):
    """Raised for every error that actorsource raises on purpose (the root of the tree)."""


class Rejected(ActorsourceError):
    """Raised by a command handler to refuse a command; users may subclass it.

    The caller of ``ask`` receives the very same exception object; nothing is stored and the
    actor goes on.
    """

    #: the stream of the aggregate that refused (set by the runtime as the refusal goes back
    #: to the caller; ``None`` for one raised elsewhere)
    stream_id: str | None = None


class UnknownCommandError(ActorsourceError):
    """Raised when an aggregate has no ``@command`` handler for the command's type."""

    def __init__(self, aggregate: str, command_type: str, known: list[str]) -> None:
        self.aggregate = aggregate
        self.command_type = command_type
        known_text = ", ".join(known) if known else "none"
        msg = (
            f"{aggregate} has no @command handler for command type {command_type!r} "
            f"(it handles: {known_text})"
        )
        super().__init__(msg)


class InvalidEventError(ActorsourceError):
    """Raised when a command handler returns something that is not an event of its aggregate."""

    def __init__(self, aggregate: str, command_type: str, returned: object, reason: str) -> None:
        self.aggregate = aggregate
        self.command_type = command_type
        self.returned = returned
        msg = (
            f"{aggregate}'s handler for {command_type} returned {returned!r}: {reason}; "
            "a command handler returns an event, a list of events, or None"
        )
        super().__init__(msg)


class EventApplyError(ActorsourceError):
    """Raised when an ``@apply`` handler raised for a new event; the event was not stored.

    The original exception is the ``__cause__``. The actor discards its in-memory state and
    reloads it from the store before its next message.
    """

    def __init__(self, stream_id: str, event_type: str, error: BaseException) -> None:
        self.stream_id = stream_id
        self.event_type = event_type
        msg = (
            f"applying event {event_type} to stream {stream_id!r} raised "
            f"{type(error).__name__}: {error}; the event was not stored"
        )
        super().__init__(msg)


class CodecError(ActorsourceError):
    """Raised when an event or a snapshot cannot be turned into JSON data, or back.

    A stored event that cannot be read (its row is damaged) names its place: ``stream_id``,
    ``version`` and ``position`` (``None`` where the error is not about a stored event).
    """

    def __init__(
        self,
        message: str,
        *,
        type_name: str | None = None,
        stream_id: str | None = None,
        version: int | None = None,
        position: int | None = None,
    ) -> None:
        self.type_name = type_name
        self.stream_id = stream_id
        self.version = version
        self.position = position
        super().__init__(message)


class DefinitionError(ActorsourceError, TypeError):
    """Raised when an aggregate class, a Decider or an ``@event_type`` declaration is malformed,
    or an event (or a snapshotted state) has a field of a type the codec cannot store.

    Aggregate classes are checked when first used (their ``stream_category`` when defined),
    Deciders and ``@event_type`` at once; two aggregates of one category in a runtime when the
    second is first used there.
    """


class ConcurrencyError(ActorsourceError):
    """Raised when a stream is not at the version an append expected.

    Another writer (actor, runtime or process) appended first.
    """

    def __init__(
        self,
        stream_id: str,
        expected_version: int,
        actual_version: int,
        *,
        retries: int | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        self.retries = retries
        msg = f"stream {stream_id!r} is at version {actual_version}, expected {expected_version}"
        if retries is not None:
            msg += f"; the command was retried {retries} times"
        super().__init__(msg)


class VersionNotReachedError(ActorsourceError, ValueError):
    """Raised when ``state_at`` asks for a version that the aggregate's stream has not reached.

    ``version`` is what was asked, ``current_version`` where the stream stands (0: no events).
    A ``ValueError`` too, as it was before it had a type of its own.
    """

    def __init__(self, aggregate: str, stream_id: str, version: int, current_version: int):
        self.aggregate = aggregate
        self.stream_id = stream_id
        self.version = version
        self.current_version = current_version
        msg = (
            f"{aggregate} stream {stream_id!r} is at version {current_version}: it has no "
            f"version {version} yet; ask for a version from 0 to {current_version}"
        )
        super().__init__(msg)


class NaiveDatetimeError(ActorsourceError, ValueError):
    """Raised when a time without a time zone (a naive ``datetime``) is given where a moment is
    meant: which moment it is would be a guess.

    ``argument`` names what was given (``"at"``, ``"since"``, ...) and ``value`` is the time;
    ``stream_id`` is the stream it was asked of, if any. A ``ValueError`` too, as it was before
    it had a type of its own.
    """

    def __init__(
        self, argument: str, value: object, *, stream_id: str | None = None, where: str = ""
    ) -> None:
        self.argument = argument
        self.value = value
        self.stream_id = stream_id
        msg = (
            f"{where}{argument} must be a timezone-aware datetime, got the naive {value!r}; "
            "give its time zone, for example datetime.now(UTC) or value.replace(tzinfo=UTC)"
        )
        super().__init__(msg)


class StoreError(ActorsourceError):
    """Raised when the event store fails (I/O error, disk full, locked too long, closed).

    Nothing of the failed operation is stored, unless the message says the outcome is unknown:
    when the connection to the database broke (or the store was stopped) after the write was
    sent, it may or may not have committed. Retry an append with the same event ids (or a
    command with the same ``command_id``) to find out: stores make such a retry idempotent.
    The original driver error is the ``__cause__``.
    """


class IncompatibleStoreError(StoreError):
    """Raised when a database is not an actorsource database, or is of a newer schema version."""


class RuntimeClosedError(ActorsourceError):
    """Raised when a message is sent through a runtime that is not open."""


class MailboxFullError(ActorsourceError):
    """Raised by ``tell_nowait`` when the aggregate's mailbox has no room."""

    def __init__(self, stream_id: str, size: int) -> None:
        self.stream_id = stream_id
        self.size = size
        msg = (
            f"mailbox of {stream_id!r} is full ({size} messages); "
            "use 'await tell(...)' to wait for room, or raise Runtime(mailbox_size=...)"
        )
        super().__init__(msg)


class AskTimeoutError(ActorsourceError, TimeoutError):
    """Raised when ``ask`` got no outcome in time.

    ``processed`` is False when the command was taken back from the mailbox before any actor
    saw it (it will never take effect), and True when the actor had already taken it: it may
    have been stored or may still be, and the outcome is unknown to the caller.
    """

    def __init__(self, stream_id: str, command_type: str, timeout: float, processed: bool):
        self.stream_id = stream_id
        self.command_type = command_type
        self.timeout = timeout
        self.processed = processed
        outcome = (
            "it was already being processed: its outcome is unknown (it may be stored)"
            if processed
            else "it was withdrawn from the mailbox and will not run"
        )
        msg = f"{command_type} to {stream_id!r} got no outcome within {timeout} s; {outcome}"
        super().__init__(msg)


class WaitTimeoutError(ActorsourceError, TimeoutError):
    """Raised when a wait (``wait_for_projection``, ``store.wait_for_events``) passed its deadline.

    ``awaited`` says what was waited for, ``target`` the position it waited for and ``reached``
    where it stood when the time was up.
    """

    def __init__(
        self, awaited: str, *, target: int, reached: int, timeout: float, detail: str = ""
    ) -> None:
        self.awaited = awaited
        self.target = target
        self.reached = reached
        self.timeout = timeout
        msg = (
            f"{awaited} did not reach position {target} within {timeout} s: "
            f"it stood at {reached}{detail}"
        )
        super().__init__(msg)


class CheckpointConflictError(ActorsourceError):
    """Raised when a checkpoint is not where a batch that moves it expected it to be.

    Another runner of the same projection (another runtime or process on the same store)
    committed first; nothing of this batch was kept. The projection reloads its checkpoint and
    goes on from there, so that each event reaches an exactly-once read model once.
    """

    def __init__(self, name: str, expected: int, actual: int) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        msg = (
            f"checkpoint {name!r} is at position {actual}, expected {expected}: another runner "
            "of this projection committed first; nothing of this batch was kept"
        )
        super().__init__(msg)


class ActorFailedError(ActorsourceError):
    """Raised when an actor could not load its aggregate from the store.

    The cause (a decode or store error) is the ``__cause__``; the next message tries again.
    """

    def __init__(self, stream_id: str, reason: str) -> None:
        self.stream_id = stream_id
        msg = f"actor for stream {stream_id!r} failed: {reason}"
        super().__init__(msg)


class StreamNotFoundError(ActorsourceError, LookupError):
    """Raised when an operation names a stream that has no events (nothing was changed)."""

    def __init__(self, stream_id: str, operation: str) -> None:
        self.stream_id = stream_id
        msg = (
            f"cannot {operation} stream {stream_id!r}: it has no events; check the stream id "
            "(an aggregate's stream id is its category, '-', and its id)"
        )
        super().__init__(msg)


class StreamArchivedError(ActorsourceError):
    """Raised when a read asks for events of a stream that were archived (moved out of the
    store); the events from ``first_kept_version`` on are still there."""

    def __init__(self, stream_id: str, first_kept_version: int, *, wanted: str = "") -> None:
        self.stream_id = stream_id
        self.first_kept_version = first_kept_version
        wanted = wanted or f"events before version {first_kept_version}"
        msg = (
            f"stream {stream_id!r} cannot give {wanted}: its events before version "
            f"{first_kept_version} are archived (moved out of the store); the store keeps "
            f"version {first_kept_version} on, the archive files hold the rest"
        )
        super().__init__(msg)


class StreamDeletedError(ActorsourceError):
    """Raised when a command is sent to a deleted stream, or a deleted stream is changed.

    A soft-deleted stream keeps its events (still readable); a hard-deleted one keeps only
    its tombstone. Neither takes new events: its id is not reused.
    """

    def __init__(self, stream_id: str, *, hard: bool, version: int) -> None:
        self.stream_id = stream_id
        #: whether the stream's events were removed (hard delete) or kept (soft delete)
        self.hard = hard
        #: the version of the stream's tombstone
        self.version = version
        how = "hard-deleted (its events removed)" if hard else "deleted (its events kept)"
        msg = (
            f"stream {stream_id!r} was {how} at version {version}; it takes no new events "
            "and its id is not reused: use a new id"
        )
        super().__init__(msg)


class SnapshotError(ActorsourceError):
    """Raised when a snapshot cannot be taken on demand (``ref.snapshot()``): the stream has no
    events. Nothing was saved and the actor goes on."""

    def __init__(self, stream_id: str, reason: str) -> None:
        self.stream_id = stream_id
        self.reason = reason
        msg = (
            f"cannot snapshot {stream_id!r}: {reason}; a snapshot holds the state after an "
            "event, so send the aggregate a command that records one first"
        )
        super().__init__(msg)


class UnknownSubjectError(ActorsourceError, LookupError):
    """Raised when ``Runtime.forget`` is given a subject the store has no key for (no event
    with personal fields of it was ever stored). Nothing was changed."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        msg = (
            f"cannot forget subject {subject!r}: the store has no key for it (no personal "
            "field of it was ever stored); check the id (subject ids are compared exactly)"
        )
        super().__init__(msg)


class ProjectionError(ActorsourceError):
    """Raised when a projection's handler fails on an event.

    The projection's checkpoint stays before that event; a background projection retries it
    with backoff, an inline projection fails the append that carried it (nothing of the append
    is stored). The handler's exception is the ``__cause__``.
    """

    def __init__(
        self,
        projection: str,
        *,
        position: int,
        stream_id: str,
        version: int,
        event_type: str,
        error: BaseException,
    ) -> None:
        self.projection = projection
        self.position = position
        self.stream_id = stream_id
        self.version = version
        self.event_type = event_type
        msg = (
            f"projection {projection!r} failed on event {event_type} at position {position} "
            f"({stream_id!r} version {version}): {type(error).__name__}: {error}"
        )
        super().__init__(msg)


class ClusterError(ActorsourceError):
    """Raised when a member of a cluster could not do what was asked of it (the root of the
    cluster's errors)."""


class FencedError(ClusterError, StoreError):
    """Raised when an append is refused because its shard's lease moved on: another member
    took the shard over (a higher epoch) after this one lost its lease (it paused, or could
    not renew in time). Nothing of the append was stored; the command may be sent again, and
    reaches the shard's new owner."""

    def __init__(self, stream_id: str, shard: int, epoch: int, actual: int | None) -> None:
        self.stream_id = stream_id
        self.shard = shard
        #: the epoch the append was made under (0: this member held no lease on the shard)
        self.epoch = epoch
        #: the shard's epoch in the store (None: no lease is recorded for it)
        self.actual = actual
        if not epoch:
            msg = (
                f"the append to {stream_id!r} was fenced off: this member holds no lease on "
                f"shard {shard} (another member owns it, or it is being handed off); nothing "
                "was stored, send the command again to reach the shard's owner"
            )
        else:
            now = "has no lease" if actual is None else f"is at epoch {actual}"
            msg = (
                f"the append to {stream_id!r} was fenced off: it was made under shard {shard}'s "
                f"lease at epoch {epoch}, but the shard {now} (another member took it over); "
                "nothing was stored, send the command again to reach the shard's owner"
            )
        super().__init__(msg)


class NotOwnerError(ClusterError):
    """Raised when a member is sent a message for a shard that it does not own (or is handing
    off); the sender asks its placement again and retries with the same command id.

    ``epoch`` is the shard's lease epoch as the refusing member saw it (0: unknown).
    """

    def __init__(self, shard: int, epoch: int, member_id: str) -> None:
        self.shard = shard
        self.epoch = epoch
        self.member_id = member_id
        msg = (
            f"member {member_id!r} does not own shard {shard} (epoch {epoch} seen there); "
            "the sender looks up the owner again and retries"
        )
        super().__init__(msg)


class PeerUnavailableError(ClusterError):
    """Raised when a message could not reach the member owning its aggregate in time (the
    connection was refused or broke, or no member took the shard).

    ``sent`` is False when the message surely did not reach any member, True when it was sent
    and its outcome is unknown: a command retried with the same ``command_id`` is applied once.
    """

    def __init__(self, message: str, *, address: str | None = None, sent: bool = False) -> None:
        self.address = address
        self.sent = sent
        super().__init__(message)


class ClusterAuthError(ClusterError):
    """Raised when a connection between members failed the cluster's handshake (another
    cluster name, another secret, or another protocol version); nothing was sent through it."""


class ClusterProtocolError(ClusterError):
    """Raised when a peer sent a malformed frame or message (too large, truncated, not the
    protocol); the connection is closed."""


class RemoteError(ClusterError):
    """Raised when the member owning an aggregate raised an error that cannot be rebuilt here
    as its own class (not a library error, nor one registered with the cluster).

    ``type_name`` is the remote error's ``module.QualifiedName`` and ``remote_message`` its
    message.
    """

    def __init__(self, type_name: str, remote_message: str) -> None:
        self.type_name = type_name
        self.remote_message = remote_message
        msg = (
            f"the owning member raised {type_name}: {remote_message} (register the error class "
            "with the cluster to receive it as itself)"
        )
        super().__init__(msg)
