"""Whether the codec can store a class and read it back: checked once, when the class is
registered, so that a field of a type it cannot hold is a definition error, not a failure of
the first command (or, worse, a stored event that never loads again).

attrs classes and dataclasses are walked field by field, as the codec's cattrs converter
handles them; a Pydantic model is stored by Pydantic itself (``model_dump(mode="json")``,
``model_validate``), which holds every type it knows, so only the fields it takes as
arbitrary types (``arbitrary_types_allowed``) are refused.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Mapping, MutableMapping
from datetime import date, datetime
from typing import Any, Final

from ._models import is_pydantic_model, record_fields

#: the scalar types the codec stores as they are (or as base85 text: bytes)
_SCALARS: Final = frozenset({int, float, str, bool, bytes, type(None), datetime, date})
_MAPPINGS: Final = frozenset({dict, Mapping, MutableMapping})

#: what the codec holds, for messages
SUPPORTED: Final = (
    "int, float, str, bool, bytes, date, datetime, an enum, an attrs class, a dataclass or "
    "a Pydantic model, and lists, tuples, sets and str-keyed dicts of them"
)


def unstorable(kind: type, can_structure: Callable[[Any], bool]) -> str | None:
    """Say which field of the record class ``kind`` the codec cannot store and read back, or
    return None if it can (or cannot tell yet: annotations that do not resolve).

    :param can_structure: whether the codec's converter has a way to read a type back
    """
    if is_pydantic_model(kind) or record_fields(kind) is not None:
        return _check_class(kind, can_structure, set())
    if kind in _SCALARS or not isinstance(kind, type) or issubclass(kind, enum.Enum):
        return None
    if issubclass(kind, (list, tuple, set, frozenset, dict)) or _structurable(kind, can_structure):
        return None
    return f"{_name(kind)} is not a class the codec can read back"


def _check_class(kind: type, can_structure: Callable[[Any], bool], seen: set[type]) -> str | None:
    if kind in seen:
        return None
    seen.add(kind)
    if is_pydantic_model(kind):
        return _check_pydantic(kind)
    fields = record_fields(kind)
    if fields is None:
        return None
    for name, annotation, _ in fields:
        problem = _check_type(annotation, can_structure, seen)
        if problem is not None:
            if problem.startswith("holds ") and not isinstance(annotation, type):
                problem = f"(typed {_name(annotation)}) {problem}"  # a container of it
            return f"field {name!r} of {kind.__qualname__} {problem}"
    return None


def _check_type(kind: Any, can_structure: Callable[[Any], bool], seen: set[type]) -> str | None:
    """Return why values annotated ``kind`` cannot be stored and read back, or None."""
    if kind is None or kind is Any or isinstance(kind, typing.TypeVar) or kind in _SCALARS:
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Annotated:
        return _check_type(args[0], can_structure, seen)
    if isinstance(kind, typing.NewType):
        return _check_type(kind.__supertype__, can_structure, seen)
    if origin is typing.Literal or origin is typing.ClassVar:
        return None
    if origin is typing.Union or origin is types.UnionType:
        return _first(args, can_structure, seen)
    if origin in _MAPPINGS:
        if args and not _text_key(args[0]):
            return (
                f"is typed {_name(kind)}: JSON holds the keys of an object as text, so a "
                f"key of type {_name(args[0])} would not read back; key it by str (or a str enum)"
            )
        return _first(args[1:], can_structure, seen)
    if origin is not None:
        if isinstance(origin, type) and issubclass(origin, (list, tuple, set, frozenset)):
            return _first([a for a in args if a is not Ellipsis], can_structure, seen)
        if (
            getattr(origin, "__module__", None) == "collections.abc"
            and getattr(origin, "__name__", None) in _COLLECTIONS
        ):
            return _first(args, can_structure, seen)
    elif isinstance(kind, type):
        if issubclass(kind, enum.Enum):
            return None
        if is_pydantic_model(kind) or record_fields(kind) is not None:
            inner = _check_class(kind, can_structure, seen)
            return None if inner is None else f"holds {kind.__qualname__}, whose {inner}"
    if _structurable(kind, can_structure):
        return None
    hint = " (use Any for a value of any JSON type)" if kind is object else ""
    return f"is typed {_name(kind)}, which the codec cannot read back{hint}"


_COLLECTIONS: Final = frozenset({"Sequence", "MutableSequence", "Set", "MutableSet", "Collection"})


def _first(
    kinds: typing.Iterable[Any], can_structure: Callable[[Any], bool], seen: set[type]
) -> str | None:
    """The first problem of the types a container (or union) holds, said as held."""
    for kind in kinds:
        problem = _check_type(kind, can_structure, seen)
        if problem is not None:
            return (
                "holds " + problem.removeprefix("is typed ")
                if problem.startswith("is typed ")
                else problem
            )
    return None


def _text_key(kind: Any) -> bool:
    if kind is str or kind is Any:
        return True
    if isinstance(kind, typing.NewType):
        return _text_key(kind.__supertype__)
    if typing.get_origin(kind) is typing.Literal:
        return all(type(value) is str for value in typing.get_args(kind))
    return (
        isinstance(kind, type)
        and issubclass(kind, enum.Enum)
        and all(type(member.value) is str for member in kind)
    )


def _structurable(kind: Any, can_structure: Callable[[Any], bool]) -> bool:
    return kind is not object and can_structure(kind)


def _check_pydantic(kind: type) -> str | None:
    """Find a field Pydantic takes as an arbitrary type (it cannot write those as JSON)."""
    schema = getattr(kind, "__pydantic_core_schema__", None)
    found = _arbitrary(schema, kind.__qualname__, None)
    if found is None:
        return None
    owner, field, cls = found
    where = f"field {field!r} of {owner}" if field else owner
    return (
        f"{where} is typed {_name(cls)}, which Pydantic takes as an arbitrary type "
        "(arbitrary_types_allowed) and cannot write as JSON; give it a serializer and a "
        "validator (Annotated with PlainSerializer and BeforeValidator), or use a type "
        "Pydantic knows"
    )


def _arbitrary(node: Any, owner: str, field: str | None) -> tuple[str, str | None, Any] | None:
    """Walk a Pydantic core schema for an ``is-instance`` schema (an arbitrary type) that no
    serializer of its own covers; return the model and field holding it."""
    if isinstance(node, list):
        for item in node:
            found = _arbitrary(item, owner, field)
            if found is not None:
                return found
        return None
    if not isinstance(node, dict):
        return None
    if "serialization" in node:
        return None  # a serializer of its own writes this part (and its validator reads it)
    if node.get("type") == "is-instance":
        return owner, field, node.get("cls")
    if node.get("type") == "model" and isinstance(node.get("cls"), type):
        owner, field = node["cls"].__qualname__, None
    fields = node.get("fields") if node.get("type") in ("model-fields", "dataclass-args") else None
    for key, value in node.items():
        if key == "fields" and isinstance(fields, dict):
            for name, item in fields.items():
                found = _arbitrary(item, owner, name)
                if found is not None:
                    return found
        elif key == "fields" and isinstance(fields, list):
            for item in fields:
                name = item.get("name") if isinstance(item, dict) else None
                found = _arbitrary(item, owner, name)
                if found is not None:
                    return found
        elif key not in ("cls", "ref", "metadata"):
            found = _arbitrary(value, owner, field)
            if found is not None:
                return found
    return None


def _name(kind: Any) -> str:
    """A type as written in an annotation, by short names (``list[Line]``, ``int | None``)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_name(arg) for arg in args)
    if origin is not None and args and origin is not typing.Literal:
        return f"{_name(origin)}[{', '.join(_name(arg) for arg in args)}]"
    if kind is type(None):
        return "None"
    if kind is Ellipsis:
        return "..."
    if isinstance(kind, type):
        return kind.__qualname__
    return repr(kind).replace("typing.", "")
