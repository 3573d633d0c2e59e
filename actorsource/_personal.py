"""Personal fields: marking them, and sealing them per subject (crypto-shredding).

A field of an event class marked personal holds data about a subject (a customer, a
person), whose id is another field of the same event. The codec stores such a field sealed
with the subject's own key (AES-GCM, from the ``cryptography`` package); destroying that key
(``Runtime.forget``) leaves every copy of the sealed value unreadable, wherever it went: the
events still decode, with the field set to :data:`FORGOTTEN`.

A sealed value is stored as ``{"$personal": "<base64 nonce + ciphertext>", "subject": id}``:
self-describing, so that reading it needs no knowledge of which class wrote it.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import types
import typing
from collections.abc import Iterable
from typing import Any, Final

import attrs

from ._errors import CodecError, DefinitionError
from ._records import JSONDict

FORGOTTEN: Final = "<forgotten>"
"""What a personal field reads as once its subject was forgotten (its key destroyed)."""

#: the key of a sealed value's ciphertext in its stored JSON object
SEALED_KEY: Final = "$personal"

#: the key of a personal marker in an attrs or dataclass field's metadata
METADATA_KEY: Final = "actorsource.personal"

_NONCE: Final = 12


@attrs.frozen
class Personal:
    """Mark a ``str`` field of an event class as personal data of a subject.

    Use it as an ``Annotated`` marker, ``email: Annotated[str, Personal(subject="customer_id")]``,
    or through :func:`personal` in a field's metadata. ``subject`` is the name of the event's
    field holding the subject's id (a str).
    """

    #: the name of the field holding the subject's id
    subject: str


def personal(*, subject: str) -> dict[str, Personal]:
    """Return field metadata marking an attrs or dataclass field as personal data.

    ``email: str = attrs.field(metadata=personal(subject="customer_id"))``

    :param subject: the name of the event's field holding the subject's id (a str)
    """
    if not isinstance(subject, str) or not subject:
        msg = f"personal(subject=...) takes the name of the subject's field, got {subject!r}"
        raise DefinitionError(msg)
    return {METADATA_KEY: Personal(subject)}


#: an event class's personal fields: (field name, name of its subject's field), in order
PersonalSpec = tuple[tuple[str, str], ...]


def personal_spec(cls: type) -> PersonalSpec:
    """Return the personal fields of an event class (empty for most).

    :raises DefinitionError: if a personal field is not typed ``str`` (or ``str | None``), or
        its subject field is missing, personal itself, or not a ``str``
    """
    owner = f"event type {cls.__qualname__}"
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception:  # unresolvable annotations: the codec's own checks report them
        hints = {}
    marked: dict[str, Personal] = {}
    for name, kind in hints.items():
        if typing.get_origin(kind) is typing.Annotated:
            for extra in typing.get_args(kind)[1:]:
                if isinstance(extra, Personal):
                    marked[name] = extra
    for name, metadata in _field_metadata(cls):
        found = metadata.get(METADATA_KEY)
        if isinstance(found, Personal):
            marked[name] = found
    if not marked:
        return ()
    for name, marker in marked.items():
        if not _is_str(hints.get(name), optional=True):
            msg = (
                f"{owner}: personal field {name!r} must be typed str (or str | None), so that "
                f"it can read as {FORGOTTEN!r} once its subject is forgotten"
            )
            raise DefinitionError(msg)
        subject = marker.subject
        if not isinstance(subject, str) or subject not in hints:
            msg = f"{owner}: personal field {name!r} names subject field {subject!r}, not a field"
            raise DefinitionError(msg)
        if subject in marked or not _is_str(hints[subject], optional=False):
            msg = (
                f"{owner}: the subject field {subject!r} of personal field {name!r} must be a "
                "str field that is not personal itself (it is stored in clear, to find the key)"
            )
            raise DefinitionError(msg)
    return tuple((name, marker.subject) for name, marker in marked.items())


def _field_metadata(cls: type) -> Iterable[tuple[str, Any]]:
    if attrs.has(cls):
        return [(f.name, f.metadata) for f in attrs.fields(cls)]
    if dataclasses.is_dataclass(cls):
        return [(f.name, f.metadata) for f in dataclasses.fields(cls)]
    return ()


def _is_str(kind: Any, *, optional: bool) -> bool:
    if typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    if kind is str:
        return True
    if optional and typing.get_origin(kind) in (typing.Union, types.UnionType):
        return set(typing.get_args(kind)) == {str, type(None)}
    return False


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415
    except ImportError as exc:
        msg = (
            "personal fields are sealed with AES-GCM from the cryptography package, which is "
            "not installed: pip install 'actorsource[crypto]'"
        )
        raise DefinitionError(msg) from exc
    return AESGCM


def require_crypto() -> None:
    """Raise :class:`DefinitionError` if the ``cryptography`` package is missing."""
    _aesgcm()


def new_key() -> bytes:
    """Return a fresh 256-bit subject key."""
    return os.urandom(32)


#: a subject's key as the key ring knows it: its bytes, or None once forgotten
Key = bytes | None


class KeyRing:
    """This runtime's subject keys, in memory: sealing and opening personal values.

    Keys are read from the store when the runtime opens and added as subjects appear; a
    forgotten subject's entry is ``None``. ``links`` are the (subject, stream) pairs this
    runtime knows the store has recorded (so that ``forget`` can find the snapshots to drop).
    """

    def __init__(self) -> None:
        self.keys: dict[str, Key] = {}
        self.links: set[tuple[str, str]] = set()
        self._ciphers: dict[str, Any] = {}

    def forget(self, subject: str) -> None:
        """Drop a subject's key here (its stored key is the store's to destroy)."""
        self.keys[subject] = None
        self._ciphers.pop(subject, None)

    def set_keys(self, keys: dict[str, Key]) -> None:
        for subject, key in keys.items():
            self.keys[subject] = key
            self._ciphers.pop(subject, None)

    def _cipher(self, subject: str, key: bytes) -> Any:
        cipher = self._ciphers.get(subject)
        if cipher is None:
            cipher = self._ciphers[subject] = _aesgcm()(key)
        return cipher

    def missing(
        self, spec: PersonalSpec, data: JSONDict, stream_id: str, type_name: str
    ) -> set[str]:
        """The subjects of ``data``'s personal fields without a live key or link here."""
        found = set()
        for field, subject_field in spec:
            if data.get(field) is None:
                continue
            subject = _subject(data, subject_field, field, type_name)
            if self.keys.get(subject) is None or (subject, stream_id) not in self.links:
                found.add(subject)
        return found

    def seal(self, spec: PersonalSpec, data: JSONDict, type_name: str) -> None:
        """Replace ``data``'s personal values by their sealed form, in place (every subject
        must have a key here: see :meth:`missing`)."""
        for field, subject_field in spec:
            value = data.get(field)
            if value is None:
                continue
            subject = _subject(data, subject_field, field, type_name)
            key = self.keys.get(subject)
            if key is None:
                msg = f"event {type_name}: subject {subject!r} has no key in this runtime"
                raise CodecError(msg, type_name=type_name)
            nonce = os.urandom(_NONCE)
            sealed = self._cipher(subject, key).encrypt(
                nonce, str(value).encode(), _aad(subject, field)
            )
            data[field] = {
                SEALED_KEY: base64.b64encode(nonce + sealed).decode(),
                "subject": subject,
            }

    def open(self, data: JSONDict, type_name: str, where: str) -> JSONDict:
        """Return a copy of ``data`` with its sealed values opened (or :data:`FORGOTTEN`)."""
        opened = None
        for field, value in data.items():
            if type(value) is not dict or SEALED_KEY not in value:
                continue
            if opened is None:
                opened = dict(data)
            opened[field] = self._open(field, value, type_name, where)
        return data if opened is None else opened

    def _open(self, field: str, value: dict[str, Any], type_name: str, where: str) -> str:
        subject = value.get("subject")
        if not isinstance(subject, str) or subject not in self.keys:
            msg = (
                f"cannot decode event {type_name!r}{where}: field {field!r} is sealed for "
                f"subject {subject!r}, whose key this runtime does not have (a key made by "
                "another process after this runtime opened: open a new runtime)"
            )
            raise CodecError(msg, type_name=type_name)
        key = self.keys[subject]
        if key is None:
            return FORGOTTEN
        try:
            raw = base64.b64decode(value[SEALED_KEY])
            clear = self._cipher(subject, key).decrypt(
                raw[:_NONCE], raw[_NONCE:], _aad(subject, field)
            )
        except Exception:  # sealed under a key destroyed since (the subject came back)
            return FORGOTTEN
        text: str = clear.decode()
        return text


def _subject(data: JSONDict, subject_field: str, field: str, type_name: str) -> str:
    subject = data.get(subject_field)
    if not isinstance(subject, str) or not subject or "\x00" in subject:
        msg = (
            f"event {type_name}: personal field {field!r} belongs to the subject in field "
            f"{subject_field!r}, which must be a non-empty str without NUL, got {subject!r}; "
            "the event was not stored"
        )
        raise CodecError(msg, type_name=type_name)
    return subject


def _aad(subject: str, field: str) -> bytes:
    # binds a ciphertext to its subject and field: moved elsewhere, it does not open
    return f"{subject}\x00{field}".encode()
