"""CPU spikes: the cost of every engine hop in a busy "stage" scenario, worst case included.

A glitch on stage is one hop that takes longer than its own duration, so the figure that
matters is the maximum, not the mean. Scenario at 48 kHz, hop 256 (5.33 ms budget): 16-note
chords changing every 0.25 s with voice stealing (polyphony 12), the latent sweeping all the
time, pitch bends, parameter changes, and a decoder swap every 2 s. Baseline (same run): the
same engine holding one steady note, whose per-hop cost is the floor.

Run: ``python bench/bench_spikes.py [MODEL]`` (default: models/default).
"""

from __future__ import annotations

import gc
import math
import sys
import time

import numpy as np

from instrument.control.commands import parse
from instrument.engine.engine import Engine
from instrument.model.modelfile import Decoder

SR = 48000
SECONDS = 20.0


def run(dec: Decoder, busy: bool) -> np.ndarray:
    eng = Engine(dec, SR)
    hop = eng.hop_samples
    n_hops = int(SECONDS * SR / hop)
    costs = np.empty(n_hops)
    eng.send(parse("param voices 12"))
    eng.send(parse("param glide_ms 20"))
    eng.send(parse("note 60 0.8"))
    rng = np.random.default_rng(0)
    other = Decoder(dec.folder)
    chord: list[int] = []
    gc.collect()
    for i in range(n_hops):
        t = i * hop / SR
        if busy:
            eng.send(parse(f"latent {0.5 + 0.45 * math.sin(t * 1.3):.4f} "
                           f"{0.5 + 0.45 * math.cos(t * 0.7):.4f}"))
            if i % int(0.25 * SR / hop) == 0:
                for n in chord:
                    eng.send(parse(f"off {n}"))
                chord = [int(v) for v in rng.integers(36, 84, size=16)]
                for n in chord:
                    eng.send(parse(f"note {n} {rng.uniform(0.3, 1.0):.2f}"))
            if i % 50 == 0:
                eng.send(parse(f"bend {math.sin(t):.3f}"))
                eng.send(parse(f"param noise_db {-12 + 6 * math.sin(t):.2f}"))
            if i % int(2 * SR / hop) == 0:
                eng.swap_decoder(other)
        t0 = time.perf_counter()
        eng.process(hop)
        costs[i] = time.perf_counter() - t0
    return costs * 1e3


def main() -> None:
    dec = Decoder(sys.argv[1] if len(sys.argv) > 1 else "default")
    budget_ms = 1000.0 * 256 / SR
    base = run(dec, busy=False)
    busy = run(dec, busy=True)
    print(f"model {dec.name}, {SR} Hz, hop 256 = {budget_ms:.2f} ms budget, {SECONDS:g} s each")
    for name, c in (("baseline: one steady note", base), ("stage: 16-note chords, steals, "
                                                           "sweeps, bends, swaps", busy)):
        p50, p99, p999, mx = np.percentile(c, [50, 99, 99.9, 100])
        print(f"  {name:52s} median {p50:.3f} ms  p99 {p99:.3f}  p99.9 {p999:.3f}  "
              f"max {mx:.3f} ms  ({100 * mx / budget_ms:.0f}% of the budget; "
              f"hops over budget: {int(np.sum(c > budget_ms))})")
    print(f"  stage / baseline: median {np.median(busy) / np.median(base):.1f}x, "
          f"max {busy.max() / base.max():.1f}x")


if __name__ == "__main__":
    main()
