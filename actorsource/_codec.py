"""The codec: domain events and states to JSON-ready dicts and back.

A private cattrs converter (the orjson preset, so that the dicts it makes are what orjson writes
fastest) plus a registry of stable type names. Stores only ever see the dicts and names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn
from cattrs.preconf.orjson import make_converter

from ._errors import CodecError, DefinitionError
from ._records import JSONDict

#: attribute an event class may carry to store it under a name other than its class name
EVENT_TYPE_ATTRIBUTE = "__actorsource_event_type__"


def event_type_name(cls: type) -> str:
    """Return the stored type name of an event class (its class name unless overridden)."""
    name = cls.__dict__.get(EVENT_TYPE_ATTRIBUTE)
    return name if isinstance(name, str) else cls.__name__


class Codec:
    """Turns events and states into JSON-ready dicts and back, by stable type names."""

    def __init__(self) -> None:
        self._converter = make_converter()
        _make_strict(self._converter)
        self._by_name: dict[str, type] = {}
        self._names: dict[type, str] = {}
        self._unstructure: dict[type, Callable[[Any], Any]] = {}
        self._structure: dict[str, Callable[[Any, type], Any]] = {}

    def register_events(self, event_types: Iterable[type]) -> None:
        """Register event classes under their stored type names.

        :raises DefinitionError: if two different classes claim one name
        """
        for cls in event_types:
            if cls in self._names:
                continue
            name = event_type_name(cls)
            other = self._by_name.get(name)
            if other is not None and other is not cls:
                msg = (
                    f"event type name {name!r} is claimed by both {other.__module__}."
                    f"{other.__qualname__} and {cls.__module__}.{cls.__qualname__}; "
                    "give one of them another stored name"
                )
                raise DefinitionError(msg)
            self._by_name[name] = cls
            self._names[cls] = name

    def encode_event(self, event: object) -> tuple[str, JSONDict]:
        """Return the stored type name and the JSON-ready data of ``event``.

        :raises CodecError: if the event's class is not registered or cannot be unstructured
        """
        cls = type(event)
        name = self._names.get(cls)
        if name is None:
            msg = f"event type {cls.__qualname__} is not registered with this runtime"
            raise CodecError(msg, type_name=cls.__name__)
        hook = self._unstructure.get(cls)
        if hook is None:
            hook = self._converter.get_unstructure_hook(cls)
            self._unstructure[cls] = hook
        try:
            data = hook(event)
        except Exception as exc:
            msg = f"cannot encode event {name}: {type(exc).__name__}: {exc}"
            raise CodecError(msg, type_name=name) from exc
        if not isinstance(data, dict):
            msg = f"event {name} must encode to a JSON object, got {type(data).__name__}"
            raise CodecError(msg, type_name=name)
        return name, data

    def decode_event(self, type_name: str, data: JSONDict, *, where: str = "") -> object:
        """Return the event object stored as ``type_name`` with ``data``.

        :param where: context for the error message (the stream and version)
        :raises CodecError: if the type name is unknown or the data does not fit the class
        """
        cls = self._by_name.get(type_name)
        if cls is None:
            known = ", ".join(sorted(self._by_name)) or "none"
            msg = f"unknown event type {type_name!r}{where} (registered: {known})"
            raise CodecError(msg, type_name=type_name)
        if type(data) is not dict:
            msg = (
                f"cannot decode event {type_name!r}{where}: its data must be a JSON object, "
                f"got {type(data).__name__}"
            )
            raise CodecError(msg, type_name=type_name)
        hook = self._structure.get(type_name)
        if hook is None:
            hook = self._converter.get_structure_hook(cls)
            self._structure[type_name] = hook
        try:
            return hook(data, cls)
        except Exception as exc:
            detail = _describe(exc)
            msg = f"cannot decode event {type_name!r}{where} into {cls.__qualname__}: {detail}"
            raise CodecError(msg, type_name=type_name) from exc

    def encode_state(self, state: object) -> JSONDict:
        """Return the JSON-ready form of an aggregate state (wrapped if it is not a dict)."""
        try:
            return {"state": self._converter.unstructure(state)}
        except Exception as exc:
            msg = f"cannot encode state {type(state).__qualname__}: {exc}"
            raise CodecError(msg, type_name=type(state).__name__) from exc

    def decode_state(self, data: JSONDict, state_type: type) -> Any:
        """Return the state that :meth:`encode_state` encoded.

        :raises CodecError: if the data does not fit ``state_type``
        """
        try:
            return self._converter.structure(data["state"], state_type)
        except Exception as exc:
            msg = f"cannot decode a {state_type.__qualname__} snapshot: {_describe(exc)}"
            raise CodecError(msg, type_name=state_type.__name__) from exc


def _make_strict(converter: cattrs.Converter) -> None:
    """Refuse stored values of the wrong type instead of coercing them.

    cattrs structures ``int`` fields with ``int(value)``: a stored 1.5 would silently become 1,
    and a stored 5 would become "5" in a ``str`` field. Stored events are facts: a value that
    does not fit its field is an error to report, never to round. (An int in a ``float`` field
    is fine: JSON writes 5.0 as 5 in some encoders.)
    """

    def attrs_from_objects_only(cls: type) -> Callable[[object, type], Any]:
        # cattrs would read a list (or any container) as "no fields given" and return the
        # defaults: an attrs class, at any depth, is read from a JSON object only
        fields: Callable[[Any, type], Any] = make_dict_structure_fn(cls, converter)

        def hook(value: object, kind: type) -> Any:
            if type(value) is not dict:
                msg = f"expected a JSON object for {cls.__name__}, got {type(value).__name__}"
                raise TypeError(msg)
            return fields(value, kind)

        return hook

    converter.register_structure_hook_factory(attrs.has, attrs_from_objects_only)
    converter.register_structure_hook(int, _exactly("an int", (int,), int))
    converter.register_structure_hook(float, _exactly("a number", (float, int), float))
    converter.register_structure_hook(str, _exactly("a str", (str,), str))
    converter.register_structure_hook(bool, _exactly("a bool", (bool,), bool))


def _exactly(
    what: str, accepted: tuple[type, ...], convert: Callable[[Any], Any]
) -> Callable[[object, type], Any]:
    """A structure hook taking only values whose type is exactly one of ``accepted``."""

    def hook(value: object, _: type) -> Any:
        if type(value) in accepted:  # exact: bool is an int subclass, and is refused
            return convert(value)
        msg = f"expected {what}, got {type(value).__name__} {value!r}"
        raise TypeError(msg)

    return hook


def _describe(exc: BaseException) -> str:
    if isinstance(exc, cattrs.ClassValidationError):
        return "; ".join(cattrs.transform_error(exc))
    return f"{type(exc).__name__}: {exc}"
