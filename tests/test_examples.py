"""Examples and the README quickstart are real programs: run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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


def test_readme_quickstart_is_the_bank_account_example(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    quickstart = next(b for b in blocks if "async def main" in b)
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart)
    assert _run(script, tmp_path).splitlines() == ["1 Deposited(amount=100)", "105"]


def test_readme_starts_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:25]
    text = "\n".join(head)
    assert "actorsource bench" in text
    assert "pytest" in text
