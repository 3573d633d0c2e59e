"""What the commands print: tables that fit the terminal, colours on a TTY, JSON.

A table is sized to its widest cells; on a terminal (or when ``COLUMNS`` is set) the widest
columns are cut down, each cut cell ending in an ellipsis, until a row fits the width. Piped
without ``COLUMNS``, rows are printed whole (``--json`` is the machine's format).
"""

from __future__ import annotations

import os
import shutil
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import orjson

from .._records import StoredEvent

#: ANSI styles (used only on a terminal, and never with NO_COLOR set)
HEADER, KEY, TYPE, DIM = "1;36", "1", "32", "2"

#: the fewest characters a cut column keeps (so that it still says something)
_MIN_WIDTH: Final = 6

#: spaces between columns
_GAP: Final = "  "

#: control characters, shown escaped: a raw newline or escape code would break the table
_CONTROLS: Final = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {
    ord("\n"): "\\n",
    ord("\t"): "\\t",
    ord("\r"): "\\r",
}


def styled(out: TextIO) -> bool:
    """Whether to print in colour: on a terminal, unless ``NO_COLOR`` is set."""
    return out.isatty() and not os.environ.get("NO_COLOR")


def paint(text: str, style: str, on: bool) -> str:
    """Return ``text`` in an ANSI ``style`` when ``on``."""
    return f"\033[{style}m{text}\033[0m" if on and text else text


def width_for(out: TextIO) -> int | None:
    """The width to fit lines to: the terminal's, or ``COLUMNS``; None: print them whole."""
    if out.isatty() or os.environ.get("COLUMNS", "").strip().isdigit():
        return shutil.get_terminal_size().columns
    return None


def table(
    out: TextIO,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    flexible: Sequence[int] = (),
) -> None:
    """Print aligned columns, fitted to the terminal: the header in bold cyan and the first
    column in bold on a TTY.

    :param flexible: the columns to cut first (long JSON, say), before any other
    """
    cells = [[cell(h) for h in headers], *[[cell(v) for v in row] for row in rows]]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(headers))]
    limit = width_for(out)
    if limit is not None:
        widths = fit(widths, limit, flexible)
    ellipsis = _ellipsis(out)
    on = styled(out)
    for index, row in enumerate(cells):
        padded = [
            pad(cut(text, width, ellipsis), width) for text, width in zip(row, widths, strict=True)
        ]
        padded[-1] = padded[-1].rstrip()
        if index == 0:
            line = paint(_GAP.join(padded).rstrip(), HEADER, on)
        else:
            line = _GAP.join([paint(padded[0], KEY, on), *padded[1:]]).rstrip()
        out.write(line + "\n")


def fit(widths: Sequence[int], limit: int, flexible: Sequence[int] = ()) -> list[int]:
    """Return column widths whose row (with its gaps) is at most ``limit`` wide.

    The ``flexible`` columns are cut first, then all of them; each time the widest are cut
    to a common width, none below :data:`_MIN_WIDTH` (headers are cut too). When even that is
    too wide, every column keeps that much and the row overflows.
    """
    floors = [min(w, _MIN_WIDTH) for w in widths]
    room = limit - len(_GAP) * (len(widths) - 1)
    fitted = list(widths)
    for cuttable in (set(flexible), set(range(len(widths)))):
        if sum(fitted) <= room:
            break
        fixed = sum(w for i, w in enumerate(fitted) if i not in cuttable)
        cap = _cap([fitted[i] for i in cuttable], [floors[i] for i in cuttable], room - fixed)
        fitted = [max(min(w, cap), floors[i]) if i in cuttable else w for i, w in enumerate(fitted)]
    return fitted


def _cap(widths: Sequence[int], floors: Sequence[int], room: int) -> int:
    """The highest width such that the columns, each cut to it (never below its floor), take
    at most ``room``."""
    low, high = 0, max(widths, default=0)
    while low < high:
        cap = (low + high + 1) // 2
        if sum(max(min(w, cap), f) for w, f in zip(widths, floors, strict=True)) <= room:
            low = cap
        else:
            high = cap - 1
    return low


def cut(text: str, width: int, ellipsis: str = "…") -> str:
    """Return ``text`` cut to ``width`` display columns, ending in ``ellipsis`` if cut."""
    if display_width(text) <= width:
        return text
    room = width - display_width(ellipsis)
    kept: list[str] = []
    used = 0
    for char in text:
        size = _char_width(char)
        if used + size > room:
            break
        kept.append(char)
        used += size
    return "".join(kept) + ellipsis


def pad(text: str, width: int) -> str:
    """Return ``text`` padded with spaces to ``width`` display columns."""
    return text + " " * max(width - display_width(text), 0)


def display_width(text: str) -> int:
    """How many terminal columns ``text`` takes (wide East Asian characters take two,
    combining marks none)."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def _char_width(char: str) -> int:
    if char.isascii():
        return 1
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _ellipsis(out: TextIO) -> str:
    encoding = out.encoding or "utf-8"  # a StringIO has none: it holds Unicode
    try:
        "…".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "..."
    return "…"


def cell(value: object) -> str:
    """A value as a table shows it: times in UTC to the millisecond, JSON compact, controls
    escaped."""
    if isinstance(value, datetime):  # the column's header says UTC
        return value.astimezone(UTC).isoformat(sep=" ", timespec="milliseconds")[:-6]
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value).translate(_CONTROLS)


def dumps(value: object) -> str:
    """One line of JSON."""
    return orjson.dumps(value, default=str).decode()


def event_json(event: StoredEvent) -> dict[str, Any]:
    """A stored event as ``--json`` prints it."""
    return {
        "position": event.position,
        "stream_id": event.stream_id,
        "version": event.version,
        "type": event.type,
        "data": event.data,
        "metadata": event.metadata,
        "event_id": event.event_id,
        "recorded_at": event.recorded_at.isoformat(),
    }
