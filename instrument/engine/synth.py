"""Harmonic-plus-noise synthesis for all voices, one vectorized step per hop.

Everything runs at the *output* rate; decoder frames are rate-free (amplitudes at k·f0, noise
band RMS in Hz bands), so any output rate plays at the right pitch.

- :class:`HarmonicSynth`: one band-limited single-cycle wavetable per voice per hop (an irfft
  of the harmonic amplitudes; harmonics at or above ``max_hz`` for the voice's f0 are zeroed),
  read by a phase-continuous float64 phase accumulator with linear interpolation. The previous
  and the current hop's tables are crossfaded linearly across the hop, so amplitude, timbre
  and envelope changes are piecewise linear per sample and never step. f0 glides
  geometrically per sample across the hop (pitch bends do not step either).
- :class:`NoiseSynth`: the voices' noise band powers are summed (independent noises add in
  power) into one spectrum per hop, given complex Gaussian bins from a seeded generator (random
  phase, Rayleigh magnitude), one irfft of two hops, a sqrt-Hann window and overlap-add. The
  window is power-complementary (``w[n]² + w[n+hop]² = 1``), which is the constant-overlap-add
  condition that matters for independent noise frames: the noise has no level ripple.
- :class:`Limiter`: a peak limiter with instant attack and exponential release, computed for a
  whole hop without a per-sample Python loop; ``|y| <= ceiling`` always holds.
"""

from __future__ import annotations

import math

import numpy as np


