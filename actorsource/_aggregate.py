"""The class form of an aggregate: ``@command`` and ``@apply`` methods, compiled to a Decider.

Kept thin on purpose: two marker decorators and one compile step (cached per class), no
metaclass. The compiled Decider's ``decide`` calls the ``@command`` method on the current state,
its ``evolve`` calls the ``@apply`` method, which changes the state in place.
"""

import inspect
import types
import typing
import weakref
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar, Union

from ._decider import Decider, Upcaster, checked_category, checked_upcasters, checked_version
from ._errors import DefinitionError, UnknownCommandError
from ._models import is_record_class

F = TypeVar("F", bound=Callable[..., Any])
A = TypeVar("A", bound="Aggregate")

_COMMAND_MARK = "__actorsource_command__"
_APPLY_MARK = "__actorsource_apply__"


class Aggregate:
    """Base class of user aggregates.

    Subclasses are ``attrs.define`` classes (or dataclasses, or Pydantic models): their fields
    are the state and their defaults are the initial state. Mark command handlers with
    :func:`command` and event appliers with :func:`apply`; both dispatch on the annotated type
    of their one argument. (A Pydantic model annotates the settings below with ``ClassVar``.)

    Class-level settings (plain class attributes, not fields):

    - ``stream_category``: the prefix of stream ids (default: the class name), without ``-``
      (checked when the class is defined)
    - ``snapshot_every``: snapshot interval for this class (overrides the runtime's)
    - ``snapshot_version``: the state's schema version; bump it when the fields change so that
      old snapshots are ignored and the state is rebuilt from events
    - ``snapshot_upcasters``: ``{v: f}`` to use old snapshots instead: ``f`` takes the fields of
      a version-``v`` state as a dict and returns those of version ``v + 1``; a snapshot is
      upcast when there is an upcaster for every step to ``snapshot_version`` (keys run from 1
      to ``snapshot_version - 1``), and ignored otherwise
    """

    __slots__ = ()

    # real (not string) annotations: attrs and cattrs resolve them through the subclasses,
    # and this class's __module__ is rewritten to "actorsource" by the package's front door
    stream_category: ClassVar[str | None] = None
    snapshot_every: ClassVar[int | None] = None
    snapshot_version: ClassVar[int] = 1
    snapshot_upcasters: ClassVar[Mapping[int, Upcaster]] = types.MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # at once, not at first use: a category that can collide is a mistake in the class
        # itself, whichever runtime uses it
        category = cls.__dict__.get("stream_category")
        if category:  # as in _compile: a falsy one means the class name
            checked_category(cls.__qualname__, category)


def command(method: F) -> F:
    """Mark a method as the handler of the command type its argument is annotated with.

    The method returns one event, a list of events, or ``None``; it must not change ``self``
    (raise :class:`Rejected` to refuse the command). The list may hold timer effects beside the
    events (:class:`Schedule`, :class:`Cancel`), stored with them.
    """
    setattr(method, _COMMAND_MARK, True)
    return method


def apply(method: F) -> F:
    """Mark a method as the applier of the event type its argument is annotated with.

    The method changes ``self`` to reflect the event and returns ``None``.
    """
    setattr(method, _APPLY_MARK, True)
    return method


_compiled: weakref.WeakKeyDictionary[type, Decider[Any, Any, Any]] = weakref.WeakKeyDictionary()


def decider_of(cls: type[A]) -> Decider[Any, Any, A]:
    """Return the Decider an aggregate class compiles to (compiled once, then cached).

    :raises DefinitionError: if the class is not a usable aggregate
    """
    found = _compiled.get(cls)
    if found is None:
        found = _compile(cls)
        _compiled[cls] = found
    return found


