"""Frame features: the decoder's targets and the encoder's inputs (see docs/ARCHITECTURE.md).

Frame t is centred on sample ``t * hop_samples`` (zeros before the first sample).

Pitched: a periodic Hann window of WINDOW_SAMPLES centred on the frame, zero-padded 2x and
placed zero-phase. Harmonic k's amplitude is the spectrum peak near ``(k+1) f0``, refined by
parabolic interpolation of the log magnitude and divided by the window's coherent gain
(a unit sinusoid gives 1.0). The fitted sinusoids (amplitude, frequency, phase) are then
subtracted from the spectrum with the window's exact kernel (removing their side lobes), the
bins inside their main lobes are left out, and each noise band's RMS comes from the mean power
of its remaining bins times the band's full width (so removed bins are accounted for; a band
with no bins left borrows the density of its nearest band). Unvoiced frames are all noise.

Unpitched: |STFT| (N_FFT, periodic Hann, HOP_SAMPLES). Both are normalised to unit power
per frame; the level is ``loudness_db``. ``analyze`` runs :class:`StreamAnalyzer` on the whole
clip, so offline and live features agree by construction.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from instrument.corpus.pitch import SILENCE_DB, PitchTracker, frame_view
from instrument.errors import ConfigError, CorpusError, describe

N_HARMONICS = 64
N_NOISE_BANDS = 32
HOP_SAMPLES = 256
N_FFT = 1024
WINDOW_SAMPLES = 2048
AMP_FLOOR = 1e-4
PITCHED_THRESHOLD = 0.5          # periodicity at or above this -> "pitched"
MODES = ("pitched", "unpitched")
PAD_FACTOR = 2                   # zero padding of the harmonic analysis FFT
WIDE_HARMONICS = 4               # the lowest harmonics (usually strongest) are subtracted
NARROW_SUBTRACT_BINS = 24        # over +-SUBTRACT_BINS, the others over +-NARROW_SUBTRACT_BINS
SUBTRACT_BINS = 24               # padded bins either side of a peak where it is subtracted
POWER_FLOOR = 1e-12              # frames below this mean square are "silent" (-120 dB)
CHUNK_FRAMES = 64                # frames per batch: cache-sized (larger is slower)


@dataclass
class Frames:
    """Per-frame analysis of one clip (see the module docstring)."""

    mode: str
    sample_rate: int
    hop_samples: int
    f0_hz: np.ndarray
    voiced: np.ndarray
    loudness_db: np.ndarray
    features: np.ndarray
    label: str = ""

    def __len__(self) -> int:
        return int(len(self.loudness_db))


def n_features(mode: str) -> int:
    return N_HARMONICS + N_NOISE_BANDS if mode == "pitched" else N_FFT // 2 + 1


def noise_band_edges_hz(sample_rate: int, n_bands: int = N_NOISE_BANDS) -> np.ndarray:
    """Mel-spaced band edges 0 ... sample_rate/2, shape (n_bands + 1,)."""
    top = 2595.0 * np.log10(1.0 + (sample_rate / 2.0) / 700.0)
    edges = 700.0 * (10.0 ** (np.linspace(0.0, top, n_bands + 1) / 2595.0) - 1.0)
    edges[0], edges[-1] = 0.0, sample_rate / 2.0
    return edges


def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _hann_kernel(nu: np.ndarray, n: int, m: int) -> np.ndarray:
    """Real DTFT of the zero-phase periodic Hann (length n) at ``nu`` bins of an m-point FFT."""
    def dirichlet(theta: np.ndarray) -> np.ndarray:
        s = np.sin(theta / 2.0)
        small = np.abs(s) < 1e-12
        return np.where(small, n - 1.0, np.sin(theta * (n - 1) / 2.0) / np.where(small, 1.0, s))

    th = 2.0 * np.pi * nu / m
    step = 2.0 * np.pi / n
    return 0.5 * dirichlet(th) + 0.25 * dirichlet(th - step) + 0.25 * dirichlet(th + step)


class _PitchedAnalysis:
    """Harmonic + noise analysis of batches of WINDOW_SAMPLES segments.

    Everything that does not depend on the audio (window, kernel table, band layout, index
    offsets) is made once here, so a call is a fixed, small number of array operations."""

    def __init__(self, sample_rate: int) -> None:
        self.sr = sample_rate
        self.n = WINDOW_SAMPLES
        self.m = PAD_FACTOR * WINDOW_SAMPLES
        self.n_bins = self.m // 2 + 1
        self.w = _hann(self.n)
        h = self.n // 2
        self.w_tail, self.w_head = self.w[h:].copy(), self.w[:h].copy()
        self.gain = float(self.w.sum())                 # coherent gain (= n / 2)
        self.power_scale = 2.0 / (self.m * float(np.sum(self.w ** 2)))
        freqs = np.arange(self.n_bins) * sample_rate / self.m
        edges = noise_band_edges_hz(sample_rate)
        band = np.clip(np.searchsorted(edges, freqs, side="right") - 1, 0, N_NOISE_BANDS - 1)
        # bands are contiguous runs of bins: sum them with reduceat from each band's first bin
        self.band_bins = np.bincount(band, minlength=N_NOISE_BANDS).astype(np.float64)
        self.band_start = np.minimum(np.searchsorted(band, np.arange(N_NOISE_BANDS)),
                                     self.n_bins - 1)
        self.band_empty = self.band_bins == 0
        self.any_band_empty = bool(self.band_empty.any())
        self.k = np.arange(1, N_HARMONICS + 1, dtype=np.float64)
        self.bin_per_hz = self.m / self.sr
        # harmonic k is analysed when 1.5 < its bin, its frequency is below sr/2 and its
        # peak search stays inside the spectrum
        self.max_bin = min(self.m / 2.0, self.n_bins - 6.0)
        self.lobe = PAD_FACTOR * 2                      # main lobe half width, padded bins
        # the window kernel at offsets j - frac (j = -S..S bins, frac in [-0.5, 0.5] on a
        # 1/256 grid): K[q, j]; harmonics beyond WIDE_HARMONICS use only +-NARROW bins
        self.fracs = np.linspace(-0.5, 0.5, 257)
        self.offs = np.arange(-SUBTRACT_BINS, SUBTRACT_BINS + 1)
        self.ker_table = _hann_kernel(self.offs[None, :] - self.fracs[:, None], self.n, self.m)
        reach = np.where(np.arange(N_HARMONICS) < WIDE_HARMONICS, SUBTRACT_BINS,
                         NARROW_SUBTRACT_BINS)
        reach_mask = np.abs(self.offs)[None, :] <= reach[:, None]           # (64, 2S+1)
        self.reach_mask = None if reach_mask.all() else reach_mask.astype(np.float64)
        # the subtraction works on rows padded by S bins each side (so every kernel offset
        # lands in the row; what falls outside the spectrum is dropped with the padding);
        # a complex bin is two floats, so (re, im) of offset j go to floats 2j and 2j + 1
        self.pad_width = self.n_bins + 2 * SUBTRACT_BINS
        self.float_offs = (2 * (self.offs + SUBTRACT_BINS)[:, None] + np.arange(2)).ravel()
        self.lobe_offs = np.arange(-self.lobe, self.lobe + 1) + SUBTRACT_BINS
        self.peak_offs = np.arange(-3, 4)               # candidates -2..2 and their neighbours
        # peak search radius: 2 bins when harmonics are >= 10 bins apart, else 1
        self.radius_penalty = np.array([[-np.inf, 0.0, 0.0, 0.0, -np.inf]])
        self.noise_scale = self.band_bins * self.power_scale

    def spectrum(self, seg: np.ndarray) -> np.ndarray:
        """Zero-phase windowed, zero-padded rfft (B, n_bins)."""
        h = self.n // 2
        buf = np.zeros((seg.shape[0], self.m))
        np.multiply(seg[:, h:], self.w_tail, out=buf[:, :h])
        np.multiply(seg[:, :h], self.w_head, out=buf[:, self.m - h:])
        return np.fft.rfft(buf, axis=1)

    def __call__(self, seg: np.ndarray, f0: np.ndarray, voiced: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(harm (B, 64), noise (B, 32)) linear amplitudes / band RMS."""
        b_n = seg.shape[0]
        n_bins, s_bins = self.n_bins, SUBTRACT_BINS
        spec = self.spectrum(np.asarray(seg, np.float64))
        if not voiced.any():                                              # all noise
            power = np.abs(spec)
            power *= power
            return np.zeros((b_n, N_HARMONICS)), self._noise(power, None)
        f0 = np.where(voiced, f0, 0.0)
        p = (f0[:, None] * self.k) * self.bin_per_hz              # predicted bin (B, 64)
        valid = (p > 1.5) & (p < self.max_bin)                   # (unvoiced: p == 0)
        centre = np.rint(p).astype(np.int64)
        np.maximum(centre, 3, out=centre)
        np.minimum(centre, n_bins - 4, out=centre)
        # the spectrum at centre-3 .. centre+3 of every harmonic: (B, 64, 7)
        centre_flat = centre + (np.arange(b_n) * n_bins)[:, None]
        near = spec.ravel()[centre_flat[:, :, None] + self.peak_offs]
        logmag = np.abs(near)
        logmag += 1e-150
        np.log(logmag, out=logmag)
        cand = logmag[:, :, 1:-1]                                         # offsets -2..2
        narrow = f0 * self.bin_per_hz < 10.0            # search radius 1 bin, else 2
        if narrow.any():
            cand = cand + np.where(narrow[:, None, None], self.radius_penalty[0], 0.0)
        j = np.argmax(cand, axis=2)
        at = (np.arange(0, b_n * N_HARMONICS * 7, 7)).reshape(b_n, N_HARMONICS)
        at += j                                         # flat index in near of offset j-3
        lm = logmag.ravel()
        a, b, c = lm[at], lm[at + 1], lm[at + 2]
        peak_bin = near.ravel()[at + 1]
        a_c = a - c
        den = a - 2.0 * b + c
        delta = np.zeros(den.shape)
        np.divide(a_c, den, out=delta, where=den < 0)   # a dip: vertex of the parabola
        delta *= 0.5
        np.maximum(delta, -0.5, out=delta)
        np.minimum(delta, 0.5, out=delta)
        harm = a_c * delta
        harm *= -0.25
        harm += b
        np.exp(harm, out=harm)
        harm *= valid * (2.0 / self.gain)
        pos = (centre + j - 2) + delta
        # subtract the fitted sinusoids (their whole kernel, side lobes included)
        camp = (0.5 * harm) * (peak_bin / np.maximum(np.abs(peak_bin), 1e-300))  # A/2 e^{i phi}
        base = np.rint(pos)
        q = np.rint((pos - base + 0.5) * 256.0).astype(np.int64)
        base = base.astype(np.int64)
        base += (np.arange(b_n) * self.pad_width)[:, None]              # padded row start
        ker = self.ker_table[q]
        if self.reach_mask is not None:
            ker *= self.reach_mask
        contrib = camp[:, :, None] * ker                                  # (B, 64, 2S+1)
        sub = np.bincount(((2 * base)[:, :, None] + self.float_offs).ravel(),
                          contrib.view(np.float64).ravel(), 2 * b_n * self.pad_width)
        sub = sub.view(np.complex128).reshape(b_n, self.pad_width)[:, s_bins:s_bins + n_bins]
        res = spec - sub
        # leave out the main lobes of the analysed harmonics
        kept = np.ones(b_n * self.pad_width, bool)
        kept[(base[:, :, None] + self.lobe_offs)[valid]] = False
        kept = kept.reshape(b_n, self.pad_width)[:, s_bins:s_bins + n_bins]
        power = np.abs(res)
        power *= power
        return harm, self._noise(power, kept)

    def _noise(self, power: np.ndarray, kept: np.ndarray | None) -> np.ndarray:
        """Band RMS (B, 32) from the power of the kept bins (None: all bins)."""
        if kept is None:
            counts = self.band_bins
        else:
            power *= kept
            counts = np.add.reduceat(kept, self.band_start, axis=1, dtype=np.float64)
        if self.any_band_empty:                         # reduceat gives a bin, not 0, there
            counts = counts * ~self.band_empty
        sums = np.add.reduceat(power, self.band_start, axis=1)
        holes = counts == 0                             # no bins left in the band
        if holes.any():
            density = np.full(sums.shape, np.nan)
            np.divide(sums, counts, out=density, where=~holes)
            density = _fill_nan_nearest(density)
        else:
            density = sums / counts
        density *= self.noise_scale
        return np.sqrt(density, out=density)


