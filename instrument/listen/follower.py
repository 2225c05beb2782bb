"""Audio in -> knob coordinates out, hop by hop (the compressor half, streaming).

:class:`Follower` runs the streaming analysis (``corpus.features.StreamAnalyzer``) and the
cut encoder on every completed hop. It is pure computation (no threads, no I/O), so the
offline encoder (``listen/encode.py``) and the live listener (``listen/live.py``) share it,
and the same input gives the same coordinates whatever the block sizes.

Rules, in order, for each hop:

1. the input is sanitised first: NaN/inf samples become 0 (counted in
   ``nonfinite_samples``), samples beyond full scale are clamped to +-1 (counted in
   ``clipped_samples``);
2. a frame quieter than ``silence_db`` holds the last position and reports ``silent``;
3. a pitched model holds the last position on unvoiced frames (``voiced`` False);
4. a frame whose features or encoding are not finite holds too (counted in ``bad_frames``);
5. otherwise the encoder's position is taken, optionally smoothed (one pole, ``smoothing_ms``).

Before the first accepted frame the position is the centre (0.5, 0.5), so the output never
starts in a corner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instrument.errors import ConfigError, describe
from instrument.model.modelfile import Encoder

#: soxr quality for input resampling; "LQ" keeps the streaming delay ~0.5 ms (MQ/HQ buffer
#: up to ~1000 samples, i.e. 20 ms, which would eat the latency budget).
RESAMPLE_QUALITY = "LQ"


@dataclass(frozen=True)
class Coord:
    """One hop of the trajectory. ``time_s`` is the frame centre on the input's timeline."""

    time_s: float
    x: float
    y: float
    loudness_db: float
    voiced: bool
    silent: bool
    f0_hz: float = 0.0  # the tracked pitch of a voiced frame (0 when unvoiced / unpitched)

    def as_dict(self) -> dict:
        return {"time_s": self.time_s, "x": self.x, "y": self.y,
                "loudness_db": self.loudness_db, "voiced": self.voiced, "silent": self.silent,
                "f0_hz": self.f0_hz}


def _stream_analyzer(sample_rate: int, mode: str, hop_samples: int):
    from instrument.corpus.features import StreamAnalyzer

    return StreamAnalyzer(sample_rate, mode, hop_samples)


def load_encoder(encoder: Encoder | str | Path) -> Encoder:
    """An :class:`Encoder`, or a model name / folder to load one from."""
    return encoder if isinstance(encoder, Encoder) else Encoder(encoder)


