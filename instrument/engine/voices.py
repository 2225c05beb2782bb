"""Voice allocation and ADSR envelopes, advanced once per hop.

Envelope levels are computed at hop ends; the synthesizer crossfades linearly between
consecutive hops, so the envelope is piecewise linear per sample (no steps).
``decay_ms`` and ``release_ms`` are the times to fall 60 dB (towards sustain for decay).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ATTACK, DECAY, RELEASE, FADE = 0, 1, 2, 3
GATE_KEY = -1.0  # the drone voice's key (notes are 0..127)
RELEASE_END_LEVEL = 1e-3  # -60 dB: a releasing voice ends here (its last hop fades to 0)


@dataclass
class Voice:
    slot: int
    key: float  # MIDI note, or GATE_KEY for the drone
    velocity: float
    started: int  # hop counter at note on (for "steal the oldest")
    stage: int = ATTACK
    level: float = 0.0  # envelope level at the end of the last hop
    sounded: bool = False  # has rendered at least one hop
    done: bool = False  # reached 0 at the end of the last hop: free the slot

    @property
    def held(self) -> bool:
        return self.stage in (ATTACK, DECAY)


def advance(v: Voice, hop_ms: float, attack_ms: float, decay_ms: float, sustain: float,
            release_ms: float) -> float:
    """Move ``v``'s envelope one hop on; return the level at the hop's end."""
    if v.stage == ATTACK:
        v.level = min(1.0, v.level + hop_ms / attack_ms)
        if v.level >= 1.0:
            v.stage = DECAY
    elif v.stage == DECAY:
        v.level = sustain + (v.level - sustain) * math.exp(-hop_ms * LN_1000 / decay_ms)
        if abs(v.level - sustain) < 1e-6:
            v.level = sustain  # settled: exactly steady, so the synth can skip work
        if sustain <= 0.0 and v.level < RELEASE_END_LEVEL:
            v.level, v.done = 0.0, True
    elif v.stage == RELEASE:
        v.level *= math.exp(-hop_ms * LN_1000 / release_ms)
        if v.level < RELEASE_END_LEVEL:
            v.level, v.done = 0.0, True
    else:  # FADE: a stolen voice goes to 0 across one hop
        v.level, v.done = 0.0, True
    return v.level


LN_1000 = math.log(1000.0)
