"""The documentation and the repository around the package: true, wired, and free of artefacts.

`mkdocs build --strict` (run by CI with the docs extra) checks links and the API reference;
these tests check what it cannot, and run without the docs extra.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

import actorsource
import actorsource.testing

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_every_python_block_in_the_docs_and_readme_is_valid_python() -> None:
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    checked = 0
    for page in pages:
        for block in _python_blocks(page):
            if block.lstrip().startswith("--8<--"):
                continue  # an included file: the examples' tests run it
            # snippets may await at top level, as in an async function's body; a tutorial's
            # step may show part of a function's body (indented as there, or with a return)
            code = textwrap.dedent(block)
            try:
                compile(code, str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            except SyntaxError as exc:
                body = textwrap.indent(code, "    ")
                try:
                    compile(f"async def _step():\n{body}", str(page), "exec")
                except SyntaxError:
                    pytest.fail(f"{page.relative_to(ROOT)}: a python block does not parse: {exc}")
            checked += 1
    assert checked > 20


def test_files_the_docs_include_exist() -> None:
    for page in DOCS.rglob("*.md"):
        for included in re.findall(r'--8<-- "([^"]+)"', page.read_text()):
            assert (ROOT / included).is_file(), f"{page.relative_to(ROOT)} includes {included}"


def test_every_docs_page_is_in_the_site_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.rglob("*.md"):
        name = page.relative_to(DOCS).as_posix()
        assert f" {name}\n" in config, f"docs/{name} is not in mkdocs.yml's nav"


def test_the_api_reference_documents_every_public_name() -> None:
    reference = "\n".join(page.read_text() for page in (DOCS / "reference").glob("*.md"))
    documented = set(re.findall(r"^::: actorsource\.(\w+)$", reference, flags=re.MULTILINE))
    assert set(actorsource.__all__) - documented == set()


def test_every_public_error_has_its_section_on_the_errors_page() -> None:
    page = (DOCS / "errors.md").read_text()
    errors = [
        name
        for name in actorsource.__all__
        if isinstance(getattr(actorsource, name), type)
        and issubclass(getattr(actorsource, name), actorsource.ActorsourceError)
    ]
    assert len(errors) > 10
    for name in errors:
        if name != "ActorsourceError":
            assert f"### `{name}`" in page, f"docs/errors.md has no section for {name}"


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_the_version_is_written_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert importlib.metadata.version("actorsource") == actorsource.__version__


def test_the_license_file_is_the_one_pyproject_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "the actorsource authors" in text


def test_the_changelog_has_an_unreleased_section_and_the_current_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    assert f"## [{actorsource.__version__}]" in text


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"not a git checkout: {done.stderr.strip()}")
    return done.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_no_artefacts_are_tracked_and_gitignore_covers_them() -> None:
    tracked = _git("ls-files").splitlines()
    artefact = re.compile(
        r"(^|/)(\.coverage.*|\.venv|\.ci-venv|site|build|dist|__pycache__|\.\w+_cache)(/|$)"
        r"|\.egg-info(/|$)|\.(db|db-wal|db-shm|pyc)$"
    )
    assert [path for path in tracked if artefact.search(path)] == []
    ignored = [
        ".coverage",
        ".venv/x",
        ".ci-venv/x",
        "site/index.html",
        "x.egg-info/PKG-INFO",
        ".mypy_cache/x",
        ".pytest_cache/x",
        ".ruff_cache/x",
        "bench.db",
        "bench.db-wal",
    ]
    assert _git("check-ignore", "--no-index", *ignored).splitlines() == ignored


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy is not installed (the dev extra)"
)
def test_type_checkers_find_the_installed_package_from_another_directory(
    tmp_path: Path,
) -> None:
    # setuptools' default editable install is an import hook, which mypy and pyright cannot
    # follow: a user's project would see actorsource as missing
    (tmp_path / "app.py").write_text("import actorsource\n\nprint(actorsource.Runtime)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--follow-imports=skip",
            "--config-file=",
            "app.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _block_defining(page: str, marker: str) -> dict[str, object]:
    block = next(b for b in _python_blocks(DOCS / page) if marker in b)
    namespace: dict[str, object] = {"__name__": f"docs_{page.removesuffix('.md')}"}
    exec(compile(block, page, "exec"), namespace)
    return namespace


async def test_the_documented_account_keeps_its_rules() -> None:
    from actorsource import Rejected
    from actorsource.testing import given

    ns: Any = _block_defining("aggregates.md", "class Account(Aggregate)")
    account = ns["Account"]
    given(account, ns["Deposited"](10)).when(ns["Withdraw"](4)).then(ns["Withdrawn"](4))
    given(account, ns["Deposited"](10)).when(ns["Withdraw"](11)).raises(Rejected, match="funds")
    async with actorsource.testing.runtime() as runtime:
        ref = runtime.ref(account, "acc-1")
        await ref.ask(ns["Deposit"](5))
        await ref.ask(ns["Withdraw"](2))
        assert (await ref.state()).balance == 3


async def test_the_documented_decider_counts() -> None:
    ns: Any = _block_defining("aggregates.md", "counter = Decider(")
    async with actorsource.testing.runtime() as runtime:
        ref = runtime.ref(ns["counter"], "c-1")
        await ref.ask(ns["Increment"](2))
        await ref.ask(ns["Increment"]())
        assert await ref.state() == 3
        with pytest.raises(actorsource.Rejected, match="at least 1"):
            await ref.ask(ns["Increment"](0))