class Follower:
    """Streaming encoder: ``process(block)`` returns one :class:`Coord` per completed hop.

    ``block`` is float samples at ``sample_rate``: shape (n,) mono or (n, channels), mixed
    to mono. Any block size, including 0 and 1. Input at another rate than the model's is
    resampled with a soxr stream (chunking does not change its output).
    """

    def __init__(self, encoder: Encoder | str | Path, sample_rate: int,
                 smoothing_ms: float = 0.0, silence_db: float = -70.0):
        self.encoder = load_encoder(encoder)
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) \
                or not 8000 <= int(sample_rate) <= 384000:
            raise ConfigError(describe("listen: input sample rate", sample_rate,
                                       "an integer 8000..384000 Hz",
                                       "open the input at a standard rate (44100, 48000)"))
        if not (isinstance(smoothing_ms, int | float) and math.isfinite(smoothing_ms)
                and 0.0 <= smoothing_ms <= 10000.0):
            raise ConfigError(describe("listen: smoothing_ms", smoothing_ms, "0..10000 ms",
                                       "pass 0 for no smoothing"))
        if not (isinstance(silence_db, int | float) and math.isfinite(silence_db)
                and -200.0 <= silence_db <= 0.0):
            raise ConfigError(describe("listen: silence_db", silence_db, "-200..0 dBFS",
                                       "pass e.g. -70"))
        self.sample_rate = int(sample_rate)
        self.model_rate = self.encoder.sample_rate
        self.hop_samples = self.encoder.hop_samples
        self.pitched = self.encoder.pitched
        self.smoothing_ms = float(smoothing_ms)
        self.silence_db = float(silence_db)
        hop_s = self.hop_samples / self.model_rate
        self._alpha = 1.0 if self.smoothing_ms <= 0 else \
            1.0 - math.exp(-hop_s / (self.smoothing_ms / 1000.0))
        self._analyzer = _stream_analyzer(self.model_rate, self.encoder.mode, self.hop_samples)
        self._resampler = None
        if self.sample_rate != self.model_rate:
            import soxr

            self._resampler = soxr.ResampleStream(self.sample_rate, self.model_rate, 1,
                                                  dtype="float32", quality=RESAMPLE_QUALITY)
        self.reset_counts()
        self._xy = np.array([0.5, 0.5], np.float64)
        self._frame_index = 0

    # -- properties ---------------------------------------------------------------------
    @property
    def analysis_latency_samples(self) -> int:
        """At the model rate: samples after a frame's centre before that frame is complete."""
        a = self._analyzer
        lat = getattr(a, "latency_samples", None)
        if lat is None:
            window = int(self.encoder.meta.get("window_samples", 2048))
            tracker = getattr(a, "tracker", None)
            delay = int(getattr(tracker, "delay_samples", 0) or 0)
            lat = max(window // 2, delay)
        return max(int(lat), int(self.encoder.latency_samples))

    @property
    def latency_samples(self) -> int:
        """At the input rate: analysis window + tracker delay (+ resampler delay)."""
        lat = self.analysis_latency_samples * self.sample_rate / self.model_rate
        if self._resampler is not None:
            lat += float(self._resampler.delay()) * self.sample_rate / self.model_rate
        return int(math.ceil(lat))

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sample_rate

    @property
    def position(self) -> tuple[float, float]:
        return float(self._xy[0]), float(self._xy[1])

    def reset_counts(self) -> None:
        self.nonfinite_samples = 0
        self.clipped_samples = 0
        self.bad_frames = 0
        self.frames = 0

    def counts(self) -> dict:
        return {"frames": self.frames, "nonfinite_samples": self.nonfinite_samples,
                "clipped_samples": self.clipped_samples, "bad_frames": self.bad_frames}

    # -- processing ---------------------------------------------------------------------
    def _sanitise(self, block: np.ndarray) -> np.ndarray:
        a = np.asarray(block)
        if a.ndim not in (1, 2):
            raise ConfigError(describe("listen: input block shape", a.shape,
                                       "(frames,) or (frames, channels)",
                                       "pass mono or interleaved-by-row audio"))
        a = a.astype(np.float64, copy=False)
        bad = ~np.isfinite(a)
        if bad.any():
            self.nonfinite_samples += int(bad.sum())
            a = np.where(bad, 0.0, a)
        if a.ndim == 2:
            a = a.mean(axis=1) if a.shape[1] > 0 else np.zeros(a.shape[0])
        over = np.abs(a) > 1.0
        if over.any():
            self.clipped_samples += int(over.sum())
            a = np.clip(a, -1.0, 1.0)
        return a.astype(np.float32)

    def process(self, block: np.ndarray) -> list[Coord]:
        """Feed samples; return a Coord for each hop completed by them (maybe none)."""
        x = self._sanitise(block)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        return self._run(x) if len(x) else []

    def flush(self) -> list[Coord]:
        """End of input: push zeros through so the last frames complete (offline use)."""
        out: list[Coord] = []
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if len(tail):
                out += self._run(tail)
        pad = np.zeros(self.analysis_latency_samples + self.hop_samples, np.float32)
        out += self._run(pad)
        return out

    def _run(self, x: np.ndarray) -> list[Coord]:
        fr = self._analyzer.process(x)
        n = len(fr.loudness_db)
        if n == 0:
            return []
        enc = self.encoder
        feats = np.asarray(fr.features, np.float32)
        f0 = np.asarray(fr.f0_hz, np.float32)
        voiced = np.asarray(fr.voiced, bool)
        loud = np.asarray(fr.loudness_db, np.float32)
        out: list[Coord] = []
        for i in range(n):
            t = self._frame_index * self.hop_samples / self.model_rate
            self._frame_index += 1
            self.frames += 1
            ld = float(loud[i]) if math.isfinite(float(loud[i])) else -200.0
            silent = ld < self.silence_db
            v = bool(voiced[i]) and not silent
            if not silent and (v or not self.pitched):
                row = feats[i:i + 1]
                # One row at a time: the result must not depend on how hops were batched.
                if np.all(np.isfinite(row)):
                    xy = enc.encode(row, f0[i:i + 1] if self.pitched else None)[0]
                else:
                    xy = np.array([np.nan, np.nan])
                if np.all(np.isfinite(xy)):
                    self._xy += self._alpha * (np.asarray(xy, np.float64) - self._xy)
                else:
                    self.bad_frames += 1
            f0_i = float(f0[i]) if v and math.isfinite(float(f0[i])) else 0.0
            out.append(Coord(t, float(self._xy[0]), float(self._xy[1]), ld, v, bool(silent),
                             f0_i))
        return out

    def encode_all(self, audio: np.ndarray, block_frames: int | None = None) -> list[Coord]:
        """Whole signal in one call (or in ``block_frames`` pieces), flushed at the end."""
        out: list[Coord] = []
        if block_frames is None:
            out += self.process(audio)
        else:
            if block_frames < 1:
                raise ConfigError(describe("encode: block_frames", block_frames,
                                           "an integer >= 1, or None for one block",
                                           "pass e.g. 441"))
            for i in range(0, len(audio), block_frames):
                out += self.process(audio[i:i + block_frames])
        return out + self.flush()
