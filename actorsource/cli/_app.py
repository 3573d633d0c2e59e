"""``--app``: finding the user's aggregates and projections by importing their modules."""

from __future__ import annotations

import importlib
import sys
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._aggregate import Aggregate, decider_of
from .._decider import Decider
from .._projection import Projection, compile_projection
from ._open import CommandError


def parse_time(text: str) -> datetime:
    """``--at``: an ISO 8601 time, UTC unless it has an offset."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"--at must be an ISO 8601 time (2026-03-01T12:00:00+00:00), got {text!r}"
        raise CommandError(msg) from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def find_aggregate(app: str, category: str) -> Any:
    """Return the aggregate class or Decider of ``category`` found at ``app``."""
    candidates = _aggregates_in(_load_app(app))
    by_category = {_category(c): c for c in candidates}
    if category not in by_category:
        known = ", ".join(sorted(by_category)) or "none"
        msg = f"no aggregate of category {category!r} at --app {app!r} (found: {known})"
        raise CommandError(msg)
    return by_category[category]


def find_projection(app: str, name: str) -> type[Projection]:
    """Return the projection class named ``name`` found at ``app``."""
    classes = [
        v
        for v in _members(_load_app(app))
        if isinstance(v, type) and issubclass(v, Projection) and v is not Projection
    ]
    by_name = {compile_projection(c).name: c for c in classes}
    if name not in by_name:
        known = ", ".join(sorted(by_name)) or "none"
        msg = f"no projection named {name!r} at --app {app!r} (found: {known})"
        raise CommandError(msg)
    return by_name[name]


def _load_app(app: str) -> Any:
    """Import ``module`` or ``module:attribute.path`` from the working directory."""
    module_name, _, attribute = app.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # as python -m would: the user's own modules
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"cannot import {module_name!r} (from --app {app!r}): {exc}"
        raise CommandError(msg) from exc
    for part in attribute.split(".") if attribute else []:
        try:
            found = getattr(found, part)
        except AttributeError as exc:
            msg = f"{module_name!r} has no {attribute!r} (from --app {app!r})"
            raise CommandError(msg) from exc
    return found


def _aggregates_in(found: Any) -> list[Any]:
    return [v for v in _members(found) if _is_aggregate(v)]


def _members(found: Any) -> list[Any]:
    """What ``--app`` names: a module's or a collection's values, or the one object itself."""
    if isinstance(found, types.ModuleType):
        return list(vars(found).values())
    if isinstance(found, dict):
        return list(found.values())
    if isinstance(found, list | tuple | set | frozenset):
        return list(found)
    return [found]


def _is_aggregate(value: object) -> bool:
    if isinstance(value, Decider):
        return True
    return isinstance(value, type) and issubclass(value, Aggregate) and value is not Aggregate


def _category(aggregate: Any) -> str:
    decider = aggregate if isinstance(aggregate, Decider) else decider_of(aggregate)
    return decider.name
