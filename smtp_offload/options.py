"""How a stage declares its options, so config can read and check them all one way.

An option is a dataclass field: its type says what values it takes (an Enum lists the
allowed ones), its metadata its bounds ("gt": must be greater than) and, when the config file
names it differently, its "key". config.py reads these; the stages never parse strings.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import typing


def positive(default):
    """An option that must be greater than 0."""
    return dataclasses.field(default=default, metadata={"gt": 0})


def check(hint, meta: typing.Mapping, value):
    """`value` as the option's declared type allows it: an Enum member, within its bounds.
    ValueError says what is wrong, without the name (the caller knows how to name it)."""
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if not isinstance(value, hint):
            allowed = [m.value for m in hint]
            if value not in allowed:
                raise ValueError(f"must be one of {', '.join(repr(c) for c in allowed)}, got {value!r}")
            value = hint(value)
    elif "gt" in meta and not value > meta["gt"]:
        raise ValueError(f"must be greater than {meta['gt']}, got {value!r}")
    return value


def coerce(obj) -> None:
    """check() every option of a frozen dataclass, in its __post_init__ (code and tests may
    write on_tnef="keep"); ValueError names the field."""
    hints = typing.get_type_hints(type(obj), vars(sys.modules[type(obj).__module__]))
    for f in dataclasses.fields(obj):
        try:
            object.__setattr__(obj, f.name, check(hints[f.name], f.metadata, getattr(obj, f.name)))
        except ValueError as exc:
            raise ValueError(f"{type(obj).__name__}.{f.name}: {exc}") from None
