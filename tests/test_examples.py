"""Examples, the README quickstart and the documented test snippets are real programs: run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import drop_schema, postgres_schema, run_sync

ROOT = Path(__file__).resolve().parent.parent


def _run(script: Path, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bank_account_example_runs_and_survives_a_restart(tmp_path: Path) -> None:
    script = ROOT / "examples" / "bank_account.py"
    assert _run(script, tmp_path).splitlines() == ["1 Deposited(amount=100)", "105"]
    assert _run(script, tmp_path).splitlines() == ["3 Deposited(amount=100)", "210"]


def test_order_fulfilment_example_ships_the_paid_order_and_cancels_the_declined_one(
    tmp_path: Path,
) -> None:
    script = ROOT / "examples" / "order_fulfilment.py"
    assert _run(script, tmp_path).splitlines() == [
        "order 1: shipped",
        "order 2: cancelled: payment refused: the card was declined",
    ]


def test_schema_evolution_example_reads_old_events_and_snapshot_with_new_code(
    tmp_path: Path,
) -> None:
    script = ROOT / "examples" / "schema_evolution.py"
    expected = [
        "stored by the old release:",
        "  event 1: Deposited {'amount': 5}",
        "  event 2: Deposited {'amount': 7}",
        "  event 3: Deposited {'amount': 3}",
        "  snapshot at version 2, schema 1: {'state': {'balance': 12, 'deposits': 2}}",
        "read by the new release: Account(cents=1500, deposits=3) "
        "(1 event replayed after the snapshot)",
        "balance: 17.50 EUR after 4 deposits",
        "stored by the new release:",
        "  event 4: Deposited {'cents': 250, 'currency': 'EUR', 'memo': '', '$version': 3}",
    ]
    assert _run(script, tmp_path).splitlines() == expected
    assert _run(script, tmp_path).splitlines() == expected  # it starts afresh on every run


def test_order_lifecycle_example_runs_and_rebuilds_the_order_on_a_second_run(
    tmp_path: Path,
) -> None:
    script = ROOT / "examples" / "order_lifecycle.py"
    assert _run(script, tmp_path).splitlines() == [
        "order-1 placed, total 4200",
        "Ship refused: cannot ship an unpaid order",
        "Pay refused: a payment of 4000 does not match the order total 4200",
        "Cancel refused: cannot cancel an order that has shipped",
        "order-1 is delivered",
        "order-2 is cancelled, refund 1500",
    ]
    assert _run(script, tmp_path).splitlines() == ["order-1 is delivered, total 4200"]


def test_inventory_example_reserves_exactly_the_stock_on_every_run(tmp_path: Path) -> None:
    script = ROOT / "examples" / "inventory.py"
    expected = ["20 reservations succeeded, 30 were refused", "stock left: 0"]
    assert _run(script, tmp_path).splitlines() == expected
    assert _run(script, tmp_path).splitlines() == expected  # restocked, on the same item


def test_readme_quickstart_is_the_bank_account_example(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    quickstart = next(b for b in blocks if "async def main" in b)
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart)
    assert _run(script, tmp_path).splitlines() == ["1 Deposited(amount=100)", "105"]


def test_documented_testing_snippets_pass_under_pytest(tmp_path: Path) -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    text = "\n".join(page.read_text() for page in pages)
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    (tmp_path / "test_account.py").write_text(next(b for b in blocks if "import given" in b))
    (tmp_path / "conftest.py").write_text(next(b for b in blocks if "testing.runtime(" in b))
    (tmp_path / "test_fixture.py").write_text(
        "from actorsource import Runtime\n"
        "from bank_account import Account, Deposit\n\n\n"
        "async def test_deposit(runtime: Runtime) -> None:\n"
        '    await runtime.ref(Account, "acc-1").ask(Deposit(5))\n'
        '    assert (await runtime.ref(Account, "acc-1").state()).balance == 5\n'
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "examples")])}
    pytest_args = ["-q", "-p", "no:cacheprovider", "-W", "error", "-o", "anyio_mode=auto"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *pytest_args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:25]
    text = "\n".join(head)
    assert "actorsource bench" in text
    assert "pytest" in text


def test_read_side_example_builds_balances_and_activity_and_travels_in_time(
    tmp_path: Path,
) -> None:
    script = ROOT / "examples" / "read_side.py"
    expected = [
        "balance Account-alice: 75",
        "balance Account-bob: 30",
        "recent: Account-alice -30, Account-bob -20, Account-alice +5",
        "alice after version 2: 70",
        "alice at the time of the withdrawal: 70",
        "Balances: position 5, lag 0",
        "RecentActivity: position 5, lag 0",
    ]
    assert _run(script, tmp_path).splitlines() == expected
    # the same file again: the commands are answered from the log (they carry ids), the
    # table resumes from its checkpoint and the in-memory view is built again from the log
    assert _run(script, tmp_path).splitlines() == expected


def test_postgres_read_models_example_reads_its_writes_and_the_page_quotes_it(
    postgres_dsn: str, tmp_path: Path
) -> None:
    script = ROOT / "examples" / "postgres_read_models.py"
    schema = postgres_schema(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, str(script), postgres_dsn, schema],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        run_sync(drop_schema(postgres_dsn, schema))
    assert done.returncode == 0, done.stderr
    page = (ROOT / "docs" / "postgres-projections.md").read_text()
    printed = re.findall(r"It prints:\n\n```\n(.*?)```", page, flags=re.DOTALL)
    assert done.stdout == printed[0]
    # every Python block of the page is code of the example, as it is there
    example = script.read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    assert len(blocks) == 2
    assert all(block in example for block in blocks)
