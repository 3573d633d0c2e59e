"""How the command line takes its arguments: a DSN's password never echoed, whatever the DSN's
shape."""

from __future__ import annotations

import pytest

from actorsource.cli import main


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# -- a DSN's password --------------------------------------------------------------------------

SECRET = "Zq7Xw9"


def _assert_no_secret(text: str) -> None:
    for piece in (SECRET, SECRET[:3], SECRET[3:]):
        assert piece not in text, text


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://app:{SECRET}@[::1/bank",
        f"postgresql://app:{SECRET[:3]}/{SECRET[3:]}@127.0.0.1:1/bank",
        f"postgresql://app:{SECRET[:3]}?{SECRET[3:]}@127.0.0.1:1/bank",
    ],
)
def test_a_command_on_a_malformed_dsn_prints_no_piece_of_the_password(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("asyncpg")
    status, out, err = _run(capsys, ["streams", dsn])

    assert status == 1
    assert err.startswith(
        "actorsource streams: error: cannot connect to PostgreSQL at postgresql://"
    )
    _assert_no_secret(out + err)


@pytest.mark.parametrize(
    "argv",
    [
        [f"postgresql://app:{SECRET}@db/bank", "streams"],  # the command forgotten
        ["streams", "events.db", f"postgresql://app:{SECRET}@db/bank"],  # one too many
        ["events", f"postgresql://app:{SECRET}@db/bank", "Account-a", "--from-version", "x"],
        ["bench", "--store", f"postgres:/app:{SECRET}@db/bank"],  # a mistyped scheme
    ],
)
def test_a_usage_error_does_not_echo_a_dsns_password(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err

    assert exit_.value.code == 2
    assert "error:" in err
    _assert_no_secret(err)


def test_a_mistyped_dsn_taken_for_a_sqlite_file_is_not_echoed_with_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, err = _run(capsys, ["streams", f"postgressql://app:{SECRET}@db/bank"])

    assert status == 1
    assert err == "actorsource streams: error: no database at 'postgressql://app:***@db/bank'\n"
