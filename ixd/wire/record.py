"""Frozen value records without `dataclasses`: what `ixc` shares with the daemon (selectors,
realm patches) is built on this, because `ixc` imports those on its way to the socket and
`dataclasses` (with `inspect`, `re` and the code it generates per class) costs more at start
than the rest of a request.

A subclass declares its fields as annotations, defaults as class attributes, and may check or
normalise them in `__post_init__` (with `object.__setattr__`), as with
`@dataclass(frozen=True)`; equality, hashing and the repr follow the fields in order. For mypy
the base is a `dataclass_transform`, so constructors are type-checked as dataclasses' are.
"""

from __future__ import annotations

# `operator` is a Python module over this C one, and its import ~0.25 ms of `ixc status`
from _operator import attrgetter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, dataclass_transform
else:
    def dataclass_transform(**_options: object) -> object:
        return lambda cls: cls


@dataclass_transform(frozen_default=True)
class Record:
    """Base of frozen records: fields from the class's annotations, in order."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}
    #: the fields' values as a tuple, in order (compared and hashed often: one C call)
    _values: ClassVar[Callable[[Any], tuple[Any, ...]]] = staticmethod(lambda record: ())

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # the class's own annotations (inspect.get_annotations: the import this avoids)
        annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
        own = [name for name, kind in annotations.items()
               if not str(kind).startswith("ClassVar")]
        cls._fields = (*cls._fields, *(n for n in own if n not in cls._fields))
        cls._defaults = {**cls._defaults,
                         **{name: cls.__dict__[name] for name in own if name in cls.__dict__}}
        if not cls._fields:
            cls._values = staticmethod(lambda record: ())
        elif len(cls._fields) == 1:
            one = attrgetter(cls._fields[0])
            cls._values = staticmethod(lambda record: (one(record),))
        else:
            cls._values = staticmethod(attrgetter(*cls._fields))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self._fields
        if not kwargs and len(args) == len(fields):  # every field given in order: the most
            for name, value in zip(fields, args, strict=True):  # common call, made often
                object.__setattr__(self, name, value)
        else:
            self._set_fields(fields, args, kwargs)
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def _set_fields(self, fields: tuple[str, ...], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> None:
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments, "
                            f"{len(args)} given")
        values = dict(zip(fields, args, strict=False))
        for name, value in kwargs.items():
            if name not in fields or name in values:
                raise TypeError(f"{type(self).__name__}() got an unexpected or repeated "
                                f"argument {name!r}")
            values[name] = value
        for name in fields:
            if name not in values:
                if name not in self._defaults:
                    raise TypeError(f"{type(self).__name__}() is missing argument {name!r}")
                values[name] = self._defaults[name]
            object.__setattr__(self, name, values[name])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        values = type(self)._values
        return self is other or values(self) == values(other)

    def __hash__(self) -> int:
        return hash(type(self)._values(self))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({shown})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is "
                             "frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is frozen")
