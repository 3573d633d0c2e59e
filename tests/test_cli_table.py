"""The command line's table formatter: columns cut to fit, by display width, never mangled."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorsource.cli._table import cell, cut, display_width, fit, table


def test_flexible_columns_are_cut_first_and_the_others_kept_whole() -> None:
    widths = [8, 14, 40, 120]

    fitted = fit(widths, 100, flexible=(2, 3))

    # 94 columns besides the gaps, 72 of them left for the two flexible ones: cut to 36 each
    assert fitted == [8, 14, 36, 36]


@given(
    st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=8),
    st.integers(min_value=10, max_value=300),
)
def test_fitted_columns_fit_whenever_six_characters_each_would(
    widths: list[int], limit: int
) -> None:
    fitted = fit(widths, limit, flexible=(0,))

    assert all(1 <= f <= w for f, w in zip(fitted, widths, strict=True))
    if sum(min(w, 6) for w in widths) + 2 * (len(widths) - 1) <= limit:
        assert sum(fitted) + 2 * (len(widths) - 1) <= limit
    else:  # too narrow: every column keeps six characters (or all it has)
        assert fitted == [min(w, 6) for w in widths]


@pytest.mark.parametrize(
    ("text", "width", "expected"),
    [
        ("Account-42", 20, "Account-42"),
        ("Account-42", 8, "Account…"),
        ("口座口座口座", 7, "口座口…"),  # each character takes two columns
        ("e\u0301e\u0301e\u0301e\u0301", 3, "e\u0301e\u0301…"),  # combining accents take none
    ],
)
def test_cut_counts_what_a_terminal_shows(text: str, width: int, expected: str) -> None:
    assert cut(text, width) == expected
    assert display_width(cut(text, width)) <= width


def test_a_cell_escapes_control_characters_that_would_break_the_table() -> None:
    assert cell("a\nb\tc\x1b[31m") == "a\\nb\\tc\\x1b[31m"


def test_an_output_that_cannot_encode_the_ellipsis_gets_three_dots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "30")
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")

    table(out, ["stream", "data"], [("Account-1", {"text": "x" * 100})], flexible=(1,))
    out.flush()
    shown = raw.getvalue().decode("ascii")

    assert "..." in shown
    assert max(len(line) for line in shown.splitlines()) <= 30
