"""TOML patches: the starting sound (latent point, parameters) plus the MIDI and OSC maps.

A patch file (format ``instrument-patch/1``)::

    format = "instrument-patch/1"
    model = "default"              # model folder name
    [latent]
    x = 0.4                        # 0..1
    y = 0.6
    glide_ms = 40
    [params]                       # any name in instrument.params.PARAMS, real units
    gain_db = -6.0
    [voices]                       # attack_ms decay_ms sustain release_ms voices bend_range_st
    release_ms = 400
    [[midi]]                       # one of cc / cc14 / nrpn / note per entry
                                   # (no [[midi]] at all: the default map; midi = []: none)
    cc = 1
    target = "latent.x"            # latent.x latent.y param.<name> sustain gate freeze alloff
    channel = 1                    # 1..16, omit for any channel
    invert = false
    deadband = 0.01                # fraction of full travel a reversal must exceed
    smooth_ms = 0                  # one-pole smoothing time of the incoming value
    [[osc]]                        # an address alias: each argument feeds a target
    address = "/1/xy"
    args = ["latent.y", "latent.x"]   # see OSC_TARGETS; "" skips an argument
    invert = [false, true]
    swap = false                   # swap the first two arguments

:func:`load_patch` checks everything; every mistake is a :class:`PatchError` naming the
file, the key (dotted path such as ``midi[2].target``), the value, what is allowed and the
fix. Unknown keys are errors (a typo must not be silently ignored).
"""

from __future__ import annotations

import logging
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from instrument import params
from instrument.control.commands import (
    AllNotesOff,
    Command,
    FreezeLatent,
    Gate,
    SetLatent,
    SetParam,
)
from instrument.errors import PatchError, describe
from instrument.files import read_small_text

log = logging.getLogger("instrument.patches")

FORMAT = "instrument-patch/1"
VOICE_KEYS = ("attack_ms", "decay_ms", "sustain", "release_ms", "voices", "bend_range_st")
# Targets that switch something on/off (value >= 0.5 is on) or fire once.
SWITCH_TARGETS = ("sustain", "gate", "freeze", "alloff")
TARGET_HELP = ("latent.x, latent.y, param.<name> (" + ", ".join(sorted(params.PARAMS)) + "), "
               + ", ".join(SWITCH_TARGETS))
# Channel-mode controllers (120..127) and the NRPN/RPN machinery cannot be plain CC targets.
RESERVED_CC = {6: "data entry MSB", 38: "data entry LSB", 96: "data increment",
               97: "data decrement", 98: "NRPN LSB", 99: "NRPN MSB", 100: "RPN LSB",
               101: "RPN MSB"}
# OSC alias targets (besides param.<name> and note.<n>), as the OSC server understands them.
OSC_TARGETS = ("", "latent.x", "latent.y", "note", "velocity", "bend", "gate", "freeze",
               "alloff")
MAX_DEADBAND = 0.5
MAX_SMOOTH_MS = 5000.0
MAX_PATCH_BYTES = 1 << 20  # a patch is a short text; anything larger is refused unread


def target_command(target: str, u: float) -> Command | None:
    """The command for ``target`` at normalised value ``u`` (0..1); None for 'sustain'.

    ``param.<name>`` goes through the parameter's warp (:meth:`ParamSpec.from_norm`);
    switch targets are on at ``u >= 0.5``; ``alloff`` fires when ``u >= 0.5``.
    """
    u = min(1.0, max(0.0, u)) if math.isfinite(u) else 0.0
    if target == "latent.x":
        return SetLatent(x=u)
    if target == "latent.y":
        return SetLatent(y=u)
    if target.startswith("param."):
        name = target[6:]
        return SetParam(name, params.PARAMS[name].from_norm(u))
    if target == "gate":
        return Gate(u >= 0.5)
    if target == "freeze":
        return FreezeLatent(u >= 0.5)
    if target == "alloff":
        return AllNotesOff() if u >= 0.5 else None
    return None  # "sustain" is handled by the MIDI mapper itself


