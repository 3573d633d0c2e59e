"""Which event classes read back from JSON exactly as they were written, and whether a value
fits a plain field's type (the codec's checks before anything is stored)."""

from __future__ import annotations

import enum
import types
import typing
from datetime import date, datetime
from typing import Any, Final

from ._models import is_pydantic_model, pydantic_hooks, record_fields

#: types whose values read back from JSON through the converter as they were
_EXACT: Final = frozenset({int, str, bool, float, bytes, type(None), datetime, date})
#: the types the converter passes through in a union (see ``configure_union_passthrough``)
_PASSED_THROUGH: Final = frozenset({int, str, bool, float, type(None)})


#: plain field types, and the value types that read back into each as they were
_PLAIN: Final[dict[Any, tuple[type, ...]]] = {
    int: (int,),
    float: (float, int),
    str: (str,),
    bool: (bool,),
    bytes: (bytes,),
    datetime: (datetime,),
    date: (date,),
}


def _plain_fields(cls: type) -> tuple[tuple[str, tuple[type, ...]], ...]:
    """Return the fields of an event class whose annotation is a plain type (or an optional
    one), with the value types each accepts; others are not checked here."""
    if is_pydantic_model(cls):
        return ()  # Pydantic checks the values as it builds the model
    fields = record_fields(cls)
    if fields is None:
        return ()
    found = []
    for name, kind, init in fields:
        if not init:
            continue
        allowed = _plain_values(kind)
        if allowed is not None:
            found.append((name, allowed))
    return tuple(found)


def _plain_values(kind: Any) -> tuple[type, ...] | None:
    try:
        if kind in _PLAIN:
            return _PLAIN[kind]
    except TypeError:  # an unhashable annotation
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Annotated:
        return _plain_values(args[0])
    if isinstance(kind, typing.NewType):
        return _plain_values(kind.__supertype__)
    if origin is typing.Union or origin is types.UnionType:
        members = [member for member in args if member is not type(None)]
        if len(members) == 1 and len(args) == 2:
            inner = _plain_values(members[0])
            return None if inner is None else (*inner, type(None))
    return None


def _fits(value: object, allowed: tuple[type, ...]) -> bool:
    """Whether a value of a subclass of an allowed type reads back equal to itself (an
    ``IntEnum`` in an int field does; a bool in an int field, or a datetime in a date field,
    does not)."""
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, datetime):
        return datetime in allowed
    return isinstance(value, allowed)


def _type_names(allowed: tuple[type, ...]) -> str:
    names = [t.__name__ for t in allowed if t is not type(None)]
    if len(allowed) == 2 and allowed[0] is float:
        names = ["float"]
    text = " | ".join(names)
    return f"{text} | None" if type(None) in allowed else text


def _round_trips(kind: Any, seen: set[type]) -> bool:
    """Whether every value of the annotated type ``kind`` reads back from a store the same,
    of the same type, through the converter and JSON (decided per class, once).

    Conservative: what is not known to round-trip is not (``Any``, ``object``, a missing
    annotation, an unresolvable one, an abstract collection, a union the converter would have
    to guess in, a field with a converter or not in ``__init__``, ...).

    :param seen: the classes being checked (a class that holds itself round-trips if the rest
        of it does)
    """
    if kind in _EXACT:
        return True
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Annotated:
        return _round_trips(args[0], seen)
    if origin is typing.Literal:
        return all(type(value) in _PASSED_THROUGH for value in args)
    if origin is typing.Union or origin is types.UnionType:
        members = [member for member in args if member is not type(None)]
        if len(members) == 1:
            return _round_trips(members[0], seen)
        return all(member in _PASSED_THROUGH for member in members)
    if origin in (list, set, frozenset):
        return len(args) == 1 and _round_trips(args[0], seen)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _round_trips(args[0], seen)
        return bool(args) and all(_round_trips(arg, seen) for arg in args)
    if origin is dict:
        # keys are written as str: an int key would come back as a str
        return len(args) == 2 and args[0] is str and _round_trips(args[1], seen)
    if isinstance(kind, typing.NewType):
        return _round_trips(kind.__supertype__, seen)
    if not isinstance(kind, type) or origin is not None:
        return False
    if issubclass(kind, enum.Enum):
        return all(type(member.value) in (str, int) for member in kind)
    if kind in seen:
        return True
    seen.add(kind)
    if is_pydantic_model(kind) and pydantic_hooks(kind):
        return False  # its own validators or serializers may change values on the way
    fields = record_fields(kind)
    if fields is None:
        return False
    return all(plain and _round_trips(field_type, seen) for _, field_type, plain in fields)
