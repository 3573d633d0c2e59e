"""The cluster a runtime joins, as a value: ``Runtime(store, cluster=Cluster(...))``."""

from __future__ import annotations

import math
import ssl
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ..stores._base import check_cluster_name

#: the fewest bytes a shared secret has (an HMAC key shorter than this is guessable)
MIN_SECRET_BYTES = 16
#: the most shards a cluster may have (a shard is a row in the store and a lease to renew)
MAX_SHARDS = 4096


def parse_address(address: object) -> tuple[str, int]:
    """Split ``"host:port"`` into its host and port.

    :raises ValueError: naming what was wrong
    """
    if not isinstance(address, str) or ":" not in address:
        msg = f"a cluster address is a str 'host:port' (e.g. '10.0.0.5:7400'), got {address!r}"
        raise ValueError(msg)
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # an IPv6 address in brackets
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        msg = (
            f"a cluster address is 'host:port' with a port from 0 to 65535 (0: any free one), "
            f"got {address!r}"
        )
        raise ValueError(msg)
    return host, int(port)


def _check_address(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    parse_address(value)


def _check_secret(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes) or len(value) < MIN_SECRET_BYTES:
        msg = (
            f"Cluster: secret must be a str or bytes of at least {MIN_SECRET_BYTES} bytes "
            "shared by every member (e.g. secrets.token_hex(32)), got "
            f"{'one too short' if isinstance(value, bytes) else repr(type(value).__name__)}"
        )
        raise ValueError(msg)


def _check_shards(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SHARDS:
        msg = f"Cluster: shards must be an int from 1 to {MAX_SHARDS}, got {value!r}"
        raise ValueError(msg)


def _positive(name: str) -> Callable[[object, attrs.Attribute[Any], object], None]:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and name in ("heartbeat", "ask_timeout"):
            return
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value <= 0
        ):
            msg = f"Cluster: {name} must be a number of seconds > 0, got {value!r}"
            raise ValueError(msg)

    return check


def _check_name(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    try:
        check_cluster_name(value)
    except ValueError as exc:
        msg = f"Cluster: {attribute.name}: {exc}"
        raise ValueError(msg) from None


def _check_tls(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, ssl.SSLContext):
        msg = f"Cluster: tls must be an ssl.SSLContext or None, got {value!r}"
        raise TypeError(msg)


def _check_clock(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        msg = f"Cluster: clock must be a callable returning seconds since the epoch, got {value!r}"
        raise TypeError(msg)


def _aggregates(value: object) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        msg = f"Cluster: aggregates must be a list of aggregate classes or Deciders, got {value!r}"
        raise ValueError(msg)
    return tuple(value)


def _new_member_id() -> str:
    return uuid.uuid4().hex[:12]


@attrs.frozen
class Cluster:
    """The cluster a runtime joins (``Runtime(store, cluster=Cluster(...))``).

    Members of one cluster share a store (PostgreSQL; the memory store for tests in one
    process) and a secret. Each aggregate lives on one member at a time: its stream id hashes
    to one of ``shards`` shards, each owned under a lease by the member that rendezvous hashing
    over the live members picks; refs on any member reach the owner.

    :ivar name: the cluster's name (members with the same name and store form the cluster)
    :ivar address: ``"host:port"`` to listen on for the other members and to advertise to them
        (port ``0``: any free port, the one bound is advertised)
    :ivar secret: shared by every member; a connection that does not prove it (HMAC) gets
        nothing done (at least 16 bytes)
    :ivar shards: how many shards the aggregates are spread over; fixed for a cluster's life
        (the first member records it; a member with another value is refused)
    :ivar lease: seconds a member lives without a heartbeat, and a shard's lease without a
        renewal: after a crash, its shards move within this time
    :ivar heartbeat: seconds between heartbeats and lease renewals (default: ``lease / 4``)
    :ivar clock: seconds since the Unix epoch, for heartbeats and leases (default:
        ``time.time``; members' clocks must agree to well within ``lease``)
    :ivar tls: encrypt the members' connections with this SSL context (else plain TCP,
        authenticated by the secret)
    :ivar ask_timeout: seconds a routed ``ask`` waits for an owner and its reply when the
        runtime's ``ask`` sets no timeout (``None``: ``lease * 3``)
    :ivar member_id: this member's id (default: a new random one per runtime)
    :ivar aggregates: the aggregate classes (or Deciders) this member serves, registered as it
        joins (a member also serves every aggregate it made a ref to; one that it has never
        seen cannot decide the other members' commands for it)
    """

    name: str = attrs.field(validator=_check_name)
    address: str = attrs.field(validator=_check_address)
    secret: str | bytes = attrs.field(validator=_check_secret, repr=False)
    shards: int = attrs.field(default=64, validator=_check_shards)
    lease: float = attrs.field(default=10.0, validator=_positive("lease"))
    heartbeat: float | None = attrs.field(default=None, validator=_positive("heartbeat"))
    clock: Callable[[], float] | None = attrs.field(default=None, validator=_check_clock)
    tls: ssl.SSLContext | None = attrs.field(default=None, validator=_check_tls, repr=False)
    ask_timeout: float | None = attrs.field(default=None, validator=_positive("ask_timeout"))
    member_id: str = attrs.field(factory=_new_member_id, validator=_check_name)
    aggregates: tuple[Any, ...] = attrs.field(default=(), converter=_aggregates)

    def __attrs_post_init__(self) -> None:
        if self.heartbeat is not None and self.heartbeat >= self.lease:
            msg = (
                f"Cluster: heartbeat ({self.heartbeat} s) must be shorter than lease "
                f"({self.lease} s), or a live member's leases would lapse between beats"
            )
            raise ValueError(msg)

    @property
    def interval(self) -> float:
        """Seconds between heartbeats (``heartbeat``, else ``lease / 4``)."""
        return self.heartbeat if self.heartbeat is not None else self.lease / 4

    @property
    def secret_bytes(self) -> bytes:
        """The secret as bytes (a str is UTF-8 encoded)."""
        return self.secret.encode() if isinstance(self.secret, str) else self.secret

    @property
    def routed_timeout(self) -> float:
        """Seconds a routed request waits when nothing else limits it."""
        return self.ask_timeout if self.ask_timeout is not None else self.lease * 3

    def now(self) -> float:
        """The cluster's time: seconds since the Unix epoch, by ``clock``."""
        return self.clock() if self.clock is not None else time.time()
