"""The codec: domain events and states to JSON-ready dicts and back.

A private cattrs converter (the orjson preset, so that the dicts it makes are what orjson writes
fastest) plus a registry of stable type names. Stores only ever see the dicts and names.

Schema evolution lives here too. An event class declares (with :func:`event_type`) its stored
name, its schema version, the upcasters that turn data of each older version into the next, and
the older names it was stored under. Data of a version above 1 carries it under
:data:`VERSION_KEY`; decoding upcasts old data step by step, so that appliers only ever see the
current class. Stored data is never rewritten.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.errors import StructureHandlerNotFoundError
from cattrs.gen import make_dict_structure_fn
from cattrs.preconf.orjson import make_converter

from ._decider import Upcaster, checked_upcasters, checked_version
from ._errors import CodecError, DefinitionError
from ._exactness import _fits, _plain_fields, _round_trips, _type_names
from ._models import (
    is_pydantic_model,
    is_record_class,
    pydantic_dump,
    pydantic_load,
)
from ._personal import KeyRing, PersonalSpec, personal_spec, require_crypto
from ._records import JSONDict, StreamDeleted, SubjectForgotten
from ._storable import SUPPORTED, unstorable

T = TypeVar("T")

#: attribute an event class may carry to store it under a name other than its class name: an
#: :class:`EventTypeSpec` (what :func:`event_type` sets) or, for the name alone, a str
EVENT_TYPE_ATTRIBUTE = "__actorsource_event_type__"

#: key of an event's schema version in its stored data (written only above version 1, so data
#: without it is version 1); not a Python identifier, so it never clashes with a field
VERSION_KEY: Final = "$version"

_NO_UPCASTERS: Mapping[int, Callable[[Any], Any]] = types.MappingProxyType({})


@attrs.frozen
class EventTypeSpec:
    """How an event class is stored: its name, schema version, upcasters and older names."""

    #: the name its events are written under
    name: str
    #: its current schema version (>= 1)
    version: int = 1
    #: ``{v: f}``: ``f`` turns version-``v`` data into version ``v + 1``, for v in 1..version-1
    upcasters: Mapping[int, Upcaster] = _NO_UPCASTERS
    #: older stored names that decode into the class too
    aliases: tuple[str, ...] = ()


def event_type(
    name: str | None = None,
    *,
    version: int = 1,
    upcasters: Mapping[int, Upcaster] | None = None,
    aliases: Iterable[str] = (),
) -> Callable[[type[T]], type[T]]:
    """Declare how an event class is stored: its stable name, schema version and older names.

    Event classes are storage formats: their names and fields are a contract with every database
    that holds them. Decorate one to keep that contract while the code changes::

        @event_type("Deposited", version=2, upcasters={1: lambda d: {**d, "currency": "EUR"}})
        @attrs.frozen
        class Deposited:
            amount: int
            currency: str

    Events of a version above 1 store it under the key ``"$version"`` of their data (data
    without it is version 1). Decoding data of an older version runs ``upcasters[v]`` for each
    ``v`` from the stored version to ``version - 1``, then builds the class; data of a newer
    version is refused with a :class:`CodecError`.

    :param name: the stored type name (default: the class name); give one to keep stored
        events readable when the class is renamed or moved
    :param version: the current schema version, an int >= 1; raise it when the fields change
        in a way that old data no longer fits, and add an upcaster for the version before
    :param upcasters: ``{v: f}``: ``f`` takes the data of version ``v`` (a dict of the event's
        fields, which it may change) and returns the data of version ``v + 1``; one for every
        ``v`` from 1 to ``version - 1``
    :param aliases: older stored names of this class (after a rename); their data is decoded
        into this class, through the same upcasters
    :return: a class decorator that returns the class itself, marked
    :raises DefinitionError: if an argument is malformed, or a field is of a type the codec
        cannot store and read back (when the class is decorated)
    """
    if isinstance(name, type):
        msg = (
            f"write @event_type() with parentheses above class {name.__qualname__} "
            "(its arguments are all optional)"
        )
        raise DefinitionError(msg)

    def decorate(cls: type[T]) -> type[T]:
        if not isinstance(cls, type):
            msg = f"@event_type decorates an event class, got {cls!r}"
            raise DefinitionError(msg)
        owner = f"event type {cls.__qualname__}"
        if EVENT_TYPE_ATTRIBUTE in cls.__dict__:
            msg = f"{owner} is decorated with @event_type twice; keep one"
            raise DefinitionError(msg)
        stored = cls.__name__ if name is None else name
        if not isinstance(stored, str) or not stored:
            msg = f"{owner}: the stored name must be a non-empty str, got {stored!r}"
            raise DefinitionError(msg)
        _check_storable(owner, "the stored name", stored)
        checked_version(owner, "version", version)
        steps = checked_upcasters(owner, "upcasters", upcasters, version, complete=True)
        spec = EventTypeSpec(stored, version, steps, _checked_aliases(owner, stored, aliases))
        if is_record_class(cls):  # else decorated below @attrs.frozen: checked when registered
            # at once where the annotations resolve already (else when registered)
            _checking_codec()._check_storable(owner, cls)
        setattr(cls, EVENT_TYPE_ATTRIBUTE, spec)
        return cls

    return decorate


_checker: list[Codec] = []


def _checking_codec() -> Codec:
    """One codec for the checks made as event classes are decorated (a converter costs ~1 ms
    to make)."""
    if not _checker:
        _checker.append(Codec())
    return _checker[0]


def _checked_aliases(owner: str, name: str, aliases: Iterable[str]) -> tuple[str, ...]:
    if isinstance(aliases, str):
        msg = (
            f"{owner}: aliases must be a collection of names, not the str {aliases!r}; "
            f"write aliases=({aliases!r},)"
        )
        raise DefinitionError(msg)
    try:
        found = tuple(aliases)
    except TypeError as exc:
        msg = f"{owner}: aliases must be a collection of names, got {aliases!r}"
        raise DefinitionError(msg) from exc
    for index, alias in enumerate(found):
        if not isinstance(alias, str) or not alias:
            msg = f"{owner}: every alias must be a non-empty str, got {alias!r}"
            raise DefinitionError(msg)
        _check_storable(owner, "an alias", alias)
        if alias == name:
            msg = f"{owner}: the alias {alias!r} is its own stored name; list only older names"
            raise DefinitionError(msg)
        if alias in found[:index]:
            msg = f"{owner}: the alias {alias!r} is given twice"
            raise DefinitionError(msg)
    return found


def _check_storable(owner: str, what: str, name: str) -> None:
    """Refuse a type name no store can hold: every append of it would fail in the store, and a
    store failure makes the aggregate back off (SQLite and PostgreSQL hold valid Unicode only,
    PostgreSQL's text no NUL)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        pass
    else:
        if "\x00" not in name:
            return
    msg = (
        f"{owner}: {what} {name!r} cannot be stored: a type name must be valid Unicode (no lone "
        "surrogates) without NUL characters"
    )
    raise DefinitionError(msg)


def event_type_spec(cls: type) -> EventTypeSpec:
    """Return how an event class is stored (by its class name, at version 1, unless declared)."""
    declared = cls.__dict__.get(EVENT_TYPE_ATTRIBUTE)
    if isinstance(declared, EventTypeSpec):
        return declared
    return EventTypeSpec(declared if isinstance(declared, str) and declared else cls.__name__)


def with_subclasses(classes: Iterable[type]) -> list[type]:
    """``classes`` and every subclass of them, each once, in a stable order.

    A class made again under the same module and name replaces the earlier one (attrs makes
    a slotted class anew; the first stays among the subclasses until it is collected).
    """
    found: dict[tuple[str, str], type] = {}
    seen: set[type] = set()
    pending = list(classes)
    while pending:
        cls = pending.pop(0)
        if cls not in seen:
            seen.add(cls)
            found[(cls.__module__, cls.__qualname__)] = cls  # the later one wins
            pending.extend(cls.__subclasses__())
    return list(found.values())


def event_type_name(cls: type) -> str:
    """Return the stored type name of an event class (its class name unless overridden)."""
    return event_type_spec(cls).name


class Codec:
    """Turns events and states into JSON-ready dicts and back, by stable type names."""

    def __init__(self) -> None:
        self._converter = _shared_converter()
        #: every stored name (current names and aliases) -> its class
        self._by_name: dict[str, type] = {}
        self._specs: dict[type, EventTypeSpec] = {}
        self._unstructure: dict[type, Callable[[Any], Any]] = {}
        self._structure: dict[type, Callable[[Any, type], Any]] = {}
        #: registered event classes whose events may not read back from a store as they were
        #: (a field typed ``Any``, ``object``, a dict with non-str keys, ...): the actor applies
        #: such an event as a load will read it back, so that the live state is the stored one
        self.inexact: set[type] = set()
        #: per registered event class: its fields of a plain type (int, str, date, ...) and the
        #: value types that read back into them, checked before an event is stored
        self._plain_fields: dict[type, tuple[tuple[str, tuple[type, ...]], ...]] = {}
        #: registered event classes with personal fields (sealed per subject as they are
        #: stored: see ``_personal``), and this runtime's subject keys
        self.personal: dict[type, PersonalSpec] = {}
        self.keyring = KeyRing()
        # the tombstone of deleted streams: every reader of a log may meet one
        self.register_events([StreamDeleted, SubjectForgotten])

    def register_events(self, event_types: Iterable[type]) -> None:
        """Register event classes under their stored type names and aliases.

        :raises DefinitionError: if two different classes claim one name (as their name or as
            an alias), a name cannot be stored, or a field is of a type the codec cannot
            store and read back
        """
        for cls in event_types:
            if cls in self._specs:
                continue
            spec = event_type_spec(cls)
            claimed = (spec.name, *spec.aliases)
            # @event_type checked these already; a plain str attribute was not
            for name in claimed:
                what = "an alias" if name in spec.aliases else "the stored name"
                _check_storable(f"event type {cls.__qualname__}", what, name)
            for name in claimed:
                other = self._by_name.get(name)
                if other is not None and other is not cls:
                    msg = (
                        f"event type name {name!r} is claimed by both {_claim(other, name)} and "
                        f"{_claim(cls, name)}; give one of them another stored name"
                    )
                    raise DefinitionError(msg)
            self._check_storable(f"event type {cls.__qualname__}", cls)
            personal = personal_spec(cls)
            if personal:
                require_crypto()
            for name in claimed:
                self._by_name[name] = cls
            self._specs[cls] = spec
            try:
                exact = _round_trips(cls, set())
            except Exception:  # an annotation too odd to judge (unhashable, ...)
                exact = False
            if not exact:
                self.inexact.add(cls)
            self._plain_fields[cls] = _plain_fields(cls)
            if personal:
                self.personal[cls] = personal

    def personal_of(self, type_name: str) -> PersonalSpec:
        """Return the personal fields of the event class stored as ``type_name`` (or none)."""
        cls = self._by_name.get(type_name)
        return () if cls is None else self.personal.get(cls, ())

    def check_state(self, owner: str, state_type: type) -> None:
        """Refuse a state type whose snapshots could never be stored and read back.

        :param owner: names the aggregate in the message
        :raises DefinitionError: naming the class and the field the codec cannot hold
        """
        self._check_storable(f"the state of {owner}", state_type)

    def _check_storable(self, owner: str, kind: type) -> None:
        problem = unstorable(kind, self._can_structure)
        if problem is not None:
            msg = f"{owner} cannot be stored: {problem}"
            if "Pydantic takes" not in problem:
                msg += (
                    f". The codec stores {SUPPORTED}; a Pydantic model may hold any type "
                    "Pydantic can write as JSON"
                )
            raise DefinitionError(msg)

    def _can_structure(self, kind: Any) -> bool:
        try:
            self._converter.get_structure_hook(kind)
        except StructureHandlerNotFoundError:
            return False
        except Exception:  # cattrs could not judge it here: it will say so on use
            return True
        return True

    def encode_event(self, event: object) -> tuple[str, JSONDict]:
        """Return the stored type name and the JSON-ready data of ``event``.

        The data of an event type above schema version 1 carries it under :data:`VERSION_KEY`.

        :raises CodecError: if the event's class is not registered or cannot be unstructured
        """
        cls = type(event)
        spec = self._specs.get(cls)
        if spec is None:
            msg = f"event type {cls.__qualname__} is not registered with this runtime"
            raise CodecError(msg, type_name=cls.__name__)
        name = spec.name
        for field, allowed in self._plain_fields[cls]:
            value = getattr(event, field)
            if type(value) not in allowed and not _fits(value, allowed):
                # stored so, it could never be decoded again: its stream would not load
                msg = (
                    f"event {name}: field {field!r} is typed {_type_names(allowed)} but holds "
                    f"{type(value).__name__} {value!r}; it was not stored (stored so, it could "
                    f"not be read back into {cls.__qualname__})"
                )
                raise CodecError(msg, type_name=name)
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
        if spec.version != 1:
            data[VERSION_KEY] = spec.version  # a fresh dict: the hook builds one per call
        return name, data

    def decode_event(self, type_name: str, data: JSONDict, *, where: str = "") -> object:
        """Return the event object stored as ``type_name`` with ``data``.

        Data of an older schema version is upcast to the class's current version first (on a
        copy: ``data`` is left as it is).

        :param where: context for the error message (the stream and version)
        :raises CodecError: if the type name is unknown, the data is of a newer schema version
            than the class, an upcaster fails, or the data does not fit the class
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
        spec = self._specs[cls]
        if cls in self.personal:
            data = self.keyring.open(data, type_name, where)
        upcast = ""
        if VERSION_KEY in data or spec.version != 1:
            data, stored = self._upcast_event(type_name, cls, spec, data, where)
            if stored != spec.version:
                upcast = f" (upcast from schema version {stored} to {spec.version})"
        hook = self._structure.get(cls)
        if hook is None:
            hook = self._converter.get_structure_hook(cls)
            self._structure[cls] = hook
        try:
            return hook(data, cls)
        except Exception as exc:
            detail = _describe(exc)
            msg = (
                f"cannot decode event {type_name!r}{where} into {cls.__qualname__}{upcast}: "
                f"{detail}"
            )
            raise CodecError(msg, type_name=type_name) from exc

    def _upcast_event(
        self, type_name: str, cls: type, spec: EventTypeSpec, data: JSONDict, where: str
    ) -> tuple[JSONDict, int]:
        """Return a copy of ``data`` without its version key, upcast to the current version,
        and the version it was stored at."""
        stored = data.get(VERSION_KEY, 1)
        current = spec.version
        if type(stored) is not int or stored < 1:
            msg = (
                f"cannot decode event {type_name!r}{where}: its schema version "
                f"({VERSION_KEY!r}) must be an int >= 1, got {stored!r}"
            )
            raise CodecError(msg, type_name=type_name)
        if stored > current:
            msg = (
                f"event {type_name!r}{where} is stored with schema version {stored}, but "
                f"{cls.__qualname__} is at version {current}: the data is newer than this code; "
                f"read it with code that knows version {stored} (events are upcast, never "
                "downcast)"
            )
            raise CodecError(msg, type_name=type_name)
        if stored == current:
            data = data.copy()
            del data[VERSION_KEY]
            return data, stored
        # a deep copy: upcasters may change what they are given, and the caller's data must
        # decode the same when it is read again
        data = _copy_json(data)
        data.pop(VERSION_KEY, None)
        upcast: JSONDict = _upcast(
            data,
            spec.upcasters,
            stored,
            current,
            what=f"event {type_name!r}{where}",
            type_name=type_name,
        )
        return upcast, stored

    def encode_state(self, state: object) -> JSONDict:
        """Return the JSON-ready form of an aggregate state, wrapped as ``{"state": ...}``."""
        try:
            return {"state": self._converter.unstructure(state)}
        except Exception as exc:
            msg = f"cannot encode state {type(state).__qualname__}: {exc}"
            raise CodecError(msg, type_name=type(state).__name__) from exc

    def decode_state(
        self,
        data: JSONDict,
        state_type: type,
        *,
        from_version: int = 1,
        to_version: int = 1,
        upcasters: Mapping[int, Callable[[Any], Any]] = _NO_UPCASTERS,
    ) -> Any:
        """Return the state that :meth:`encode_state` encoded, upcast first if it is older.

        :param from_version: the schema version the state was saved at
        :param to_version: the schema version of ``state_type`` now
        :param upcasters: ``{v: f}``: ``f`` takes the JSON form of a version-``v`` state (the
            part inside ``{"state": ...}``) and returns that of version ``v + 1``
        :raises CodecError: if the state is newer than ``to_version``, an upcaster is missing
            or fails, or the data does not fit ``state_type``
        """
        what = f"a {state_type.__qualname__} snapshot"
        type_name = state_type.__name__
        try:
            inner = data["state"]
        except Exception as exc:
            msg = f"cannot decode {what}: {_describe(exc)}"
            raise CodecError(msg, type_name=type_name) from exc
        upcast = ""
        if from_version != to_version:
            if from_version > to_version:
                msg = (
                    f"cannot decode {what} of schema version {from_version}: the state is at "
                    f"version {to_version}, and snapshots are upcast, never downcast"
                )
                raise CodecError(msg, type_name=type_name)
            inner = _upcast(
                _copy_json(inner),
                upcasters,
                from_version,
                to_version,
                what=what,
                type_name=type_name,
            )
            upcast = f" (upcast from schema version {from_version} to {to_version})"
        try:
            return self._converter.structure(inner, state_type)
        except Exception as exc:
            msg = f"cannot decode {what}{upcast}: {_describe(exc)}"
            raise CodecError(msg, type_name=type_name) from exc

    def encode_command(self, command: object, *, purpose: str = "a timer") -> tuple[str, JSONDict]:
        """Return the stored type name (its class name) and JSON-ready data of a command that
        a timer will deliver (or another member of a cluster decide).

        :param purpose: what the command is encoded for, in the error message
        :raises CodecError: if the command cannot be unstructured into a JSON object
        """
        name = type(command).__name__
        try:
            data = self._converter.unstructure(command)
        except Exception as exc:
            msg = f"cannot encode command {name} for {purpose}: {type(exc).__name__}: {exc}"
            raise CodecError(msg, type_name=name) from exc
        if not isinstance(data, dict):
            msg = f"command {name} must encode to a JSON object for {purpose}, got {data!r}"
            raise CodecError(msg, type_name=name)
        return name, data

    def decode_command(self, cls: type, data: JSONDict, *, purpose: str = "a timer") -> object:
        """Return the command of class ``cls`` that :meth:`encode_command` encoded.

        :param purpose: whose command it is, in the error message
        :raises CodecError: if the data does not fit the class
        """
        try:
            return self._converter.structure(data, cls)
        except Exception as exc:
            msg = f"cannot decode {purpose}'s command into {cls.__qualname__}: {_describe(exc)}"
            raise CodecError(msg, type_name=cls.__name__) from exc


def _claim(cls: type, name: str) -> str:
    """``module.Class (as its name)`` or ``(as an alias)``, for the name-clash message."""
    role = "as an alias" if name in event_type_spec(cls).aliases else "as its name"
    return f"{cls.__module__}.{cls.__qualname__} ({role})"


def _upcast(
    data: Any,
    upcasters: Mapping[int, Callable[[Any], Any]],
    start: int,
    stop: int,
    *,
    what: str,
    type_name: str,
) -> Any:
    """Run the upcasters from version ``start`` to ``stop`` on ``data`` (which they may change).

    :raises CodecError: naming ``what`` and the step, if an upcaster is missing, raises, or
        returns something other than a dict when it was given one
    """
    for step in range(start, stop):
        upcaster = upcasters.get(step)
        if upcaster is None:
            msg = f"cannot upcast {what}: there is no upcaster from version {step} to {step + 1}"
            raise CodecError(msg, type_name=type_name)
        given_a_dict = isinstance(data, dict)
        try:
            data = upcaster(data)
        except Exception as exc:
            msg = (
                f"upcasting {what} from version {step} to {step + 1} raised "
                f"{type(exc).__name__}: {exc}"
            )
            raise CodecError(msg, type_name=type_name) from exc
        if given_a_dict and not isinstance(data, dict):
            msg = (
                f"upcasting {what} from version {step} to {step + 1} returned "
                f"{type(data).__name__}, not a dict"
            )
            raise CodecError(msg, type_name=type_name)
    return data


def _copy_json(value: Any) -> Any:
    """Return a deep copy of JSON data (dicts and lists are copied; the rest is immutable)."""
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value


def _shared_converter() -> cattrs.Converter:
    """The one strict converter every codec uses.

    One for the process, not one per codec: cattrs generates (and compiles) a function per class
    on first use and keeps it in its converter, so that every runtime made after the first, as
    in tests or a tool that opens several stores, reads its first snapshot without compiling
    again. Nothing registers hooks per codec.
    """
    global _CONVERTER  # noqa: PLW0603  # made on first use, then shared
    if _CONVERTER is None:
        converter = make_converter()
        _make_strict(converter)
        _CONVERTER = converter
    return _CONVERTER


_CONVERTER: cattrs.Converter | None = None


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
    # Pydantic models are written and read by Pydantic itself, in its JSON mode
    converter.register_unstructure_hook_factory(is_pydantic_model, pydantic_dump)
    converter.register_structure_hook_factory(is_pydantic_model, pydantic_load)
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