class HarmonicSynth:
    """Wavetable oscillators for ``n_slots`` voices; :meth:`process` renders one hop."""

    def __init__(self, sample_rate: int, hop_samples: int, n_slots: int, n_harmonics: int,
                 max_hz: float, table_size: int = 2048):
        if table_size < 2 * n_harmonics + 2:
            raise ValueError("table_size must exceed twice the number of harmonics")
        self.sample_rate = int(sample_rate)
        self.hop_samples = int(hop_samples)
        self.n_slots = int(n_slots)
        self.n_harmonics = int(n_harmonics)
        self.max_hz = float(max_hz)
        self.table_size = int(table_size)
        self._L1 = self.table_size + 1  # one wrap-around sample for interpolation
        self.tables = np.zeros((self.n_slots, self._L1), np.float32)
        # diffs[s, i] = tables[s, i + 1] - tables[s, i] (float32, as the interpolation would
        # compute it): the stored tables' interpolation then reads two arrays at one index
        self.diffs = np.zeros((self.n_slots, self._L1), np.float32)
        self.phase_cycles = np.zeros(self.n_slots, np.float64)
        self.f0_hz = np.full(self.n_slots, 440.0, np.float64)
        self.amps = np.zeros((self.n_slots, self.n_harmonics), np.float32)  # of the tables
        self._harm_k = np.arange(1, self.n_harmonics + 1, dtype=np.float64)
        self._n = np.arange(self.hop_samples, dtype=np.float64)  # 0..hop-1
        self._n_table = self._n * self.table_size  # exact: table_size is an int
        self._ramp = ((self._n + 1.0) / self.hop_samples).astype(np.float32)  # (0, 1]
        self._log_ramp = self._ramp.astype(np.float64)
        self._spec_scale = np.complex64(-0.5j * self.table_size)  # irfft -> sum a_k sin
        self._pow2 = self.table_size & (self.table_size - 1) == 0
        # work buffers of the steady path (rows [:V] used), so a held note allocates little
        shape = (self.n_slots, self.hop_samples)
        self._ph = np.empty(shape, np.float64)
        self._idx = np.empty(shape, np.int64)
        self._frac = np.empty(shape, np.float32)
        self._p0 = np.empty(shape, np.float32)
        self._y = np.empty(shape, np.float32)
        self._idx2 = np.empty(shape, np.int64)
        self._c0 = np.empty(shape, np.float32)
        self._c = np.empty(shape, np.float32)
        self._spec = np.zeros((self.n_slots, self.n_harmonics + 1), np.complex64)  # DC stays 0
        self._cur = np.empty((self.n_slots, self._L1), np.float32)
        self._slot_rows = np.arange(self.n_slots, dtype=np.int64) * self._L1

    def start(self, slot: int, f0_hz: float) -> None:
        """A new voice in ``slot``: silent previous table, phase 0, f0 without glide."""
        self.tables[slot] = 0.0
        self.diffs[slot] = 0.0
        self.amps[slot] = 0.0
        self.phase_cycles[slot] = 0.0
        self.f0_hz[slot] = f0_hz

    def reset(self) -> None:
        self.tables[:] = 0.0
        self.diffs[:] = 0.0
        self.amps[:] = 0.0
        self.phase_cycles[:] = 0.0
        self.f0_hz[:] = 440.0

    def process(self, slots: np.ndarray, amps: np.ndarray, f0_end_hz: np.ndarray,
                same_as_last: bool = False) -> np.ndarray:
        """One hop of the voices in ``slots``.

        ``amps`` (V, n_harmonics) are the linear amplitudes reached at the hop's end (gains
        included); ``f0_end_hz`` (V,) the f0 reached at the hop's end. ``same_as_last``: the
        caller vouches that slots, amps and f0 equal the previous call's and that call's f0
        did not glide (the steady path without re-checking). Returns (hop,) float32.
        """
        hop, L = self.hop_samples, self.table_size
        if len(slots) == 0:
            return np.zeros(hop, np.float32)
        f0_0 = self.f0_hz[slots]
        if same_as_last:
            return self._read_steady(slots, f0_0)
        f0_1 = np.asarray(f0_end_hz, np.float64)
        f_same = bool((f0_0 == f0_1).all())
        # band limit: zero harmonics at or above max_hz for the highest f0 of the hop
        f_top = f0_0 if f_same else np.maximum(f0_0, f0_1)
        keep = self._harm_k[None, :] * f_top[:, None] < self.max_hz
        if not keep.all():
            amps = np.where(keep, amps, np.float32(0.0))
        if f_same and (amps == self.amps[slots]).all():
            # nothing changed: read the stored tables, no new table, no crossfade
            return self._read_steady(slots, f0_0)
        v = len(slots)
        self.amps[slots] = amps
        spec = self._spec[:v]
        spec[:, 1:] = amps * self._spec_scale
        cur = self._cur[:v]
        cur[:, :L] = np.fft.irfft(spec, L, axis=1)
        cur[:, L] = cur[:, 0]
        # phase (cycles) at each sample of the hop, then the next hop's start phase
        inc0 = f0_0 / self.sample_rate
        start = self.phase_cycles[slots]
        if f_same:
            ph = np.multiply(inc0[:, None], self._n, out=self._ph[:v])
            ph += start[:, None]
            nxt = start + inc0 * hop
        else:
            inc = inc0[:, None] * (f0_1 / f0_0)[:, None] ** self._log_ramp[None, :]
            csum = np.cumsum(inc, axis=1)
            ph = start[:, None] + (csum - inc)
            nxt = start + csum[:, -1]
        self.phase_cycles[slots] = nxt % 1.0
        self.f0_hz[slots] = f0_1
        ph %= 1.0
        ph *= L
        idx, frac = self._idx[:v], self._frac[:v]
        np.copyto(idx, ph, casting="unsafe")  # truncation, as astype(int64)
        np.minimum(idx, L - 1, out=idx)
        ph -= idx
        np.copyto(frac, ph, casting="same_kind")
        # previous tables straight from storage, current from the fresh tables
        i = np.add(idx, (slots * self._L1)[:, None], out=self._idx2[:v])
        p0, p = self._p0[:v], self._y[:v]
        self.tables.reshape(-1).take(i, out=p0)
        self.diffs.reshape(-1).take(i, out=p)
        p *= frac
        p += p0
        idx += self._slot_rows[:v, None]
        c0, c = self._c0[:v], self._c[:v]
        flat = cur.reshape(-1)
        flat.take(idx, out=c0)
        idx += 1
        flat.take(idx, out=c)
        c -= c0
        c *= frac
        c += c0
        c -= p  # crossfade: p + ramp * (c - p)
        c *= self._ramp
        c += p
        self.tables[slots] = cur
        self.diffs[slots, :L] = cur[:, 1:] - cur[:, :L]
        return c.sum(axis=0, dtype=np.float32) if v > 1 else c[0].copy()

    def _read_steady(self, slots: np.ndarray, f0_hz: np.ndarray) -> np.ndarray:
        """One hop read from the stored tables at constant f0 (no crossfade), computed in the
        work buffers; returns a new (hop,) array."""
        v, hop, L = len(slots), self.hop_samples, self.table_size
        inc = f0_hz / self.sample_rate
        start = self.phase_cycles[slots]
        self.phase_cycles[slots] = (start + inc * hop) % 1.0
        idx, frac = self._idx[:v], self._frac[:v]
        ph = self._ph[:v]
        if self._pow2:
            # (start + inc·n)·L with the product by L (a power of 2, exact) moved inside; the
            # floor of that is exact too: the same values as ((start + inc·n) % 1)·L
            np.multiply(inc[:, None], self._n_table, out=ph)
            ph += (start * L)[:, None]
            np.copyto(idx, ph, casting="unsafe")  # truncation, as astype(int64)
            ph -= idx
            np.copyto(frac, ph, casting="same_kind")
            idx &= L - 1
        else:
            np.multiply(inc[:, None], self._n, out=ph)
            ph += start[:, None]
            ph %= 1.0
            ph *= L
            np.copyto(idx, ph, casting="unsafe")
            np.minimum(idx, L - 1, out=idx)
            ph -= idx
            np.copyto(frac, ph, casting="same_kind")
        p0, y = self._p0[:v], self._y[:v]
        if v == 1:  # one voice: its own rows, no offsets
            slot = int(slots[0])
            self.tables[slot].take(idx[0], out=p0[0])
            self.diffs[slot].take(idx[0], out=y[0])
        else:
            idx += (slots * self._L1)[:, None]
            self.tables.reshape(-1).take(idx, out=p0)
            self.diffs.reshape(-1).take(idx, out=y)
        y *= frac
        y += p0
        return y.sum(axis=0, dtype=np.float32) if v > 1 else y[0].copy()


