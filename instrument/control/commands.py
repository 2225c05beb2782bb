"""Commands: the one vocabulary that OSC, MIDI, patches and scores all turn into.

Like mido's messages, each command is validated on construction and has a readable text
form (``str(cmd)``) that :func:`parse` reads back, so a score file is just timed commands::

    latent 0.25 0.75
    note 69 0.8          # note on (velocity 0..1; 0 = off)
    off 69
    bend 0.5             # -1..1, scaled by bend_range_st
    param gain_db -6
    gate 1               # drone voice at drone_hz on/off
    freeze 1             # ignore latent moves until 'freeze 0'
    alloff
    patch patches/default.toml
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from instrument import params
from instrument.errors import ControlError, describe


def _finite(thing: str, v: object, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ControlError(describe(thing, v, f"a finite number in [{lo:g}, {hi:g}]",
                                    "send a finite number"))
    if not lo <= v <= hi:
        raise ControlError(describe(thing, v, f"[{lo:g}, {hi:g}]", "send a value in range"))
    return float(v)


@dataclass(frozen=True)
class SetLatent:
    """Move the latent point. ``None`` on an axis holds that axis."""

    x: float | None = None
    y: float | None = None

    def __post_init__(self) -> None:
        if self.x is None and self.y is None:
            raise ControlError("latent: got no axis; send x, y or both")
        if self.x is not None:
            object.__setattr__(self, "x", _finite("latent x", self.x, 0.0, 1.0))
        if self.y is not None:
            object.__setattr__(self, "y", _finite("latent y", self.y, 0.0, 1.0))

    def __str__(self) -> str:
        if self.y is None:
            return f"latent_x {self.x:g}"
        if self.x is None:
            return f"latent_y {self.y:g}"
        return f"latent {self.x:g} {self.y:g}"


@dataclass(frozen=True)
class NoteOn:
    note: float  # MIDI note number; fractional notes are microtones
    velocity: float = 0.8  # 0..1

    def __post_init__(self) -> None:
        object.__setattr__(self, "note", _finite("note number", self.note, 0.0, 127.0))
        object.__setattr__(self, "velocity", _finite("note velocity", self.velocity, 0.0, 1.0))

    def __str__(self) -> str:
        return f"note {self.note:g} {self.velocity:g}"


@dataclass(frozen=True)
class NoteOff:
    note: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "note", _finite("note number", self.note, 0.0, 127.0))

    def __str__(self) -> str:
        return f"off {self.note:g}"


@dataclass(frozen=True)
class PitchBend:
    value: float  # -1..1; +1 = +bend_range_st semitones

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _finite("pitch bend", self.value, -1.0, 1.0))

    def __str__(self) -> str:
        return f"bend {self.value:g}"


@dataclass(frozen=True)
class SetParam:
    name: str
    value: float

    def __post_init__(self) -> None:
        spec = params.get(self.name)
        object.__setattr__(self, "value", spec.check(self.value))

    def __str__(self) -> str:
        return f"param {self.name} {self.value:g}"


@dataclass(frozen=True)
class Gate:
    on: bool

    def __str__(self) -> str:
        return f"gate {int(self.on)}"


@dataclass(frozen=True)
class FreezeLatent:
    """While frozen, SetLatent commands are ignored (e.g. to hold a followed position)."""

    on: bool

    def __str__(self) -> str:
        return f"freeze {int(self.on)}"


@dataclass(frozen=True)
class AllNotesOff:
    def __str__(self) -> str:
        return "alloff"


@dataclass(frozen=True)
class LoadPatch:
    path: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ControlError(describe("patch path", self.path, "a file path", "send a path"))

    def __str__(self) -> str:
        return f"patch {self.path}"


Command = (SetLatent | NoteOn | NoteOff | PitchBend | SetParam | Gate | FreezeLatent | AllNotesOff
           | LoadPatch)


def _num(tok: str, what: str) -> float:
    try:
        v = float(tok)
    except ValueError:
        raise ControlError(describe(what, tok, "a number", "write a decimal number")) from None
    return v


def parse(text: str) -> Command:
    """Read one command from its text form (the inverse of ``str(cmd)``)."""
    toks = text.split()
    if not toks:
        raise ControlError("command: got an empty line; write e.g. 'note 60 0.8'")
    verb, args = toks[0], toks[1:]
    arity = {"latent": 2, "latent_x": 1, "latent_y": 1, "note": (1, 2), "off": 1, "bend": 1,
             "param": 2, "gate": 1, "freeze": 1, "alloff": 0, "patch": 1}
    if verb not in arity:
        raise ControlError(describe("command verb", verb, ", ".join(arity), "use a listed verb"))
    want = arity[verb]
    lo, hi = want if isinstance(want, tuple) else (want, want)
    if not lo <= len(args) <= hi:
        raise ControlError(describe(f"command {verb!r} argument count", len(args),
                                    f"{lo}" if lo == hi else f"{lo}..{hi}", f"check {text!r}"))
    if verb == "latent":
        return SetLatent(_num(args[0], "latent x"), _num(args[1], "latent y"))
    if verb == "latent_x":
        return SetLatent(x=_num(args[0], "latent x"))
    if verb == "latent_y":
        return SetLatent(y=_num(args[0], "latent y"))
    if verb == "note":
        vel = _num(args[1], "velocity") if len(args) > 1 else 0.8
        note = _num(args[0], "note")
        return NoteOff(note) if vel == 0 else NoteOn(note, vel)
    if verb == "off":
        return NoteOff(_num(args[0], "note"))
    if verb == "bend":
        return PitchBend(_num(args[0], "bend"))
    if verb == "param":
        return SetParam(args[0], _num(args[1], f"param {args[0]}"))
    if verb == "gate":
        return Gate(bool(_num(args[0], "gate")))
    if verb == "freeze":
        return FreezeLatent(bool(_num(args[0], "freeze")))
    if verb == "alloff":
        return AllNotesOff()
    return LoadPatch(args[0])