@dataclass(frozen=True)
class MidiMap:
    """One ``[[midi]]`` entry.

    ``kind`` is ``cc`` (7-bit), ``cc14`` (MSB ``number`` + LSB ``number + 32``), ``nrpn``
    (parameter ``number``, 14-bit data) or ``note`` (keys ``note_lo..note_hi``; target
    ``play`` plays them, any other target maps the key's place in the range to 0..1).
    """

    kind: str
    target: str
    number: int = 0
    note_lo: int = 0
    note_hi: int = 127
    channel: int | None = None  # 1..16, None = any
    invert: bool = False
    deadband: float = 0.0  # fraction of full travel a reversal must exceed
    smooth_ms: float = 0.0


@dataclass(frozen=True)
class OscAlias:
    """One ``[[osc]]`` entry: argument i of ``address`` feeds ``args[i]`` ("" skips it).

    The OSC server carries it out: ``server.add_alias(a.address, list(a.args),
    list(a.invert), a.swap)``; targets are those of :data:`OSC_TARGETS` plus ``param.<name>``
    and ``note.<n>``.
    """

    address: str
    args: tuple[str, ...]
    invert: tuple[bool, ...]
    swap: bool = False  # swap the first two arguments


@dataclass(frozen=True)
class Patch:
    """A loaded, checked patch. ``params`` holds every explicitly set parameter."""

    path: str | None
    model: str = "default"
    latent_x: float = 0.5
    latent_y: float = 0.5
    params: tuple[tuple[str, float], ...] = ()
    midi: tuple[MidiMap, ...] = ()
    osc: tuple[OscAlias, ...] = field(default=())

    def param(self, name: str) -> float:
        """The patch's value for ``name`` (the table default when the patch leaves it)."""
        return dict(self.params).get(name, params.PARAMS[name].default)

    def initial_commands(self) -> list[Command]:
        """Commands that put the engine in this patch's state.

        Every parameter is set (the patch's value or the table default), so loading a
        patch after another leaves nothing of the first behind; the latent point comes last.
        """
        cmds: list[Command] = [SetParam(name, self.param(name)) for name in params.PARAMS
                               if name not in ("latent_x", "latent_y")]
        cmds.append(SetLatent(self.latent_x, self.latent_y))
        return cmds

    @classmethod
    def default(cls) -> Patch:
        """The built-in patch; ``patches/default.toml`` holds the same (a test checks it)."""
        maps = (
            MidiMap("note", "play"),  # every key plays
            MidiMap("cc", "latent.x", number=1, deadband=0.01),  # mod wheel
            MidiMap("cc", "latent.x", number=74, deadband=0.01),  # brightness / cutoff
            MidiMap("cc", "latent.y", number=71, deadband=0.01),  # resonance / timbre
            MidiMap("cc", "latent.y", number=2, deadband=0.01),  # breath
            MidiMap("cc", "param.gain_db", number=7),  # channel volume
            MidiMap("cc", "param.glide_ms", number=5),  # portamento time
            MidiMap("cc", "param.attack_ms", number=73),
            MidiMap("cc", "param.release_ms", number=72),
            MidiMap("cc", "param.decay_ms", number=75),
            MidiMap("cc", "sustain", number=64),  # sustain pedal
        )
        names = ("gain_db", "glide_ms", *VOICE_KEYS)
        values = tuple((n, params.PARAMS[n].default) for n in params.PARAMS if n in names)
        return cls(path=None, params=values, midi=maps)