def band_bin_weights(edges_hz: np.ndarray, n_fft: int, sample_rate: int,
                     max_hz: float) -> np.ndarray:
    """(n_bands, n_fft//2+1) weights: bin power = sum_b rms_b² · W[b, bin].

    A band's bins share its power so that the irfft of Gaussian bins with that power has
    time-domain RMS ``rms_b``. Bands narrower than a bin go to the bin at their centre; bins
    at or above ``max_hz`` (and DC, Nyquist) stay empty.
    """
    edges = np.asarray(edges_hz, np.float64)
    n_bins = n_fft // 2 + 1
    f = np.arange(n_bins) * sample_rate / n_fft
    usable = (np.arange(n_bins) >= 1) & (np.arange(n_bins) <= n_bins - 2) & (f < max_hz)
    w = np.zeros((len(edges) - 1, n_bins), np.float64)
    for b in range(len(edges) - 1):
        sel = usable & (f >= edges[b]) & (f < edges[b + 1])
        if not sel.any():
            centre = 0.5 * (edges[b] + edges[b + 1])
            if centre >= max_hz:
                continue
            j = int(np.clip(round(centre * n_fft / sample_rate), 1, n_bins - 2))
            if not usable[j]:
                continue
            sel = np.zeros(n_bins, bool)
            sel[j] = True
        w[b, sel] = n_fft * n_fft / (2.0 * sel.sum())
    return w.astype(np.float32)


