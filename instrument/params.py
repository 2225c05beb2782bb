"""The one parameter table.

OSC addresses (``/inst/param/<name>``), MIDI CC targets, patch validation, the
``/inst/status`` reply and the README's parameter table all come from :data:`PARAMS`.
Values are in real units (the unit is part of the name); ``norm`` maps 0..1 onto the
range with the parameter's warp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from instrument.errors import ParamError, describe


@dataclass(frozen=True)
class ParamSpec:
    name: str
    min: float
    max: float
    default: float
    units: str
    warp: str = "lin"  # "lin" | "exp" (exp needs min > 0)
    smooth_ms: float = 20.0  # how long the engine glides to a new value
    doc: str = ""
    integer: bool = False

    def check(self, value: object, where: str = "") -> float:
        """Return ``value`` as a float inside the range, or raise a ParamError."""
        thing = f"{where}{': ' if where else ''}parameter {self.name!r}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(describe(thing, value, f"a number in [{self.min:g}, {self.max:g}] "
                                      f"{self.units}", "send a number"))
        v = float(value)
        if not math.isfinite(v) or v < self.min or v > self.max:
            raise ParamError(describe(thing, value, f"[{self.min:g}, {self.max:g}] {self.units}",
                                      "send a finite value inside the range"))
        return float(round(v)) if self.integer else v

    def from_norm(self, u: float) -> float:
        """Map 0..1 onto the range (clamped), following the warp."""
        u = min(1.0, max(0.0, float(u))) if math.isfinite(u) else 0.0
        if self.warp == "exp":
            v = self.min * (self.max / self.min) ** u
        else:
            v = self.min + (self.max - self.min) * u
        return float(round(v)) if self.integer else v

    def to_norm(self, v: float) -> float:
        if self.warp == "exp":
            return math.log(v / self.min) / math.log(self.max / self.min)
        return (v - self.min) / (self.max - self.min)


PARAMS: dict[str, ParamSpec] = {
    p.name: p
    for p in [
        ParamSpec("latent_x", 0.0, 1.0, 0.5, "", smooth_ms=0.0,
                  doc="timbre axis x across the calibrated square (glides by glide_ms)"),
        ParamSpec("latent_y", 0.0, 1.0, 0.5, "", smooth_ms=0.0,
                  doc="timbre axis y across the calibrated square (glides by glide_ms)"),
        ParamSpec("gain_db", -60.0, 12.0, -6.0, "dB", doc="output gain before the limiter"),
        ParamSpec("glide_ms", 0.0, 5000.0, 40.0, "ms", smooth_ms=0.0,
                  doc="latent smoothing time constant"),
        ParamSpec("attack_ms", 0.5, 5000.0, 8.0, "ms", warp="exp", smooth_ms=0.0,
                  doc="envelope attack"),
        ParamSpec("decay_ms", 1.0, 5000.0, 120.0, "ms", warp="exp", smooth_ms=0.0,
                  doc="envelope decay"),
        ParamSpec("sustain", 0.0, 1.0, 0.8, "", smooth_ms=0.0, doc="envelope sustain level"),
        ParamSpec("release_ms", 1.0, 10000.0, 250.0, "ms", warp="exp", smooth_ms=0.0,
                  doc="envelope release"),
        ParamSpec("bend_range_st", 0.0, 24.0, 2.0, "semitones", smooth_ms=0.0,
                  doc="pitch bend range (full bend = this many semitones)"),
        ParamSpec("noise_db", -60.0, 12.0, 0.0, "dB",
                  doc="level of the noise part relative to the model"),
        ParamSpec("harmonic_db", -60.0, 12.0, 0.0, "dB",
                  doc="level of the harmonic part relative to the model"),
        ParamSpec("drone_hz", 20.0, 4000.0, 220.0, "Hz", warp="exp",
                  doc="pitch of the gate/drone voice (/inst/gate)"),
        ParamSpec("voices", 1, 16, 16, "voices", integer=True, smooth_ms=0.0,
                  doc="polyphony limit (oldest voice is stolen)"),
    ]
}


def get(name: str, where: str = "") -> ParamSpec:
    try:
        return PARAMS[name]
    except KeyError:
        raise ParamError(describe(f"{where}{': ' if where else ''}parameter name", name,
                                  ", ".join(sorted(PARAMS)), "use one of the listed names"))\
            from None


def defaults() -> dict[str, float]:
    return {n: p.default for n, p in PARAMS.items()}


def markdown_table() -> str:
    """The README's parameter table, generated from :data:`PARAMS`."""
    rows = ["| name | range | default | units | meaning |", "|---|---|---|---|---|"]
    for p in PARAMS.values():
        rows.append(f"| `{p.name}` | {p.min:g} … {p.max:g}{' (exp)' if p.warp == 'exp' else ''}"
                    f" | {p.default:g} | {p.units} | {p.doc} |")
    return "\n".join(rows)
