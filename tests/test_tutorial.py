"""The tutorial's code is the example's and its tests' code: each Python block on the page is
copied, unchanged, from the files that the test suite runs."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [
    ROOT / "examples" / "fastapi_service.py",
    ROOT / "tests" / "test_fastapi_service.py",
    ROOT / "tests" / "web_clients.py",
]


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.DOTALL | re.M)


def test_every_python_block_of_the_tutorial_is_code_that_the_tests_run() -> None:
    sources = [path.read_text() for path in SOURCES]
    blocks = _python_blocks(ROOT / "docs" / "tutorial.md")
    assert len(blocks) >= 15
    strays = [
        block
        for block in blocks
        # a block from inside a function is shown at its own indentation
        if not any(block in text or textwrap.dedent(block) in text for text in sources)
    ]
    assert strays == []


def test_the_tutorial_shows_the_whole_example() -> None:
    tutorial = "\n".join(_python_blocks(ROOT / "docs" / "tutorial.md"))
    example = (ROOT / "examples" / "fastapi_service.py").read_text()
    code = example.split('"""\n', 2)[2]  # after the module docstring
    missing = [
        line
        for line in code.splitlines()
        if line.strip() and not line.startswith("#") and line not in tutorial
    ]
    assert missing == []
