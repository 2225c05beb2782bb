"""Causal YIN pitch tracker, vectorized over frames; offline analysis and live input share it.

Frame t is centred on sample ``t * hop_samples`` (samples before the first are zeros). For
each frame the YIN difference function over lags ``tau_min..tau_max`` is computed on a
segment of ``window + tau_max + 2`` samples around the centre, normalised (cumulative mean
normalised difference, CMND), thresholded (first dip below ``threshold``, then its local
minimum) and refined by parabolic interpolation of the raw difference. Frame t is emitted
once sample ``t * hop_samples + delay_samples - 1`` has arrived.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from instrument.errors import ConfigError, describe

CHUNK_FRAMES = 64           # frames per vectorized batch (cache-sized: faster than more)
SILENCE_DB = -60.0          # frames quieter than this (segment RMS, dBFS) are unvoiced


@functools.lru_cache(maxsize=64)
def fast_fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast for pocketfft)."""
    best = 1 << max(0, math.ceil(math.log2(max(n, 1))))
    f5 = 1
    while f5 < best:
        f35 = f5
        while f35 < best:
            m = f35
            while m < n:
                m *= 2
            best = min(best, m)
            f35 *= 3
        f5 *= 5
    return best


def frame_view(buf: np.ndarray, first: int, count: int, hop: int, width: int) -> np.ndarray:
    """Read-only (count, width) view of 1-D ``buf``: row i is ``buf[first + i*hop:][:width]``."""
    if first < 0 or count <= 0 or first + (count - 1) * hop + width > len(buf):
        raise IndexError(f"frames {first}+{count}x{hop} (width {width}) outside {len(buf)}")
    item = buf.itemsize
    view = np.ndarray((count, width), buf.dtype, buf, first * item, (hop * item, item))
    view.flags.writeable = False
    return view