def _fill_nan_nearest(x: np.ndarray) -> np.ndarray:
    """Fill NaN along axis 1 from the nearest finite column (the lower one on a tie; 0 if a
    row has none)."""
    bad = np.isnan(x)
    if not bad.any():
        return x
    n = x.shape[1]
    cost = np.where(bad[:, None, :], n, _column_distance(n))            # (B, n, n)
    out = np.take_along_axis(x, np.argmin(cost, axis=2), axis=1)        # first = lower on ties
    out[bad.all(axis=1)] = 0.0
    return out


@functools.lru_cache(maxsize=4)
def _column_distance(n: int) -> np.ndarray:
    """|i - j| for i, j < n (read-only)."""
    idx = np.arange(n)
    dist = np.abs(idx[:, None] - idx[None, :])
    dist.flags.writeable = False
    return dist


def _normalise(lin: np.ndarray, power: np.ndarray, silent_shape: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(log features, loudness_db); silent frames get ``silent_shape`` (unit power)."""
    floored = np.maximum(power, POWER_FLOOR)
    norm = lin / np.sqrt(floored)[:, None]
    silent = power < POWER_FLOOR
    if silent.any():
        norm[silent] = silent_shape
    np.maximum(norm, AMP_FLOOR, out=norm)
    loud = np.log10(floored)
    loud *= 10.0
    return np.log(norm).astype(np.float32), loud.astype(np.float32)


class StreamAnalyzer:
    """Live feature analysis: ``process(block) -> Frames`` for the frames completed so far.

    Frame t (centred on ``t * hop_samples``) is returned once sample
    ``t * hop_samples + latency_samples - 1`` has arrived. Gives the same features as
    :func:`analyze` on the same audio, whatever the block sizes. Non-finite input samples
    are replaced by 0 and counted in ``nonfinite_samples``.
    """

    def __init__(self, sample_rate: int, mode: str, hop_samples: int = HOP_SAMPLES,
                 f0_hz: float | None = None, label: str = "") -> None:
        if mode not in MODES:
            raise ConfigError(describe("mode", mode, "pitched, unpitched",
                                       "pick the model's mode"))
        if sample_rate < 8000 or hop_samples <= 0:
            raise ConfigError(describe("sample_rate/hop_samples", (sample_rate, hop_samples),
                                       "rate >= 8000 Hz, hop > 0", "pass e.g. 48000, 256"))
        self.sample_rate, self.mode, self.hop_samples = int(sample_rate), mode, int(hop_samples)
        self.label = label
        self.nonfinite_samples = 0
        if mode == "pitched":
            self.tracker: PitchTracker | None = PitchTracker(
                sample_rate, hop_samples, known_f0_hz=f0_hz)
            self._win = WINDOW_SAMPLES
            self._pitched = _PitchedAnalysis(sample_rate)
            bw = np.diff(noise_band_edges_hz(sample_rate))
            self._silent_shape = np.concatenate(
                [np.zeros(N_HARMONICS), np.sqrt(bw / bw.sum())])
        else:
            self.tracker = None
            self._win = N_FFT
            self._w = _hann(N_FFT)
            self._silent_shape = np.full(N_FFT // 2 + 1, 1.0 / math.sqrt(N_FFT // 2 + 1))
        self._before = self._win // 2
        lookahead = self._win - self._before
        self.latency_samples = max(lookahead, self.tracker.delay_samples if self.tracker
                                   else 0)
        self._lookahead = lookahead
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(self._before, np.float32)
        self._buf_start = -self._before
        self._n_in = 0
        self._next = 0
        self._f0 = np.zeros(0, np.float32)
        self._voiced = np.zeros(0, bool)
        if self.tracker is not None:
            self.tracker.reset()

    def process(self, block: np.ndarray) -> Frames:
        """Feed samples (any length); get the frames they complete."""
        x = np.asarray(block, dtype=np.float32).reshape(-1)
        bad = ~np.isfinite(x)
        if bad.any():
            self.nonfinite_samples += int(bad.sum())
            x = np.where(bad, 0.0, x).astype(np.float32)
        self._buf = np.concatenate([self._buf, x])
        self._n_in += len(x)
        n_ready = (self._n_in - self._lookahead) // self.hop_samples + 1
        if self.tracker is not None:
            f0, voiced, _, _ = self.tracker.process_detailed(x)
            self._f0 = np.concatenate([self._f0, f0])
            self._voiced = np.concatenate([self._voiced, voiced])
            n_ready = min(n_ready, self._next + len(self._f0))
        n_new = max(0, n_ready - self._next)
        parts = [self._frames(t0, min(CHUNK_FRAMES, self._next + n_new - t0))
                 for t0 in range(self._next, self._next + n_new, CHUNK_FRAMES)]
        self._next += n_new
        if self.tracker is not None:
            self._f0, self._voiced = self._f0[n_new:], self._voiced[n_new:]
        keep_from = self._next * self.hop_samples - self._before - self._buf_start
        if keep_from > 0:
            self._buf = self._buf[keep_from:].copy()
            self._buf_start += keep_from
        if not parts:
            return self._empty()
        cols = parts[0] if len(parts) == 1 else [np.concatenate(p)
                                                 for p in zip(*parts, strict=True)]
        return Frames(self.mode, self.sample_rate, self.hop_samples, *cols, label=self.label)

    def _empty(self) -> Frames:
        return Frames(self.mode, self.sample_rate, self.hop_samples, np.zeros(0, np.float32),
                      np.zeros(0, bool), np.zeros(0, np.float32),
                      np.zeros((0, n_features(self.mode)), np.float32), self.label)

    def _frames(self, t0: int, count: int) -> tuple[np.ndarray, ...]:
        """Frames ``t0 .. t0 + count - 1`` (their samples are in the buffer)."""
        seg = frame_view(self._buf, t0 * self.hop_samples - self._before - self._buf_start,
                         count, self.hop_samples, self._win).astype(np.float64)
        if self.mode == "pitched":
            k = slice(t0 - self._next, t0 - self._next + count)
            f0, voiced = self._f0[k].astype(np.float64), self._voiced[k]
            harm, noise = self._pitched(seg, f0, voiced)
            lin = np.concatenate([harm, noise], axis=1)
            power = 0.5 * np.add.reduce(harm * harm, axis=1)
            power += np.add.reduce(noise * noise, axis=1)
        else:
            f0, voiced = np.zeros(count), np.zeros(count, bool)
            spec = np.fft.rfft(seg * self._w, axis=1)
            p = spec.real ** 2 + spec.imag ** 2
            lin = np.sqrt(p)
            w2 = float(np.sum(self._w ** 2))
            power = (2.0 * p.sum(axis=1) - p[:, 0] - p[:, -1]) / (N_FFT * w2)
            mag_power = p.sum(axis=1)
            lin = lin * np.sqrt(np.where(mag_power > 0, power / np.maximum(mag_power, 1e-300),
                                         0.0))[:, None]
            # lin is now scaled so that sum(lin**2) == frame mean square
        feats, loud = _normalise(lin, power, self._silent_shape)
        return f0.astype(np.float32), np.asarray(voiced, bool), loud, feats


def analyze(audio: np.ndarray, sample_rate: int, mode: str, f0_hz: float | None = None, *,
            hop_samples: int = HOP_SAMPLES, label: str = "") -> Frames:
    """Analyse a whole clip: ``ceil(len / hop)`` frames (see the module docstring).

    ``f0_hz`` (pitched mode): the clip's known pitch (from its note); each frame's f0 is
    refined within a semitone of it, so a slightly detuned sample is still analysed right."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise CorpusError(describe(f"audio of {label or 'clip'}", "NaN/inf samples",
                                   "finite samples", "read it with corpus.read_file"))
    if f0_hz is not None and not (math.isfinite(f0_hz) and 20.0 <= f0_hz < sample_rate / 4):
        raise ConfigError(describe("f0_hz", f0_hz, f"20 .. {sample_rate / 4:g} Hz",
                                   "check the note in the file name"))
    sa = StreamAnalyzer(sample_rate, mode, hop_samples, f0_hz=f0_hz, label=label)
    n_frames = (len(x) + hop_samples - 1) // hop_samples
    fr = sa.process(np.concatenate([x, np.zeros(sa.latency_samples + hop_samples, np.float32)]))
    return Frames(fr.mode, fr.sample_rate, fr.hop_samples, fr.f0_hz[:n_frames],
                  fr.voiced[:n_frames], fr.loudness_db[:n_frames], fr.features[:n_frames],
                  label)


