"""Offline rendering: a score through the same Engine.schedule/process code as live play."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from instrument.engine.engine import Engine
from instrument.engine.score import Event, load
from instrument.errors import ConfigError, describe


def render(decoder, events: list[Event], sample_rate: int, block_frames: int = 512,
           tail_s: float | None = None, seed: int = 0) -> np.ndarray:
    """Render ``events`` to (n,) float32; ``tail_s`` after the last event (default: release
    time + 0.5 s, taken from the parameters the score leaves)."""
    if block_frames < 1:
        raise ConfigError(describe("render block_frames", block_frames, ">= 1",
                                   "pass a positive block size"))
    eng = Engine(decoder, sample_rate, seed=seed, block_hint=block_frames)
    end_s = 0.0
    release_ms = eng.status()["params"]["release_ms"]
    for ev in events:
        eng.schedule(ev.cmd, int(round(ev.time_s * sample_rate)))
        end_s = max(end_s, ev.time_s)
        if getattr(ev.cmd, "name", None) == "release_ms":
            release_ms = ev.cmd.value
    if tail_s is None:
        tail_s = release_ms / 1000.0 + 0.5
    total = int(math.ceil((end_s + tail_s) * sample_rate))
    out = np.empty(total, np.float32)
    for pos in range(0, total, block_frames):
        n = min(block_frames, total - pos)
        out[pos:pos + n] = eng.process(n)
    return out


def render_file(model, score_path: str | Path, out_wav: str | Path,
                sample_rate: int | None = None, block_frames: int = 512) -> dict:
    """Render a score file to a 24-bit PCM WAV (headroom is the limiter's; 24 bits keep
    ~144 dB of range). ``model`` is a Decoder or a model name/folder. Returns a summary."""
    import soundfile as sf

    from instrument.model.modelfile import Decoder

    decoder = model if hasattr(model, "decode_log") else Decoder(model)
    rate = int(sample_rate or decoder.sample_rate)
    events = load(score_path)
    audio = render(decoder, events, rate, block_frames)
    sf.write(str(out_wav), audio, rate, subtype="PCM_24")
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    return {"path": str(out_wav), "seconds": len(audio) / rate, "sample_rate": rate,
            "events": len(events), "peak_dbfs": 20 * math.log10(max(peak, 1e-10))}
