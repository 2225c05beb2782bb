"""Engine speed: one voice's realtime factor and 16 voices' share of a core, at 128-sample
blocks, against a naive per-harmonic np.sin oscillator bank measured in the same run.

Cases: a steady held note; the latent moved every 200 blocks (gliding, as when played);
the latent moved every hop (a new decoder frame and wavetable each hop: the worst case).

Run: /work/venv/bin/python bench/bench_engine.py [MODEL]   (default: a random-weight model)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from instrument.control.commands import SetLatent, parse  # noqa: E402
from instrument.engine.engine import Engine  # noqa: E402
from instrument.model.modelfile import Decoder  # noqa: E402

SR = 48000
BLOCK = 128
SECONDS = 4.0
CHUNKS = 10  # timed separately; the best chunk x CHUNKS is reported (the machine is shared)


def _decoder(arg: str | None) -> Decoder:
    if arg:
        return Decoder(arg)
    from conftest import make_random_model

    return Decoder(make_random_model(Path(tempfile.mkdtemp()) / "m"))


def engine_seconds(decoder: Decoder, n_voices: int, move_every_blocks: int) -> float:
    """Seconds to render SECONDS of audio; the latent moves every ``move_every_blocks``
    blocks (0: never)."""
    eng = Engine(decoder, SR)
    for k in range(n_voices):
        eng.send(parse(f"note {40 + 3 * k} 0.8"))
    eng.send(parse("param glide_ms 300"))
    eng.process(SR // 2)  # warm up; the envelope settles to sustain
    blocks = int(SECONDS * SR / BLOCK)
    every = move_every_blocks
    moves = [SetLatent(0.3 + 0.4 * (j % 50) / 50, 0.5) for j in range(50)]
    best, t0 = float("inf"), time.perf_counter()
    for i in range(blocks):
        if i % (blocks // CHUNKS) == 0 and i:
            t1 = time.perf_counter()
            best, t0 = min(best, t1 - t0), t1
        if every == 200 and i % 200 == 0:  # keep the timbre moving, as when played
            eng.send(parse(f"latent {(i // 200) % 2} 0.5"))
        elif every and every != 200 and i % every == 0:
            eng.send(moves[(i // every) % 50])
        eng.process(BLOCK)
    return CHUNKS * best


def naive_seconds(n_voices: int, n_harmonics: int = 64) -> float:
    """Baseline: per-block np.sin for every harmonic of every voice (no decoder, no noise)."""
    f0 = 440.0 * 2.0 ** ((np.arange(n_voices)[:, None] * 3 - 29) / 12.0)
    k = np.arange(1, n_harmonics + 1)[None, :]
    freqs = (f0 * k)[:, :, None]  # (V, H, 1)
    amps = (1.0 / k)[:, :, None] * (freqs < SR / 2)
    n = np.arange(BLOCK)[None, None, :]
    phase = np.zeros((n_voices, n_harmonics, 1))
    blocks = int(SECONDS * SR / BLOCK)
    best, t0 = float("inf"), time.perf_counter()
    for i in range(blocks):
        if i % (blocks // CHUNKS) == 0 and i:
            t1 = time.perf_counter()
            best, t0 = min(best, t1 - t0), t1
        ph = phase + 2 * np.pi * freqs * n / SR
        (amps * np.sin(ph)).sum(axis=(0, 1))
        phase = (phase + 2 * np.pi * freqs * BLOCK / SR) % (2 * np.pi)
    return CHUNKS * best


def main() -> None:
    dec = _decoder(sys.argv[1] if len(sys.argv) > 1 else None)
    print(f"model {dec.name}, output {SR} Hz, blocks of {BLOCK}, {SECONDS:g} s of audio each")
    hop_s = 256 / SR
    names = {0: "steady held  ", 200: "latent moving", 2: "latent/hop   "}
    for v, every in ((1, 0), (1, 200), (1, 2), (16, 0), (16, 200), (16, 2)):
        e, b = engine_seconds(dec, v, every), naive_seconds(v)
        what = names[every]
        print(f"{v:2d} voice(s), {what}: engine {SECONDS / e:7.1f}x realtime "
              f"({1e6 * hop_s * e / SECONDS:6.1f} us/256-sample hop, "
              f"{100 * e / SECONDS:5.1f}% of a core) | naive np.sin bank "
              f"{SECONDS / b:7.1f}x ({100 * b / SECONDS:5.1f}%)"
              f" | engine is {b / e:5.2f}x the baseline's speed")


if __name__ == "__main__":
    main()