def _periodicity_counts(audio: np.ndarray, sample_rate: int, max_seconds: float = 60.0
                        ) -> tuple[int, int]:
    """(voiced sounding frames, sounding frames) of a clip (first ``max_seconds``)."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)[:int(max_seconds * sample_rate)]
    x = np.where(np.isfinite(x), x, 0.0)
    tr = PitchTracker(sample_rate, HOP_SAMPLES)
    _, voiced, _, rms_db = tr.process_detailed(np.concatenate(
        [x, np.zeros(tr.delay_samples, np.float32)]))
    if len(rms_db) == 0:
        return 0, 0
    sounding = rms_db > max(SILENCE_DB, float(rms_db.max()) - 40.0)
    return int(np.sum(voiced & sounding)), int(np.sum(sounding))


def periodicity(audio: np.ndarray, sample_rate: int) -> float:
    """Fraction (0..1) of the sounding frames that the pitch tracker calls voiced."""
    v, s = _periodicity_counts(audio, sample_rate)
    return v / s if s else 0.0


def choose_mode(clips: Sequence, sample_rate: int | None = None) -> tuple[str, float]:
    """``(mode, periodicity)`` of a corpus: its sounding frames pooled over all clips.

    ``clips`` are :class:`~instrument.corpus.read.Clip` (their ``sample_rate`` is used
    unless ``sample_rate`` is given)."""
    v_all = s_all = 0
    for c in clips:
        sr = int(sample_rate or getattr(c, "sample_rate", 0) or 48000)
        v, s = _periodicity_counts(c.audio, sr)
        v_all, s_all = v_all + v, s_all + s
    p = v_all / s_all if s_all else 0.0
    return ("pitched" if p >= PITCHED_THRESHOLD else "unpitched"), float(p)
