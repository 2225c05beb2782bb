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
        self.k = np.arange(1, N_HARMONICS + 1, dtype=np.float64)
        self.lobe = PAD_FACTOR * 2                      # main lobe half width, padded bins
        # the window kernel at offsets j - frac (j = -S..S bins, frac in [-0.5, 0.5] on a
        # 1/256 grid): K[q, j]
        self.fracs = np.linspace(-0.5, 0.5, 257)
        self.offs = np.arange(-SUBTRACT_BINS, SUBTRACT_BINS + 1)
        self.ker_table = _hann_kernel(self.offs[None, :] - self.fracs[:, None], self.n, self.m)
        # per harmonic: which kernel offsets are subtracted (wide for the lowest harmonics)
        reach = np.where(np.arange(N_HARMONICS) < WIDE_HARMONICS, SUBTRACT_BINS,
                         NARROW_SUBTRACT_BINS)
        self.reach_mask = np.abs(self.offs)[None, :] <= reach[:, None]      # (64, 2S+1)
        self.all_reach = bool(self.reach_mask.all())
        self.lobe_offs = self.offs[np.abs(self.offs) <= self.lobe]
        self.peak_offs = np.arange(-3, 4)               # candidates -2..2 and their neighbours
        self.radius_mask = {r: np.abs(self.peak_offs[1:-1]) > r for r in (1, 2)}

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
        n_bins = self.n_bins
        spec = self.spectrum(np.asarray(seg, np.float64))
        f0 = np.where(voiced, f0, 0.0).astype(np.float64)
        width = n_bins + 1                                                # + a dummy bin
        total = b_n * width
        if not voiced.any():                                              # all noise
            power = spec.real ** 2 + spec.imag ** 2
            return np.zeros((b_n, N_HARMONICS)), self._noise(power, None)
        p = f0[:, None] * self.k[None, :] * self.m / self.sr     # predicted bin (B, 64)
        valid = (voiced[:, None] & (f0[:, None] * self.k[None, :] < self.sr / 2.0)
                 & (p + 4 < n_bins - 2) & (p > 1.5))
        centre = np.clip(np.rint(p).astype(np.int64), 3, n_bins - 4)
        # the spectrum at centre-3 .. centre+3 of every harmonic: (B, 64, 7)
        row0 = (np.arange(b_n) * n_bins)[:, None]
        near = spec.ravel()[(row0 + centre)[:, :, None] + self.peak_offs]
        logmag = 0.5 * np.log(near.real ** 2 + near.imag ** 2 + 1e-300)
        vals = logmag[:, :, 1:-1].copy()                                  # offsets -2..2
        wide = f0 * self.m / self.sr >= 10.0                              # radius 2, else 1
        vals[~wide] = np.where(self.radius_mask[1], -np.inf, vals[~wide])
        j = np.argmax(vals, axis=2)                                       # peak at offs j-2
        at = (np.arange(b_n * N_HARMONICS) * len(self.peak_offs)).reshape(b_n, N_HARMONICS)
        at += j                                         # flat index of offset j-3 in near
        lm = logmag.ravel()
        a, b, c = lm[at], lm[at + 1], lm[at + 2]
        peak_bin = near.ravel()[at + 1]
        mi = centre + j - 2
        den = a - 2.0 * b + c
        delta = np.where(den < 0, 0.5 * (a - c) / np.where(den < 0, den, -1.0), 0.0)
        delta = np.clip(delta, -0.5, 0.5)
        peak = b - 0.25 * (a - c) * delta
        harm = np.where(valid, 2.0 * np.exp(peak) / self.gain, 0.0)
        pos = mi + delta
        # subtract the fitted sinusoids (their whole kernel, side lobes included)
        unit = peak_bin / np.maximum(np.abs(peak_bin), 1e-300)
        camp = np.where(valid, 0.5 * harm * unit, 0.0)        # (A/2) e^{i phi}
        base = np.rint(pos).astype(np.int64)
        q = np.rint((pos - base + 0.5) * 256.0).astype(np.int64)
        idx = base[:, :, None] + self.offs                                # (B, 64, 2S+1)
        inside = valid[:, :, None] & (idx >= 0) & (idx < n_bins)
        if not self.all_reach:
            inside &= self.reach_mask
        flat = np.where(inside, idx, n_bins)
        flat += (np.arange(b_n) * width)[:, None, None]
        contrib = camp[:, :, None] * self.ker_table[q]
        sub = (np.bincount(flat.ravel(), contrib.real.ravel(), total)
               + 1j * np.bincount(flat.ravel(), contrib.imag.ravel(), total))
        res = spec - sub.reshape(b_n, width)[:, :-1]
        power = res.real ** 2 + res.imag ** 2
        kept = np.ones(total, bool)
        kept[flat[:, :, SUBTRACT_BINS - self.lobe:SUBTRACT_BINS + self.lobe + 1].ravel()] = False
        return harm, self._noise(power, kept.reshape(b_n, width)[:, :-1])

    def _noise(self, power: np.ndarray, kept: np.ndarray | None) -> np.ndarray:
        """Band RMS (B, 32) from the power of the kept bins (None: all bins)."""
        if kept is None:
            sums = np.add.reduceat(power, self.band_start, axis=1)
            counts = np.broadcast_to(self.band_bins, sums.shape).copy()
        else:
            sums = np.add.reduceat(np.where(kept, power, 0.0), self.band_start, axis=1)
            counts = np.add.reduceat(kept, self.band_start, axis=1, dtype=np.float64)
        if self.band_empty.any():                       # reduceat gives a bin, not 0, there
            counts[:, self.band_empty] = 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            density = np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)
        density = _fill_nan_nearest(density)
        return np.sqrt(np.maximum(density, 0.0) * self.band_bins * self.power_scale)


def _fill_nan_nearest(x: np.ndarray) -> np.ndarray:
    """Fill NaN along axis 1 from the nearest finite column (the lower one on a tie; 0 if a
    row has none)."""
    bad = np.isnan(x)
    if not bad.any():
        return x
    n = x.shape[1]
    idx = np.arange(n)
    dist = np.abs(idx[:, None] - idx[None, :])                          # (n, n)
    cost = np.where(bad[:, None, :], n, dist[None, :, :])               # (B, n, n)
    nearest = np.argmin(cost, axis=2)                                   # first = lower on ties
    out = np.take_along_axis(x, nearest, axis=1)
    out[bad.all(axis=1)] = 0.0
    return out


def _normalise(lin: np.ndarray, power: np.ndarray, silent_shape: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(log features, loudness_db); silent frames get ``silent_shape`` (unit power)."""
    silent = power < POWER_FLOOR
    scale = 1.0 / np.sqrt(np.maximum(power, POWER_FLOOR))
    norm = np.where(silent[:, None], silent_shape[None, :], lin * scale[:, None])
    loud = 10.0 * np.log10(np.maximum(power, POWER_FLOOR))
    return np.log(np.maximum(norm, AMP_FLOOR)).astype(np.float32), loud.astype(np.float32)


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
            power = 0.5 * np.sum(harm ** 2, axis=1) + np.sum(noise ** 2, axis=1)
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
