"""Event ids are time-ordered version-7 UUIDs, unique within and across (forked) processes."""

from __future__ import annotations

import os
import uuid

from actorsource._ids import new_event_id


def test_event_ids_are_unique_version_7_uuids() -> None:
    ids = [new_event_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:600]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
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


def test_event_ids_start_with_the_time_so_that_they_sort_by_time() -> None:
    import time

    before = time.time_ns() // 1_000_000
    text = new_event_id()
    after = time.time_ns() // 1_000_000
    millis = int(text.replace("-", "")[:12], 16)
    assert before <= millis <= after
    later = [new_event_id() for _ in range(300)]
    assert [i[:13] for i in later] == sorted(i[:13] for i in later)
