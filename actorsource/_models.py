"""The record classes events, commands and states may be: attrs classes, dataclasses and
Pydantic v2 models, and their fields.

Pydantic stays optional: a model is told by the attributes every Pydantic v2 model class has,
without importing Pydantic.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

import attrs


def is_pydantic_model(kind: object) -> bool:
    """Whether ``kind`` is a Pydantic v2 model class (a ``BaseModel`` subclass).

    Pydantic dataclasses are dataclasses, and a Pydantic v1 model (no ``model_dump``) is
    neither: neither counts.
    """
    return (
        isinstance(kind, type)
        and hasattr(kind, "__pydantic_fields__")
        and hasattr(kind, "model_dump")
        and hasattr(kind, "model_validate")
        and not dataclasses.is_dataclass(kind)
    )


def is_record_class(kind: object) -> bool:
    """Whether ``kind`` is an attrs class, a dataclass or a Pydantic v2 model class."""
    return isinstance(kind, type) and (
        attrs.has(kind) or dataclasses.is_dataclass(kind) or is_pydantic_model(kind)
    )


def record_fields(kind: type) -> list[tuple[str, Any, bool]] | None:
    """Return ``(name, annotation, plain)`` for each field of a record class, or None if it is
    not one (or its annotations do not resolve yet).

    ``plain`` is false for a field the class changes on the way in (an attrs converter) or
    does not take in ``__init__``. A missing annotation is ``None``.
    """
    try:
        if attrs.has(kind):
            attrs.resolve_types(kind)
            return [(f.name, f.type, f.init and f.converter is None) for f in attrs.fields(kind)]
        if dataclasses.is_dataclass(kind):
            hints = typing.get_type_hints(kind, include_extras=True)
            return [(f.name, hints.get(f.name), f.init) for f in dataclasses.fields(kind)]
    except Exception:  # an annotation that does not resolve (yet): the codec says so on use
        return None
    if is_pydantic_model(kind):
        fields: dict[str, Any] = getattr(kind, "__pydantic_fields__", {})
        return [(name, info.annotation, True) for name, info in fields.items()]
    return None


def field_values(value: object) -> dict[str, object] | None:
    """Return the fields of a record instance by name (None if it is not a record)."""
    found = record_fields(type(value))
    if found is None:
        return None
    return {name: getattr(value, name, None) for name, _, _ in found}


def pydantic_hooks(kind: type) -> bool:
    """Whether a Pydantic model has validators, serializers or computed fields."""
    decorators = getattr(kind, "__pydantic_decorators__", None)
    return decorators is None or any(
        getattr(decorators, name, None)
        for name in (
            "validators",
            "field_validators",
            "root_validators",
            "field_serializers",
            "model_serializers",
            "model_validators",
            "computed_fields",
        )
    )


def pydantic_dump(cls: type) -> Callable[[Any], Any]:
    """The codec's hook writing a model of ``cls`` as Pydantic does in its JSON mode."""

    def dump(model: Any) -> Any:
        return model.model_dump(mode="json", by_alias=True)

    return dump


def pydantic_load(cls: type) -> Callable[[object, type], Any]:
    """The codec's hook reading a model of ``cls`` from a JSON object through Pydantic's
    validation (which reads what its JSON mode wrote: an ISO string into a datetime, a list
    into a tuple)."""
    validate = cls.model_validate  # type: ignore[attr-defined]  # a Pydantic model class

    def load(value: object, _: type) -> Any:
        if type(value) is not dict:
            msg = f"expected a JSON object for {cls.__name__}, got {type(value).__name__}"
            raise TypeError(msg)
        return validate(value)

    return load