def _compile(cls: type[A]) -> Decider[Any, Any, A]:
    if not (isinstance(cls, type) and issubclass(cls, Aggregate)):
        msg = f"{cls!r} is not an Aggregate subclass (nor a Decider)"
        raise DefinitionError(msg)
    if not is_record_class(cls):
        msg = (
            f"{cls.__qualname__} must be an attrs class, a dataclass or a Pydantic model: "
            "decorate it with @attrs.define (or @dataclasses.dataclass), or derive it from "
            "pydantic.BaseModel too"
        )
        raise DefinitionError(msg)
    name = cls.stream_category or cls.__name__
    # checked here too, so that the messages name the class rather than its Decider
    owner = cls.__qualname__
    checked_category(owner, name)
    checked_version(owner, "snapshot_version", cls.snapshot_version)
    checked_upcasters(
        owner, "snapshot_upcasters", cls.snapshot_upcasters, cls.snapshot_version, complete=False
    )
    commands = _handlers(cls, _COMMAND_MARK, "@command")
    appliers = _handlers(cls, _APPLY_MARK, "@apply")
    try:
        cls()
    except TypeError as exc:
        msg = (
            f"{cls.__qualname__}() failed ({exc}): every field of an aggregate needs a default, "
            "since the defaults are its initial state"
        )
        raise DefinitionError(msg) from exc
    known_commands = sorted(t.__name__ for t in commands)

    def decide(command: Any, state: A) -> Any:
        # the table's own lookup first: _lookup caches what an MRO walk finds in it
        handler = commands.get(type(command)) or _lookup(commands, type(command))
        if handler is None:
            raise UnknownCommandError(name, type(command).__name__, known_commands)
        return handler(state, command)

    def evolve(state: A, event: Any) -> A:
        applier = appliers.get(type(event)) or _lookup(appliers, type(event))
        if applier is None:
            msg = f"{cls.__qualname__} has no @apply handler for event type {type(event).__name__}"
            raise DefinitionError(msg)
        applier(state, event)
        return state

    return Decider(
        name=name,
        decide=decide,
        evolve=evolve,
        event_types=tuple(appliers),
        initial_state_factory=cls,
        snapshot_every=cls.snapshot_every,
        snapshot_version=cls.snapshot_version,
        snapshot_upcasters=cls.snapshot_upcasters,
        state_type=cls,
        command_types=tuple(commands),
    )


def _lookup(table: dict[type, Callable[..., Any]], kind: type) -> Callable[..., Any] | None:
    handler = table.get(kind)
    if handler is None:
        # a subclass of a handled type is handled too; cache what the MRO walk found
        for base in kind.__mro__[1:]:
            handler = table.get(base)
            if handler is not None:
                table[kind] = handler
                break
    return handler


def _handlers(
    cls: type, mark: str, decorator: str, *, optional_arguments: int = 0
) -> dict[type, Callable[..., Any]]:
    """Map each type that ``cls``'s methods marked with ``mark`` handle to its method.

    :param optional_arguments: how many arguments a handler may take after the dispatched one
    """
    by_name: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        for attr, member in vars(klass).items():
            if callable(member) and getattr(member, mark, False):
                by_name[attr] = member
    table: dict[type, Callable[..., Any]] = {}
    for attr, method in by_name.items():
        for handled in _argument_types(cls, method, decorator, optional_arguments):
            if handled in table:
                msg = (
                    f"{cls.__qualname__} has two {decorator} handlers for "
                    f"{handled.__name__}: {table[handled].__name__} and {attr}"
                )
                raise DefinitionError(msg)
            table[handled] = method
    return table


def _argument_types(
    cls: type, method: Callable[..., Any], decorator: str, optional_arguments: int
) -> list[type]:
    where = f"{cls.__qualname__}.{method.__name__}"
    params = list(inspect.signature(method).parameters.values())
    if not 2 <= len(params) <= 2 + optional_arguments:
        if optional_arguments:
            msg = (
                f"{decorator} method {where} must take the event and at most "
                f"{optional_arguments} more argument(s) besides self"
            )
        else:
            msg = f"{decorator} method {where} must take exactly one argument besides self"
        raise DefinitionError(msg)
    try:
        hints = typing.get_type_hints(method)
    except Exception as exc:  # NameError for unresolvable string annotations, among others
        msg = (
            f"cannot resolve the annotations of {where} ({exc}); define the command and event "
            "classes at module level so that their names can be resolved"
        )
        raise DefinitionError(msg) from exc
    annotation = hints.get(params[1].name)
    if annotation is None:
        msg = f"{decorator} method {where} must annotate its argument with the type it handles"
        raise DefinitionError(msg)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        handled = list(typing.get_args(annotation))
    else:
        handled = [annotation]
    for item in handled:
        if not isinstance(item, type):
            msg = f"{decorator} method {where}: the annotation {item!r} is not a class"
            raise DefinitionError(msg)
    return handled
