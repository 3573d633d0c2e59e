"""The package's shape: one front door, layers that point down, no unsafe decoding."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import actorsource

PACKAGE = Path(actorsource.__file__).parent

# lower layers never import higher ones (STYLE.md section 1)
LAYERS = {
    "_errors": 0,
    "_tuning": 0,
    "_records": 1,
    "_ids": 1,
    "_tracing": 1,
    "_decider": 1,
    "_aggregate": 1,
    "_metrics": 1,
    "_policies": 1,
    "_context": 1,
    "_models": 1,
    "_timers": 1,
    "_codec": 2,
    "_exactness": 2,
    "_storable": 2,
    "_jsonable": 2,
    "_personal": 2,
    "stores": 3,
    "_messages": 4,
    "_rehydration": 4,
    "_supervision": 4,
    "_snapshots": 4,
    "_batch": 4,
    "_idempotency": 4,
    "_activation": 4,
    "_routes": 4,
    "_actor": 4,
    "_timer_effects": 4,
    "_process_manager": 4,
    "_shredding": 4,
    # the runtime's parts, and projections (which see the runtime through a protocol)
    "_dispatcher": 5,
    "_refs": 5,
    "_reading": 5,
    "_health": 5,
    "_projection_context": 5,
    "_archiving": 5,
    "_projection": 5,
    "_slices": 5,
    "_hosting": 5,
    "_hosted": 5,
    "_hosting_rebuilds": 5,
    # a cluster's members: placement, leases, routing (the runtime composes them)
    "cluster": 5,
    "_rebuilds": 5,
    "_scheduler": 5,
    # the runtime composes them
    "_runtime": 6,
    "_runtime_reading": 6,
    "_runtime_projections": 6,
    "_runtime_observing": 6,
    "cli": 7,
    "_process_router": 7,
    "_timer_command": 7,
    "bench": 7,
    "testing": 7,
    "_projection_kit": 7,
    "pytest_plugin": 7,
    "otel": 7,
    "web": 7,
}


def test_all_is_sorted_and_names_every_public_export() -> None:
    assert actorsource.__all__ == sorted(actorsource.__all__)
    # pytest rewrites the asserts of a package that ships a pytest plugin (its "@py_" names)
    public = {name for name in vars(actorsource) if not name.startswith(("_", "@"))}
    submodules = {"stores", "cli", "bench", "testing", "otel", "pytest_plugin", "web", "cluster"}
    assert public - submodules == set(actorsource.__all__)


def test_public_names_report_the_front_door_as_their_module() -> None:
    assert actorsource.Runtime.__module__ == "actorsource"
    assert repr(actorsource.Runtime) == "<class 'actorsource.Runtime'>"


def _layer(module: str) -> int | None:
    first = module.split(".", maxsplit=1)[0]
    return LAYERS.get(first)


def test_no_module_imports_a_higher_layer() -> None:
    violations = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        parts = list(relative.parts)
        if parts == ["__init__"]:
            continue
        own = _layer(parts[0])
        if own is None:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = parts[: len(parts) - node.level]
                target = ".".join([*base, node.module or ""]).strip(".")
                layer = _layer(target)
                if layer is not None and layer > own:
                    violations.append(f"{'/'.join(parts)} imports {target}")
    assert violations == []


def test_only_the_stores_import_their_drivers_and_nothing_uses_pickle_or_eval() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                root = name.split(".")[0]
                # the bench measures raw aiosqlite as its baselines, by design (the SQLite store
                # owns its threads)
                in_bench = PACKAGE / "bench" in path.parents
                if root == "aiosqlite" and not in_bench:
                    offenders.append(f"{path.name} imports aiosqlite")
                if root == "asyncpg" and path.relative_to(PACKAGE).as_posix() != (
                    "stores/postgres/connection.py"
                ):
                    offenders.append(f"{path.name} imports asyncpg")
                if root in {"pickle", "marshal", "shelve"}:
                    offenders.append(f"{path.name} imports {root}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"eval", "exec"}
            ):
                offenders.append(f"{path.name} calls {node.func.id}")
    assert offenders == []


def test_package_ships_py_typed() -> None:
    assert (PACKAGE / "py.typed").is_file()


def test_every_public_name_and_its_public_methods_have_docstrings() -> None:
    import inspect

    import actorsource.testing

    missing = []
    for module in (actorsource, actorsource.testing):
        for name in module.__all__:
            obj = getattr(module, name)
            if not (getattr(obj, "__doc__", None) or "").strip():
                missing.append(name)
            if not inspect.isclass(obj):
                continue
            for attribute, member in vars(obj).items():
                function = member.fget if isinstance(member, property) else member
                if attribute.startswith("_") or not callable(function):
                    continue
                if not (getattr(function, "__doc__", None) or "").strip():
                    missing.append(f"{name}.{attribute}")
    assert missing == []


def test_importing_actorsource_does_not_need_asyncpg() -> None:
    # a Python where asyncpg cannot be imported: actorsource still imports, and only making a
    # PostgresEventStore says what to install
    code = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "import actorsource\n"
        "try:\n"
        "    actorsource.PostgresEventStore('postgresql:///x')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, check=True
    ).stdout
    assert "pip install 'actorsource[postgres]'" in out