class NoiseSynth:
    """Filtered noise for all voices: one spectrum, one irfft and overlap-add per hop.

    The complex Gaussian bins are drawn ``BATCH`` hops at a time; while the spectrum holds,
    the frames of the rest of the batch are made with one batched irfft (the same values a
    hop-by-hop irfft gives, much cheaper per hop)."""

    BATCH = 32

    def __init__(self, sample_rate: int, hop_samples: int, edges_hz: np.ndarray, max_hz: float,
                 seed: int = 0):
        self.sample_rate = int(sample_rate)
        self.hop_samples = int(hop_samples)
        self.n_fft = 2 * self.hop_samples
        self.n_bins = self.n_fft // 2 + 1
        self.max_hz = float(max_hz)
        self.seed = int(seed)
        n = np.arange(self.n_fft)
        self.window = np.sin(np.pi * n / self.n_fft).astype(np.float32)  # sqrt periodic Hann
        self._frames = np.zeros((self.BATCH, self.n_fft), np.float32)
        self.set_bands(edges_hz)
        self.reset()

    def set_bands(self, edges_hz: np.ndarray) -> None:
        self.weights = band_bin_weights(edges_hz, self.n_fft, self.sample_rate, self.max_hz)
        self._last_power = np.zeros(0)
        self._last_zero = True  # the last call with voices had no noise power
        self._last_valid = False  # _last_zero describes the last call (no set_bands since)
        self._mag = np.zeros(self.n_bins, np.float32)
        self._ready = 0  # frames of the batch made with the current magnitudes: [_row, _ready)

    def reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.tail = np.zeros(self.hop_samples, np.float32)
        self._z = np.zeros((self.BATCH, self.n_bins), np.complex64)
        self._row = self.BATCH  # next unused row of the Gaussian batch
        self._ready = 0

    def _frame(self, changed: bool) -> np.ndarray:
        """The next windowed noise frame (n_fft,) with the current magnitudes."""
        if self._row >= self.BATCH:  # a new batch of Gaussian bins
            self._z = self.rng.standard_normal((self.BATCH, 2 * self.n_bins),
                                               dtype=np.float32).view(np.complex64)
            self._row, self._ready = 0, 0
        r = self._row
        if changed or r >= self._ready:
            stop = r + 1 if changed else self.BATCH  # spectrum moving: just this hop's frame
            self._frames[r:stop] = np.fft.irfft(self._z[r:stop] * self._mag, self.n_fft,
                                                axis=1)
            self._frames[r:stop] *= self.window
            self._ready = stop
        self._row = r + 1
        return self._frames[r]

    def process(self, band_rms: np.ndarray, gains: np.ndarray,
                same_as_last: bool = False) -> np.ndarray:
        """One hop from ``band_rms`` (V, n_bands) linear RMS and per-voice gains (V,).

        ``same_as_last``: the caller vouches that both equal the previous call's (the band
        powers are then not recomputed). Returns a new (hop,) array.
        """
        hop = self.hop_samples
        if same_as_last and self._last_valid and len(gains):
            zero, changed = self._last_zero, False
        else:
            if len(gains) == 1:
                band_power = np.square(band_rms[0] * gains[0], dtype=np.float32)
            elif len(gains):
                band_power = (np.square(gains)[:, None] * np.square(band_rms)).sum(axis=0)
            zero = len(gains) == 0 or not band_power.any()
            changed = False
            if len(gains):
                self._last_zero, self._last_valid = zero, True
                if not zero:
                    last = self._last_power
                    changed = band_power.shape != last.shape or not (band_power == last).all()
                    if changed:  # else reuse the bin magnitudes and the frames already made
                        self._last_power = band_power
                        self._mag = np.sqrt((band_power.astype(np.float32) @ self.weights)
                                            * 0.5)
        if zero:
            out, self.tail = self.tail, np.zeros(hop, np.float32)
            return out
        frame = self._frame(changed)
        y = self.tail + frame[:hop]
        np.copyto(self.tail, frame[hop:])
        return y