def yin_frames(seg: np.ndarray, sample_rate: int, window: int, tau_min: int, tau_max: int,
               threshold: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YIN on a batch of segments (B, >= window + tau_max + 2).

    Returns ``(f0_hz, aperiodicity, rms_db)``: f0 of the chosen dip (threshold rule, or the
    global minimum of the CMND when ``threshold`` is None / nothing dips below it, then
    aperiodicity is reported as-is), the CMND value there (0 = perfectly periodic)."""
    x = np.asarray(seg, dtype=np.float64)
    n_b, span = x.shape
    hi = tau_max + 1                                     # one lag beyond for interpolation
    n_fft = fast_fft_size(span)
    head = np.fft.rfft(x[:, :window], n_fft)
    np.conjugate(head, out=head)
    head *= np.fft.rfft(x, n_fft)
    r = np.fft.irfft(head, n_fft)[:, :hi + 1]
    c = np.empty((n_b, span + 1))                        # c[:, k] = energy of x[:, :k]
    c[:, 0] = 0.0
    np.cumsum(x * x, axis=1, out=c[:, 1:])
    e0 = c[:, window:window + 1]
    d = c[:, window:window + hi + 1] - c[:, :hi + 1]     # energy of x[tau:tau + window]
    d += e0
    d -= 2.0 * r
    np.maximum(d, 0.0, out=d)
    d[:, 0] = 0.0
    csum = np.cumsum(d[:, 1:tau_max + 1], axis=1)        # csum[:, tau - 1] = sum d[1..tau]
    search = d[:, tau_min:tau_max + 1] * _lags(tau_min, tau_max)
    search /= np.maximum(csum[:, tau_min - 1:], 1e-12 * (e0 + 1e-30))   # the CMND
    rows = np.arange(n_b)
    best = np.argmin(search, axis=1)
    if threshold is not None:
        below = search < threshold
        any_below = below.any(axis=1)
        if any_below.any():
            first = np.argmax(below, axis=1)
            # walk from the first dip to its local minimum
            rising = np.empty(search.shape, bool)
            np.greater_equal(search[:, 1:], search[:, :-1], out=rising[:, :-1])
            rising[:, -1] = True
            rising &= _lags(0, search.shape[1] - 1)[None, :] >= first[:, None]
            best = np.where(any_below, np.argmax(rising, axis=1), best)
    tau = best + tau_min
    aper = search[rows, best]
    # parabolic interpolation of the raw difference around tau
    tl, tr = np.maximum(tau - 1, 1), np.minimum(tau + 1, hi)
    a, b, cc = d[rows, tl], d[rows, tau], d[rows, tr]
    den = a - 2.0 * b + cc
    shift = np.zeros(n_b)
    np.divide(a - cc, den, out=shift, where=den > 1e-20 * (e0[:, 0] + 1e-30))
    shift *= 0.5
    np.maximum(shift, -0.5, out=shift)
    np.minimum(shift, 0.5, out=shift)
    f0 = sample_rate / (tau + shift)
    ms = c[:, -1] / span
    rms_db = 10.0 * np.log10(np.maximum(ms, 1e-12))
    return f0, aper, rms_db


@functools.lru_cache(maxsize=32)
def _lags(first: int, last: int) -> np.ndarray:
    """``arange(first, last + 1)`` as float64, cached (read-only)."""
    lags = np.arange(first, last + 1, dtype=np.float64)
    lags.flags.writeable = False
    return lags


class PitchTracker:
    """Causal YIN: ``process(block)`` -> one ``(f0_hz, voiced)`` per newly completed frame.

    Frame t is centred on sample ``t * hop_samples`` and is returned once sample
    ``t * hop_samples + delay_samples - 1`` has been given, so after the first
    ``delay_samples`` samples there is one result per hop. Unvoiced frames give f0 0.0.
    With ``known_f0_hz`` the lag search is limited to +-``known_range_cents`` around it and
    every frame louder than ``silence_db`` is voiced (f0 refined, or the known value when the
    frame has no clear period). Results do not depend on the block sizes.
    """

    def __init__(self, sample_rate: int, hop_samples: int = 256, fmin_hz: float = 40.0,
                 fmax_hz: float = 2000.0, threshold: float = 0.15,
                 silence_db: float = SILENCE_DB, known_f0_hz: float | None = None,
                 known_range_cents: float = 100.0) -> None:
        if sample_rate <= 0 or hop_samples <= 0:
            raise ConfigError(describe("PitchTracker sample_rate/hop_samples",
                                       (sample_rate, hop_samples), "> 0", "pass positive ints"))
        if not (0 < fmin_hz < fmax_hz < sample_rate / 4):
            raise ConfigError(describe("PitchTracker fmin_hz..fmax_hz", (fmin_hz, fmax_hz),
                                       f"0 < fmin < fmax < {sample_rate / 4:g} Hz",
                                       "choose a pitch range below a quarter of the rate"))
        self.sample_rate = int(sample_rate)
        self.hop_samples = int(hop_samples)
        self.threshold = float(threshold)
        self.silence_db = float(silence_db)
        self.known_f0_hz = known_f0_hz
        self.window = int(math.ceil(sample_rate / fmin_hz))
        if known_f0_hz is not None:
            if not (0 < known_f0_hz < sample_rate / 4):
                raise ConfigError(describe("known_f0_hz", known_f0_hz,
                                           f"0 < f0 < {sample_rate / 4:g} Hz",
                                           "check the note in the file name"))
            ratio = 2.0 ** (known_range_cents / 1200.0)
            self.tau_min = max(2, int(math.floor(sample_rate / (known_f0_hz * ratio))))
            self.tau_max = int(math.ceil(sample_rate / (known_f0_hz / ratio)))
            self.window = max(self.window, self.tau_max)
        else:
            self.tau_min = max(2, int(math.floor(sample_rate / fmax_hz)))
            self.tau_max = int(math.ceil(sample_rate / fmin_hz))
        self.span = self.window + self.tau_max + 2
        self._before = self.span // 2                  # samples needed before the centre
        self.delay_samples = self.span - self._before  # samples needed from the centre on
        self.reset()

    def reset(self) -> None:
        """Forget all input (as if newly made)."""
        self._buf = np.zeros(self._before, np.float32)
        self._buf_start = -self._before                # absolute index of _buf[0]
        self._n_in = 0
        self._next = 0

    def process_detailed(self, block: np.ndarray) -> tuple[np.ndarray, ...]:
        """Like :meth:`process`, as arrays ``(f0_hz, voiced, aperiodicity, rms_db)``."""
        x = np.asarray(block, dtype=np.float32).reshape(-1)
        if not np.isfinite(x).all():
            x = np.where(np.isfinite(x), x, 0.0).astype(np.float32)
        self._buf = np.concatenate([self._buf, x])
        self._n_in += len(x)
        n_ready = (self._n_in - self.delay_samples) // self.hop_samples + 1
        outs = [self._frames(t0, min(CHUNK_FRAMES, n_ready - t0))
                for t0 in range(self._next, max(self._next, n_ready), CHUNK_FRAMES)]
        if n_ready > self._next:
            self._next = n_ready
        keep_from = self._next * self.hop_samples - self._before - self._buf_start
        if keep_from > 0:
            self._buf = self._buf[keep_from:].copy()
            self._buf_start += keep_from
        if not outs:
            e = np.zeros(0)
            return e, np.zeros(0, bool), e, e
        if len(outs) == 1:
            return outs[0]
        return tuple(np.concatenate(parts) for parts in zip(*outs, strict=True))

    def process(self, block: np.ndarray) -> list[tuple[float, bool]]:
        """Feed samples; get ``(f0_hz, voiced)`` for each frame completed by them."""
        f0, voiced, _, _ = self.process_detailed(block)
        return [(float(f), bool(v)) for f, v in zip(f0, voiced, strict=True)]

    def _frames(self, t0: int, count: int) -> tuple[np.ndarray, ...]:
        """Frames ``t0 .. t0 + count - 1`` from the buffer."""
        seg = frame_view(self._buf, t0 * self.hop_samples - self._before - self._buf_start,
                         count, self.hop_samples, self.span)
        known = self.known_f0_hz is not None
        f0, aper, rms_db = yin_frames(seg, self.sample_rate, self.window, self.tau_min,
                                      self.tau_max, None if known else self.threshold)
        loud = rms_db > self.silence_db
        if known:
            f0 = np.where(aper < 0.5, f0, self.known_f0_hz)
            voiced = loud
        else:
            voiced = loud & (aper < self.threshold)
        f0 = np.where(voiced, f0, 0.0)
        return f0.astype(np.float32), voiced, aper.astype(np.float32), rms_db.astype(np.float32)
