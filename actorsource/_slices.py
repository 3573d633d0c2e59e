"""Slices of a projection: its work split by a stable hash of the stream id.

A sliced projection runs ``count`` instances, each handling the events of the streams whose
:func:`slice_of` is its ``index``, under its own checkpoint. The hash is the first four bytes
of the MD5 digest of the stream id's UTF-8 bytes, read as an unsigned big-endian integer:
stable across processes, Python versions and machines (Python's ``hash()`` is not), and one
PostgreSQL computes too::

    ('x' || left(md5(stream_id), 8))::bit(32)::bigint % count

MD5 serves here as a well-spread hash, not for security.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

import attrs

#: the largest number of slices a projection may be split into
MAX_SLICES: Final = 1024


def _check_count(_: object, __: object, count: int) -> None:
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_SLICES:
        msg = f"a projection's slice count must be an int from 1 to {MAX_SLICES}, got {count!r}"
        raise ValueError(msg)


@attrs.frozen(slots=True)
class ProjectionSlice:
    """One slice of a sliced projection: the streams whose :func:`slice_of` is ``index``.

    A sliced projection's factory gets one, to make that slice's instance (for example to
    name its tables or pick its partition).
    """

    #: which slice, from 0 to ``count - 1``
    index: int
    #: how many slices the projection is split into
    count: int = attrs.field(validator=_check_count)

    def __attrs_post_init__(self) -> None:
        index: object = self.index
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self.count:
            msg = f"a slice index must be an int from 0 to {self.count - 1}, got {index!r}"
            raise ValueError(msg)

    def holds(self, stream_id: str) -> bool:
        """Whether the stream's events belong to this slice."""
        return slice_of(stream_id, self.count) == self.index

    def checkpoint_name(self, projection: str) -> str:
        """The name this slice of ``projection`` runs and keeps its checkpoint under (no
        plain projection may take it: see :func:`reserved_slice_name`)."""
        return f"{projection}:slice:{self.index}/{self.count}"


def stream_hash(stream_id: str) -> int:
    """Return the stable 32-bit hash of a stream id slices are cut by (see the module)."""
    digest = hashlib.md5(stream_id.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big")


def slice_of(stream_id: str, count: int) -> int:
    """Return the slice (``0`` to ``count - 1``) a stream's events belong to."""
    return stream_hash(stream_id) % count


_SLICE_SUFFIX: Final = re.compile(r":slice:\d+/\d+$")


def reserved_slice_name(name: str) -> bool:
    """Whether ``name`` has the form of a slice's checkpoint name (``NAME:slice:I/N``), which
    a plain projection name must not take."""
    return _SLICE_SUFFIX.search(name) is not None
