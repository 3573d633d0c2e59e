"""Event ids are random version-4 UUIDs, unique within and across (forked) processes."""

from __future__ import annotations

import os
import uuid

from actorsource._ids import new_event_id


def test_event_ids_are_unique_version_4_uuids() -> None:
    ids = [new_event_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:600]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text


def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    new_event_id()  # the parent's buffer now holds ids the child must not reuse
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send ten ids and leave at once
        os.close(read_end)
        os.write(write_end, "\n".join(new_event_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_ids = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent_ids = {new_event_id() for _ in range(10)}
    assert len(child_ids) == 10
    assert not child_ids & parent_ids