class Limiter:
    """Peak limiter: gain drops at once to keep ``|y| <= ceiling``, recovers exponentially."""

    def __init__(self, sample_rate: int, hop_samples: int, ceiling: float = 0.98,
                 release_ms: float = 80.0):
        self.ceiling = float(ceiling)
        beta = float(np.exp(-1.0 / (release_ms * 1e-3 * sample_rate)))
        self._beta = beta
        self._tables(hop_samples)
        self.reduction = 0.0  # 1 - gain at the end of the last hop
        self.active_hops = 0

    def reset(self) -> None:
        self.reduction = 0.0
        self.active_hops = 0

    def _tables(self, n_samples: int) -> None:
        n = np.arange(max(1, int(n_samples)), dtype=np.float64)
        self._bpow = self._beta ** n
        self._binv = self._beta ** (-n)

    def process(self, x: np.ndarray, peak: float | None = None) -> np.ndarray:
        """Limit one block (any length; the hop size is the cheap case). ``peak``: max |x|
        when the caller has it (far below the ceiling, the block passes untouched)."""
        n = len(x)
        if n == 0:
            return x
        if peak is None:
            peak = float(np.abs(x).max())
        if peak <= self.ceiling and self.reduction < 1e-7:
            self.reduction = 0.0
            return x
        if n > len(self._bpow):  # a longer block than seen so far (resampled unpitched hops)
            self._tables(n)
        self.active_hops += 1
        ax = np.abs(x).astype(np.float64)
        need = 1.0 - self.ceiling / np.maximum(ax, self.ceiling)  # 0 where no limiting needed
        # d[n] = max(d_prev·β^(n+1), max_{m<=n} need[m]·β^(n-m)) without a per-sample loop
        acc = np.maximum.accumulate(need * self._binv[:n])
        d = self._bpow[:n] * np.maximum(acc, self.reduction * self._beta)
        d = np.maximum(d, need)  # guard against rounding
        self.reduction = float(d[-1])
        return (x * (1.0 - d)).astype(np.float32)


