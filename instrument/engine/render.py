"""Offline rendering: a score through the same Engine.schedule/process code as live play.

:func:`render_blocks` yields the output block by block, so :func:`write_file` streams a
long score to disk without holding it in memory (an hour at 48 kHz is 690 MB of float32).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from instrument.engine.engine import Engine
from instrument.engine.score import MAX_TIME_S, Event, load
from instrument.errors import ConfigError, describe
from instrument.files import check_out_file

MAX_BLOCK_FRAMES = 16384
MAX_TAIL_S = 60.0
# output suffix -> (libsndfile format, subtype); 24-bit PCM keeps ~144 dB of range
FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_24"), ".flac": ("FLAC", "PCM_24"), ".aiff": ("AIFF", "PCM_24"),
    ".aif": ("AIFF", "PCM_24"), ".ogg": ("OGG", "VORBIS"),
}


def check_output(path: str | Path, what: str = "render -o") -> tuple[str, str]:
    """The (format, subtype) for ``path``, or a ConfigError if its suffix or folder is wrong."""
    p = check_out_file(path, what, tuple(FORMATS))
    return FORMATS[p.suffix.lower()]


def _schedule(decoder, events: list[Event], sample_rate: int, block_frames: int,
              tail_s: float | None, seed: int) -> tuple[Engine, int]:
    if not isinstance(block_frames, int) or not 1 <= block_frames <= MAX_BLOCK_FRAMES:
        raise ConfigError(describe("render block_frames", block_frames,
                                   f"1..{MAX_BLOCK_FRAMES}", "pass a block size such as 512"))
    eng = Engine(decoder, sample_rate, seed=seed, block_hint=block_frames)
    end_s = 0.0
    release_ms = eng.status()["params"]["release_ms"]
    for ev in events:
        if not (math.isfinite(ev.time_s) and 0.0 <= ev.time_s <= MAX_TIME_S):
            raise ConfigError(describe(f"render: event time ({ev.cmd})", ev.time_s,
                                       f"0..{MAX_TIME_S:g} s", "shorten the score"))
        eng.schedule(ev.cmd, int(round(ev.time_s * sample_rate)))
        end_s = max(end_s, ev.time_s)
        if getattr(ev.cmd, "name", None) == "release_ms":
            release_ms = ev.cmd.value
    if tail_s is None:
        tail_s = release_ms / 1000.0 + 0.5
    if not (math.isfinite(tail_s) and 0.0 <= tail_s <= MAX_TAIL_S):
        raise ConfigError(describe("render tail_s", tail_s, f"0..{MAX_TAIL_S:g} s",
                                   "pass a shorter tail"))
    return eng, int(math.ceil((end_s + tail_s) * sample_rate))


def render_blocks(decoder, events: list[Event], sample_rate: int, block_frames: int = 512,
                  tail_s: float | None = None, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield the rendering of ``events`` as float32 blocks of ``block_frames`` (the last one
    shorter). Validation happens at the call, before the first block."""
    eng, total = _schedule(decoder, events, sample_rate, block_frames, tail_s, seed)

    def blocks() -> Iterator[np.ndarray]:
        for pos in range(0, total, block_frames):
            yield eng.process(min(block_frames, total - pos))

    return blocks()


def render(decoder, events: list[Event], sample_rate: int, block_frames: int = 512,
           tail_s: float | None = None, seed: int = 0) -> np.ndarray:
    """Render ``events`` to (n,) float32; ``tail_s`` after the last event (default: release
    time + 0.5 s, taken from the parameters the score leaves)."""
    eng, total = _schedule(decoder, events, sample_rate, block_frames, tail_s, seed)
    out = np.empty(total, np.float32)
    for pos in range(0, total, block_frames):
        n = min(block_frames, total - pos)
        out[pos:pos + n] = eng.process(n)
    return out


def write_file(decoder, events: list[Event], out_path: str | Path, sample_rate: int,
               block_frames: int = 512, tail_s: float | None = None, seed: int = 0) -> dict:
    """Render ``events`` straight to a sound file, block by block (format from the suffix,
    see :data:`FORMATS`). Returns a summary (path, seconds, sample_rate, events, peak_dbfs)."""
    import soundfile as sf

    fmt, subtype = check_output(out_path)
    blocks = render_blocks(decoder, events, sample_rate, block_frames, tail_s, seed)
    frames, peak, opened = 0, 0.0, False
    try:
        with sf.SoundFile(str(out_path), "w", samplerate=sample_rate, channels=1, format=fmt,
                          subtype=subtype) as fh:
            opened = True
            for block in blocks:
                fh.write(block)
                frames += len(block)
                if len(block):
                    peak = max(peak, float(np.max(np.abs(block))))
    except (OSError, RuntimeError) as e:  # LibsndfileError is a RuntimeError
        if opened:  # a half-written file is no use to anyone
            Path(out_path).unlink(missing_ok=True)
        raise ConfigError(f"render -o {str(out_path)!r}: cannot be written ({e}); check the "
                          "folder's permissions and free space, or write somewhere else")\
            from None
    return {"path": str(out_path), "seconds": frames / sample_rate, "sample_rate": sample_rate,
            "events": len(events), "peak_dbfs": 20 * math.log10(max(peak, 1e-10))}


def render_file(model, score_path: str | Path, out_wav: str | Path,
                sample_rate: int | None = None, block_frames: int = 512) -> dict:
    """Render a score file to a 24-bit sound file (headroom is the limiter's; 24 bits keep
    ~144 dB of range). ``model`` is a Decoder or a model name/folder. Returns a summary."""
    from instrument.model.modelfile import Decoder

    decoder = model if hasattr(model, "decode_log") else Decoder(model)
    rate = int(sample_rate or decoder.sample_rate)
    return write_file(decoder, load(score_path), out_wav, rate, block_frames)