# -- loading ---------------------------------------------------------------------------
class _Checker:
    """Builds PatchErrors of the house shape for one file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, value: object, allowed: str, fix: str) -> PatchError:
        return PatchError(describe(f"patch {self.path}: key {key!r}", value, allowed, fix))

    def table(self, value: object, key: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key, value, "a table", f"write it as [{key}] with key = value lines")
        return value

    def keys(self, table: dict, key: str, allowed: Sequence[str]) -> None:
        for k in table:
            if k not in allowed:
                where = f"{key}.{k}" if key else k
                raise self.fail(where, k, ", ".join(allowed),
                                "remove the key or fix its spelling")

    def number(self, value: object, key: str, lo: float, hi: float, units: str = "") -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or not lo <= value <= hi:
            suffix = f" {units}" if units else ""
            raise self.fail(key, value, f"a number in [{lo:g}, {hi:g}]{suffix}",
                            "write a finite number inside the range")
        return float(value)

    def integer(self, value: object, key: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(key, value, f"an integer in [{lo}, {hi}]",
                            "write a whole number inside the range")
        return value

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, value, "true or false", "write true or false (no quotes)")
        return value

    def param(self, name: str, value: object, key: str) -> float:
        spec = params.PARAMS[name]
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or not spec.min <= value <= spec.max:
            raise self.fail(key, value, f"[{spec.min:g}, {spec.max:g}] {spec.units}".rstrip(),
                            f"write a number inside the range ({spec.doc})")
        return spec.check(value)

    def target(self, value: object, key: str, extra: Sequence[str] = ()) -> str:
        if isinstance(value, str):
            if value in ("latent.x", "latent.y", *SWITCH_TARGETS, *extra):
                return value
            if value.startswith("param.") and value[6:] in params.PARAMS:
                if value[6:] in ("latent_x", "latent_y"):
                    return "latent." + value[-1]
                return value
        allowed = TARGET_HELP + "".join(f", {e}" for e in extra)
        raise self.fail(key, value, allowed, "use one of the listed targets")


def _midi_entry(c: _Checker, entry: object, i: int) -> MidiMap:
    key = f"midi[{i}]"
    t = c.table(entry, key)
    c.keys(t, key, ("cc", "cc14", "nrpn", "note", "target", "channel", "invert", "deadband",
                    "smooth_ms"))
    kinds = [k for k in ("cc", "cc14", "nrpn", "note") if k in t]
    if len(kinds) != 1:
        raise c.fail(key, sorted(t), "exactly one of cc, cc14, nrpn, note",
                     "give each [[midi]] entry one source, e.g. cc = 1")
    kind = kinds[0]
    kw: dict = {}
    if "channel" in t:
        kw["channel"] = c.integer(t["channel"], f"{key}.channel", 1, 16)
    if "invert" in t:
        kw["invert"] = c.boolean(t["invert"], f"{key}.invert")
    if "deadband" in t:
        kw["deadband"] = c.number(t["deadband"], f"{key}.deadband", 0.0, MAX_DEADBAND,
                                  "of full travel")
    if "smooth_ms" in t:
        kw["smooth_ms"] = c.number(t["smooth_ms"], f"{key}.smooth_ms", 0.0, MAX_SMOOTH_MS, "ms")
    if kind == "note":
        v = t["note"]
        if v == "all":
            lo, hi = 0, 127
        elif isinstance(v, list) and len(v) == 2:
            lo = c.integer(v[0], f"{key}.note[0]", 0, 127)
            hi = c.integer(v[1], f"{key}.note[1]", 0, 127)
            if lo > hi:
                raise c.fail(f"{key}.note", v, "[lo, hi] with lo <= hi", "swap the two keys")
        else:
            raise c.fail(f"{key}.note", v, '"all" or [lo, hi] with keys 0..127',
                         'write note = "all" or note = [36, 59]')
        target = c.target(t.get("target", "play"), f"{key}.target", extra=("play",))
        return MidiMap("note", target, note_lo=lo, note_hi=hi, **kw)
    if "target" not in t:
        raise c.fail(f"{key}.target", None, TARGET_HELP, 'add e.g. target = "latent.x"')
    target = c.target(t["target"], f"{key}.target")
    if kind == "cc":
        number = c.integer(t["cc"], f"{key}.cc", 0, 119)
        if number in RESERVED_CC:
            raise c.fail(f"{key}.cc", number, "0..119 except 6, 38, 96..101",
                         f"CC {number} is the {RESERVED_CC[number]} controller; use "
                         "nrpn = N for NRPN parameters or pick another CC")
    elif kind == "cc14":
        number = c.integer(t["cc14"], f"{key}.cc14", 0, 31)
        if number == 6:
            raise c.fail(f"{key}.cc14", number, "0..31 except 6",
                         "CC 6/38 is NRPN/RPN data entry; use nrpn = N")
    else:
        number = c.integer(t["nrpn"], f"{key}.nrpn", 0, 16383)
    return MidiMap(kind, target, number=number, **kw)


def _check_cc_conflicts(c: _Checker, maps: Sequence[MidiMap]) -> None:
    """A plain CC must not be the LSB half of a 14-bit pair on the same channel."""
    lsb = {(m.number + 32, m.channel): i for i, m in enumerate(maps) if m.kind == "cc14"}
    msb = {(m.number, m.channel): i for i, m in enumerate(maps) if m.kind == "cc14"}
    for i, m in enumerate(maps):
        if m.kind != "cc":
            continue
        for table, half in ((lsb, "LSB"), (msb, "MSB")):
            j = table.get((m.number, m.channel))
            if j is not None:
                raise c.fail(f"midi[{i}].cc", m.number, "a CC not used by a cc14 pair",
                             f"CC {m.number} is the {half} of midi[{j}] (cc14); remove one")


def _osc_target(c: _Checker, value: object, key: str) -> str:
    if isinstance(value, str):
        if value in OSC_TARGETS:
            return value
        if value.startswith("param.") and value[6:] in params.PARAMS:
            return value
        if value.startswith("note."):
            try:
                if 0 <= float(value[5:]) <= 127:
                    return value
            except ValueError:
                pass
    raise c.fail(key, value, ", ".join(repr(t) for t in OSC_TARGETS)
                 + ", 'param.<name>', 'note.<0..127>'", "use one of the listed targets")


def _osc_entry(c: _Checker, entry: object, i: int) -> OscAlias:
    key = f"osc[{i}]"
    t = c.table(entry, key)
    c.keys(t, key, ("address", "args", "invert", "swap"))
    addr = t.get("address")
    if not isinstance(addr, str) or not addr.startswith("/") or len(addr) < 2 \
            or any(ch in addr for ch in " #*?,[]{}") or addr.startswith("/inst/"):
        raise c.fail(f"{key}.address", addr, "a literal OSC address starting with '/', no "
                     "wildcards, outside /inst", 'write e.g. address = "/1/xy"')
    args = t.get("args")
    if not isinstance(args, list) or not args:
        raise c.fail(f"{key}.args", args, "a list of targets, one per OSC argument",
                     'write e.g. args = ["latent.x", "latent.y"] ("" skips an argument)')
    targets = tuple(_osc_target(c, a, f"{key}.args[{j}]") for j, a in enumerate(args))
    inv = t.get("invert", [False] * len(args))
    if not isinstance(inv, list) or len(inv) != len(args):
        raise c.fail(f"{key}.invert", inv, f"a list of {len(args)} booleans (one per argument)",
                     "give one true/false per entry of args")
    inverts = tuple(c.boolean(v, f"{key}.invert[{j}]") for j, v in enumerate(inv))
    swap = c.boolean(t.get("swap", False), f"{key}.swap")
    if swap and len(args) < 2:
        raise c.fail(f"{key}.swap", swap, "swap only with 2 or more args",
                     "remove swap or add an argument")
    if "velocity" in targets and (targets.index("velocity") == 0
                                  or targets[targets.index("velocity") - 1] != "note"):
        raise c.fail(f"{key}.args", list(args), "'velocity' right after 'note'",
                     "put 'velocity' straight after 'note'")
    return OscAlias(addr, targets, inverts, swap)


def _syntax_error(path: str, err: Exception) -> PatchError:
    msg = str(err)
    m = re.search(r"at line (\d+)", msg)
    line = f" line {m.group(1)}" if m else ""
    return PatchError(f"patch {path}:{line}: TOML syntax error: {msg}; fix the syntax at that "
                      "line (strings need quotes, tables are [name], lists are [a, b])")


def parse_patch(text: str, path: str = "<string>") -> Patch:
    """Check a patch given as TOML text (``path`` is only used in messages)."""
    c = _Checker(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _syntax_error(path, err) from None
    c.keys(doc, "", ("format", "model", "latent", "params", "voices", "midi", "osc"))
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise c.fail("format", fmt, repr(FORMAT), f'put format = "{FORMAT}" on the first line')
    model = doc.get("model", "default")
    if not isinstance(model, str) or not model.strip():
        raise c.fail("model", model, "a model folder name", 'write e.g. model = "default"')
    values: dict[str, float] = {}
    lat = c.table(doc.get("latent", {}), "latent")
    c.keys(lat, "latent", ("x", "y", "glide_ms"))
    x = c.number(lat.get("x", 0.5), "latent.x", 0.0, 1.0)
    y = c.number(lat.get("y", 0.5), "latent.y", 0.0, 1.0)
    if "glide_ms" in lat:
        values["glide_ms"] = c.param("glide_ms", lat["glide_ms"], "latent.glide_ms")
    settable = [n for n in params.PARAMS if n not in ("latent_x", "latent_y")]
    pt = c.table(doc.get("params", {}), "params")
    c.keys(pt, "params", settable)
    for name, v in pt.items():
        values[name] = c.param(name, v, f"params.{name}")
    vt = c.table(doc.get("voices", {}), "voices")
    c.keys(vt, "voices", VOICE_KEYS)
    for name, v in vt.items():
        values[name] = c.param(name, v, f"voices.{name}")
    if "midi" not in doc:
        log.info("patch %s has no [[midi]]: using the default MIDI map", path)
        maps = list(Patch.default().midi)
    else:
        midi_list = doc["midi"]
        if not isinstance(midi_list, list):
            raise c.fail("midi", midi_list, "an array of tables", "write each entry as [[midi]]")
        if not midi_list:
            log.info("patch %s has midi = []: MIDI input is unmapped (keys still play, pitch "
                     "bend and all-notes-off work; no controller or sustain pedal does "
                     "anything)", path)
        maps = [_midi_entry(c, e, i) for i, e in enumerate(midi_list)]
        _check_cc_conflicts(c, maps)
    osc_list = doc.get("osc", [])
    if not isinstance(osc_list, list):
        raise c.fail("osc", osc_list, "an array of tables", "write each entry as [[osc]]")
    aliases = [_osc_entry(c, e, i) for i, e in enumerate(osc_list)]
    seen: dict[str, int] = {}
    for i, a in enumerate(aliases):
        if a.address in seen:
            raise c.fail(f"osc[{i}].address", a.address, "each address once",
                         f"osc[{seen[a.address]}] already maps it; merge the two entries")
        seen[a.address] = i
    ordered = tuple((n, values[n]) for n in params.PARAMS if n in values)
    return Patch(path=path, model=model, latent_x=x, latent_y=y, params=ordered,
                 midi=tuple(maps), osc=tuple(aliases))


def load_patch(path: str | Path) -> Patch:
    """Read and check a patch file; raises PatchError naming file, key, value and fix.

    Only a regular file of at most :data:`MAX_PATCH_BYTES` is read
    (:func:`instrument.textfile.read_small_text`), so a path such as ``/dev/zero``, a FIFO
    or a folder is refused at once instead of being read forever.
    """
    text = read_small_text(path, "patch file", MAX_PATCH_BYTES, PatchError, "TOML",
                           "see patches/ for examples")
    return parse_patch(text, str(path))