class UnpitchedVoices:
    """Magnitude-frame voices for unpitched models, at the model's rate, resampled.

    Slots are grouped in banks of ``bank_voices`` :class:`~instrument.engine.phase.UnpitchedSynth`
    (RTPGHI phase + overlap-add, one frame of look-ahead); a bank with no voice is skipped
    once its overlap-add tail has played out, so the cost follows the voices in use (the
    engine hands out the lowest free slot first). The gain a voice had when a frame was
    given is applied when that frame comes out of the look-ahead, so envelope and timbre stay
    aligned. With ``out_rate != model_rate`` a streaming soxr resampler turns each model hop
    into the matching (varying) number of output samples; it never changes the speed.

    ``latency_samples`` (output samples): a frame centred on model sample ``t * hop`` of the
    synthesis stream comes out ``latency_samples`` output samples after the output position
    of that hop's first sample (overlap-add + look-ahead, then the resampler's delay).
    """

    def __init__(self, model_rate: int, out_rate: int, n_fft: int, hop_samples: int,
                 n_slots: int, seed: int = 0, bank_voices: int = 4):
        from instrument.engine.phase import UnpitchedSynth

        self.model_rate, self.out_rate = int(model_rate), int(out_rate)
        self.hop_samples = int(hop_samples)
        self.bank_voices = int(bank_voices)
        self.n_banks = -(-int(n_slots) // self.bank_voices)
        self.banks = [UnpitchedSynth(n_fft, self.hop_samples, self.bank_voices,
                                     lookahead_frames=1, seed=seed + 1 + b)
                      for b in range(self.n_banks)]
        self.n_bins = n_fft // 2 + 1
        n = self.n_banks * self.bank_voices
        self._mag = np.zeros((self.n_banks, self.bank_voices, self.n_bins), np.float64)
        self._mag_rows = self._mag.reshape(n, self.n_bins)
        self._gain_prev = np.zeros(n, np.float64)  # gains of the frames now in the look-ahead
        self._gain_now = np.zeros(n, np.float64)
        self._occupied = np.zeros(self.n_banks, bool)
        # overlap-add tail + look-ahead: hops a bank keeps running after its last voice
        self._flush_hops = n_fft // self.hop_samples + 2
        self._idle = np.full(self.n_banks, self._flush_hops + 1)
        self._y = np.zeros(self.hop_samples, np.float32)
        self._resampler = None
        resample_delay = 0.0
        self._silent_hops = 0  # consecutive all-zero hops fed to the resampler
        self._bypass_in = 0  # model samples passed while the resampler is bypassed
        self._bypassing = False
        if self.out_rate != self.model_rate:
            resample_delay = self._resampler_delay()
            self._resampler = self._new_resampler()
            # hops of silence after which the resampler's tail has surely played out
            delay_in = resample_delay * self.model_rate / self.out_rate
            self._resampler_flush_hops = 8 + 2 * math.ceil(delay_in / self.hop_samples)
        synth_latency = self.banks[0].latency_samples * self.out_rate / self.model_rate
        self.latency_samples = int(round(synth_latency + resample_delay))

    def _new_resampler(self):
        """A streaming soxr resampler. ``vr=True`` (soxr's variable-rate engine, used at one
        fixed ratio) gives every model hop its share of output at once; the fixed-rate
        engine delivers in bursts of several hops, which would make command timing coarse."""
        import soxr

        rs = soxr.ResampleStream(self.model_rate, self.out_rate, 1, dtype="float32",
                                 quality="HQ", vr=True)
        # Prime with silence (output dropped): a fresh resampler gives short output for its
        # first hops, which would make the first hops' delay differ from the later ones'.
        zeros = np.zeros(self.hop_samples, np.float32)
        for _ in range(4 + 2048 // self.hop_samples):
            rs.resample_chunk(zeros)
        return rs

    def _resampler_delay(self) -> float:
        """Output samples from the start of a hop's output to where an impulse at that
        hop's first input sample comes out (measured on a fresh resampler, steady state)."""
        rs = self._new_resampler()
        x = np.zeros(self.hop_samples, np.float32)
        x[0] = 1.0
        parts = [rs.resample_chunk(x)]
        x[0] = 0.0
        n_more = 8 + 4096 // self.hop_samples
        parts += [rs.resample_chunk(x) for _ in range(n_more)]
        y = np.abs(np.concatenate(parts))
        return float(np.argmax(y)) if len(y) else 0.0

    def start(self, slot: int) -> None:
        """A new voice in ``slot``: its phase history is forgotten (no tail of the old one)."""
        self.banks[slot // self.bank_voices].reset(slot % self.bank_voices)

    def reset(self) -> None:
        for bank in self.banks:
            bank.reset()
        self._gain_prev[:] = 0.0
        self._idle[:] = self._flush_hops + 1
        if self._resampler is not None:
            self._resampler = self._new_resampler()
        self._silent_hops, self._bypass_in, self._bypassing = 0, 0, False

    def process(self, slots: np.ndarray, gains: np.ndarray,
                frame: np.ndarray | None) -> np.ndarray:
        """One model hop: voices in ``slots`` play ``frame`` (n_bins,) linear magnitudes
        with ``gains`` (V,). Returns the output samples (float32), about ``hop * out_rate /
        model_rate`` of them (fewer at the very start, while the resampler fills)."""
        g_now, rows = self._gain_now, self._mag_rows
        g_now.fill(0.0)
        rows.fill(0.0)
        occ = self._occupied
        occ.fill(False)
        if len(slots):
            g_now[slots] = gains
            rows[slots] = frame
            occ[slots // self.bank_voices] = True
        y = self._y
        y.fill(0.0)
        bv = self.bank_voices
        g_prev = self._gain_prev
        ran = False
        for b, bank in enumerate(self.banks):
            sl = slice(b * bv, (b + 1) * bv)
            if occ[b] or g_prev[sl].any():
                self._idle[b] = 0
            else:
                self._idle[b] += 1
                if self._idle[b] > self._flush_hops:
                    continue  # silent: no voice, tail played out (its state is all zero)
            y += bank.process(self._mag[b], g_prev[sl])
            ran = True
        g_prev[:] = g_now
        if self._resampler is None:
            return y
        return self._resample(y, silent=not ran)

    def _resample(self, y: np.ndarray, silent: bool) -> np.ndarray:
        """Resample one hop. After a long silence the resampler (whose state then only holds
        denormal residue) is bypassed with exact zeros at the exact ratio, and replaced by a
        fresh primed one (the same delay) when sound comes back."""
        self._silent_hops = self._silent_hops + 1 if silent else 0
        if self._silent_hops > self._resampler_flush_hops:
            if not self._bypassing:
                self._bypassing, self._bypass_in = True, 0
            a = self._bypass_in * self.out_rate // self.model_rate
            self._bypass_in += self.hop_samples
            b = self._bypass_in * self.out_rate // self.model_rate
            return np.zeros(b - a, np.float32)
        if self._bypassing:
            self._bypassing = False
            self._resampler = self._new_resampler()
        return self._resampler.resample_chunk(y)
